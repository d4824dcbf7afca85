"""The dashboard, driven headless by streamlit's AppTest.

Every page loads without an exception; the numbers shown match what
mimmia_core computes for the same settings; sliders change them; bad uploads,
paths and checkpoints give an st.error and never a traceback. Runs on a tiny
bundle built in tmp (pointed to by MIMMIA_EXPERIMENT); the every-page test also
runs on the bundled demo when assets/demo exists.
"""
import io
import json
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from streamlit.testing.v1 import AppTest

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # app_pages, as `streamlit run app.py` finds it (next to app.py)
    sys.path.insert(0, str(REPO))
from app_pages import views  # noqa: E402
from mimmia_core import report
from mimmia_core.attacks import make_attack, run_attack, sweep
from mimmia_core.data import ArraySource, load_image_bytes
from mimmia_core.experiment import load_demo_experiment
from mimmia_core.image_score import score_image
from mimmia_core.metrics import operating_point
from mimmia_core.model import build_model
from mimmia_core.scorer import Scorer
from mimmia_core.scores import ScoreSpec

K = 2
TIMEOUT = 300  # seconds per script run: first visits score every model on a shared CPU
PAGES = ["reconstruction", "distances", "roc", "mask_ratio", "exposed", "models"]


@pytest.fixture(scope="module")
def core(tiny_bundle):
    """The same experiment, loaded by the core directly: the expected numbers come from here."""
    return load_demo_experiment(device="cpu", demo_dir=tiny_bundle), Scorer(device="cpu")


@pytest.fixture(autouse=True)
def app_env(tiny_bundle, monkeypatch, tmp_path_factory):
    monkeypatch.setenv("MIMMIA_EXPERIMENT", str(tiny_bundle))
    monkeypatch.setenv("MIMMIA_CACHE", str(tmp_path_factory.getbasetemp() / "score_cache"))
    monkeypatch.setenv("MIMMIA_AUTO_SCORE_SECONDS", "1e9")  # score at once; tests/test_live_demo.py asks first


def start(**state) -> AppTest:
    """The app on its Overview page, K masks per image, extra session state set before the first run."""
    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=TIMEOUT)
    at.session_state["num_masks"] = K
    for key, value in state.items():
        at.session_state[key] = value
    return at.run()


def goto(at: AppTest, page: str) -> AppTest:
    return at.switch_page(f"app_pages/{page}.py").run()


def assert_clean(at: AppTest, where: str):
    assert not at.exception, f"{where}: {[e.value for e in at.exception]}"
    assert not at.error, f"{where}: {[e.value for e in at.error]}"


def metric(at_or_block, label: str, nth: int = 0) -> str:
    found = [m.value for m in at_or_block.metric if m.label == label]
    assert len(found) > nth, f"no metric {label!r}; have {[m.label for m in at_or_block.metric]}"
    return found[nth]


def spec(ratio=0.75) -> ScoreSpec:
    return ScoreSpec(mask_ratio=ratio, num_masks=K, seed=0, distance="masked_mse")


def png(width: int, height: int, mode: str = "L", seed: int = 0) -> bytes:
    rng = np.random.default_rng(seed)
    shape = (height, width) if mode == "L" else (height, width, 3)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode).save(buf, format="PNG")
    return buf.getvalue()


# --------------------------------------------------------------------------
# Every page
# --------------------------------------------------------------------------
@pytest.mark.parametrize("which", ["tiny", "demo"])
def test_every_page_loads(which, monkeypatch):
    if which == "demo":
        if not (REPO / "assets" / "demo" / "manifest.json").exists():
            pytest.skip("assets/demo is not built")
        monkeypatch.delenv("MIMMIA_EXPERIMENT")
    at = start(num_masks=1, sweep_grid=[0.5, 0.75])
    assert_clean(at, "overview")
    assert at.title[0].value.startswith("Membership inference")
    assert [m.label for m in at.get_by_key("headline_paper").metric][:2] == ["AUC", "TPR at 1% FPR"]
    for page in PAGES:
        goto(at, page)
        assert_clean(at, page)
        assert at.title, f"{page} shows no title"


