"""Mask ratio: how the attack's power depends on the fraction of patches hidden at attack time."""
from dataclasses import replace

import pandas as pd
import streamlit as st

from app_pages import cached, charts, scoring_panel, state, widgets
from mimmia_core.demo import GRID_RATIOS, SWEEP_RATIOS
from mimmia_core.metrics import DEFAULT_FPRS


def column_names() -> dict:
    """The sweep table's columns in words."""
    names = {"mask_ratio": "mask ratio", "attack": "attack", "distance": "distance", "auc": "AUC",
             "accuracy": "accuracy at the shadow's threshold",
             "balanced_accuracy": "balanced accuracy at the shadow's threshold", "best": "best ratio", "note": "note"}
    for fpr in DEFAULT_FPRS:
        at = f"TPR @ {fpr:.1%} FPR".replace(".0%", "%")
        names.update({f"tpr@{fpr:g}": at, f"tpr@{fpr:g}_lo": f"{at}, 95% CI low", f"tpr@{fpr:g}_hi": f"{at}, 95% CI high"})
    return names


exp, exp_key = state.experiment()
spec, aggregate = state.current_spec(), state.current_aggregate()

st.title("Mask ratio at attack time")
trained_at = (exp.target.provenance or {}).get("mask_ratio")
st.caption("Li et al. study how the fraction of patches hidden at attack time changes the attack's power. Each point "
           "scores every model at that ratio (K, seed and distance from the sidebar); results are cached on disk, "
           "so only the first visit computes."
           + (f" The target was trained with mask ratio {trained_at:g}." if trained_at is not None else ""))
ratios = sorted(st.multiselect("Mask ratios to compare", GRID_RATIOS, default=SWEEP_RATIOS, key="sweep_grid",
                               format_func=lambda r: f"{r:g}"))
attacks = exp.available_attacks(varying_mask_ratio=True)
if len(ratios) < 2:
    st.info("Pick at least two mask ratios.")
    st.stop()
plans = cached.sweep_plans(exp, ratios, attacks, spec)
try:
    pending = cached.plan_scoring(exp, exp_key, ("sweep", exp_key, tuple(ratios), tuple(attacks), spec), plans, spec)
except Exception as e:  # noqa: BLE001 -- a sweep the experiment cannot score becomes a message
    st.error(f"The sweep could not run: {state.error_text(e)}")
    st.stop()
if pending is not None:
    scoring_panel.show(pending, f"the sweep ({len(pending.stages)} of {len(ratios)} mask ratios)")
done = [r for r, (_, missing) in zip(ratios, plans) if pending is None or cached.all_cached(missing)]
if len(done) < 2:
    st.info("The charts appear once two mask ratios are scored.")
    st.stop()
try:
    rows = cached.sweep_rows(exp, exp_key, done, attacks, spec, aggregate)
except Exception as e:  # noqa: BLE001 -- a sweep the experiment cannot run becomes a message
    st.error(f"The sweep could not run: {state.error_text(e)}")
    st.stop()
if len(done) < len(ratios):
    st.caption(f"Showing the {len(done)} mask ratios scored so far; the others follow.")

nearest = min(done, key=lambda r: abs(r - spec.mask_ratio))
current = st.select_slider("Highlight mask ratio", done, value=nearest, key="sweep_ratio", format_func=lambda r: f"{r:g}")
if current != spec.mask_ratio:
    st.caption(f"The sidebar's mask ratio is {spec.mask_ratio:g}; "
               + (f"it is not among the ratios compared here, so the nearest, {nearest:g}, is highlighted first."
                  if spec.mask_ratio not in done else "the slider above highlights another ratio of the sweep."))
left, right = st.columns(2)
for col, metric, title in ((left, "auc", "AUC"), (right, "tpr@0.01", "TPR at 1% FPR (95% interval)")):
    col.plotly_chart(charts.sweep_figure(rows, metric, title, current, widgets.ATTACK_LABELS), width="stretch",
                     key=f"sweep_{metric}")
best = [r for r in rows if r["best"]]
st.markdown("**Best ratio** (highest AUC, star): " + "; ".join(
    f"{widgets.label(r['attack'])} at **{r['mask_ratio']:g}** (AUC {r['auc']:.3f})" for r in best))

at = {r["attack"]: r for r in rows if r["mask_ratio"] == current}
st.markdown(f"**AUC at mask ratio {current:g}**")
cols = st.columns(len(at))
for col, (a, r) in zip(cols, at.items()):
    col.metric(widgets.label(a), f"{r['auc']:.3f}")
st.subheader(f"Distributions at mask ratio {current:g}")
here = replace(spec, mask_ratio=current)
results = widgets.headline_results(exp, exp_key, here, aggregate, among=attacks)
cols = st.columns(max(len(results), 1))
for col, (a, r) in zip(cols, results.items()):
    col.plotly_chart(widgets.member_histogram(r, widgets.label(a)), width="stretch", key=f"sweep_hist_{a}")
with st.expander("All numbers"):
    table = pd.DataFrame(rows).assign(attack=lambda d: d["attack"].map(widgets.label)).rename(columns=column_names())
    st.dataframe(table, hide_index=True, width="stretch")
