"""The dashboard in a real browser: `streamlit run app.py` driven by Debian's chromium through playwright.

Opens every page, moves sliders with the keyboard and checks that the numbers
shown change, uploads a non-image, and saves a screenshot of every page (to a
temporary folder, or to $MIMMIA_SCREENSHOTS). Drives the bundled demo (assets/demo), what a class
sees, whose scores the bundle holds at every slider position; MIMMIA_BROWSER_DEMO=0 drives the tiny
test bundle instead (16 px, 16 patches: neighbouring mask ratios can keep the same number of patches).
Skips when chromium or playwright is missing (apt-get install chromium).
"""
import os
import re
import shutil
import time
import urllib.parse
from pathlib import Path

import pytest


REPO = Path(__file__).resolve().parent.parent
CHROMIUM = os.environ.get("MIMMIA_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--no-first-run", "--disable-dev-shm-usage"]
PAGES = {"overview": "", "reconstruction": "reconstruction", "distances": "distances", "roc": "roc",
         "mask_ratio": "mask_ratio", "exposed": "exposed", "models": "models"}
VIEWPORT = {"width": 1400, "height": 1000}
WAIT_S = 240  # first visits score every model on a shared 2-core machine


def _playwright():
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("the playwright Python package is not installed")
    if not Path(CHROMIUM).exists():
        pytest.skip(f"chromium not found at {CHROMIUM} (Debian: apt-get install chromium)")
    return sync_playwright


@pytest.fixture(scope="module")
def server(tmp_path_factory, streamlit_server, request):
    sync_playwright = _playwright()
    demo = os.environ.get("MIMMIA_BROWSER_DEMO", "1") != "0"
    if demo and not (REPO / "assets" / "demo" / "manifest.json").exists():
        pytest.skip("assets/demo is missing (MIMMIA_BROWSER_DEMO=0 drives the tiny bundle)")
    tmp = tmp_path_factory.mktemp("browser")
    env = {"MIMMIA_CACHE": str(tmp / "cache"), "OMP_NUM_THREADS": "1",
           "MIMMIA_SERVER_LOG": str(tmp / "streamlit.log"), "MIMMIA_AUTO_SCORE_SECONDS": "1e9"}
    if not demo:
        env["MIMMIA_EXPERIMENT"] = str(request.getfixturevalue("tiny_bundle"))
    else:
        env["MIMMIA_EXPERIMENT"] = ""
    with streamlit_server(env) as url:
        yield url, sync_playwright


@pytest.fixture(scope="module")
def shots(tmp_path_factory):
    out = os.environ.get("MIMMIA_SCREENSHOTS")
    path = Path(out) if out else tmp_path_factory.mktemp("screenshots")
    path.mkdir(parents=True, exist_ok=True)
    return path


def _settle(page, timeout_s: float = WAIT_S):
    """Wait until streamlit has finished running the script, and stays finished for a moment."""
    deadline = time.monotonic() + timeout_s
    page.wait_for_selector('[data-testid="stSidebarNav"]', timeout=timeout_s * 1000)
    app = page.locator('[data-testid="stApp"]')
    quiet_since = None
    while time.monotonic() < deadline:
        if app.get_attribute("data-test-script-state") != "notRunning":
            quiet_since = None
        elif quiet_since is None:
            quiet_since = time.monotonic()
        elif time.monotonic() - quiet_since > 1.0:
            return
        page.wait_for_timeout(200)
    raise AssertionError("the app kept running past the time limit")


def _metric(page, label: str) -> str:
    """The value of the first st.metric whose label starts with `label`."""
    metric = page.locator('[data-testid="stMetric"]').filter(
        has=page.locator('[data-testid="stMetricLabel"]', has_text=re.compile("^" + re.escape(label)))).first
    return metric.locator('[data-testid="stMetricValue"]').inner_text().strip()


def _wait_change(page, label: str, before: str, timeout_s: float = WAIT_S) -> str:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        _settle(page, timeout_s)
        now = _metric(page, label)
        if now != before:
            return now
        page.wait_for_timeout(300)
    raise AssertionError(f"metric {label!r} stayed at {before!r}")


