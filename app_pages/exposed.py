"""Most exposed images: the members an attack is surest about, and the non-members it mistakes for members."""
import numpy as np
import streamlit as st
import torch

from app_pages import state, widgets
from app_pages.views import display_image, strip, top_n
from mimmia_core.axes import member_reading, score_axis, score_name
from mimmia_core.masking import mask_noise
from mimmia_core.reconstruction import reconstruct
from mimmia_core.report import scores_csv, scores_filename

PER_ROW = 3

exp, exp_key = state.experiment()
spec, aggregate = state.current_spec(), state.current_aggregate()

st.title("Most exposed images")
results = widgets.results(exp, exp_key, exp.available_attacks(), spec, aggregate)
if not results:
    st.stop()
ran = list(results)
default = "calibrated" if "calibrated" in ran else ran[0]
if st.session_state.get("exposed_attack") not in ran:  # first visit, or an attack that no longer runs
    st.session_state["exposed_attack"] = default
choose, how_many = st.columns([2, 3])
ranking = choose.selectbox("Rank by the attack", ran, key="exposed_attack", format_func=widgets.label,
                           help="Each image's score under this attack (higher = more member-like) orders the "
                                "galleries.")
r = results[ranking]
sign, _ = score_axis(ranking, r.spec)
most = min(len(r.member_ids), len(r.nonmember_ids))
n = how_many.slider("How many images", 1, min(24, most), min(9, most), key="exposed_n")
st.caption(f"Ranked by the {widgets.label(ranking)} attack, most member-like first; "
           f"{state.spec_caption(spec, aggregate)}. Each image is shown as the original, its first mask, and the "
           f"target's reconstruction under that mask (with the visible patches pasted back). Scores are the "
           f"{score_name(ranking)} ({member_reading(ranking, r.spec)}).")
st.download_button("Download every image's scores (CSV)", lambda: scores_csv(exp, list(results.values())).encode(),
                   file_name=scores_filename(exp.name, spec, aggregate), mime="text/csv", key="exposed_csv",
                   help="The CLI's scores.csv: '#' lines on top record the settings, every model's and image set's "
                        "fingerprint and the mimmia version (read it with pandas.read_csv(path, comment='#')); then "
                        "one row per image and role, label (1 = member), each attack's score (higher = more "
                        "member-like: the paper column is minus the distance) and its rank among the same model's "
                        "images.")


def card(rec, i: int, image_id: int, member: bool, score: float) -> None:
    """One image: a line saying who it is and how it scores, then its three labelled panels."""
    verdict = "" if r.threshold is None else \
        f" · predicted {'member' if score >= r.threshold else 'non-member'}"
    st.markdown(f"**#{i + 1} · {'member' if member else 'non-member'} {image_id}**  \n"
                f"{score_name(ranking)} {sign * score:.4g}{verdict}")
    st.image(strip([display_image(x[i], 112) for x in (rec.original, rec.masked, rec.pasted)]),
             caption="original · masked · reconstruction", width="stretch")


def gallery(title: str, caption: str, source, ids, scores, member: bool):
    st.subheader(title)
    st.caption(caption)
    cfg = exp.target.config
    images = torch.from_numpy(np.ascontiguousarray(source.images(source.positions_of(ids))))
    noise = mask_noise(spec.seed, ids, 1, cfg.num_patches)[0]
    try:
        rec = reconstruct(exp.target.require_decoder(), images, spec.mask_ratio, noise)
    except ValueError as e:
        st.error(str(e))
        return
    for start in range(0, len(ids), PER_ROW):
        for j, col in enumerate(st.columns(PER_ROW)[: len(ids) - start]):
            with col.container(border=True):
                card(rec, start + j, int(ids[start + j]), member, float(scores[start + j]))


member_ids, member_scores = top_n(r.member_ids, r.member_scores, n)
gallery("Members the attack exposes most", "Training images of the target that the attack calls members with most "
        "confidence.", exp.members, member_ids, member_scores, member=True)
non_ids, non_scores = top_n(r.nonmember_ids, r.nonmember_scores, n)
gallery("Non-members that look most like members", "False alarms: images the target never saw but reconstructs "
        "as if it had. They set how low the FPR can go.", exp.nonmembers, non_ids, non_scores, member=False)
