"""The numbers of the Overview, Distances and ROC pages: thresholds in distance units (lower = member),
the counts a threshold line gives (metrics.operating_point, by hand and in AppTest), and no number where a
TPR is not measurable."""
import re
import sys
from pathlib import Path

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # app_pages, as `streamlit run app.py` finds it
    sys.path.insert(0, str(REPO))
from app_pages import views  # noqa: E402
from app_pages.widgets import ATTACK_LABELS  # noqa: E402
from mimmia_core.attacks import run_attack  # noqa: E402
from mimmia_core.axes import member_reading, member_side  # noqa: E402
from mimmia_core.experiment import load_demo_experiment  # noqa: E402
from mimmia_core.metrics import operating_point  # noqa: E402
from mimmia_core.scorer import Scorer  # noqa: E402
from mimmia_core.scores import ScoreSpec  # noqa: E402

K = 2
SPEC = ScoreSpec(mask_ratio=0.75, num_masks=K, seed=0, distance="masked_mse")
NUMBER = re.compile(r"\d\.\d")  # a rate or a score; "1/12" in a reason is no measurement


# --------------------------------------------------------------------------
# The core, by hand
# --------------------------------------------------------------------------
def test_operating_point_on_distances_by_hand():
    members, nonmembers = [0.1, 0.2, 0.4], [0.2, 0.5, 0.6, 0.9]
    # at or below 0.2: the members 0.1 and 0.2, the non-member 0.2 (a value on the line is a member)
    c = operating_point(members, nonmembers, 0.2, lower_is_member=True)
    assert (c["tp"], c["fn"], c["fp"], c["tn"]) == (2, 1, 1, 3)
    assert c["tpr"] == pytest.approx(2 / 3) and c["fpr"] == pytest.approx(1 / 4)
    assert c["balanced_accuracy"] == pytest.approx((2 / 3 + 3 / 4) / 2)
    assert c["accuracy"] == pytest.approx(5 / 7) and c["trivial_accuracy"] == pytest.approx(4 / 7)
    assert c["trivial_call"] == "non-member"  # 4 non-members outnumber 3 members
    # below every value: no member called; above every value: all called
    assert operating_point(members, nonmembers, 0.05, lower_is_member=True)["tp"] == 0
    c = operating_point(members, nonmembers, 1.0, lower_is_member=True)
    assert (c["tp"], c["fp"], c["fpr"], c["balanced_accuracy"]) == (3, 4, 1.0, 0.5)


def test_operating_point_on_scores_by_hand():
    # higher = member (a calibrated score, PSNR): at or above 0.4 lie the member 0.4 and the non-members 0.5, 0.6, 0.9
    c = operating_point([0.1, 0.2, 0.4], [0.2, 0.5, 0.6, 0.9], 0.4, lower_is_member=False)
    assert (c["tp"], c["fn"], c["fp"], c["tn"]) == (1, 2, 3, 1)
    more = operating_point([0.1, 0.2, 0.4], [0.2], 0.3, lower_is_member=False)
    assert more["trivial_call"] == "member" and more["trivial_accuracy"] == pytest.approx(3 / 4)
    assert c["balanced_accuracy"] == pytest.approx((1 / 3 + 1 / 4) / 2)
    with pytest.raises(ValueError, match="NaN"):
        operating_point([np.nan], [0.2], 0.1, lower_is_member=True)


def test_member_side_follows_the_distance():
    assert member_side("paper", SPEC) == "lower" and member_reading("paper", SPEC) == "lower = member"
    psnr = ScoreSpec(mask_ratio=0.75, num_masks=K, seed=0, distance="psnr")
    assert member_side("paper", psnr) == "higher"
    assert member_reading("paper", psnr) == "PSNR is higher for a closer reconstruction, so here higher = member"
    assert member_side("calibrated", SPEC) == "higher" and member_side("unmasked", SPEC) == "lower"


# --------------------------------------------------------------------------
# The pages, in AppTest on the tiny bundle
# --------------------------------------------------------------------------
@pytest.fixture(scope="module")
def core(tiny_bundle):
    return load_demo_experiment(device="cpu", demo_dir=tiny_bundle), Scorer(device="cpu")


@pytest.fixture(autouse=True)
def app_env(tiny_bundle, monkeypatch, tmp_path_factory):
    monkeypatch.setenv("MIMMIA_EXPERIMENT", str(tiny_bundle))
    monkeypatch.setenv("MIMMIA_CACHE", str(tmp_path_factory.getbasetemp() / "score_cache"))


