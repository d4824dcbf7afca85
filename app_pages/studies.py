"""Studies: the paper's questions (epochs, model size, mask ratios, the shadow's data, encoders without
their decoder) as curves over their points, from `mimmia study` results (bundled, or a folder of yours)."""
import pandas as pd
import streamlit as st

from app_pages import charts, state, widgets
from mimmia_core.assets import DEMO_DIR
from mimmia_core.axes import score_axis
from mimmia_core.scores import ScoreSpec
from mimmia_core.study import curve_rows, list_studies, load_study, point_scores
from mimmia_core.study.spec import METRICS

BUNDLED = DEMO_DIR / "studies"

st.title("Studies: what makes an MAE leak")
st.caption("Each study varies one factor of the paper's and attacks every point. The bundled results were computed "
           "by `mimmia study NAME` (README, \"What leaks\"); run your own and open its folder below.")
folder = st.text_input("Folder of study results", value=str(BUNDLED), key="studies_folder",
                       help="A folder holding one sub-folder per study, each with the study.json `mimmia study` wrote.")
studies = list_studies(folder)
if not studies:
    st.info(f"No study results in {folder}. Run e.g. `mimmia study epochs --out {folder}/epochs`.")
    st.stop()
name = st.selectbox("Study", list(studies), key="studies_name",
                    format_func=lambda n: f"{n}: {load_study(studies[n])['study']['title']}")
try:
    doc = load_study(studies[name])
except (OSError, ValueError) as e:
    st.error(state.error_text(e))
    st.stop()
spec = doc["study"]
st.markdown(f"**{spec['question']}** The paper: {spec['paper']}")
st.success(f"**Finding.** {doc['finding']}" + (" (quick run: tiny models, few images)" if doc["quick"] else ""))

attacks = list(dict.fromkeys(r["attack"] for p in doc["points"] for r in p["results"]))
lead_attack, lead_ratio = doc["headline"] or (attacks[0], None)
left, right = st.columns(2)
attack = left.selectbox("Attack", attacks, index=attacks.index(lead_attack), key="studies_attack",
                        format_func=widgets.label)
ratios = sorted({r["mask_ratio"] for p in doc["points"] for r in p["results"] if r["attack"] == attack})
per_point = spec["name"] == "attack-mask-ratio"  # each point is its own ratio
ratio = None if per_point else right.selectbox("Mask ratio at attack time", ratios, key="studies_ratio",
                                               index=ratios.index(lead_ratio) if lead_ratio in ratios else 0)
rows = curve_rows(doc["points"], attack, ratio)
selected = st.selectbox("Point", [r["label"] for r in rows], key="studies_point",
                        help="Its histograms and numbers are shown below the curves.")

cols = st.columns(3)
for col, metric, title in ((cols[0], "auc", "AUC"), (cols[1], "tpr", "TPR at 1% FPR (95% interval)"),
                           (cols[2], "balanced_accuracy", METRICS["balanced_accuracy"])):
    col.plotly_chart(charts.study_figure(rows, metric, title, spec["variable_label"], spec["scale"], selected),
                     width="stretch", key=f"studies_{metric}")

row = next(r for r in rows if r["label"] == selected)
result = next(r for r in row["record"]["results"] if r["attack"] == attack and r["mask_ratio"] == row["mask_ratio"])
st.subheader(f"Point: {selected}")
metrics = st.columns(4)
metrics[0].metric("AUC", f"{row['auc']:.3f}")
metrics[1].metric("TPR at 1% FPR", "—" if row["tpr"] is None else f"{row['tpr']:.3f}",
                  help="— : 1% FPR is below 1 / non-members, so it cannot be measured here.")
metrics[2].metric("Balanced accuracy", "—" if row["balanced_accuracy"] is None else f"{row['balanced_accuracy']:.3f}")
metrics[3].metric("Members / non-members", f"{result['n_members']} / {result['n_nonmembers']}")
members, nonmembers = point_scores(doc, row["record"], attack, row["mask_ratio"])
sign, axis = score_axis(attack, ScoreSpec(mask_ratio=row["mask_ratio"], distance=result["distance"]))
lines = [] if result["threshold"] is None else [(sign * result["threshold"], "shadow threshold",
                                                 widgets.THRESHOLD_COLOR)]
st.plotly_chart(charts.hist_figure({"members": (sign * members, widgets.MEMBER_COLOR),
                                    "non-members": (sign * nonmembers, widgets.NONMEMBER_COLOR)}, axis, lines=lines,
                                   title=f"{widgets.label(attack)} at mask ratio {row['mask_ratio']:g}"),
                width="stretch", key="studies_hist")

others = [n for n in studies if n != name]
if others:
    with st.expander("Compare with another study"):
        other = st.selectbox("Study", others, key="studies_other")
        other_doc = load_study(studies[other])
        o_attack, o_ratio = other_doc["headline"] or (attack, None)
        o_rows = curve_rows(other_doc["points"], o_attack, None if other == "attack-mask-ratio" else o_ratio)
        a, b = st.columns(2)
        a.plotly_chart(charts.study_figure(rows, "auc", f"AUC, {widgets.label(attack)}", spec["variable_label"],
                                           spec["scale"]), width="stretch", key="studies_cmp_a")
        b.plotly_chart(charts.study_figure(o_rows, "auc", f"AUC, {widgets.label(o_attack)}",
                                           other_doc["study"]["variable_label"], other_doc["study"]["scale"]),
                       width="stretch", key="studies_cmp_b")
        st.caption(f"{other}: {other_doc['finding']}")
with st.expander("All numbers"):
    st.dataframe(pd.DataFrame([{k: v for k, v in r.items() if k != "record"} for r in rows]), hide_index=True,
                 width="stretch")
