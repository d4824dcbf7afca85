"""The package works outside the checkout: a built wheel, installed into an empty folder, runs the demo
attack from another directory, and finds its bundled demo as package data."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def test_wheel_runs_the_demo_from_elsewhere(tmp_path):
    dist, target, work, src = tmp_path / "dist", tmp_path / "site", tmp_path / "elsewhere", tmp_path / "src"
    work.mkdir()
    src.mkdir()  # a copy of what the wheel is built from, so the build writes nothing into the checkout
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, src / name)
    for name in ("mimmia_core", "assets"):
        shutil.copytree(REPO / name, src / name, ignore=shutil.ignore_patterns("__pycache__"))
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run([*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", str(dist), str(src)], check=True,
                   capture_output=True)
    wheels = list(dist.glob("mimmia-*.whl"))
    assert len(wheels) == 1
    subprocess.run([*pip, "install", "--no-deps", "--target", str(target), str(wheels[0])], check=True,
                   capture_output=True)
    assert (target / "mimmia_assets" / "demo" / "models" / "target" / "model.safetensors").is_file()
    env = {**os.environ, "PYTHONPATH": str(target), "MIMMIA_CACHE": str(tmp_path / "cache")}
    env.pop("MIMMIA_ASSETS", None)
    where = subprocess.run([sys.executable, "-c", "import mimmia_core, mimmia_core.assets as a; "
                            "print(mimmia_core.__file__); print(a.DEMO_DIR)"],
                           cwd=work, env=env, capture_output=True, text=True, check=True).stdout.split()
    assert all(p.startswith(str(target)) for p in where), where
    run = subprocess.run([sys.executable, "-m", "mimmia_core", "attack", "--demo", "--attacks", "paper",
                          "--num-masks", "1", "--out", "report", "--device", "cpu"],
                         cwd=work, env=env, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-2000:]
    report = json.loads((work / "report" / "report.json").read_text())
    assert report["results"][0]["attack"] == "paper" and 0.5 < report["results"][0]["metrics"]["auc"] <= 1
