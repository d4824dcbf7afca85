"""The README's two set-up commands are the ones the project really runs."""
import re
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def _bash_blocks(text: str) -> list[str]:
    return [b.strip() for b in re.findall(r"```bash\n(.*?)```", text, re.S)]


def test_ci_runs_exactly_the_readme_test_command():
    blocks = _bash_blocks((REPO / "README.md").read_text())
    assert "bash scripts/test.sh" in blocks and "bash scripts/demo.sh" in blocks
    ci = [line.strip() for line in (REPO / ".ci" / "run").read_text().splitlines()]
    assert "bash scripts/test.sh" in ci


def test_setup_scripts_install_from_the_pinned_requirements():
    test_sh, demo_sh = (REPO / "scripts" / "test.sh").read_text(), (REPO / "scripts" / "demo.sh").read_text()
    assert "-r requirements-dev.txt" in test_sh and "pytest" in test_sh
    assert "-r requirements.txt" in demo_sh and "streamlit run app.py" in demo_sh
    pins = [line for line in (REPO / "requirements.txt").read_text().splitlines() if line and line[0] != "#"]
    assert pins and all("==" in line for line in pins)