def test_attack_settings_are_greyed_out_where_they_do_not_apply():
    at = start(mask_ratio=0.5)
    assert not at.sidebar.slider[0].disabled
    goto(at, "models")
    assert at.sidebar.slider[0].disabled and at.sidebar.selectbox[0].disabled
    assert any("Not used on this page" in c.value for c in at.sidebar.caption)
    goto(at, "distances")
    assert not at.sidebar.slider[0].disabled and at.sidebar.slider[0].value == 0.5  # kept across the pages


def test_overview_headline_matches_core(core):
    exp, scorer = core
    at = start()
    for attack in ("paper", "calibrated"):
        r = run_attack(attack, exp, spec(), scorer)
        block = at.get_by_key(f"headline_{attack}")
        assert metric(block, "AUC") == f"{r.metrics['auc']:.3f}"
        for fpr, name in ((0.01, "TPR at 1% FPR"), (0.001, "TPR at 0.1% FPR")):
            t = r.metrics["tpr_at"][fpr]  # no number where none is measured
            assert metric(block, name) == (f"{t['tpr']:.3f}" if t["measurable"] else "—")
        assert metric(block, "Balanced accuracy") == f"{r.metrics['confusion']['balanced_accuracy']:.3f}"
        c = r.metrics["confusion"]
        assert f"calling every image a non-member already scores {c['trivial_accuracy']:.3f}" in \
            " ".join(x.value for x in block.caption)


# --------------------------------------------------------------------------
# Sliders
# --------------------------------------------------------------------------
def test_mask_ratio_slider_changes_distances(core):
    exp, scorer = core
    at = goto(start(), "distances")
    before = metric(at, "median, members")
    at.slider(key="mask_ratio").set_value(0.5).run()
    assert_clean(at, "distances at mask ratio 0.5")
    after = metric(at, "median, members")
    assert after != before
    for ratio, shown in ((0.75, before), (0.5, after)):
        r = run_attack("paper", exp, spec(ratio), scorer)
        assert shown == f"{np.median(-r.member_scores):.4g}"  # distances: the paper's scores negated
    r = run_attack("calibrated", exp, spec(0.5), scorer)
    assert metric(at, "median, non-members", 1) == f"{np.median(r.nonmember_scores):.4g}"


def test_threshold_slider_moves_the_operating_point(core):
    """The ROC page's slider is in distance units (the paper's scores negated), lower = member."""
    exp, scorer = core
    at = goto(start(), "roc")
    r = run_attack("paper", exp, spec(), scorer)
    m, n = -r.member_scores, -r.nonmember_scores
    slider = at.slider(key="roc_threshold_paper")
    lo, hi, step = views.slider_range(m, n, [-r.threshold])
    assert (slider.min, slider.max, slider.step) == pytest.approx((lo, hi, step))
    assert slider.value == pytest.approx(-r.threshold)  # starts at the shadow's threshold
    c = operating_point(m, n, -r.threshold, lower_is_member=True)
    assert metric(at, "Accuracy") == f"{c['accuracy']:.3f}" == f"{r.metrics['confusion']['accuracy']:.3f}"
    shown = []
    for q in (0.2, 0.8):
        t = lo + round((np.quantile(np.r_[m, n], q) - lo) / step) * step
        at.slider(key="roc_threshold_paper").set_value(t).run()
        assert_clean(at, f"roc at threshold {t}")
        c = operating_point(m, n, t, lower_is_member=True)
        assert metric(at, "Accuracy") == f"{c['accuracy']:.3f}"
        assert metric(at, "Precision") == f"{c['precision']:.3f}"
        assert metric(at, "Recall (TPR)") == f"{c['tpr']:.3f}"
        assert metric(at, "FPR") == f"{c['fpr']:.4f}"
        table = at.table[0].value
        assert table.loc["member", "predicted member"] == c["tp"]
        assert table.loc["non-member", "predicted member"] == c["fp"]
        shown.append(metric(at, "FPR"))
    assert shown[0] != shown[1]


