"""The live demo answers at once: every slider position of the bundled grid renders from the cache (a
scoring counter stays at zero), an off-grid change asks before it scores, and scoring jobs run in
stages with one progress count, and can be cancelled without caching anything partial."""
import json
import sys
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from mimmia_core.cache import ScoreCache
from mimmia_core.demo import GRID_ATTACKS, GRID_MASKS, GRID_RATIOS, PACK_CHECK
from mimmia_core.distances import DISTANCES
from mimmia_core.experiment import DEMO_DIR, load_demo_experiment
from mimmia_core.pack_check import METRIC_ATOL, check_pack, grid_settings
from mimmia_core.plan import Missing, missing_scores
from mimmia_core.scorer import Scorer
from mimmia_core.scores import ScoreSpec
from mimmia_core.scoring_job import ScoringJob, stages_of

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))


@pytest.fixture
def passes(monkeypatch):
    """The number of scoring passes any Scorer has run since the test began."""
    count = [0]
    original = Scorer._score_pass

    def counted(self, *args, **kwargs):
        count[0] += 1
        return original(self, *args, **kwargs)
    monkeypatch.setattr(Scorer, "_score_pass", counted)
    return count


@pytest.fixture
def tiny_exp(tiny_bundle):
    return load_demo_experiment(device="cpu", demo_dir=tiny_bundle)


def test_a_job_scores_its_stages_once_and_counts_image_masks(tiny_exp, tmp_path):
    scorer = Scorer("cpu", cache=ScoreCache(tmp_path, read_only_roots=()))
    spec = ScoreSpec(0.6, 2, 0)
    paper = missing_scores(tiny_exp, scorer, [0.6], ["paper"], spec)
    calibrated = missing_scores(tiny_exp, scorer, [0.6], ["calibrated"], spec)
    stages = stages_of([("paper", paper), ("calibrated", calibrated)])
    assert len(stages[0][1]) == 4 and len(stages[1][1]) == len(calibrated) - 4  # target and shadow: once
    job = ScoringJob(scorer, stages)
    assert job.total == calibrated.image_masks
    seen = []
    done = job.run(on_progress=seen.append)
    assert done.finished and done.done == done.total and done.stages_done == 2 and not done.running
    assert [p.done for p in seen] == sorted(p.done for p in seen) and seen[-1].total == job.total
    assert not missing_scores(tiny_exp, scorer, [0.6], ["calibrated"], spec)


def test_a_cancelled_job_caches_nothing_partial(tiny_exp, tmp_path):
    scorer = Scorer("cpu", cache=ScoreCache(tmp_path, read_only_roots=()), batch_size=2)
    spec = ScoreSpec(0.45, 2, 0)
    missing = missing_scores(tiny_exp, scorer, [0.45], ["paper"], spec)
    job = ScoringJob(scorer, [("paper", missing)])
    done = job.run(on_progress=lambda p: job.cancel())  # cancelled after the first batch
    assert done.cancelled and not done.finished and 0 < done.done < done.total
    assert not any(tmp_path.glob("*.npz"))
    assert missing_scores(tiny_exp, scorer, [0.45], ["paper"], spec).items == missing.items


def test_a_failed_job_reports_its_reason(tiny_exp, tmp_path, make_source):
    scorer = Scorer("cpu", cache=ScoreCache(tmp_path, read_only_roots=()))
    wrong = make_source(4, channels=3)  # RGB images for a grey model
    done = ScoringJob(scorer, [("bad", Missing(((tiny_exp.target, wrong, ScoreSpec(0.5, 1, 0)),)))]).run()
    assert done.error and "channel" in done.error.lower() and not done.finished


def _app(**state) -> AppTest:
    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=300)
    for key, value in state.items():
        at.session_state[key] = value
    return at


def _headline(at: AppTest, attack: str = "paper") -> list:
    """The Overview's metrics of an attack, [] while they are not shown."""
    try:
        return list(at.get_by_key(f"headline_{attack}").metric)
    except KeyError:
        return []


