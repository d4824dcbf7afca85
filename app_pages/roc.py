"""ROC and threshold: every attack side by side, and a live operating point."""
import numpy as np
import pandas as pd
import streamlit as st

from app_pages import charts, state, widgets
from mimmia_core.attacks import ATTACKS
from mimmia_core.axes import axis_units, member_reading, member_side
from mimmia_core.metrics import operating_point, roc, smallest_measurable_fpr

exp, exp_key = state.experiment()
spec, aggregate = state.current_spec(), state.current_aggregate()

st.title("ROC and threshold")
st.caption("How well each attack separates the target's members from its non-members, at every threshold. "
           "The field reports the true-positive rate at a LOW false-positive rate (an attack that is sure about a "
           f"few images matters), with 95% Clopper-Pearson intervals. {state.spec_caption(spec, aggregate)}.")

available = exp.available_attacks()
chosen = st.multiselect("Attacks", available, default=available, key="roc_attacks",
                        format_func=widgets.label)
results = widgets.results(exp, exp_key, chosen, spec, aggregate)
missing = sorted(set(ATTACKS) - set(available))
if missing:
    st.caption(f"Not available for this experiment: {', '.join(missing)} (calibrated needs one reference model, "
               f"LiRA two; RMIA population samples, the shadow's non-members; the online attacks references trained "
               f"online, with `mimmia train-references --online`).")
if not results:
    st.info("Pick at least one attack.")
    st.stop()

n_non = len(exp.nonmembers)
min_fpr = smallest_measurable_fpr(n_non)
rows = []
for a, r in results.items():
    m = r.metrics
    row = {"attack": widgets.label(a), "AUC": f"{m['auc']:.3f}"}
    for f, t in m["tpr_at"].items():
        row[f"TPR @ {f:.1%} FPR".replace(".0%", "%")] = (f"{t['tpr']:.3f} [{t['lo']:.3f}, {t['hi']:.3f}]"
                                                         if t["measurable"] else f"— (FPR < 1/{n_non})")
    confusion = m.get("confusion")
    row["balanced accuracy"] = "—" if confusion is None else f"{confusion['balanced_accuracy']:.3f}"
    rows.append(row)
st.dataframe(pd.DataFrame(rows), hide_index=True, width="stretch", column_config={
    "balanced accuracy": st.column_config.TextColumn(help="At the threshold learned on the shadow model.")})
st.caption(f"TPR with its 95% Clopper-Pearson interval. {len(exp.members)} members, {n_non} non-members: the "
           f"smallest measurable FPR is 1/{n_non} = {min_fpr:.3g}. A TPR at a lower FPR would rest on zero false "
           "positives, so it is not measured (—). Balanced accuracy is (TPR + 1 - FPR) / 2 at the threshold learned "
           "on the shadow model; 0.5 is chance.")
curves = {a: roc(r.member_scores, r.nonmember_scores) for a, r in results.items()}


def shadow_point(focus: str, r, n) -> tuple | None:
    """The shadow-learned threshold's (fpr, tpr, label) on the curves, with a caption on where it lies."""
    confusion = r.metrics.get("confusion")
    if confusion is None:
        return None
    if np.isfinite(n.threshold):
        st.caption(f"The slider starts at the threshold learned on the shadow model, {n.threshold:.4g} "
                   f"(rule: {r.threshold_rule}); on the curves the diamond marks it and the circle the slider.")
    else:
        st.caption("On the shadow model no threshold beat predicting 'non-member' for every image, so the learned "
                   "rule predicts no member (the diamond sits at the origin): the shadow shows no usable signal.")
    return confusion["fpr"], confusion["tpr"], f"shadow-learned threshold on {focus} ({n.threshold:.4g})"


def confusion_numbers(c: dict) -> None:
    """The confusion matrix and the rates at the slider's threshold."""
    table, numbers = st.columns([2, 3])
    with table:
        st.markdown("**Confusion matrix** (rows: truth)")
        st.table(pd.DataFrame({"predicted member": [c["tp"], c["fp"]], "predicted non-member": [c["fn"], c["tn"]]},
                              index=["member", "non-member"]))
    with numbers:
        cols = st.columns(3)
        cols[0].metric("Accuracy", f"{c['accuracy']:.3f}")
        cols[1].metric("Precision", f"{c['precision']:.3f}")
        cols[2].metric("Balanced accuracy", f"{c['balanced_accuracy']:.3f}")
        cols = st.columns(3)
        cols[0].metric("Recall (TPR)", f"{c['tpr']:.3f}")
        cols[1].metric("FPR", f"{c['fpr']:.4f}")
        cols[2].metric("Predicted members", f"{c['tp'] + c['fp']}")
    n_m, n_n = c["tp"] + c["fn"], c["fp"] + c["tn"]
    if n_m != n_n:
        st.caption(f"With {n_m} members and {n_n} non-members, calling every image a {c['trivial_call']} "
                   "already scores accuracy "
                   f"{c['trivial_accuracy']:.3f}: read balanced accuracy and the TPR at low FPR instead.")


@st.fragment
def operating_point_view():
    """Threshold slider, operating point, confusion matrix: reruns alone as the slider moves."""
    focus = st.selectbox("Move the threshold of", list(results), key="roc_focus",
                         format_func=widgets.label)
    r = results[focus]
    n = widgets.natural(r)
    threshold = widgets.threshold_slider(
        f"Threshold on the {axis_units(focus, r.spec)[1]} ({member_side(focus, r.spec)} = member)",
        n.members, n.nonmembers, n.threshold, f"roc_threshold_{focus}",
        help=f"In the units of the Distances page: {n.axis}; {member_reading(focus, r.spec)}. Starts at the "
             "threshold learned on the shadow model. Arrow keys move it one step.")
    c = operating_point(n.members, n.nonmembers, threshold, lower_is_member=n.lower_is_member)
    shadow = shadow_point(focus, r, n)
    confusion_numbers(c)
    point = (c["fpr"], c["tpr"], f"this threshold on {focus} ({threshold:.4g})")
    shown = {widgets.label(a): cv for a, cv in curves.items()}
    st.plotly_chart(charts.roc_figure(shown, n_non, point, shadow), width="stretch", key="roc_curves")
    st.caption(f"On the log-log panel the dotted lines mark 1% and 0.1% FPR and the smallest measurable FPR, "
               f"1/{n_non}; left of it (shaded) no FPR above zero can be observed with {n_non} non-members.")


operating_point_view()