def test_mask_ratio_page_sweep_matches_core(core, monkeypatch):
    exp, scorer = core
    monkeypatch.setenv("MIMMIA_AUTO_SCORE_SECONDS", "0")  # every uncached score is offered first
    at = goto(start(sweep_grid=[0.35, 0.75]), "mask_ratio")  # 0.35: scored by no other test
    assert_clean(at, "mask ratio, before the sweep")
    offer = " ".join(m.value for m in at.markdown)
    assert "Scoring needed for the sweep" in offer and "image-masks" in offer and not at.metric
    at.button(key=next(b.key for b in at.button if b.label == "Start scoring")).click().run()
    for _ in range(600):  # the job runs in the background; each run shows what is done
        if any(m.value.startswith("**AUC at mask ratio 0.75") for m in at.markdown) and not at.get("progress"):
            break
        at.run()
    assert_clean(at, "mask ratio")
    rows = sweep(exp, [0.35, 0.75], ["paper", "calibrated", "lira"], spec(), scorer)
    auc = {(row["mask_ratio"], row["attack"]): row["auc"] for row in rows}
    label = {a: make_attack(a).label for a in ("paper", "calibrated")}
    assert metric(at, label["paper"]) == f"{auc[(0.75, 'paper')]:.3f}"
    at.select_slider(key="sweep_ratio").set_value(0.35).run()
    assert_clean(at, "mask ratio, highlight 0.35")
    assert "**AUC at mask ratio 0.35**" in [m.value for m in at.markdown]
    assert metric(at, label["calibrated"]) == f"{auc[(0.35, 'calibrated')]:.3f}"
    best = next(row for row in rows if row["attack"] == "paper" and row["best"])
    assert f"at **{best['mask_ratio']:g}**" in " ".join(m.value for m in at.markdown if "Best ratio" in m.value)

    again = goto(start(sweep_grid=[0.35, 0.75]), "mask_ratio")  # every score now cached: no offer
    assert_clean(again, "mask ratio, cached")
    assert not any("Scoring needed" in m.value for m in again.markdown)
    assert metric(again, label["paper"]) == f"{auc[(0.75, 'paper')]:.3f}"


# --------------------------------------------------------------------------
# Reconstruction and uploads
# --------------------------------------------------------------------------
def test_reconstruction_shows_the_image_score(core):
    exp, scorer = core
    at = goto(start(), "reconstruction")
    image_id = int(exp.nonmembers.ids[3])
    at.radio(key="recon_source").set_value("non-member").run()
    at.selectbox(key="recon_id_non-member").set_value(image_id).run()
    assert_clean(at, "reconstruction of a non-member")
    assert len(at.image) >= 8  # four panels for the target, four for the shadow (plus the gallery)
    r = run_attack("paper", exp, spec(), scorer)
    distance = -r.nonmember_scores[list(r.nonmember_ids).index(image_id)]
    assert metric(at, f"Reconstruction distance (mean over K = {K})") == f"{distance:.4g}"


