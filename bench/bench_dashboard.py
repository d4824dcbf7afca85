"""How fast the dashboard answers on the bundled demo: slider moves the bundle holds, and an off-grid change.

    python -m bench.bench_dashboard [--page overview] [--seed 1]

Drives the app headless with streamlit's AppTest (one script run = what a browser waits for after a
slider moves, without the network and drawing). Rows:
  first run, models the first script run (torch already imported): loading the six models, the first page;
  grid              a run after each of: every bundled mask ratio, K = 1..8, each distance, each
                    aggregate (median and max over those runs): served by the bundled pack;
  <page>: K move    each other page: the slowest of three K moves, after a first visit (the Mask ratio
                    page sweeps 6 ratios and 4 attacks at each);
  off-grid: first   a new mask seed (nothing cached): from "Start scoring" until the page shows its
                    first attack (the paper attack needs only the target and the shadow);
  off-grid: all     ... until every attack of the page is shown;
  whole demo        every model scored at another new seed (every attack of the grid, as the bundle).
Peer: the off-grid rows against the grid's median, measured in the same run (the ratio column).
An empty $MIMMIA_CACHE is used, so nothing from an earlier run is reused.
"""
import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from streamlit.testing.v1 import AppTest  # noqa: E402

from mimmia_core.attacks import run_attack  # noqa: E402
from mimmia_core.cache import ScoreCache  # noqa: E402
from mimmia_core.demo import GRID_MASKS, GRID_RATIOS  # noqa: E402
from mimmia_core.distances import DISTANCES  # noqa: E402
from mimmia_core.experiment import load_demo_experiment  # noqa: E402
from mimmia_core.scorer import Scorer  # noqa: E402
from mimmia_core.scores import ScoreSpec  # noqa: E402


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def grid_runs(at: AppTest) -> list:
    settings = ([("mask_ratio", r) for r in GRID_RATIOS] + [("num_masks", k) for k in range(1, GRID_MASKS + 1)]
                + [("distance", d) for d in DISTANCES] + [("aggregate", a) for a in ("min", "median", "mean")])
    times = []
    for key, value in settings:
        at.session_state[key] = value
        times.append(timed(at.run))
        if any("Scoring needed" in m.value for m in at.markdown):
            raise SystemExit(f"{key}={value} is not in the bundle: rebuild it (build-demo --scores-only)")
    return times


PAGES = ("reconstruction", "distances", "roc", "mask_ratio", "exposed")


def page_runs(at: AppTest) -> dict:
    """Per page: the slowest of three K moves (each bundled), after a first visit."""
    slowest = {}
    for page in PAGES:
        at.switch_page(f"app_pages/{page}.py").run()
        times = []
        for k in (4, 2, 7):
            at.session_state["num_masks"] = k
            times.append(timed(at.run))
        slowest[page] = max(times)
    at.switch_page("app_pages/overview.py")
    at.session_state["num_masks"] = GRID_MASKS
    return slowest


def shown(at: AppTest) -> int:
    """How many attacks the Overview shows (its headline blocks)."""
    count = 0
    for name in ("paper", "calibrated"):
        try:
            count += bool(list(at.get_by_key(f"headline_{name}").metric))
        except KeyError:
            pass
    return count


def off_grid(at: AppTest, seed: int) -> tuple[float, float]:
    at.session_state["mask_ratio"], at.session_state["num_masks"] = 0.75, 8
    at.session_state["distance"], at.session_state["aggregate"] = "masked_mse", "mean"
    at.session_state["mask_seed"] = seed
    at.run()
    start = time.perf_counter()
    at.button(key=next(b.key for b in at.button if b.label == "Start scoring")).click().run()
    first = None
    while shown(at) < 2:
        if first is None and shown(at) >= 1:
            first = time.perf_counter() - start
        time.sleep(0.2)
        at.run()
    total = time.perf_counter() - start
    return (total if first is None else first), total


def whole_demo(seed: int) -> float:
    exp = load_demo_experiment("cpu")
    scorer = Scorer("cpu", cache=ScoreCache(tempfile.mkdtemp(), read_only_roots=()))
    return timed(lambda: [run_attack(a, exp, ScoreSpec(0.75, GRID_MASKS, seed), scorer)
                          for a in ("paper", "calibrated", "lira", "rmia")])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seed", type=int, default=1, help="the off-grid mask seed (the bundle holds seed 0)")
    args = ap.parse_args(argv)
    os.environ.update(MIMMIA_EXPERIMENT="", MIMMIA_CACHE=tempfile.mkdtemp(), MIMMIA_AUTO_SCORE_SECONDS="0")
    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=600)
    cold = timed(at.run)
    grid = grid_runs(at)
    median = statistics.median(grid)
    pages = page_runs(at)
    at.run()
    first, total = off_grid(at, args.seed)
    whole = whole_demo(args.seed + 1)
    print(f"threads: {os.environ.get('OMP_NUM_THREADS', 'default')}, cpus: {os.cpu_count()}")
    print(f"{'row':<34}{'seconds':>10}{'x grid median':>16}")
    for name, s in [("first run, models", cold), ("grid: median", median), ("grid: max", max(grid)),
                    *((f"{page}: K move, max", t) for page, t in pages.items()), ("off-grid: first", first), ("off-grid: all", total), ("whole demo", whole)]:
        print(f"{name:<34}{s:>10.2f}{s / median:>16.1f}")
    print(f"grid runs: {len(grid)} (every bundled mask ratio, K 1..{GRID_MASKS}, each distance and aggregate)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
