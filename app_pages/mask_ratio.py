"""Mask ratio: how the attack's power depends on the fraction of patches hidden at attack time."""
from dataclasses import replace

import pandas as pd
import streamlit as st

from app_pages import cached, charts, state, widgets
from mimmia_core.demo import SWEEP_RATIOS

CHOICES = (0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4, 0.45, 0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95)

exp, exp_key = state.experiment()
spec, aggregate = state.current_spec(), state.current_aggregate()

st.title("Mask ratio at attack time")
trained_at = (exp.target.provenance or {}).get("mask_ratio")
st.caption("Li et al. study how the fraction of patches hidden at attack time changes the attack's power. Each point "
           "scores every model at that ratio (K, seed and distance from the sidebar); results are cached on disk, "
           "so only the first visit computes."
           + (f" The target was trained with mask ratio {trained_at:g}." if trained_at is not None else ""))
ratios = sorted(st.multiselect("Mask ratios to compare", CHOICES, default=SWEEP_RATIOS, key="sweep_grid",
                               format_func=lambda r: f"{r:g}"))
attacks = exp.available_attacks(varying_mask_ratio=True)
if len(ratios) < 2:
    st.info("Pick at least two mask ratios.")
    st.stop()
on_gpu = exp.target.model.pos_embed.device.type == "cuda"
missing = cached.sweep_missing(exp, exp_key, ratios, attacks, spec, aggregate)
if missing:
    run = st.toggle("Compute the sweep", value=on_gpu, key="sweep_run",
                    help="Stays on: new settings are then swept as soon as they change.")
    if not run:
        st.info(f"The sweep scores every model at {len(ratios)} mask ratios: about {missing.image_masks:,} image-masks "
                f"not scored yet (K = {spec.num_masks}). That takes seconds on a GPU and can take minutes on a CPU; scores already on "
                "disk (from an earlier visit or `mimmia sweep`) are reused, so each ratio is computed once.")
        st.stop()
try:
    rows = cached.sweep_rows(exp, exp_key, ratios, attacks, spec, aggregate)
except Exception as e:  # noqa: BLE001 -- a sweep the experiment cannot run becomes a message
    st.error(f"The sweep could not run: {state.error_text(e)}")
    st.stop()

current = st.select_slider("Highlight mask ratio", ratios, value=min(ratios, key=lambda r: abs(r - spec.mask_ratio)),
                           key="sweep_ratio", format_func=lambda r: f"{r:g}")
left, right = st.columns(2)
for col, metric, label in ((left, "auc", "AUC"), (right, "tpr@0.01", "TPR at 1% FPR (95% interval)")):
    col.plotly_chart(charts.sweep_figure(rows, metric, label, current, widgets.ATTACK_LABELS), width="stretch",
                     key=f"sweep_{metric}")
best = [r for r in rows if r["best"]]
st.markdown("**Best ratio** (highest AUC, star): " + "; ".join(
    f"{widgets.ATTACK_LABELS[r['attack']]} at **{r['mask_ratio']:g}** (AUC {r['auc']:.3f})" for r in best))

at = {r["attack"]: r for r in rows if r["mask_ratio"] == current}
cols = st.columns(len(at))
for col, (a, r) in zip(cols, at.items()):
    col.metric(f"AUC at {current:g}, {a}", f"{r['auc']:.3f}")
st.subheader(f"Distributions at mask ratio {current:g}")
here = replace(spec, mask_ratio=current)
results = widgets.headline_results(exp, exp_key, here, aggregate, among=attacks)
cols = st.columns(max(len(results), 1))
for col, (a, r) in zip(cols, results.items()):
    col.plotly_chart(widgets.member_histogram(r, widgets.label(a)), width="stretch", key=f"sweep_hist_{a}")
with st.expander("All numbers"):
    st.dataframe(pd.DataFrame(rows), hide_index=True, width="stretch")
