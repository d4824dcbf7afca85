"""Overview: what the attack is, which experiment is loaded, the headline numbers, and where to pick another."""
from pathlib import Path

import pandas as pd
import streamlit as st

from app_pages import state, widgets
from mimmia_core.metrics import smallest_measurable_fpr

PIPELINE = """
digraph {
  rankdir=LR; bgcolor="transparent"; nodesep=0.25; ranksep=0.35;
  node [shape=box, style="rounded,filled", fillcolor="#f5f5f5", color="#9e9e9e", fontname="Helvetica", fontsize=11];
  edge [color="#616161", fontname="Helvetica", fontsize=10];
  x      [label="image x", fillcolor="#fce4ec"];
  mask   [label="hide a fraction r\\nof the patches\\n(K seeded masks)"];
  target [label="target MAE\\nencoder + decoder", fillcolor="#e3f2fd"];
  dist   [label="reconstruction\\ndistance d(x)"];
  refs   [label="reference MAEs\\n(never saw x)", fillcolor="#e8f5e9"];
  cal    [label="calibrated score\\nlog d_ref(x) - log d(x)"];
  shadow [label="shadow MAE on the\\nadversary's own data", fillcolor="#fff3e0"];
  thr    [label="threshold learned\\non the shadow"];
  out    [label="member?", shape=ellipse, fillcolor="#fce4ec"];
  x -> mask -> target -> dist;
  dist -> thr [label="paper"];
  dist -> cal; refs -> cal; cal -> thr [label="calibrated"];
  shadow -> thr [style=dashed];
  thr -> out;
}
"""

st.title("Membership inference against masked image modeling")
st.markdown(
    "A masked autoencoder (MAE) learns by hiding most patches of an image and reconstructing them, and it "
    "reconstructs **its own training images better** than images it never saw. The attack of Li et al. (2024) masks "
    "an image, lets the target model reconstruct it, and calls the image a **member** of the training set when the "
    "reconstruction distance is small; the cut-off is learned on a **shadow** MAE that the adversary trains on data "
    "of its own. Some images are simply easy to reconstruct: **calibrated** attacks compare the target's distance "
    "with that of **reference** MAEs that never saw the image, which removes this per-image difficulty.")
st.graphviz_chart(PIPELINE, width="stretch")
st.caption("The field's standard (Carlini et al. 2022): report the true-positive rate at a low false-positive rate "
           "(1%, 0.1%) with confidence intervals, and the ROC on log-log axes, not only AUC and accuracy.")

# --------------------------------------------------------------------------
# The experiment
# --------------------------------------------------------------------------
choice = state.current_choice()
loaded, err = state.try_load(choice)
if loaded is None:
    st.error(f"The experiment could not be loaded: {err}")