def test_uploads(core):
    exp, scorer = core
    at = goto(start(), "reconstruction")
    at.radio(key="recon_source").set_value("upload").run()
    assert not at.exception and at.info  # asks for a file

    at.file_uploader(key="recon_upload").set_value(("junk.png", b"not an image at all", "image/png")).run()
    assert not at.exception
    assert "not an image" in at.error[0].value

    at.file_uploader(key="recon_upload").set_value(("big.png", png(40, 30), "image/png")).run()
    assert not at.exception
    assert "40x30" in at.error[0].value and "16x16" in at.error[0].value
    assert "Resize to fit" in at.error[0].value and "resize=True" not in at.error[0].value

    at.checkbox(key="recon_resize").check().run()
    assert_clean(at, "resized upload")

    data = png(16, 16, "RGB", seed=1)  # colour becomes grey for this model
    at.checkbox(key="recon_resize").uncheck()
    at.file_uploader(key="recon_upload").set_value(("ok.png", data, "image/png")).run()
    assert_clean(at, "16x16 upload")
    image = load_image_bytes(data, 16, 1)
    source = ArraySource(image[None], ids=[views.image_id(image)], name="upload")
    paper = make_attack("paper").signal(exp.target, source, [], spec(), scorer, "mean")[0]
    calibrated = make_attack("calibrated").signal(exp.target, source, exp.references, spec(), scorer, "mean")[0]
    for a, want in (("paper", paper), ("calibrated", calibrated)):  # the page goes through the core's checked path
        result = run_attack(a, exp, spec(), scorer)
        assert score_image(exp, result, image, views.image_id(image), scorer) == pytest.approx(want)
    assert metric(at, f"Reconstruction distance (mean over K = {K})") == f"{-paper:.4g}"
    assert metric(at, f"Calibrated score (mean over K = {K})") == f"{calibrated:.4g}"


# --------------------------------------------------------------------------
# Choosing experiments and checkpoints
# --------------------------------------------------------------------------
def test_bad_experiment_paths_are_errors(tiny_bundle, tmp_path):
    at = start()
    at.radio(key="exp_kind").set_value("paths").run()
    at.text_input(key="exp_target").input(str(tmp_path / "nowhere"))
    at.text_input(key="exp_manifest").input(str(tiny_bundle / "manifest.json"))
    at.button(key="exp_submit").click().run()
    assert not at.exception
    assert "no such file" in at.error[0].value

    at.radio(key="exp_kind").set_value("dir").run()
    at.text_input(key="exp_dir").input(str(tmp_path))
    at.button(key="exp_submit").click().run()
    assert not at.exception
    assert "no demo bundle" in at.error[0].value
    assert at.get_by_key("headline_paper")  # the experiment that was loaded stays loaded

    (tmp_path / "exp.json").write_text("{not json")
    at.radio(key="exp_kind").set_value("json").run()
    at.text_input(key="exp_json").input(str(tmp_path / "exp.json"))
    at.button(key="exp_submit").click().run()
    assert not at.exception
    assert "not a readable experiment JSON" in at.error[0].value


def test_experiment_from_paths(tiny_bundle):
    at = start()
    at.radio(key="exp_kind").set_value("paths").run()
    at.text_input(key="exp_target").input(str(tiny_bundle / "models" / "target"))
    at.text_input(key="exp_shadow").input(str(tiny_bundle / "models" / "shadow"))
    at.text_area(key="exp_references").input(str(tiny_bundle / "models" / "ref-0"))
    at.text_input(key="exp_manifest").input(str(tiny_bundle / "manifest.json"))
    at.text_input(key="exp_data").input(f"npz:{tiny_bundle / 'fashion_mnist_subset.npz'}")
    at.button(key="exp_submit").click().run()
    assert_clean(at, "experiment from paths")
    assert dict(at.session_state["experiment_choice"])["kind"] == "paths"
    goto(at, "roc")
    assert_clean(at, "roc with one reference")
    assert "lira" not in at.multiselect(key="roc_attacks").value  # LiRA needs two references


def test_experiment_json_from_the_environment(tiny_bundle, monkeypatch, core):
    """MIMMIA_EXPERIMENT may name a JSON file of load_experiment arguments, paths relative to it."""
    (tiny_bundle / "experiment.json").write_text(json.dumps({
        "name": "from-json", "target": "models/target", "shadow": "models/shadow",
        "references": ["models/ref-0", "models/ref-1"], "manifest": "manifest.json",
        "data": "npz:fashion_mnist_subset.npz"}))
    monkeypatch.setenv("MIMMIA_EXPERIMENT", str(tiny_bundle / "experiment.json"))
    at = start()
    assert_clean(at, "experiment from JSON")
    assert at.header[0].value == "Experiment: from-json"
    exp, scorer = core
    auc = run_attack("calibrated", exp, spec(), scorer).metrics["auc"]
    assert metric(at.get_by_key("headline_calibrated"), "AUC") == f"{auc:.3f}"