def test_an_off_grid_change_asks_before_it_scores(tiny_bundle, monkeypatch, tmp_path, passes):
    monkeypatch.setenv("MIMMIA_EXPERIMENT", str(tiny_bundle))
    monkeypatch.setenv("MIMMIA_CACHE", str(tmp_path))
    monkeypatch.setenv("MIMMIA_AUTO_SCORE_SECONDS", "0")
    at = _app(num_masks=2, mask_seed=7).run()
    assert not at.exception
    offer = " ".join(m.value for m in at.markdown if "Scoring needed" in m.value)
    assert "image-masks not cached yet" in offer and "paper" in offer.lower()
    assert passes[0] == 0 and not _headline(at)
    at.button(key=next(b.key for b in at.button if b.label == "Start scoring")).click().run()
    for _ in range(600):  # until the whole job is done (the paper attack shows first)
        if _headline(at, "calibrated"):
            break
        at.run()
    assert passes[0] > 0 and _headline(at) and _headline(at, "calibrated")
    assert not at.exception and not at.error


@pytest.mark.parametrize("page", ["overview", "distances", "roc"])
def test_every_grid_position_renders_from_the_bundle(page, monkeypatch, tmp_path, passes):
    """Each bundled mask ratio at K = 8, each K up to 8 and each distance: no scoring pass at all."""
    monkeypatch.setenv("MIMMIA_EXPERIMENT", "")  # the bundled demo
    monkeypatch.setenv("MIMMIA_CACHE", str(tmp_path))
    monkeypatch.setenv("MIMMIA_AUTO_SCORE_SECONDS", "1e9")  # a miss would score (and count), not wait
    at = _app().run()
    if page != "overview":
        at.switch_page(f"app_pages/{page}.py").run()
    settings = ([("mask_ratio", r) for r in GRID_RATIOS] + [("num_masks", k) for k in range(1, GRID_MASKS + 1)]
                + [("distance", d) for d in DISTANCES] + [("aggregate", a) for a in ("min", "median")])
    for key, value in settings:
        at.session_state[key] = value
        at.run()
        assert not at.exception, (key, value, [e.value for e in at.exception])
        assert passes[0] == 0, f"{page}: {key}={value} was scored, not served from the bundle"
        assert not any("Scoring needed" in m.value for m in at.markdown), (key, value)


def test_the_bundled_scores_give_the_fresh_metrics_to_3_decimals(tmp_path):
    """The pack stores quantised scores; at the training mask ratio every grid attack, distance and aggregate,
    at K = 1 and 8, shows the metrics of fresh fp32 scores (pack_check; build-demo --scores-only checked the
    whole grid and recorded it beside the pack)."""
    exp = load_demo_experiment("cpu")
    bundled = Scorer("cpu", cache=ScoreCache(tmp_path / "own"))
    fresh = Scorer("cpu", cache=ScoreCache(tmp_path / "fresh", read_only_roots=()))
    settings = [s for s in grid_settings(GRID_ATTACKS, [0.75], GRID_MASKS) if s.num_masks in (1, GRID_MASKS)]
    check = check_pack(exp, fresh, bundled, settings)
    assert check.settings == len(settings) - 2 * 3  # RMIA refuses PSNR (K 1 and 8, three aggregates)
    assert not check.failures, check.summary()["failures"]
    own = tmp_path / "own"
    assert not own.exists() or not any(own.iterdir()), "the bundled scores were scored again"
    assert check.worst["auc"] > 0  # quantised: the AUCs do move, below 5e-4


def test_the_bundle_records_a_passing_check_of_the_whole_grid():
    record = json.loads((DEMO_DIR / "cache" / PACK_CHECK).read_text())
    assert record["settings"] == len(grid_settings(GRID_ATTACKS, GRID_RATIOS, GRID_MASKS)) - len(GRID_RATIOS) * GRID_MASKS * 3
    assert record["failures"] == [] and record["atol"] == METRIC_ATOL
    assert max(record["worst"].values()) < METRIC_ATOL
