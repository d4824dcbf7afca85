"""Models: load and inspect a checkpoint (mimmia folder, official MAE .pth, Hugging Face ViTMAE folder),
or a published MAE by name (hf:ORG/NAME[@REVISION], timm:MODEL_NAME)."""
import hashlib
import tempfile
from pathlib import Path

import pandas as pd
import streamlit as st

from app_pages import cached, state
from mimmia_core.checkpoint import MissingSettingsError, load_model
from mimmia_core.checkpoint import describe_checkpoint
from mimmia_core.data import open_source
from mimmia_core.fit_decoder import fit_decoder
from mimmia_core.paths import check_output_dir
from mimmia_core.train import default_device
from mimmia_core.hub import KNOWN_MAES, KNOWN_NOTE

st.title("Models")
st.caption("Inspect any MAE checkpoint mimmia reads: its own format (a folder with model.safetensors and "
           "mimmia.json), an official MAE .pth (facebookresearch/mae, timm), a Hugging Face ViTMAE folder, or a "
           "published MAE by name (Hugging Face hub, timm). "
           "Reconstruction attacks need the decoder; encoder-only releases can borrow the shadow's decoder.")

options = {"experiment": "a model of the loaded experiment", "path": "a path on this machine",
           "upload": "an uploaded .pth file", "hub": "a published MAE (by name)"}
OTHER_NAME = "another name…"
how = st.radio("Inspect", list(options), format_func=options.get, key="models_source", horizontal=True)


