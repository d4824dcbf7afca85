"""Distances: member vs non-member score distributions, raw and calibrated, with the learned threshold and a
threshold of one's own that shows how many of each group it calls members."""
import numpy as np
import streamlit as st

from app_pages import charts, state, widgets
from mimmia_core.axes import member_reading, member_side
from mimmia_core.metrics import operating_point

exp, exp_key = state.experiment()
spec, aggregate = state.current_spec(), state.current_aggregate()

st.title("Distances")
st.caption("If the target remembers its training images, it reconstructs members more closely than non-members "
           "(a lower distance, a higher PSNR). The dashed line is the threshold the adversary learned on its shadow "
           "model; the solid line is yours, moved with the slider above each chart. "
           f"Mask ratio and K are in the sidebar ({state.spec_caption(spec, aggregate)}).")

results = widgets.headline_results(exp, exp_key, spec, aggregate)
if not results:
    st.stop()
show_shadow = st.checkbox("Also show the shadow model's members and non-members", key="dist_show_shadow",
                          disabled=exp.shadow is None,
                          help=None if exp.shadow is not None else "This experiment has no shadow model.")


def shadow_caption(r, threshold: float | None, side: str) -> None:
    """Where the shadow's threshold lies and what it scores on the target, beside the trivial baseline."""
    if threshold is not None and np.isfinite(threshold):
        c = r.metrics["confusion"]
        st.caption(f"The dashed line is the shadow's threshold, {threshold:.4g}: images {side} of it are predicted "
                   f"members, for a balanced accuracy of {c['balanced_accuracy']:.3f} on the target (0.5 is chance). "
                   f"Plain accuracy {c['accuracy']:.3f}; calling every image a {c['trivial_call']} already scores "
                   f"{c['trivial_accuracy']:.3f} with {c['tp'] + c['fn']} members and {c['fp'] + c['tn']} "
                   "non-members.")
    elif threshold is not None:
        st.caption("On the shadow model no threshold beat calling every image a non-member, so the learned "
                   "rule predicts no member at all: the shadow shows no usable signal at these settings.")


@st.fragment
def attack_view(a: str, r) -> None:
    """One attack's medians, histograms, and a threshold slider with the counts it gives (reruns alone)."""
    n = widgets.natural(r)
    member, nonmember, shadow_threshold, lower = n.members, n.nonmembers, n.threshold, n.lower_is_member
    reading = member_reading(a, r.spec)
    st.caption(f"{widgets.help_text(a)} On this axis: {reading}. AUC {r.metrics['auc']:.3f}.")
    c1, c2 = st.columns(2)
    c1.metric("median, members", f"{np.median(member):.4g}")
    c2.metric("median, non-members", f"{np.median(nonmember):.4g}")
    threshold = widgets.threshold_slider(
        f"Your threshold ({member_side(a, r.spec)} = member)", member, nonmember, shadow_threshold,
        f"dist_threshold_{a}", help="Starts at the shadow's threshold. Arrow keys move it one step.")
    c = operating_point(member, nonmember, threshold, lower_is_member=lower)
    sym, side = ("≤", "left") if lower else ("≥", "right")
    lines = [(threshold, "your threshold", "#000000", "solid")]
    if shadow_threshold is not None:
        lines.append((shadow_threshold, "shadow threshold", widgets.THRESHOLD_COLOR, "dash"))
    fig = charts.hist_figure({"target members": (member, widgets.MEMBER_COLOR),
                              "target non-members": (nonmember, widgets.NONMEMBER_COLOR)},
                             n.axis, lines=lines, title="target model")
    st.plotly_chart(fig, width="stretch", key=f"dist_hist_{a}")
    c1, c2 = st.columns(2)
    c1.metric(f"members {sym} line", f"{c['tp']} of {c['tp'] + c['fn']}")
    c2.metric(f"non-members {sym} line", f"{c['fp']} of {c['fp'] + c['tn']}")
    c1, c2, c3 = st.columns(3)
    c1.metric("TPR", f"{c['tpr']:.3f}", help=f"Share of the members {side} of your line.")
    c2.metric("FPR", f"{c['fpr']:.3f}", help=f"Share of the non-members {side} of your line.")
    c3.metric("Balanced acc.", f"{c['balanced_accuracy']:.3f}",
              help=f"(TPR + 1 - FPR) / 2 at your line; 0.5 is chance. Plain accuracy {c['accuracy']:.3f}, and "
                   f"calling every image a {c['trivial_call']} scores {c['trivial_accuracy']:.3f}.")
    if show_shadow and n.shadow_members is not None:
        fig = charts.hist_figure({"shadow members": (n.shadow_members, "#8e24aa"),
                                  "shadow non-members": (n.shadow_nonmembers, "#43a047")},
                                 n.axis, lines=lines, title="shadow model (threshold learned here)")
        st.plotly_chart(fig, width="stretch", key=f"dist_shadow_hist_{a}")
    shadow_caption(r, shadow_threshold, side)


for col, (a, r) in zip(st.columns(len(results)), results.items()):
    with col:
        st.subheader(widgets.label(a).capitalize())
        attack_view(a, r)
if len(results) == 1 and "paper" in results:
    st.info("Calibrated scores need reference models; this experiment has none.")