def test_a_switch_to_pixel_space_is_shown(tiny_bundle, monkeypatch):
    """A shadow that normalises otherwise than the target: the page says its scores moved to pixel space."""
    (tiny_bundle / "mixed.json").write_text(json.dumps({
        "name": "mixed", "target": "models/target", "manifest": "manifest.json", "data": "npz:fashion_mnist_subset.npz",
        "shadow": {"path": "models/shadow", "config": {"mean": [0.3], "std": [0.2]}}}))
    monkeypatch.setenv("MIMMIA_EXPERIMENT", str(tiny_bundle / "mixed.json"))
    at = start()
    assert_clean(at, "experiment with mixed normalisation")
    assert any("pixel_mse_raw" in box.value for box in at.info), [box.value for box in at.info]


def test_models_page(tiny_bundle, tmp_path):
    at = goto(start(), "models")
    assert_clean(at, "models")
    assert metric(at, "Format") == "mimmia" and metric(at, "Decoder") == "present"

    at.radio(key="models_source").set_value("path").run()
    at.text_input(key="models_path").input(str(tmp_path / "missing.pth")).run()
    assert not at.exception and "no such file" in at.error[0].value
    (tmp_path / "broken.pth").write_bytes(b"\x00garbage" * 10)
    at.text_input(key="models_path").input(str(tmp_path / "broken.pth")).run()
    assert not at.exception and "not a readable PyTorch checkpoint" in at.error[0].value
    at.text_input(key="models_path").input(str(tiny_bundle / "models" / "ref-1")).run()
    assert_clean(at, "models by path")
    assert metric(at, "Target space") == "pixels"

    at.radio(key="models_source").set_value("upload").run()
    at.file_uploader(key="models_upload").set_value(("weights.pth", b"PK\x03\x04 not a checkpoint",
                                                      "application/octet-stream")).run()
    text = at.error[0].value
    assert not at.exception and "weights.pth" in text and "not a readable PyTorch checkpoint" in text
    assert "/tmp" not in text  # the upload's name, never its temporary path


def official_pth(config, encoder_only: bool = False) -> bytes:
    """An official-MAE-style checkpoint file: {'model': state_dict}."""
    state = build_model(config, seed=0).state_dict()
    if encoder_only:
        state = {k: v for k, v in state.items() if not k.startswith(("decoder", "mask_token"))}
    buf = io.BytesIO()
    torch.save({"model": state}, buf)
    return buf.getvalue()


def test_models_page_official_uploads(tiny_config):
    at = goto(start(), "models")
    at.radio(key="models_source").set_value("upload").run()
    at.file_uploader(key="models_upload").set_value(("tiny.pth", official_pth(tiny_config), "application/octet-stream")).run()
    # a grey .pth of no official shape: heads, preprocessing and target space are refused, in the page's words
    text = at.error[0].value
    assert not at.exception and "Architecture hints" in text and "/tmp" not in text and "config=" not in text
    assert all(name in text for name in ("num_heads", "decoder_num_heads", "mean", "std", "norm_pix_loss"))
    at.number_input(key="models_heads").set_value(tiny_config.num_heads)
    at.number_input(key="models_decoder_heads").set_value(tiny_config.decoder_num_heads)
    at.text_input(key="models_mean").set_value(",".join(map(str, tiny_config.mean)))
    at.text_input(key="models_std").set_value(",".join(map(str, tiny_config.std)))
    at.selectbox(key="models_norm_pix").set_value("pixels").run()
    assert_clean(at, "official upload with architecture hints")
    assert metric(at, "Format") == "official_mae" and metric(at, "Decoder") == "present"
    assert at.table[0].value.loc["num_heads", "value"] == str(tiny_config.num_heads)
    assert "layer_norm_eps" in at.info[0].value  # the one setting assumed, and shown as such

    at.file_uploader(key="models_upload").set_value(("enc.pth", official_pth(tiny_config, encoder_only=True),
                                                     "application/octet-stream")).run()
    assert_clean(at, "encoder-only upload")
    assert metric(at, "Decoder") == "missing" and "Encoder-only" in at.warning[0].value

    at.text_input(key="models_mean").set_value("a,b").run()
    assert not at.exception and "Mean takes numbers" in at.error[0].value


