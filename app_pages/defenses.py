"""Defenses: what each training-time defense does to the leak and what it costs the encoder, from the
results of `mimmia study defenses` (bundled, or a folder of yours)."""
import pandas as pd
import streamlit as st

from app_pages import charts, state, widgets
from mimmia_core.assets import DEMO_DIR
from mimmia_core.axes import score_axis
from mimmia_core.scores import ScoreSpec
from mimmia_core.study import load_study, point_scores, tradeoff_rows, tradeoff_sentence

BUNDLED = DEMO_DIR / "studies" / "defenses"

st.title("Defenses: privacy against utility")
st.caption("Each point trains the target, its shadow and its references with one defense (the references too, so "
           "that the calibrated attacks stay fair), then measures the leak and the encoder's linear-probe accuracy "
           "(MAE's standard measure of representation quality). Computed by `mimmia study defenses`.")
folder = st.text_input("Defenses study folder", value=str(BUNDLED), key="defenses_folder")
try:
    doc = load_study(folder)
except (OSError, ValueError) as e:
    st.info(f"No defenses results here ({state.error_text(e)}). Run `mimmia study defenses --out {folder}`.")
    st.stop()
attacks = list(dict.fromkeys(r["attack"] for p in doc["points"] for r in p["results"]))
lead = (doc["headline"] or [attacks[0]])[0]
attack = st.selectbox("Attack", attacks, index=attacks.index(lead), key="defenses_attack", format_func=widgets.label)
ratio = doc["points"][0]["results"][0]["mask_ratio"]
rows = tradeoff_rows(doc["points"], attack, ratio)
st.success(tradeoff_sentence(rows, widgets.label(attack)) + (" (quick run)" if doc["quick"] else ""))
selected = st.selectbox("Point", [r["label"] for r in rows], key="defenses_point")
st.plotly_chart(charts.tradeoff_figure(rows, f"TPR at 1% FPR, {widgets.label(attack)} (lower = more private)",
                                       selected), width="stretch", key="defenses_chart")
st.caption("Red markers are on the Pareto front: no other defense leaks less and keeps more accuracy. A TPR of 0 "
           "is drawn at 0.001, the left edge of the log axis. With few members one member is a big step of TPR: "
           "read the AUC beside it (All numbers).")

row = next(r for r in rows if r["label"] == selected)
result = next(r for r in row["record"]["results"] if r["attack"] == attack and r["mask_ratio"] == ratio)
st.subheader(f"Point: {selected}")
cols = st.columns(4)
cols[0].metric("TPR at 1% FPR", "—" if row["tpr"] is None else f"{row['tpr']:.3f}",
               help="— : 1% FPR is below 1 / non-members here.")
cols[1].metric("AUC", f"{row['auc']:.3f}")
cols[2].metric("Linear-probe accuracy", "—" if row["probe_accuracy"] is None else f"{row['probe_accuracy']:.1%}")
cols[3].metric("Held-out loss", "—" if row["heldout_loss"] is None else f"{row['heldout_loss']:.4f}")
members, nonmembers = point_scores(doc, row["record"], attack, ratio)
sign, axis = score_axis(attack, ScoreSpec(mask_ratio=ratio, distance=result["distance"]))
st.plotly_chart(charts.hist_figure({"members": (sign * members, widgets.MEMBER_COLOR),
                                    "non-members": (sign * nonmembers, widgets.NONMEMBER_COLOR)}, axis,
                                   title=f"{widgets.label(attack)}, {selected}"), width="stretch", key="defenses_hist")
with st.expander("All numbers"):
    st.dataframe(pd.DataFrame([{k: v for k, v in r.items() if k != "record"} for r in rows]), hide_index=True,
                 width="stretch")
