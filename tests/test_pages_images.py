"""The image pages (Reconstruction, Most exposed) and the score CSV: the core functions behind them with
hand-checked values, and the pages driven headless by AppTest on the tiny bundle."""
import io
import json
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from streamlit.testing.v1 import AppTest

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # app_pages, as `streamlit run app.py` finds it
    sys.path.insert(0, str(REPO))
from app_pages import views  # noqa: E402
from mimmia_core import report  # noqa: E402
from mimmia_core.attacks import run_attack  # noqa: E402
from mimmia_core.data import load_image_bytes  # noqa: E402
from mimmia_core.experiment import load_demo_experiment  # noqa: E402
from mimmia_core.image_score import load_upload, member_verdicts  # noqa: E402
from mimmia_core.masking import mask_noise  # noqa: E402
from mimmia_core.reconstruction import reconstruct  # noqa: E402
from mimmia_core.scorer import Scorer  # noqa: E402
from mimmia_core.scores import ScoreSpec  # noqa: E402
from mimmia_core.version import __version__  # noqa: E402

K = 2
SPEC = ScoreSpec(mask_ratio=0.75, num_masks=K, seed=0, distance="masked_mse")


@pytest.fixture(scope="module")
def core(tiny_bundle):
    return load_demo_experiment(device="cpu", demo_dir=tiny_bundle), Scorer(device="cpu")


@pytest.fixture(scope="module")
def paper_and_calibrated(core):
    exp, scorer = core
    return [run_attack(a, exp, SPEC, scorer) for a in ("paper", "calibrated")]


@pytest.fixture
def app(tiny_bundle, monkeypatch, tmp_path_factory):
    """The app on the tiny bundle at K masks, started on its Overview page."""
    monkeypatch.setenv("MIMMIA_EXPERIMENT", str(tiny_bundle))
    monkeypatch.setenv("MIMMIA_CACHE", str(tmp_path_factory.getbasetemp() / "score_cache"))
    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=300)
    at.session_state["num_masks"] = K
    return at.run()


def goto(at: AppTest, page: str) -> AppTest:
    at.switch_page(f"app_pages/{page}.py").run()
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]
    return at


def png(mode: str, size: int = 16) -> bytes:
    channels = {"L": 1, "RGB": 3, "RGBA": 4}[mode]
    pixels = np.random.default_rng(0).integers(0, 256, (size, size, channels), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels[..., 0] if channels == 1 else pixels, mode).save(buf, format="PNG")
    return buf.getvalue()


# --------------------------------------------------------------------------
# Core functions, hand-checked
# --------------------------------------------------------------------------
def test_member_verdicts_split_at_the_threshold():
    r = SimpleNamespace(attack="paper", threshold=0.5, member_ids=np.array([10, 11, 12, 13]),
                        member_scores=np.array([0.2, 0.9, 0.5, 0.1]))
    v = member_verdicts(r)
    assert v.caught.tolist() == [11, 12]  # 0.5 is on the line: a member; surest first
    assert v.missed.tolist() == [13, 10]  # clearest miss first
    with pytest.raises(ValueError, match="no threshold"):
        member_verdicts(SimpleNamespace(**{**vars(r), "threshold": None}))


def test_uploads_say_how_they_were_converted():
    assert load_upload(png("L"), 16, 1).note is None and load_upload(png("RGB"), 16, 3).note is None
    assert load_upload(png("RGB"), 16, 1).note == ("The upload was converted: colour (RGB) to grey by ITU-R 601-2 "
                                                   "luma, as the model takes 1 channel.")
    assert load_upload(png("RGBA"), 16, 1).note == ("The upload was converted: transparency (RGBA) flattened onto "
                                                    "black; colour (RGBA) to grey by ITU-R 601-2 luma, as the model "
                                                    "takes 1 channel.")
    assert load_upload(png("L"), 16, 3).note == \
        "The upload was converted: grey repeated into 3 channels, as the model takes colour."
    for mode, converted in (("L", False), ("RGB", True), ("RGBA", True)):
        up = load_upload(png(mode), 16, 1)
        assert np.array_equal(up.image, load_image_bytes(png(mode), 16, 1))
        assert (up.note is not None) == converted and (not converted or f"({mode}) to grey" in up.note)


