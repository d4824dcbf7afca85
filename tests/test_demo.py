"""The bundled demo: complete, small, consistent, and leaking as the README says."""
import hashlib
import re
from pathlib import Path

import numpy as np
import pytest

from mimmia_core.attacks import run_attack
from mimmia_core.cache import ScoreCache
from mimmia_core.checkpoint import load_model
from mimmia_core.data import load_demo, load_fashion_mnist
from mimmia_core.score_pack import PACK_RTOL
from mimmia_core.demo import DEMO_DIR, GRID_RATIOS, DemoRecipe, build_demo
from mimmia_core.manifest import SplitManifest
from mimmia_core.experiment import demo_models, load_demo_experiment
from mimmia_core.scorer import Scorer
from mimmia_core.scores import ScoreSpec

README = Path(__file__).resolve().parent.parent / "README.md"


def test_bundle_is_complete_and_small():
    for name in ("fashion_mnist_subset.npz", "manifest.json", "LICENSE-fashion-mnist.txt", "recipe.json", "cache"):
        assert (DEMO_DIR / name).exists(), name
    assets = DEMO_DIR.parent
    total = sum(f.stat().st_size for f in assets.rglob("*") if f.is_file())
    assert total < 25 * 2**20, f"assets/ holds {total / 2**20:.1f} MB"


def test_manifest_matches_the_bundled_data():
    manifest, data = SplitManifest.load(DEMO_DIR / "manifest.json"), load_demo()
    manifest.check_source(data)
    assert len(manifest.target_members) >= 100 and len(manifest.target_nonmembers) >= 100
    assert len(manifest.reference_members) >= 4
    assert data.images([0]).dtype.name == "uint8" and data.image_shape == (28, 28, 1)


def test_models_load_with_decoders_and_provenance():
    models = demo_models()
    assert {"target", "shadow"} <= set(models) and sum(n.startswith("ref-") for n in models) >= 4
    manifest = SplitManifest.load(DEMO_DIR / "manifest.json")
    for name, path in models.items():
        loaded = load_model(path)
        assert loaded.has_decoder and loaded.source_format == "mimmia"
        role = loaded.provenance["role"]
        assert role == {"target": "target_members", "shadow": "shadow_members"}.get(name, f"reference_{name[4:]}")
        assert loaded.provenance["data"]["num_images"] == len(manifest.ids(role))


NUMBER = r"([0-9.]+)"


def _readme_results() -> dict:
    """Every row of the demo results table between the README's demo-results markers."""
    text = README.read_text()
    table = text[text.index("<!-- demo-results -->"):text.index("<!-- /demo-results -->")]
    row = (rf"^\|\s*`(\w+)`\s*\|\s*{NUMBER}\s*\|\s*{NUMBER}\s*\|\s*{NUMBER}\s*\[{NUMBER}, {NUMBER}\]\s*\|"
           rf"\s*{NUMBER}\s*\|")
    return {m.group(1): dict(zip(("auc", "tpr10", "tpr1", "lo1", "hi1", "balanced"), map(float, m.groups()[1:])))
            for m in re.finditer(row, table, re.M)}


ATTACKS = ("paper", "calibrated", "lira", "encodermi", "unmasked")


@pytest.fixture(scope="module")
def demo_results():
    exp = load_demo_experiment(device="cpu")
    scorer = Scorer(device="cpu", cache=None)
    spec = ScoreSpec(mask_ratio=0.75, num_masks=8, seed=0)
    return {name: run_attack(name, exp, spec, scorer) for name in ATTACKS}


def test_attack_reproduces_every_readme_row(demo_results):
    stated = _readme_results()
    assert set(stated) == set(ATTACKS), "README's demo results table lacks a row"
    for name, result in demo_results.items():
        m, want = result.metrics, stated[name]
        got = dict(auc=m["auc"], tpr10=m["tpr_at"][0.1]["tpr"], tpr1=m["tpr_at"][0.01]["tpr"],
                   lo1=m["tpr_at"][0.01]["lo"], hi1=m["tpr_at"][0.01]["hi"],
                   balanced=m["confusion"]["balanced_accuracy"])
        for column, value in want.items():
            assert got[column] == pytest.approx(value, abs=0.0015), (name, column)


def test_demo_leaks_visibly(demo_results):
    paper, calibrated = demo_results["paper"].metrics, demo_results["calibrated"].metrics
    assert paper["auc"] >= 0.75
    assert calibrated["tpr_at"][0.01]["tpr"] >= 3 * paper["tpr_at"][0.01]["tpr"]


def _bundle_fingerprint() -> dict:
    """sha256 of every file in the bundle, by relative path."""
    return {str(f.relative_to(DEMO_DIR)): hashlib.sha256(f.read_bytes()).hexdigest()
            for f in sorted(DEMO_DIR.rglob("*")) if f.is_file()}


def test_bundled_scores_match_fresh_ones(demo_results, tmp_path):
    before = _bundle_fingerprint()
    exp = load_demo_experiment(device="cpu")
    scorer = Scorer(device="cpu", cache=ScoreCache(tmp_path))  # empty own cache; the bundle's is read-only
    for ratio in GRID_RATIOS:
        spec = ScoreSpec(mask_ratio=ratio, num_masks=8, seed=0)
        for model, sources in ((exp.target, "target"), (exp.shadow, "shadow"),
                               *((ref, "target shadow") for ref in exp.references)):
            for role, source in exp.sources().items():
                if role.split("_")[0] in sources:
                    assert scorer.is_cached(model, source, spec), (ratio, model.path, role)
    bundled = run_attack("paper", exp, ScoreSpec(mask_ratio=0.75, num_masks=8, seed=0), scorer)
    # the pack stores log-quantised scores (score_pack.py): each within PACK_RTOL of the exact one
    np.testing.assert_allclose(bundled.member_scores, demo_results["paper"].member_scores, rtol=PACK_RTOL)
    assert not any(tmp_path.iterdir()), "a bundled hit must not be copied into the user's cache"
    assert _bundle_fingerprint() == before, "reading the bundle changed it"


def test_build_demo_rebuilds_a_bundle(tmp_path):
    """The rebuild command's code path, on a tiny recipe (the real one trains for an hour on 2 cores)."""
    try:
        load_fashion_mnist()
    except FileNotFoundError as e:
        pytest.skip(f"the rebuild needs the Fashion-MNIST files: {e}")
    recipe = DemoRecipe(n_members=8, n_nonmembers=8, n_references=2, epochs=2, batch_size=8, warmup_epochs=1)
    out = build_demo(tmp_path / "demo", recipe, device="cpu", progress=False, precompute_ratios=(0.75,))
    exp = load_demo_experiment(device="cpu", demo_dir=out)
    assert len(exp.members) == 8 and len(exp.nonmembers) == 8 and len(exp.references) == 2
    assert exp.target.provenance["epochs"] == 2 and exp.target.provenance["recipe"]["n_members"] == 8
    scorer = Scorer(device="cpu", cache=ScoreCache(tmp_path / "own", read_only_roots=(out / "cache",)))
    assert scorer.is_cached(exp.target, exp.members, ScoreSpec(mask_ratio=0.75, num_masks=8, seed=0))
    assert len(load_demo().ids) > 0  # the real bundle is untouched