def _slider(page, label: str):
    """The range input of the slider whose label contains `label` (it takes the arrow keys)."""
    return page.locator('[data-testid="stSlider"]').filter(has_text=label).first.locator('input[type="range"]')


def _screenshot(page, path: Path):
    """The whole page: streamlit scrolls inside its main block, so grow the viewport to fit it first."""
    height = page.evaluate('document.querySelector(\'[data-testid="stMain"]\').scrollHeight')
    page.set_viewport_size({"width": VIEWPORT["width"], "height": min(max(height, VIEWPORT["height"]), 8000)})
    page.wait_for_timeout(800)
    page.screenshot(path=str(path), full_page=True)
    page.set_viewport_size(VIEWPORT)


def _no_exception(page, name: str):
    assert page.locator('[data-testid="stException"]').count() == 0, \
        f"{name}: the page shows an exception: {page.locator('[data-testid=stException]').first.inner_text()}"


def test_every_page_in_a_browser(server, shots):
    url, sync_playwright = server
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        try:
            page = browser.new_page(viewport=VIEWPORT)
            local = urllib.parse.urlsplit(url).netloc
            external = []  # the app makes no external request (no CDN, no favicon from the internet)
            page.on("request", lambda r: None if urllib.parse.urlsplit(r.url).netloc in (local, "")
                    else external.append(r.url))
            for name, path in PAGES.items():
                page.goto(f"{url}/{path}")
                _settle(page)
                _no_exception(page, name)
                if name == "overview":
                    assert page.locator('[data-testid="stGraphVizChart"] svg').count() == 1, "pipeline not drawn"
                if name == "mask_ratio":
                    assert page.get_by_text("AUC at mask ratio 0.75").count() == 1
                _screenshot(page, shots / f"{name}.png")

            # the sidebar's mask ratio, moved across five grid positions, changes the Distances page's numbers
            page.goto(f"{url}/distances")
            _settle(page)
            seen = [_metric(page, "median, members")]
            thumb = _slider(page, "Mask ratio at attack time")
            for ratio in (0.7, 0.65, 0.6, 0.55, 0.5):
                thumb.focus()
                thumb.press("ArrowLeft")
                seen.append(_wait_change(page, "median, members", seen[-1]))
                assert float(thumb.input_value()) == pytest.approx(ratio)
                _no_exception(page, f"distances at mask ratio {ratio}")
                _screenshot(page, shots / f"distances_mask_ratio_{ratio}.png")
            assert len(set(seen)) == len(seen), seen

            # the threshold slider moves the operating point on the ROC page (a fragment rerun)
            page.goto(f"{url}/roc")
            _settle(page)
            before = _metric(page, "FPR")
            thumb = _slider(page, "Threshold")
            thumb.focus()
            thumb.press("Home")  # the smallest distance: no non-member is called a member
            after = _wait_change(page, "FPR", before)
            assert float(after) <= float(before)  # a higher threshold never adds false positives
            _no_exception(page, "roc after the slider")
            _screenshot(page, shots / "roc_threshold_moved.png")

            # a non-image upload is refused with a message, not a traceback
            page.goto(f"{url}/reconstruction")
            _settle(page)
            page.get_by_text("my own image").click()
            _settle(page)
            page.locator('[data-testid="stFileUploaderDropzoneInput"]').set_input_files(
                files=[{"name": "notes.png", "mimeType": "image/png", "buffer": b"this is not an image"}])
            page.wait_for_selector('[data-testid="stAlertContentError"]', timeout=WAIT_S * 1000)
            _settle(page)
            assert "not an image" in page.locator('[data-testid="stAlertContentError"]').first.inner_text()
            _no_exception(page, "reconstruction after a bad upload")
            _screenshot(page, shots / "reconstruction_bad_upload.png")
            assert not external, f"the app requested other hosts: {sorted(set(external))[:5]}"
        finally:
            browser.close()