def test_heatmap_overlay_and_gallery_pages():
    assert views.viridis([0.0, 1.0, 3.0], 2.0).round(4).tolist() == [
        [0.2667, 0.0039, 0.3294],  # #440154
        [0.1353, 0.5647, 0.5471],  # halfway between #26828e and #1f9e89
        [0.9922, 0.9059, 0.1451]]  # clipped to #fde725
    grid = np.array([[np.nan, 2.0], [1.0, 0.0]])
    out = views.error_overlay(np.full((4, 4), 0.2), grid, zmax=2.0, alpha=0.5)
    assert out.shape == (4, 4, 3) and np.allclose(out[:2, :2], 0.2)  # a visible patch is left as it is
    assert out[0, 3, 0] == pytest.approx(0.5 * 0.2 + 0.5 * 253 / 255)
    assert out[3, 0, 1] == pytest.approx(0.5 * 0.2 + 0.5 * (130 + 158) / 2 / 255)
    with pytest.raises(ValueError, match="does not split"):
        views.error_overlay(np.zeros((5, 5)), grid, 1.0)
    frame = views.framed(np.full((6, 6), 0.5), rgb=(1.0, 0.0, 0.0), width=2)
    assert frame.shape == (6, 6, 3) and frame[0, 3].tolist() == [1, 0, 0] and frame[2, 2].tolist() == [0.5] * 3
    row = views.strip([np.zeros((3, 2)), np.zeros((3, 2, 3))], gap=1)
    assert row.shape == (3, 5, 3) and row[:, 2].tolist() == [[1, 1, 1]] * 3 and row[:, [0, 1, 3, 4]].max() == 0
    assert views.gallery_page(40, 3) == (range(32, 40), 3)
    assert views.gallery_page(40, 7) == (range(32, 40), 3) and views.gallery_page(0, 1) == (range(0, 0), 1)


def test_reconstruction_error_summary(make_model, tiny_images):
    model = make_model()
    images = tiny_images[:2]
    rec = reconstruct(model, images, 0.5, mask_noise(0, [1, 2], 1, model.config.num_patches)[0])
    masked = rec.mask[1] > 0.5
    assert masked.sum() == 8 and rec.masked_error(1) == pytest.approx(rec.patch_error[1][masked].sum().item() / 8)
    assert rec.error_unit.startswith("squared normalised pixel value")


# --------------------------------------------------------------------------
# The score CSV: an audit record that pandas reads
# --------------------------------------------------------------------------
def test_scores_csv_carries_its_settings(core, paper_and_calibrated):
    exp, _ = core
    text = report.scores_csv(exp, paper_and_calibrated)
    header = dict(line[2:].split(": ", 1) for line in text.splitlines() if line.startswith("# ") and ": " in line)
    assert header["mimmia_version"] == __version__
    assert (header["mask_ratio"], header["num_masks"], header["seed"], header["distance"], header["aggregate"]) == \
        ("0.75", str(K), "0", "masked_mse", "mean")
    assert header["model_target"] == exp.target.fingerprint and header["model_shadow"] == exp.shadow.fingerprint
    assert header["model_reference_1"] == exp.references[1].fingerprint
    assert header["data_target_members"] == f"{len(exp.members)} images, {exp.members.fingerprint()}"
    paper = paper_and_calibrated[0]
    assert header["column paper"].startswith("minus the reconstruction distance (masked_mse), a negative distance")
    assert f"threshold {paper.threshold!r}" in header["column paper"]
    assert "mean over K = 2 masks at mask ratio 0.75, seed 0" in header["column paper"]
    table = pd.read_csv(io.StringIO(text), comment="#")
    cols = report.score_columns(exp, paper_and_calibrated)
    assert list(table.columns) == list(cols) and len(table) == len(cols["id"])
    assert table["paper"].to_numpy() == pytest.approx(cols["paper"], rel=0, abs=0)  # written exactly
    assert (table["paper"] < 0).all()  # a negative distance
    assert report.scores_filename("tiny demo/x", SPEC, "median") == \
        "mimmia_scores_tiny-demo-x_mr0.75_K2_seed0_masked_mse_median.csv"


