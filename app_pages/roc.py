"""ROC and threshold: every attack side by side, and a live operating point."""
import numpy as np
import pandas as pd
import streamlit as st

from app_pages import charts, state, widgets
from mimmia_core.metrics import OperatingPoints, roc, smallest_measurable_fpr
from app_pages.views import slider_range, slider_start
from mimmia_core.attacks import ATTACKS

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
    row = {"attack": widgets.label(a), "AUC": round(m["auc"], 4)}
    for f, t in m["tpr_at"].items():
        row[f"TPR @ {f:.1%} FPR".replace(".0%", "%")] = (f"{t['tpr']:.3f} [{t['lo']:.3f}, {t['hi']:.3f}]"
                                                         + ("" if t["measurable"] else " †"))
    row["accuracy (shadow threshold)"] = (round(m["confusion"]["accuracy"], 4) if "confusion" in m else None)
    rows.append(row)
st.dataframe(pd.DataFrame(rows), hide_index=True, width="stretch")
st.caption(f"TPR with its 95% Clopper-Pearson interval. {len(exp.members)} members, {n_non} non-members: the "
           f"smallest measurable FPR is 1/{n_non} = {min_fpr:.4g}; † marks a TPR at a lower FPR, which rests on zero "
           f"false positives and is not measurable with this many non-members.")
curves = {a: roc(r.member_scores, r.nonmember_scores) for a, r in results.items()}


@st.fragment
def operating_point():
    """Threshold slider, operating point, confusion matrix: reruns alone as the slider moves."""
    focus = st.selectbox("Move the threshold of", list(results), key="roc_focus",
                         format_func=widgets.label)
    r = results[focus]
    points = OperatingPoints(r.member_scores, r.nonmember_scores)
    lo, hi, step = slider_range(r.member_scores, r.nonmember_scores, *( [[r.threshold]] if r.threshold is not None
                                                                       else []))
    start = slider_start(r.threshold, lo, hi)
    threshold = st.slider("Threshold: predict member when score >= threshold", lo, hi, start, step,
                          key=f"roc_threshold_{focus}", format="%.4g",
                          help="Starts at the threshold learned on the shadow model. Arrow keys move it one step.")
    c = points.at(threshold)
    shadow = None
    if r.threshold is not None:
        s = points.at(r.threshold)
        shadow = (s["fpr"], s["tpr"], f"shadow-learned threshold on {focus} ({r.threshold:.4g})")
        if np.isfinite(r.threshold):
            st.caption(f"The slider starts at the threshold learned on the shadow model, {r.threshold:.4g} "
                       f"(rule: {r.threshold_rule}); on the curves the diamond marks it and the circle the slider.")
        else:
            st.caption("On the shadow model no threshold beat predicting 'non-member' for every image, so the learned "
                       "threshold is infinite (the diamond sits at the origin): the shadow shows no usable signal.")
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
    n_m = len(r.member_scores)
    if n_m != n_non:
        st.caption(f"With {n_m} members and {n_non} non-members, calling every image "
                   f"{'a non-member' if n_non > n_m else 'a member'} already scores accuracy "
                   f"{max(n_m, n_non) / (n_m + n_non):.3f}: read balanced accuracy and the TPR at low FPR instead.")
    left, right = st.columns(2)
    point = (c["fpr"], c["tpr"], f"this threshold on {focus} ({threshold:.4g})")
    shown = {widgets.label(a): cv for a, cv in curves.items()}
    left.plotly_chart(charts.roc_figure(shown, False, n_non, point, shadow), width="stretch", key="roc_linear")
    right.plotly_chart(charts.roc_figure(shown, True, n_non, point, shadow), width="stretch", key="roc_loglog")

operating_point()
