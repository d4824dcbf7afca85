"""Reconstruction: one image, masked and reconstructed by the target and the shadow, and where its score falls."""
import numpy as np
import streamlit as st
import torch

from app_pages import cached, charts, state, views, widgets
from app_pages.views import display_image, error_overlay, fraction_at_or_above, framed, gallery_page, \
    patch_grid, reconstruction_panels
from mimmia_core.axes import score_axis, score_name
from mimmia_core.data import ImageSizeError
from mimmia_core.image_score import load_upload, member_verdicts
from mimmia_core.masking import mask_noise
from mimmia_core.reconstruction import reconstruct

PER_PAGE = 16  # gallery thumbnails per page, in two rows of 8

exp, exp_key = state.experiment()
spec, aggregate = state.current_spec(), state.current_aggregate()
cfg = exp.target.config

st.title("Reconstruction")
st.caption("The attack's signal, one image at a time: hide patches, let the MAE fill them in, measure the error. "
           f"Mask ratio, number of masks and seed are in the sidebar ({state.spec_caption(spec, aggregate)}).")
results = widgets.headline_results(exp, exp_key, spec, aggregate)  # first: the default image is one it catches
sources = {"member": exp.members, "non-member": exp.nonmembers}


def show_image(kind: str, image_id: int) -> None:
    """Select `image_id` of `kind` (a callback: runs before the rerun)."""
    st.session_state[f"recon_id_{kind}"] = int(image_id)


def jump_to_example(verdicts) -> None:
    """Select the first caught or missed member and turn the gallery to its page: a new pagination widget
    (its key counts the jumps) that starts there, as a widget's value cannot be set and defaulted at once."""
    which = verdicts.caught if st.session_state["recon_example"] == "caught" else verdicts.missed
    if len(which):
        show_image("member", which[0])
        position = int(sources["member"].positions_of([int(which[0])])[0])
        st.session_state["recon_gallery_start"] = position // PER_PAGE + 1
        st.session_state["recon_jumps"] = st.session_state.get("recon_jumps", 0) + 1


def member_examples() -> None:
    """The caught/missed toggle of the paper attack at its shadow threshold (image_score.member_verdicts). The
    first visit opens on the member it is surest of; the toggle jumps to the clearest miss and back."""
    r = results.get("paper")
    if r is None or r.threshold is None:
        st.caption("The paper attack has no shadow threshold here, so no member is called caught or missed.")
        return
    v = member_verdicts(r)
    if "recon_id_member" not in st.session_state:
        st.session_state["recon_example"] = "caught" if len(v.caught) else "missed"
        jump_to_example(v)
    st.radio("Show a member that the paper attack", ["caught", "missed"], key="recon_example", horizontal=True,
             on_change=jump_to_example, args=(v,),
             format_func={"caught": f"catches ({len(v.caught)})", "missed": f"misses ({len(v.missed)})"}.get,
             help="At the shadow-learned threshold. 'catches' opens the member it is surest of, 'misses' the "
                  "member it takes most for a non-member.")


def upload_image():
    """(image, id, label) of an uploaded file, converted to the model's channels by the core (with a note)."""
    up = st.file_uploader(f"An image file ({cfg.img_size}x{cfg.img_size} pixels, "
                          f"{'grey' if cfg.in_chans == 1 else 'colour'} for this model)",
                          type=["png", "jpg", "jpeg", "bmp", "webp", "gif"], key="recon_upload")
    resize = st.checkbox("Resize to fit (center-crop to a square, then resize)", key="recon_resize")
    if up is None:
        st.info("Upload an image to see how the target reconstructs it and how member-like it scores.")
        st.stop()
    try:
        upload = load_upload(up.getvalue(), cfg.img_size, cfg.in_chans, resize=resize)
    except ImageSizeError as e:
        st.error(f"{up.name} is {e.size[0]}x{e.size[1]} pixels, but this model expects {e.expected}x"
                 f"{e.expected}. Tick **Resize to fit** to center-crop and resize it.")
        st.stop()
    except ValueError as e:
        st.error(f"{up.name}: {e}")
        st.stop()
    if upload.note:
        st.info(upload.note, icon=":material/info:")
    # masks are a function of (seed, id): the same upload gets the same masks
    return upload.image, views.image_id(upload.image), f"upload {up.name}"