else:
    exp, exp_key = loaded
    d = exp.describe()
    st.header(f"Experiment: {d['name']}")
    home = dict(choice).get("path")
    st.caption(f"Loaded from {home or exp.target.path}; models on {exp.target.model.pos_embed.device}.")

    spec, aggregate = state.current_spec(), state.current_aggregate()
    results = widgets.headline_results(exp, exp_key, spec, aggregate)
    st.subheader("Headline numbers")
    st.caption(f"Target model, {len(exp.members)} members vs {len(exp.nonmembers)} non-members; "
               f"{state.spec_caption(spec, aggregate)}. Change these in the sidebar.")
    for name, r in results.items():
        m = r.metrics
        with st.container(border=True, key=f"headline_{name}"):
            st.markdown(f"**{widgets.label(name).capitalize()}**: {widgets.help_text(name)}")
            c = st.columns(4)
            c[0].metric("AUC", f"{m['auc']:.3f}")
            for cell, fpr in ((c[1], 0.01), (c[2], 0.001)):
                t = m["tpr_at"][fpr]
                cell.metric(f"TPR at {fpr:.1%} FPR".replace(".0%", "%"),
                            f"{t['tpr']:.3f}" if t["measurable"] else "—",
                            help=f"95% Clopper-Pearson interval [{t['lo']:.3f}, {t['hi']:.3f}]." if t["measurable"]
                            else f"Not measurable: {fpr:g} is below the smallest measurable FPR "
                                 f"1/{len(exp.nonmembers)} with {len(exp.nonmembers)} non-members.")
            confusion = m.get("confusion")
            c[3].metric("Balanced accuracy", "—" if confusion is None else f"{confusion['balanced_accuracy']:.3f}",
                        delta=None if confusion is None else f"{confusion['balanced_accuracy'] - 0.5:+.3f} vs 0.5",
                        delta_color="off",
                        help="(TPR + 1 - FPR) / 2 at the threshold the adversary learned on its shadow model, applied "
                             "to the target. 0.5 is chance, and what calling every image a non-member scores.")
            unmeasured = [f"{f:.1%}".replace(".0%", "%") for f in (0.01, 0.001) if not m["tpr_at"][f]["measurable"]]
            if unmeasured:
                st.caption(f"— at {' and '.join(unmeasured)} FPR: not measurable, below the smallest FPR "
                           f"{len(exp.nonmembers)} non-members can show (one false positive, "
                           f"1/{len(exp.nonmembers)} = {m['min_measurable_fpr']:.3g}).")
            if confusion is not None:
                st.caption(f"Plain accuracy {confusion['accuracy']:.3f}; calling every image a "
                           f"{confusion['trivial_call']} already "
                           f"scores {confusion['trivial_accuracy']:.3f} with {len(exp.members)} members and "
                           f"{len(exp.nonmembers)} non-members, so read balanced accuracy and the TPR at low FPR.")
    if "calibrated" not in exp.available_attacks():
        st.info("This experiment has no reference models, so only the paper's raw attack runs.")
    st.caption(f"Smallest measurable FPR with {len(exp.nonmembers)} non-members: "
               f"1/{len(exp.nonmembers)} = {smallest_measurable_fpr(len(exp.nonmembers)):.3g}. Other attacks and the "
               "live threshold are on the **ROC and threshold** page.")

    st.subheader("Models")
    rows = []
    for role, info in [("target", d["target"]), ("shadow", d["shadow"])] + \
            [(f"reference {i}", r) for i, r in enumerate(d["references"])]:
        if info is None:
            continue
        a, prov = info["architecture"], info.get("provenance") or {}
        path = Path(info["path"])
        shown = path.relative_to(home) if home and path.is_relative_to(home) else path
        rows.append({"role": role, "path": str(shown), "format": info["source_format"],
                     "input": f"{a['img_size']}px x {a['in_chans']}ch, patch {a['patch_size']}",
                     "encoder": f"{a['embed_dim']} wide, {a['depth']} deep",
                     "decoder": "yes" if info["has_decoder"] else "no (encoder-only)",
                     "trained on": (prov.get("data") or {}).get("num_images"),
                     "epochs": prov.get("epochs")})
    st.dataframe(pd.DataFrame(rows), hide_index=True, width="stretch")
    if home:
        st.caption(f"Paths relative to {home}. Inspect any model on the **Models** page.")
    st.subheader("Data")
    data = pd.DataFrame([{"set": role.replace("_", " "), "images": v["size"], "source": v["name"],
                          "spec": v["spec"], "fingerprint": v["fingerprint"]} for role, v in d["data"].items()])
    st.dataframe(data.dropna(axis=1, how="all"), hide_index=True, width="stretch")
    if exp.manifest is not None:
        st.caption(f"Split manifest: source {exp.manifest.source!r}, seed {exp.manifest.seed}, "
                   f"{len(exp.manifest.reference_members)} reference training sets.")
    for note in d["notes"]:
        st.info(note)