@st.cache_resource(show_spinner="Loading the uploaded checkpoint…", max_entries=4)
def _load_upload(digest: str, name: str, hints: tuple, _data: bytes):
    """Keyed on the upload's sha256 (and the hints), never on the bytes or the UploadedFile."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / Path(name).name
        path.write_bytes(_data)
        try:
            loaded = load_model(str(path), "cpu", config=dict(hints) or None)
        except MissingSettingsError as e:
            raise MissingSettingsError(name, e.missing) from None
        except ValueError as e:  # the file's messages name the upload, never the temporary path
            raise ValueError(str(e).replace(str(path), name)) from None
    loaded.path = name
    return loaded


@st.cache_resource(show_spinner="Resolving the name (a first use downloads the files once)…", max_entries=4)
def _load_by_name(name: str, hints: tuple):
    """Keyed on the name as typed and the hints: a branch such as main is looked up again only when the
    dashboard restarts (pin a commit with @COMMIT for one exact model)."""
    return load_model(name, "cpu", config=dict(hints) or None)


def pick_published() -> str:
    """A known MAE from the picker, or any hf:/timm: name typed in."""
    choice = st.selectbox("Published MAE", [*KNOWN_MAES, OTHER_NAME], key="models_hub_pick")
    if choice == OTHER_NAME:
        name = st.text_input("Name", key="models_hub_name",
                             placeholder="hf:ORG/NAME[@REVISION] or timm:MODEL_NAME, e.g. hf:org/name@main")
        st.caption("Any transformers ViTMAE repository (hf:) or timm MAE encoder (timm:); settings may follow "
                   f"after '?', as in a path. {KNOWN_NOTE}")
        return name.strip()
    st.caption(f"{KNOWN_MAES[choice].caption()}. {KNOWN_NOTE}")
    return choice


def _numbers(text: str, label: str) -> tuple | None:
    if not text.strip():
        return None
    try:
        return tuple(float(v) for v in text.replace(" ", "").split(","))
    except ValueError:
        raise ValueError(f"Architecture hints: {label} takes numbers separated by commas, got {text!r}") from None


def architecture_hints() -> tuple:
    """The settings a file may not record: head counts, preprocessing, target space (MAEConfig fields)."""
    with st.expander("Architecture hints: settings the file does not record"):
        st.caption("Weights give every width and depth, but not the attention heads (unless the shape is an "
                   "official one), nor a .pth file's preprocessing or target space. mimmia never guesses these; "
                   "leave a field empty (0) to use what the file says.")
        c1, c2, c3 = st.columns(3)
        heads = c1.number_input("Encoder attention heads", 0, 64, 0, key="models_heads")
        decoder_heads = c2.number_input("Decoder attention heads", 0, 64, 0, key="models_decoder_heads")
        target = c3.selectbox("Decoder predicts", ["(from the file)", "pixels", "normalised patches"],
                              key="models_norm_pix", help="normalised patches = trained with norm_pix_loss")
        c1, c2 = st.columns(2)
        mean = _numbers(c1.text_input("Mean, per channel", key="models_mean", placeholder="e.g. 0.5 or 0,0,0"),
                        "Mean")
        std = _numbers(c2.text_input("Std, per channel", key="models_std", placeholder="e.g. 0.5 or 1,1,1"), "Std")
    hints = {"num_heads": int(heads) or None, "decoder_num_heads": int(decoder_heads) or None, "mean": mean,
             "std": std, "norm_pix_loss": None if target.startswith("(") else target == "normalised patches"}
    return tuple((k, v) for k, v in hints.items() if v is not None)


def fit_decoder_form(encoder) -> None:
    """Fit a decoder on my data: mimmia_core.fit_decoder under this frozen encoder, with a progress bar."""
    with st.expander("Fit a decoder on my data", expanded=True):
        st.caption("The encoder stays frozen; a fresh MAE decoder learns, with the MAE loss on your images, to "
                   "reconstruct from this encoder's latents (what `mimmia fit-decoder` does). The fitted model is a "
                   "checkpoint the attacks take as the target.")
        c1, c2 = st.columns(2)
        data = c1.text_input("Your images (source spec)", key="fit_data",
                             placeholder="demo, npz:PATH or folder:PATH?mode=L&resize=28x28").strip()
        out = c2.text_input("Save the fitted model to (folder)", key="fit_out", placeholder="/tmp/fitted").strip()
        c = st.columns(4)
        epochs = c[0].number_input("Epochs", 1, 100_000, 100, key="fit_epochs")
        batch_size = c[1].number_input("Batch size", 1, 65_536, 64, key="fit_batch_size")
        lr = c[2].number_input("Learning rate", 1e-6, 1.0, 1e-3, step=1e-4, format="%.4f", key="fit_lr")
        mask_ratio = c[3].number_input("Mask ratio", 0.01, 0.99, 0.75, step=0.05, key="fit_mask_ratio")
        if not st.button("Fit a decoder", key="fit_go", disabled=not (data and out)):
            return
        bar = st.progress(0.0, text="fitting the decoder…")
        try:
            fitted = fit_decoder(encoder, open_source(data), epochs=int(epochs), batch_size=int(batch_size), lr=lr,
                                 mask_ratio=mask_ratio, device=default_device(),
                                 out_dir=check_output_dir(out, "Save to"),
                                 progress=lambda done, total: bar.progress(done / total, text=f"epoch {done}/{total}"))
        except Exception as e:  # noqa: BLE001 -- bad data or settings are a message, never a traceback
            st.error(f"Could not fit a decoder: {state.error_text(e)}")
            return
        losses = fitted.provenance["decoder_fitted"]["losses"]
        st.success(f"Fitted a decoder on {len(losses)} epochs of {fitted.provenance['data']['num_images']} images: "
                   f"loss {losses[0]:.4f} after the first epoch, {losses[-1]:.4f} after the last. Saved to "
                   f"{fitted.path}: open it as the target on the Overview page, or `mimmia attack --target "
                   f"{fitted.path} ...`.")


loaded = None
try:
    if how == "experiment":
        exp, _ = state.experiment()
        roles = {"target": exp.target, **({"shadow": exp.shadow} if exp.shadow is not None else {}),
                 **{f"reference {i}": r for i, r in enumerate(exp.references)}}
        role = st.selectbox("Model", list(roles), key="models_role")
        loaded = roles[role]
    elif how == "path":
        path = st.text_input("Checkpoint path (file or folder)", key="models_path",
                             placeholder="assets/demo/models/target or /data/mae_visualize_vit_large.pth")
        hints = architecture_hints()
        if path.strip():
            loaded = cached.load_model_by_path(path.strip(), hints)
    elif how == "upload":
        up = st.file_uploader("Official MAE checkpoint (.pth, at most 20 MB here; use a path for larger files)",
                              type=["pth", "pt", "bin", "safetensors"], key="models_upload")
        hints = architecture_hints()
        if up is not None:
            data = up.getvalue()
            loaded = _load_upload(hashlib.sha256(data).hexdigest(), up.name, hints, data)
    else:
        name = pick_published()
        hints = architecture_hints()
        if st.button("Load", key="models_hub_load", disabled=not name, help="a first use downloads the files"):
            st.session_state["models_hub_request"] = (name, hints)
        if name and st.session_state.get("models_hub_request") == (name, hints):
            loaded = _load_by_name(name, hints)
except Exception as e:  # noqa: BLE001 -- a bad checkpoint is a message, never a traceback
    st.error(f"Could not load this checkpoint: {state.error_text(e)}")

if loaded is None:
    st.stop()

d = describe_checkpoint(loaded)
a = d["architecture"]
cols = st.columns(4)
cols[0].metric("Format", d["source_format"])
cols[1].metric("Decoder", "present" if d["has_decoder"] else "missing")
cols[2].metric("Target space", d["target_space"])
cols[3].metric("Parameters", f"{sum(d['parameters'].values()) / 1e6:.2f} M",
               help=f"encoder {d['parameters']['encoder']:,}, decoder {d['parameters']['decoder']:,}")
if not d["has_decoder"]:
    st.warning(f"Encoder-only: {len(d['missing_decoder_keys'])} decoder weights are missing "
               f"(e.g. {', '.join(d['missing_decoder_keys'][:3])}). Reconstruction needs a decoder: load it as the "
               "target with 'decoder from: shadow' on the Overview page, or fit one to this encoder below.")
    fit_decoder_form(loaded)
left, right = st.columns(2)
with left:
    st.subheader("Architecture")
    st.table(pd.DataFrame({"value": [str(v) for v in a.values()]}, index=list(a)))
    st.caption(f"{d['num_patches']} patches per image. Preprocessing: mean {d['preprocessing']['mean']}, "
               f"std {d['preprocessing']['std']}; norm_pix_loss {d['norm_pix_loss']}.")
if d["settings_assumed"]:
    st.info("**Settings assumed, not read from the file** (the format defines them):  \n" + "  \n".join(
        f"- `{k}`: {why}" for k, why in d["settings_assumed"].items()))
with right:
    st.subheader("Provenance")
    st.json(d["provenance"] or {"note": "the checkpoint records no provenance"}, expanded=2)
    st.caption(f"Path: {d['path']}  \nFingerprint (weights and settings): {d['fingerprint']}")
    if "hub" in d["provenance"]:
        h = d["provenance"]["hub"]
        st.caption(f"{h['name']} resolved to {h['repo_id']} at commit {h['revision']}; the sha256 of every file "
                   f"read is under hub.files")
