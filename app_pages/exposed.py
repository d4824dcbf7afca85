"""Most exposed images: the members the attack is surest about, and the non-members it mistakes for members."""
import numpy as np
import streamlit as st
import torch

from app_pages import state, widgets
from mimmia_core.masking import mask_noise
from mimmia_core.reconstruction import reconstruct
from mimmia_core.report import scores_csv
from app_pages.views import display_image, top_n

exp, exp_key = state.experiment()
spec, aggregate = state.current_spec(), state.current_aggregate()

st.title("Most exposed images")
available = exp.available_attacks()
ranking = "calibrated" if "calibrated" in available else "paper"
st.caption(f"Ranked by the {widgets.label(ranking)} score (higher = more member-like); "
           f"{state.spec_caption(spec, aggregate)}. Each image is shown next to the target's reconstruction "
           f"under its first mask.")
results = widgets.results(exp, exp_key, available, spec, aggregate)
if ranking not in results:
    st.stop()
r = results[ranking]

n = st.slider("How many images", 1, min(24, len(r.member_ids), len(r.nonmember_ids)),
              min(8, len(r.member_ids), len(r.nonmember_ids)), key="exposed_n")
st.download_button("Download every image's scores (CSV)", scores_csv(exp, list(results.values())).encode(),
                   file_name=f"mimmia_scores_{exp.name}.csv", mime="text/csv", key="exposed_csv",
                   help="The CLI's scores.csv: one row per image and role (target and shadow members and "
                        "non-members), label (1 = member), each attack's score and its rank among the same "
                        "model's images.")


def gallery(title: str, caption: str, source, ids, scores, threshold):
    st.subheader(title)
    st.caption(caption)
    cfg = exp.target.config
    pos = source.positions_of(ids)
    images = torch.from_numpy(np.ascontiguousarray(source.images(pos)))
    noise = mask_noise(spec.seed, ids, 1, cfg.num_patches)[0]
    try:
        rec = reconstruct(exp.target.require_decoder(), images, spec.mask_ratio, noise)
    except ValueError as e:
        st.error(str(e))
        return
    per_row = 4
    for start in range(0, len(ids), per_row):
        cols = st.columns(per_row)
        for j, col in enumerate(cols[: len(ids) - start]):
            i = start + j
            flag = "" if threshold is None else (" · predicted member" if scores[i] >= threshold
                                                 else " · predicted non-member")
            with col:
                left, right = display_image(rec.original[i], 112), display_image(rec.pasted[i], 112)
                pair = np.concatenate([left, np.ones_like(left[:, :4]), right], axis=1)
                st.image(pair, caption=f"#{i + 1}: id {int(ids[i])}, score {scores[i]:.3g}{flag}", width="stretch")


member_ids, member_scores = top_n(r.member_ids, r.member_scores, n)
gallery("Members the attack exposes most", "Original (left) and the target's reconstruction (right). These training "
        "images are the ones an attacker can claim with most confidence.", exp.members, member_ids, member_scores,
        r.threshold)
non_ids, non_scores = top_n(r.nonmember_ids, r.nonmember_scores, n)
gallery("Non-members that look most like members", "False alarms: images the target never saw but reconstructs "
        "as if it had. They set how low the FPR can go.", exp.nonmembers, non_ids, non_scores, r.threshold)