# --------------------------------------------------------------------------
# Choosing another experiment
# --------------------------------------------------------------------------
st.header("Choose the experiment")
kinds = {"demo": "Bundled demo", "dir": "A bundle folder (laid out like assets/demo)",
         "paths": "Checkpoints and data, path by path", "json": "An experiment JSON file"}
now = dict(choice)
st.caption(f"Loaded now: {kinds[now['kind']]}" + (f" — {now['path']}" if now.get("path") else ""))
kind = st.radio("Experiment", list(kinds), index=list(kinds).index(now["kind"]), format_func=kinds.get,
                key="exp_kind", horizontal=True)
with st.form("experiment_form"):
    fields = {}
    if kind == "dir":
        fields["path"] = st.text_input("Bundle folder", key="exp_dir",
                                       value=now["path"] if now["kind"] == "dir" else "",
                                       help="manifest.json, fashion_mnist_subset.npz and models/target, "
                                            "models/shadow, models/ref-0 ...")
    elif kind == "json":
        fields["path"] = st.text_input("Experiment JSON file", key="exp_json",
                                       value=now["path"] if now["kind"] == "json" else "",
                                       help='e.g. {"target": "models/target", "shadow": "models/shadow", '
                                            '"references": ["models/ref-0"], "manifest": "manifest.json"}')
    elif kind == "paths":
        c1, c2 = st.columns(2)
        fields["target"] = c1.text_input("Target checkpoint", key="exp_target",
                                         help="A mimmia folder, an official MAE .pth, or a Hugging Face ViTMAE "
                                              "folder. Settings the file does not record go after '?', e.g. "
                                              "off.pth?decoder_num_heads=4&mean=0&std=1")
        fields["shadow"] = c2.text_input("Shadow checkpoint (optional)", key="exp_shadow",
                                         help="PATH or PATH?key=value&..., as for the target.")
        fields["references"] = tuple(line.strip() for line in st.text_area(
            "Reference checkpoints (optional, one per line)", key="exp_references").splitlines() if line.strip())
        c1, c2 = st.columns(2)
        fields["manifest"] = c1.text_input("Split manifest (JSON)", key="exp_manifest",
                                           help="Which image ids each model was trained on.")
        fields["data"] = c2.text_input("Data spec (default: the manifest's own)", key="exp_data",
                                       help="demo, fashion-mnist:train, npz:PATH, folder:PATH, cifar10:ROOT ...")
        c1, c2 = st.columns(2)
        fields["members"] = c1.text_input("Or: members spec", key="exp_members",
                                          help="Instead of a manifest: a source holding the target's members.")
        fields["nonmembers"] = c2.text_input("and non-members spec", key="exp_nonmembers")
        c1, c2 = st.columns(2)
        fields["shadow_members"] = c1.text_input("Shadow members spec (optional)", key="exp_shadow_members")
        fields["shadow_nonmembers"] = c2.text_input("Shadow non-members spec (optional)",
                                                    key="exp_shadow_nonmembers")
        fields["decoder_from"] = st.text_input(
            "Decoder for an encoder-only target (optional): 'shadow' or a checkpoint path", key="exp_decoder_from")
    else:
        st.write("The demo: MAEs trained on a Fashion-MNIST subset that ships with mimmia.")
    submitted = st.form_submit_button("Load experiment", type="primary", key="exp_submit")
if submitted:
    fields = {k: (v.strip() if isinstance(v, str) else v) for k, v in fields.items()}
    if kind == "demo":
        new = (("kind", "demo"), ("path", str(state.DEMO_DIR)))
    elif kind in ("dir", "json") and not fields["path"]:
        new = None
        st.error("Give a path first.")
    elif kind == "paths" and not fields["target"]:
        new = None
        st.error("A target checkpoint is required.")
    else:
        new = (("kind", kind),) + tuple(sorted(fields.items()))
    if new is not None:
        _, problem = state.try_load(new)
        if problem:
            st.error(f"Could not load this experiment: {problem}")
        else:
            st.session_state["experiment_choice"] = new
            st.rerun()