def gallery(kind: str, image_id: int) -> None:
    """One page of thumbnails of `kind`; the button under each selects that image."""
    src = sources[kind]
    _, pages = gallery_page(len(src), 1, PER_PAGE)
    st.markdown(f"**Gallery** of the {len(src)} {kind}s: click an id under a thumbnail to show that image")
    start = min(st.session_state.get("recon_gallery_start", 1), pages) if kind == "member" else 1
    page = st.pagination(pages, default=start, key=f"recon_page_{kind}_{st.session_state.get('recon_jumps', 0)}") \
        if pages > 1 else 1
    positions, _ = gallery_page(len(src), page, PER_PAGE)
    ids, thumbs = src.ids[positions.start:positions.stop], src.images(np.asarray(positions))
    for row in range(0, len(ids), 8):
        for col, i in zip(st.columns(8), range(row, min(row + 8, len(ids)))):
            chosen = ids[i] == image_id
            thumb = display_image(thumbs[i], 56)
            col.image(framed(thumb) if chosen else thumb, width="stretch")
            col.button(f"**{ids[i]}**" if chosen else str(ids[i]), key=f"recon_pick_{kind}_{ids[i]}",
                       width="stretch", type="tertiary", on_click=show_image, args=(kind, ids[i]))


# --------------------------------------------------------------------------
# Pick an image
# --------------------------------------------------------------------------
pick, show = st.columns([2, 3])
with pick:
    kind = st.radio("Image from", ["member", "non-member", "upload"], key="recon_source", horizontal=True,
                    format_func={"member": "target members", "non-member": "target non-members",
                                 "upload": "my own image"}.get)
    if kind == "upload":
        image, image_id, label = upload_image()
    else:
        if kind == "member":
            member_examples()
        src = sources[kind]
        image_id = st.selectbox(f"Image id ({len(src)} {kind}s)", src.ids.tolist(), key=f"recon_id_{kind}")
        image = src.images(src.positions_of([image_id]))[0]
        label = f"{kind} {image_id}"
    mask_index = st.slider(f"Mask shown (of the K = {spec.num_masks} the score averages over)", 1,
                           spec.num_masks, 1, key="recon_mask") - 1 if spec.num_masks > 1 else 0
if kind != "upload":
    with show:
        gallery(kind, image_id)

# --------------------------------------------------------------------------
# Panels: target and shadow
# --------------------------------------------------------------------------
noise = mask_noise(spec.seed, [image_id], spec.num_masks, cfg.num_patches)[mask_index]
images = torch.from_numpy(np.array(image[None]))  # a writable copy
models = [("Target", exp.target)] + ([("Shadow", exp.shadow)] if exp.shadow is not None else [])
for name, loaded in models:
    try:
        rec = reconstruct(loaded.require_decoder(), images, spec.mask_ratio, noise)
    except ValueError as e:
        st.error(f"{name}: {e}")
        continue
    grid = patch_grid(rec.patch_error[0], rec.mask[0])
    zmax = float(np.nanmax(grid))  # this model's own colour scale: 0 to its largest patch error
    st.subheader(f"{name} model: {label}, mask {mask_index + 1} of {spec.num_masks}")
    space = "per-patch normalised" if rec.target_space == "normalized_patches" else "pixel"
    st.caption(f"{rec.num_masked} of {cfg.num_patches} patches masked; mean error over them "
               f"{rec.masked_error(0):.4g} ({space} target space)"
               + ("; the display borrows each original patch's mean and variance"
                  if rec.display_uses_original_patch_stats else ""))
    panels = reconstruction_panels(rec, 0)
    cols = st.columns([1, 1, 1, 1, 1, 1.35])
    for col, (title, img) in zip(cols, panels.items()):
        col.image(img, caption=title, width="stretch")
    cols[4].image(error_overlay(panels["original"], grid, zmax), caption="error on the original", width="stretch")
    fig = charts.heatmap_figure(grid, "error per patch", zmax=zmax, height=230)
    fig.update_traces(colorbar=dict(thickness=10, title=dict(text="MSE", side="right")))
    cols[5].plotly_chart(fig, width="stretch", key=f"recon_heat_{name}")
    st.caption(f"Error colours (overlay and heatmap): this model's own scale, from 0 to its largest patch "
               f"error {zmax:.3g}, in {rec.error_unit}. White in the heatmap: a visible patch (not scored).")
if exp.shadow is None:
    st.info("This experiment has no shadow model.")

# --------------------------------------------------------------------------
# The image's score against the member and non-member distributions
# --------------------------------------------------------------------------
st.header("Where this image's score falls")
scores = {}
for a, r in list(results.items()):
    if kind != "upload":
        ids, values = (r.member_ids, r.member_scores) if kind == "member" else (r.nonmember_ids, r.nonmember_scores)
        scores[a] = float(values[int(np.flatnonzero(ids == image_id)[0])])
        continue
    try:
        scores[a] = cached.upload_score(exp, r, image, image_id)
    except ValueError as e:
        st.error(f"{label}, {widgets.label(a)}: {state.error_text(e)}")
        del results[a]

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
