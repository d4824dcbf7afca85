"""How soon a fresh dashboard shows something: `streamlit run app.py` on the bundled demo, in chromium.

    python -m bench.bench_cold_start [--repeats 3]

Each repeat starts a new server (nothing imported or loaded yet), waits for its health check, opens the
Overview in headless chromium and times, from the page request: the first text the app draws (the
spinner naming what is loading, or already the page), and the Overview's title with its headline
numbers (the models loaded and the first results shown). Peer: the time to the headline, measured in
the same run, as the ratio column. Needs Debian's chromium and playwright (requirements-dev.txt).
"""
import argparse
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
CHROMIUM = os.environ.get("MIMMIA_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
FIRST_TEXT = '[data-testid="stSpinner"], [data-testid="stSidebarNav"], h1'


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(port: int) -> subprocess.Popen:
    env = {**os.environ, "MIMMIA_EXPERIMENT": "", "MIMMIA_CACHE": tempfile.mkdtemp()}
    cmd = [sys.executable, "-m", "streamlit", "run", str(REPO / "app.py"), "--server.headless", "true",
           "--server.port", str(port), "--browser.gatherUsageStats", "false"]
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://localhost:{port}/_stcore/health", timeout=2):
                return proc
        except OSError:
            time.sleep(0.3)
    proc.kill()
    raise SystemExit("streamlit did not start within 120 s")


def one_run(browser) -> tuple[float, float]:
    port = free_port()
    proc = start_server(port)
    try:
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        start = time.perf_counter()
        page.goto(f"http://localhost:{port}/")
        page.wait_for_selector(FIRST_TEXT, timeout=120_000)
        first = time.perf_counter() - start
        page.wait_for_selector('[data-testid="stMetricValue"]', timeout=300_000)
        headline = time.perf_counter() - start
        page.close()
        return first, headline
    finally:
        proc.terminate()
        proc.wait(timeout=20)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args(argv)
    from playwright.sync_api import sync_playwright
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox", "--disable-gpu"])
        runs = [one_run(browser) for _ in range(args.repeats)]
        browser.close()
    first, headline = statistics.median(r[0] for r in runs), statistics.median(r[1] for r in runs)
    print(f"{'row':<34}{'seconds (median of ' + str(len(runs)) + ')':>26}{'x headline':>12}")
    print(f"{'first text drawn (spinner)':<34}{first:>26.2f}{first / headline:>12.2f}")
    print(f"{'Overview headline numbers':<34}{headline:>26.2f}{1.0:>12.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
