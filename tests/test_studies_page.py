"""The Studies page in AppTest: it renders a study folder's results (a tiny study run here, and every
bundled study), and selecting a point shows that point's own numbers."""
import json
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from mimmia_core.assets import DEMO_DIR
from mimmia_core.study import curve_rows, list_studies, load_study, load_study_spec, run_study, tradeoff_rows

REPO = Path(__file__).resolve().parent.parent
TINY_MODEL = {"img_size": 16, "patch_size": 4, "embed_dim": 32, "depth": 1, "num_heads": 2, "decoder_embed_dim": 32,
              "decoder_depth": 1, "decoder_num_heads": 2}


@pytest.fixture(scope="module")
def studies(tmp_path_factory, tiny_bundle):
    """A folder with one tiny two-point study (epochs 1 and 3 of one run) on the tiny bundle's images."""
    root = tmp_path_factory.mktemp("studies")
    data = tiny_bundle / "fashion_mnist_subset.npz"
    spec = {"name": "tiny-epochs", "title": "Tiny epochs", "variable": "target.take_epoch", "variable_label": "epochs",
            "base": {"data.target": f"npz:{data}", "data.members": 6, "data.nonmembers": 8, "data.references": 2,
                     "target.config": TINY_MODEL, "target.epochs": 3, "target.save_epochs": [1],
                     "target.batch_size": 6, "target.warmup_epochs": 0, "attack.num_masks": 2},
            "points": [{"value": 1, "set": {"target.take_epoch": 1}}, {"value": 3, "set": {"target.take_epoch": 3}}]}
    (root / "tiny.json").write_text(json.dumps(spec))
    run_study(load_study_spec(str(root / "tiny.json")), root / "tiny-epochs", log=lambda line: None)
    return root


def page(folder, **state) -> AppTest:
    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=300)
    at.session_state["studies_folder"] = str(folder)
    for key, value in state.items():
        at.session_state[key] = value
    at.run()
    return at.switch_page("app_pages/studies.py").run()


def metric(at, label):
    return next(m.value for m in at.metric if m.label == label)


@pytest.fixture(autouse=True)
def app_env(tiny_bundle, monkeypatch, tmp_path_factory):
    monkeypatch.setenv("MIMMIA_EXPERIMENT", str(tiny_bundle))
    monkeypatch.setenv("MIMMIA_CACHE", str(tmp_path_factory.getbasetemp() / "score_cache"))


def test_selecting_a_point_shows_its_numbers(studies):
    doc = load_study(studies / "tiny-epochs")
    attack, ratio = doc["headline"]
    rows = curve_rows(doc["points"], attack, ratio)
    at = page(studies)
    assert not at.exception and not at.error, [e.value for e in at.exception]
    assert doc["finding"] in at.success[0].value
    seen = []
    for row in rows:
        at.selectbox(key="studies_point").set_value(row["label"]).run()
        assert not at.exception
        assert metric(at, "AUC") == f"{row['auc']:.3f}"
        assert metric(at, "TPR at 1% FPR") == "—"  # 8 non-members: 1% FPR is not measurable
        members = json.loads(at.get("plotly_chart")[-1].proto.spec)["data"][0]
        seen.append(members["x"])
        assert members["name"] == f"members (n={row['record']['results'][0]['n_members']})"
    assert seen[0] != seen[1]  # the histogram's bins are the point's own scores


def test_an_empty_folder_says_how_to_fill_it(tmp_path):
    at = page(tmp_path)
    assert not at.exception and "mimmia study" in at.info[0].value


@pytest.mark.skipif(not list_studies(DEMO_DIR / "studies"), reason="the bundle ships no study results")
def test_every_bundled_study_renders():
    for name in list_studies(DEMO_DIR / "studies"):
        at = page(DEMO_DIR / "studies", studies_name=name)
        assert not at.exception and not at.error, (name, [e.value for e in at.exception])
        assert load_study(DEMO_DIR / "studies" / name)["finding"] in at.success[0].value


@pytest.fixture(scope="module")
def defenses(tmp_path_factory, tiny_bundle):
    """A tiny defenses study: no defense, weight decay, and DP-SGD, with utility measured."""
    root = tmp_path_factory.mktemp("defenses")
    spec = {"name": "tiny-defenses", "variable": "defense", "scale": "category",
            "base": {"data.target": f"npz:{tiny_bundle / 'fashion_mnist_subset.npz'}", "data.members": 6,
                     "data.nonmembers": 8, "data.references": 2, "target.config": TINY_MODEL, "target.epochs": 2,
                     "target.batch_size": 6, "target.warmup_epochs": 0, "attack.num_masks": 2, "utility": True},
            "points": [{"value": "none"}, {"value": "wd", "set": {"target.weight_decay": 0.3}},
                       {"value": "dp", "set": {"target.dp": {"noise_multiplier": 1.0}}}]}
    (root / "d.json").write_text(json.dumps(spec))
    run_study(load_study_spec(str(root / "d.json")), root / "defenses", log=lambda line: None)
    return root / "defenses"


def test_the_defenses_page_shows_each_points_numbers(defenses):
    doc = load_study(defenses)
    rows = tradeoff_rows(doc["points"], doc["headline"][0], doc["headline"][1])
    at = page(defenses.parent, defenses_folder=str(defenses))
    at = at.switch_page("app_pages/defenses.py").run()
    assert not at.exception and not at.error, [e.value for e in at.exception]
    for row in rows:
        at.selectbox(key="defenses_point").set_value(row["label"]).run()
        assert metric(at, "AUC") == f"{row['auc']:.3f}"
        assert metric(at, "Linear-probe accuracy") == f"{row['probe_accuracy']:.1%}"
        assert metric(at, "Held-out loss") == f"{row['heldout_loss']:.4f}"
    assert [r["record"]["settings"]["target"]["dp"] for r in rows][2] == {"noise_multiplier": 1.0}


def test_a_study_curve_without_the_metric_draws_no_interval():
    """Online attacks learn no threshold: a balanced-accuracy curve of None values draws, with no error bars."""
    from app_pages.charts import study_figure
    rows = [dict(label="a", value=1, balanced_accuracy=None), dict(label="b", value=2, balanced_accuracy=None)]
    fig = study_figure(rows, "balanced_accuracy", "balanced accuracy", "x", "linear")
    assert fig.data[0].error_y.array is None and list(fig.data[0].y) == [None, None]
    rows = [dict(label="a", value=1, auc=0.7, auc_lo=0.6, auc_hi=0.8)]
    assert list(study_figure(rows, "auc", "AUC", "x", "linear").data[0].error_y.array) == [pytest.approx(0.1)]