def test_scores_csv_says_which_settings_a_column_ignores(core):
    exp, scorer = core
    results = [run_attack(a, exp, SPEC, scorer) for a in ("unmasked", "encodermi")]
    header = [line for line in report.scores_header(exp, results) if line.startswith("# column ")][1:]
    assert header[0].startswith("# column unmasked: minus the unmasked reconstruction error (all_mse), a negative "
                                "distance, mean over K = 2 masks of one patch each (not the mask ratio), seed 0;")
    assert header[2].startswith("# column encodermi: the view similarity, seed 0; no mask, so mask ratio, K and "
                                "distance do not apply;")


def test_cli_scores_csv_reads_with_pandas(core, paper_and_calibrated, tmp_path):
    exp, _ = core
    _, scores = report.write_attack_report(tmp_path, exp, paper_and_calibrated, {})
    table = pd.read_csv(scores, comment="#")
    assert table.columns[:4].tolist() == ["id", "role", "label", "paper"]
    assert table.loc[table.role == "target_members", "calibrated"].to_numpy() == \
        pytest.approx(paper_and_calibrated[1].member_scores)
    assert json.loads((tmp_path / "report.json").read_text())["results"][0]["attack"] == "paper"


# --------------------------------------------------------------------------
# The pages
# --------------------------------------------------------------------------
def verdict_of(at: AppTest) -> str:
    return next(m.value for m in at.markdown if "At least as member-like" in m.value)


def test_reconstruction_opens_on_a_caught_member(app, paper_and_calibrated):
    v = member_verdicts(paper_and_calibrated[0])
    assert len(v.caught) and len(v.missed)
    at = goto(app, "reconstruction")
    assert at.selectbox(key="recon_id_member").value == v.caught[0]
    assert "predicted a **member**" in verdict_of(at)
    at.radio(key="recon_example").set_value("missed").run()
    assert at.selectbox(key="recon_id_member").value == v.missed[0]
    assert "predicted a **non-member**" in verdict_of(at)
    other = int(next(i for i in paper_and_calibrated[0].member_ids if i not in (v.caught[0], v.missed[0])))
    at.button(key=f"recon_pick_member_{other}").click().run()  # a gallery thumbnail
    assert at.selectbox(key="recon_id_member").value == other
    assert any("White in the heatmap: a visible patch" in c.value for c in at.caption)


def test_reconstruction_says_an_rgb_upload_was_converted(app):
    at = goto(app, "reconstruction")
    at.radio(key="recon_source").set_value("upload").run()
    at.file_uploader(key="recon_upload").set_value(("colour.png", png("RGBA"), "image/png")).run()
    assert not at.exception and not at.error
    assert any("transparency (RGBA) flattened onto black; colour (RGBA) to grey" in i.value for i in at.info)


def test_most_exposed_ranks_by_the_chosen_attack(app, core):
    exp, scorer = core
    at = goto(app, "exposed")
    box = at.selectbox(key="exposed_attack")
    assert box.value == "calibrated" and len(box.options) == len(exp.available_attacks())  # each that ran
    for attack in ("paper", "calibrated"):
        at.selectbox(key="exposed_attack").set_value(attack).run()
        r = run_attack(attack, exp, SPEC, scorer)
        ids, scores = views.top_n(r.member_ids, r.member_scores, 1)
        non_ids, _ = views.top_n(r.nonmember_ids, r.nonmember_scores, 1)
        cards = [m.value for m in at.markdown if m.value.startswith("**#1 · ")]
        shown = -scores[0] if attack == "paper" else scores[0]  # the paper attack's score as its distance
        assert cards[0].startswith(f"**#1 · member {ids[0]}**") and f"{shown:.4g}" in cards[0]
        assert cards[1].startswith(f"**#1 · non-member {non_ids[0]}**")
    assert at.image[0].captions == ["original · masked · reconstruction"]
