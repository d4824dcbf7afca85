"""Reconstruction: one image, masked and reconstructed by the target and the shadow, and where its score falls."""
import numpy as np
import streamlit as st
import torch

from app_pages import cached, charts, state, views, widgets
from app_pages.views import display_image, fraction_at_or_above, patch_grid, reconstruction_panels
from mimmia_core.axes import score_axis, score_name
from mimmia_core.data import ImageSizeError, load_image_bytes
from mimmia_core.masking import mask_noise
from mimmia_core.reconstruction import reconstruct

exp, exp_key = state.experiment()
spec, aggregate = state.current_spec(), state.current_aggregate()
cfg = exp.target.config

st.title("Reconstruction")
st.caption("The attack's signal, one image at a time: hide patches, let the MAE fill them in, measure the error. "
           f"Mask ratio, number of masks and seed are in the sidebar ({state.spec_caption(spec, aggregate)}).")

# --------------------------------------------------------------------------
# Pick an image
# --------------------------------------------------------------------------
sources = {"member": exp.members, "non-member": exp.nonmembers}
pick, show = st.columns([2, 3])
with pick:
    kind = st.radio("Image from", ["member", "non-member", "upload"], key="recon_source", horizontal=True,
                    format_func={"member": "target members", "non-member": "target non-members",
                                 "upload": "my own image"}.get)
    if kind == "upload":
        up = st.file_uploader(f"An image file ({cfg.img_size}x{cfg.img_size} pixels, "
                              f"{'grey' if cfg.in_chans == 1 else 'colour'} for this model)",
                              type=["png", "jpg", "jpeg", "bmp", "webp", "gif"], key="recon_upload")
        resize = st.checkbox("Resize to fit (center-crop to a square, then resize)", key="recon_resize")
        if up is None:
            st.info("Upload an image to see how the target reconstructs it and how member-like it scores.")
            st.stop()
        try:
            image = load_image_bytes(up.getvalue(), cfg.img_size, cfg.in_chans, resize=resize)
        except ImageSizeError as e:
            st.error(f"{up.name} is {e.size[0]}x{e.size[1]} pixels, but this model expects {e.expected}x"
                     f"{e.expected}. Tick **Resize to fit** to center-crop and resize it.")
            st.stop()
        except ValueError as e:
            st.error(f"{up.name}: {e}")
            st.stop()
        image_id = views.image_id(image)  # masks are a function of (seed, id): same upload, same masks
        label = f"upload {up.name}"
    else:
        src = sources[kind]
        ids = src.ids.tolist()
        image_id = st.selectbox(f"Image id ({len(ids)} {kind}s)", ids, key=f"recon_id_{kind}")
        image = src.images(src.positions_of([image_id]))[0]
        label = f"{kind} {image_id}"
    mask_index = st.slider(f"Mask shown (of the K = {spec.num_masks} the score averages over)", 1,
                           spec.num_masks, 1, key="recon_mask") - 1 if spec.num_masks > 1 else 0

# --------------------------------------------------------------------------
# Panels: target and shadow
# --------------------------------------------------------------------------
noise = mask_noise(spec.seed, [image_id], spec.num_masks, cfg.num_patches)[mask_index]
images = torch.from_numpy(np.array(image[None]))  # a writable copy
with show:
    if kind != "upload":
        first = src.ids[:16]
        st.markdown(f"**Gallery**: the first {len(first)} of the {len(src)} {kind}s (pick one by id on the left)")
        thumbs = src.images(np.arange(len(first)))
        for row in range(0, len(first), 8):
            for col, i in zip(st.columns(8), range(row, min(row + 8, len(first)))):
                col.image(display_image(thumbs[i], 56), caption=f"{'▶ ' if first[i] == image_id else ''}{first[i]}",
                          width="stretch")
models = [("Target", exp.target)] + ([("Shadow", exp.shadow)] if exp.shadow is not None else [])
recs = {}
for name, loaded in models:
    try:
        recs[name] = reconstruct(loaded.require_decoder(), images, spec.mask_ratio, noise)
    except ValueError as e:
        st.error(f"{name}: {e}")
zmax = max(float(r.patch_error.max()) for r in recs.values()) if recs else None
for name, rec in recs.items():
    err = rec.patch_error[0][rec.mask[0] > 0.5].mean().item()
    st.subheader(f"{name} model: {label}, mask {mask_index + 1} of {spec.num_masks}")
    st.caption(f"{rec.num_masked} of {cfg.num_patches} patches masked; mean error over them {err:.4g} "
               f"({'per-patch normalised' if rec.target_space == 'normalized_patches' else 'pixel'} target space)"
               + ("; the display borrows each original patch's mean and variance"
                  if rec.display_uses_original_patch_stats else ""))
    cols = st.columns(5)
    for col, (title, img) in zip(cols, reconstruction_panels(rec, 0).items()):
        col.image(img, caption=title, width="stretch")
    cols[4].plotly_chart(charts.heatmap_figure(patch_grid(rec.patch_error[0], rec.mask[0]),
                                               "error per patch", zmax=zmax),
                         width="stretch", key=f"recon_heat_{name}")
if exp.shadow is None:
    st.info("This experiment has no shadow model.")

# --------------------------------------------------------------------------
# The image's score against the member and non-member distributions
# --------------------------------------------------------------------------
st.header("Where this image's score falls")
results = widgets.headline_results(exp, exp_key, spec, aggregate)
if kind == "upload":
    scores = {}
    for a, r in list(results.items()):
        try:
            scores[a] = cached.upload_score(exp, r, image, image_id)
        except ValueError as e:
            st.error(f"{up.name}, {widgets.label(a)}: {state.error_text(e)}")
            del results[a]
else:
    scores = {}
    for a, r in results.items():
        ids, values = (r.member_ids, r.member_scores) if kind == "member" else (r.nonmember_ids, r.nonmember_scores)
        scores[a] = float(values[int(np.flatnonzero(ids == image_id)[0])])

cols = st.columns(max(len(results), 1))
for col, (a, r) in zip(cols, results.items()):
    sign, _ = score_axis(a, r.spec)
    s = scores[a]
    predicted = None if r.threshold is None else s >= r.threshold
    with col:
        st.metric(score_name(a).capitalize() + f" ({aggregate} over K = {spec.num_masks})",
                  f"{sign * s:.4g}", help=widgets.help_text(a))
        verdict = "" if predicted is None else \
            f" At the shadow-learned threshold it is predicted a **{'member' if predicted else 'non-member'}**."
        st.markdown(f"At least as member-like as this image: **{fraction_at_or_above(r.member_scores, s):.0%}** of "
                    f"members, **{fraction_at_or_above(r.nonmember_scores, s):.0%}** of non-members.{verdict}")
        fig = widgets.member_histogram(r, widgets.label(a), markers=[(s, "this image", "#fdd835")])
        st.plotly_chart(fig, width="stretch", key=f"recon_hist_{a}")