def page(name: str | None = None) -> AppTest:
    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=300)
    at.session_state["num_masks"] = K
    at.run()
    if name:
        at.switch_page(f"app_pages/{name}.py").run()
    assert not at.exception and not at.error, [e.value for e in (*at.exception, *at.error)]
    return at


def metrics(at) -> dict:
    """label -> every value shown under it, in page order."""
    out = {}
    for m in at.metric:
        out.setdefault(m.label, []).append(m.value)
    return out


def test_distances_threshold_slider_gives_the_cores_counts(core):
    exp, scorer = core
    at = page("distances")
    r = run_attack("paper", exp, SPEC, scorer)
    members, nonmembers = -r.member_scores, -r.nonmember_scores  # the paper's scores are negated distances
    slider = at.slider(key="dist_threshold_paper")
    assert slider.value == pytest.approx(-r.threshold)  # starts at the shadow's threshold, in distance units
    lo, hi, step = views.slider_range(members, nonmembers, [-r.threshold])
    assert (slider.min, slider.max) == pytest.approx((lo, hi))
    seen = []
    for q in (0.25, 0.75):
        t = lo + round((np.quantile(np.r_[members, nonmembers], q) - lo) / step) * step
        at.slider(key="dist_threshold_paper").set_value(t).run()
        assert not at.exception, [e.value for e in at.exception]
        c = operating_point(members, nonmembers, at.slider(key="dist_threshold_paper").value, lower_is_member=True)
        shown = metrics(at)
        assert shown["members ≤ line"][0] == f"{c['tp']} of {len(members)}"
        assert shown["non-members ≤ line"][0] == f"{c['fp']} of {len(nonmembers)}"
        assert shown["TPR"][0] == f"{c['tpr']:.3f}" and shown["FPR"][0] == f"{c['fpr']:.3f}"
        assert shown["Balanced acc."][0] == f"{c['balanced_accuracy']:.3f}"
        seen.append(c["tp"] + c["fp"])
    assert seen[0] < seen[1]  # a higher distance threshold calls more images members


def test_roc_slider_is_in_distance_units(core):
    exp, scorer = core
    at = page("roc")
    r = run_attack("paper", exp, SPEC, scorer)
    slider = at.slider(key="roc_threshold_paper")
    assert slider.value == pytest.approx(-r.threshold) and "(lower = member)" in slider.label
    t = float(np.median(-r.member_scores))
    at.slider(key="roc_threshold_paper").set_value(slider.min + round((t - slider.min) / slider.step) * slider.step)
    at.run()
    c = operating_point(-r.member_scores, -r.nonmember_scores, at.slider(key="roc_threshold_paper").value,
                        lower_is_member=True)
    table = at.table[0].value
    assert table.loc["member", "predicted member"] == c["tp"]
    assert table.loc["non-member", "predicted member"] == c["fp"]
    assert metrics(at)["Balanced accuracy"][0] == f"{c['balanced_accuracy']:.3f}"


def test_not_measurable_cells_hold_no_number(core):
    exp, scorer = core
    r = run_attack("paper", exp, SPEC, scorer)
    unmeasured = [f for f, t in r.metrics["tpr_at"].items() if not t["measurable"]]
    assert unmeasured, "the tiny bundle should have too few non-members for 1% FPR"
    table = page("roc").dataframe[0].value
    paper = table.set_index("attack").loc[ATTACK_LABELS["paper"]]
    for f, t in r.metrics["tpr_at"].items():
        column = f"TPR @ {f:.1%} FPR".replace(".0%", "%")
        if t["measurable"]:
            assert paper[column] == f"{t['tpr']:.3f} [{t['lo']:.3f}, {t['hi']:.3f}]"
        for cell in table[column]:  # every attack's TPR at that FPR
            assert t["measurable"] or (cell.startswith("—") and not NUMBER.search(cell)), cell
    for cell in table["AUC"]:  # one number format: three decimals
        assert re.fullmatch(r"\d\.\d{3}", cell), cell
    overview = page()
    for f in unmeasured:
        if f in (0.01, 0.001):
            label = f"TPR at {f:.1%} FPR".replace(".0%", "%")
            assert all(v == "—" for v in metrics(overview)[label])
