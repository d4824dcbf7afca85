"""Distances: member vs non-member score distributions, raw and calibrated, with the learned threshold."""
import numpy as np
import streamlit as st

from app_pages import charts, state, widgets
from mimmia_core.axes import score_axis

exp, exp_key = state.experiment()
spec, aggregate = state.current_spec(), state.current_aggregate()

st.title("Distances")
st.caption("If the target remembers its training images, members' reconstruction distances sit lower than "
           "non-members'. The dashed line is the threshold the adversary learned on its shadow model. "
           f"Mask ratio and K are in the sidebar ({state.spec_caption(spec, aggregate)}).")

results = widgets.headline_results(exp, exp_key, spec, aggregate)
if not results:
    st.stop()
show_shadow = st.checkbox("Also show the shadow model's members and non-members", key="dist_show_shadow",
                          disabled=exp.shadow is None,
                          help=None if exp.shadow is not None else "This experiment has no shadow model.")

cols = st.columns(len(results))
for col, (a, r) in zip(cols, results.items()):
    sign, axis = score_axis(a, r.spec)
    member, nonmember = sign * r.member_scores, sign * r.nonmember_scores
    lines = [] if r.threshold is None else [(sign * r.threshold, "shadow threshold", "#424242")]
    with col:
        st.subheader("Raw distance (the paper's attack)" if a == "paper" else "Calibrated by reference models")
        st.caption(widgets.help_text(a))
        c1, c2, c3 = st.columns(3)
        c1.metric("median, members", f"{np.median(member):.4g}")
        c2.metric("median, non-members", f"{np.median(nonmember):.4g}")
        c3.metric("AUC", f"{r.metrics['auc']:.3f}")
        fig = charts.hist_figure({"target members": (member, widgets.MEMBER_COLOR),
                                  "target non-members": (nonmember, widgets.NONMEMBER_COLOR)},
                                 axis, lines=lines, title="target model")
        st.plotly_chart(fig, width="stretch", key=f"dist_hist_{a}")
        if show_shadow and r.shadow_member_scores is not None:
            fig = charts.hist_figure({"shadow members": (sign * r.shadow_member_scores, "#8e24aa"),
                                      "shadow non-members": (sign * r.shadow_nonmember_scores, "#43a047")},
                                     axis, lines=lines, title="shadow model (where the threshold is learned)")
            st.plotly_chart(fig, width="stretch", key=f"dist_shadow_hist_{a}")
        if r.threshold is not None and np.isfinite(r.threshold):
            side = "left" if sign < 0 else "right"
            st.caption(f"Images {side} of the dashed line ({sign * r.threshold:.4g}) are predicted members; "
                       f"accuracy on the target {r.metrics['confusion']['accuracy']:.3f}.")
        elif r.threshold is not None:
            st.caption("On the shadow model no threshold beat calling every image a non-member, so the learned "
                       "rule predicts no member at all: the shadow shows no usable signal at these settings.")
if len(results) == 1 and "paper" in results:
    st.info("Calibrated scores need reference models; this experiment has none.")