# --------------------------------------------------------------------------
# views.py
# --------------------------------------------------------------------------
def test_histogram_shares_and_range():
    edges, counts = views.histogram({"a": [0.0, 1.0, 1.0, np.nan], "b": [2.0]}, bins=4, extra=[3.0])
    assert edges[0] == 0.0 and edges[-1] == 3.0
    assert counts["a"].tolist() == [1, 2, 0, 0] and counts["b"].tolist() == [0, 0, 1, 0]
    assert views.shares(counts["a"]).tolist() == pytest.approx([1 / 3, 2 / 3, 0, 0])
    with pytest.raises(ValueError, match="no finite"):
        views.histogram({"a": [np.nan]})


def test_display_helpers():
    img = np.arange(28 * 28, dtype=np.uint8).reshape(28, 28, 1)
    big = views.display_image(img, 100)
    assert big.shape == (112, 112) and big.max() <= 1.0
    assert big[3, 3] == big[0, 0] and big[0, 4] == pytest.approx(img[0, 1, 0] / 255)
    grid = views.patch_grid(torch.arange(16.0), mask=torch.tensor([1.0] * 8 + [0.0] * 8))
    assert grid.shape == (4, 4) and grid[1, 3] == 7.0 and np.isnan(grid[2, 0])
    assert views.image_id(img) == views.image_id(img.copy()) != views.image_id(img[::-1])


def test_slider_and_ranking_helpers():
    lo, hi, step = views.slider_range([0.013, 0.2], [-0.05])
    assert lo <= -0.05 and hi >= 0.2 and step == pytest.approx(1e-4)
    assert views.slider_start(0.10004, lo, hi) == 0.10004 and views.slider_start(np.inf, lo, hi) == hi
    assert views.slider_start(None, 0.0, 1.0) == 0.5
    ids, scores = views.top_n([10, 11, 12], [0.1, 0.3, 0.2], 2)
    assert ids.tolist() == [11, 12] and scores.tolist() == [0.3, 0.2]
    assert views.fraction_at_or_above([1, 2, 3, 4], 3) == 0.5


def test_score_columns_serve_the_cli_and_the_download(core):
    exp, scorer = core
    results = [run_attack(a, exp, spec(), scorer) for a in ("paper", "calibrated")]
    cols = report.score_columns(exp, results)
    n_m, n_n = len(exp.members), len(exp.nonmembers)
    target = cols["role"] == "target_members"
    assert cols["label"][:n_m + n_n].tolist() == [1] * n_m + [0] * n_n
    assert cols["id"][:n_m + n_n].tolist() == exp.members.ids.tolist() + exp.nonmembers.ids.tolist()
    assert cols["calibrated"][target] == pytest.approx(results[1].member_scores)
    candidates = np.char.startswith(cols["role"].astype(str), "target")
    ranks = cols["paper_rank"][candidates]
    assert ranks[int(np.argmax(cols["paper"][candidates]))] == 1 and sorted(ranks) == list(range(1, n_m + n_n + 1))
    other = replace(results[0], member_ids=results[0].member_ids[::-1])
    with pytest.raises(ValueError, match="other images"):
        report.score_columns(exp, [results[0], other])
