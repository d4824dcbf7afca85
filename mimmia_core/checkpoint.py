"""mimmia's own checkpoint format, and one loader for every format the core reads.

Own format: a directory holding `model.safetensors` (weights) and `mimmia.json`
(architecture, preprocessing, target space, provenance). Foreign formats
(official MAE .pth, Hugging Face ViTMAE directories) live in `foreign.py`.
"""
import argparse
import hashlib
import json
import os
import pickle
import re
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from .model import MAEConfig, MaskedAutoencoderViT
from .model_ref import check_settings, model_ref, settings_howto
from .atomic import atomic_dir
from .paths import require_exists

FORMAT_VERSION = 1
WEIGHTS_FILE = "model.safetensors"
META_FILE = "mimmia.json"
DECODER_PREFIXES = ("decoder_embed.", "mask_token", "decoder_pos_embed", "decoder_blocks.", "decoder_norm.",
                    "decoder_pred.")


class CheckpointError(ValueError):
    """A checkpoint that cannot be loaded as asked; the message says what is wrong."""


@dataclass
class LoadedModel:
    """A model together with what is known about where it came from."""
    model: MaskedAutoencoderViT
    path: str
    source_format: str                  # "mimmia", "official_mae" or "hf_vitmae"
    has_decoder: bool
    provenance: dict = field(default_factory=dict)
    missing_decoder_keys: list = field(default_factory=list)

    @property
    def config(self) -> MAEConfig:
        return self.model.config

    @property
    def fingerprint(self) -> str:
        return model_fingerprint(self.model, skip=set(self.missing_decoder_keys))

    def require_decoder(self) -> MaskedAutoencoderViT:
        if not self.has_decoder:
            shown = ", ".join(self.missing_decoder_keys[:4])
            raise CheckpointError(
                f"{self.path} is encoder-only: reconstruction needs the MAE decoder, and these weights are "
                f"missing: {shown}{', ...' if len(self.missing_decoder_keys) > 4 else ''}. Use a checkpoint "
                f"that carries the decoder (official 'visualize' or '_full' releases), or attach another "
                f"model's decoder with attach_decoder().")
        return self.model


def weights_fingerprint(model: torch.nn.Module, skip=()) -> str:
    """sha256 over parameter names, shapes, dtypes and bytes, in state-dict order.
    `skip` names weights that are not in the checkpoint (an encoder-only file's
    random placeholder decoder), so the fingerprint is the same at every load."""
    h = hashlib.sha256()
    for name, t in model.state_dict().items():
        if name in skip:
            continue
        t = t.detach().to("cpu").contiguous()
        h.update(f"{name}:{tuple(t.shape)}:{t.dtype};".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()[:16]


def config_fingerprint(config: MAEConfig) -> str:
    """sha256 of the full config (architecture, heads, LayerNorm eps, mean/std, target space)."""
    text = json.dumps(config.to_dict(), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def model_fingerprint(model: torch.nn.Module, skip=(), weights: str | None = None) -> str:
    """What a score depends on in a model: its weights and its config. Two models with the same
    weights but other heads or preprocessing compute other scores, so they never share one.
    `weights`: a weights_fingerprint already computed (Scorer memoises it)."""
    weights = weights or weights_fingerprint(model, skip)
    return hashlib.sha256(f"{weights}:{config_fingerprint(model.config)}".encode()).hexdigest()[:16]


def decoder_keys(state_dict_keys) -> list:
    return [k for k in state_dict_keys if k.startswith(DECODER_PREFIXES)]


class MissingSettingsError(CheckpointError):
    """Settings that a file does not record and that change the scores; the message names each
    one, why it cannot be read, and how to supply it."""

    def __init__(self, path, missing: dict, shown: str | None = None):
        self.path, self.missing = str(path), dict(missing)
        self.shown = shown or Path(path).name  # how the user names the model: a file name, or hf:ORG/NAME
        reasons = "; ".join(f"{name}: {why}" for name, why in self.missing.items())
        super().__init__(f"{path}: cannot tell {', '.join(self.missing)} from the file ({reasons}). mimmia does "
                         f"not guess settings that change the scores: {settings_howto(self.shown, missing)}")


def config_from_fields(fields: dict, path) -> MAEConfig:
    """An MAEConfig, or a CheckpointError naming the file and the bad setting."""
    try:
        return MAEConfig.from_dict(fields)
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"{path}: these settings do not make an MAE ({e})") from e


def expected_shapes(config: MAEConfig) -> dict:
    """Weight name -> shape of an MAE with this config, from a model on the meta device (nothing allocated)."""
    with torch.device("meta"):
        model = MaskedAutoencoderViT(config)
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def check_weight_shapes(config: MAEConfig, shapes: dict, path, allow_missing_decoder: bool = True) -> list:
    """Refuse weights (name -> shape) that do not fit `config`, before any model is allocated.

    Returns the decoder keys that are missing (an encoder-only checkpoint); the
    caller must not let those random weights be used for reconstruction.
    """
    expected = expected_shapes(config)
    unknown = sorted(set(shapes) - set(expected))
    if unknown:
        raise CheckpointError(f"{path}: unknown weights {unknown[:6]}{' ...' if len(unknown) > 6 else ''} "
                              f"for an MAE of this architecture")
    wrong = [f"{k}: file {tuple(v)} vs model {expected[k]}" for k, v in shapes.items() if tuple(v) != expected[k]]
    if wrong:
        raise CheckpointError(f"{path}: the weights do not fit the settings: shape mismatch for "
                              f"{'; '.join(wrong[:4])}")
    missing = sorted(set(expected) - set(shapes))
    missing_decoder = decoder_keys(missing)
    missing_encoder = [k for k in missing if k not in missing_decoder]
    if missing_encoder:
        raise CheckpointError(f"{path}: missing encoder weights {missing_encoder[:6]}")
    if missing_decoder and not allow_missing_decoder:
        raise CheckpointError(f"{path}: missing decoder weights {missing_decoder[:6]}")
    if missing_decoder and len(missing_decoder) != len(decoder_keys(expected)):
        raise CheckpointError(f"{path}: the decoder is incomplete; missing {missing_decoder[:6]}")
    return missing_decoder


def model_from_weights(config: MAEConfig, state: dict, path, device="cpu",
                       allow_missing_decoder: bool = True) -> tuple[MaskedAutoencoderViT, list]:
    """(model in eval mode on `device`, missing decoder keys): shapes checked first, then built and loaded."""
    missing = check_weight_shapes(config, {k: tuple(v.shape) for k, v in state.items()}, path,
                                  allow_missing_decoder)
    model = MaskedAutoencoderViT(config)
    model.load_state_dict(state, strict=False)
    return model.to(device).eval(), missing


def settings_provenance(given: dict, assumed: dict) -> dict:
    """What the caller supplied and what was assumed rather than read, for provenance and reports."""
    out = {}
    if given:
        out["settings_given"] = {k: list(v) if isinstance(v, tuple) else v for k, v in given.items()}
    if assumed:
        out["settings_assumed"] = dict(assumed)
    return out


def save_checkpoint(model: MaskedAutoencoderViT, path, provenance: dict | None = None,
                    dtype: torch.dtype | None = None) -> Path:
    """Write the model as a mimmia checkpoint directory. `dtype` (e.g. torch.float16)
    stores a compact copy; loading always gives float32 weights.

    Weights and metadata are written as one folder (atomic.atomic_dir): a kill never leaves
    new weights under old metadata. Other entries of an existing folder (epochs/, a training
    state) are kept."""
    state = {k: v.detach().to("cpu", dtype=dtype or v.dtype).contiguous() for k, v in model.state_dict().items()}
    meta = {
        "format": "mimmia",
        "version": FORMAT_VERSION,
        "config": model.config.to_dict(),
        "target_space": model.config.target_space,
        "storage_dtype": str(dtype or next(iter(state.values())).dtype).replace("torch.", ""),
        "provenance": provenance or {},
    }
    with atomic_dir(path) as tmp:
        save_file(state, str(tmp / WEIGHTS_FILE), metadata={"format": "mimmia", "version": str(FORMAT_VERSION)})
        (tmp / META_FILE).write_text(json.dumps(meta, indent=2))
    return Path(path)


def torch_load_checked(path) -> object:
    """torch.load of tensors, containers and argparse.Namespace; anything else is refused unrun."""
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        what = re.search(r"unsupported GLOBAL \S+|Unsupported global: GLOBAL \S+|Unsupported operand \d+", str(e))
        what = what.group(0) if what else str(e)[:200]
        if "GLOBAL" in what:
            raise CheckpointError(
                f"{path}: refused to unpickle: the file asks for Python objects other than weights ({what}). "
                f"Such objects can run code, so mimmia loads tensors only; nothing from the file was executed.") from e
        raise CheckpointError(f"{path}: not a readable PyTorch checkpoint: the weights-only unpickler stopped at "
                              f"{what!r}; nothing from the file was executed") from e
    except Exception as e:  # torch.load raises many types (KeyError, EOFError, RuntimeError ...) on bad bytes
        raise CheckpointError(f"{path}: not a readable PyTorch checkpoint, or a truncated one "
                              f"({type(e).__name__}: {str(e)[:200] or 'unexpected end of file'})") from e


def read_safetensors(path) -> dict:
    """Tensors by name from a .safetensors file; an unreadable file is a CheckpointError."""
    try:
        return load_file(str(path))
    except (OSError, SafetensorError) as e:
        raise CheckpointError(f"{path}: not a readable safetensors file ({e})") from e


def safetensors_shapes(path) -> dict:
    """Weight name -> shape from a .safetensors header, without reading the tensors."""
    try:
        with safe_open(str(path), framework="pt") as f:
            return {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
    except (OSError, SafetensorError) as e:
        raise CheckpointError(f"{path}: not a readable safetensors file ({e})") from e


def load_own_checkpoint(path, device="cpu", config=None) -> LoadedModel:
    """A mimmia folder; `config` (MAEConfig fields) overrides what mimmia.json says."""
    path = Path(path)
    try:
        meta = json.loads((path / META_FILE).read_text())
        fields = dict(meta["config"])
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
        raise CheckpointError(f"{path / META_FILE}: not a readable mimmia config ({e})") from e
    assumed = {}
    if "layer_norm_eps" not in fields:
        fields["layer_norm_eps"] = MAEConfig.layer_norm_eps
        assumed["layer_norm_eps"] = f"an older {META_FILE} without it; mimmia then always used 1e-6"
    given = check_settings(config, f"{path} settings")
    cfg = config_from_fields({**fields, **given}, path / META_FILE)
    check_weight_shapes(cfg, safetensors_shapes(path / WEIGHTS_FILE), path)
    state = {k: v.float() for k, v in read_safetensors(path / WEIGHTS_FILE).items()}
    model, missing = model_from_weights(cfg, state, path, device)
    provenance = {**meta.get("provenance", {}), **settings_provenance(given, assumed)}
    return LoadedModel(model, str(path), "mimmia", not missing, provenance, missing)


def load_model(path, device="cpu", config=None) -> LoadedModel:
    """Load any supported checkpoint: a mimmia folder, a Hugging Face ViTMAE (or timm)
    folder, an official MAE .pth / .safetensors file, or a published MAE by name:
    'hf:ORG/NAME[@REVISION]' or 'timm:MODEL_NAME' (hub.resolve finds its files in the
    Hugging Face cache, downloading them once unless HF_HUB_OFFLINE=1).

    `path` may carry settings the file cannot tell, as 'PATH?key=value&...' (MAEConfig
    field names), or be a ModelRef; `config` (a dict of fields or an MAEConfig) adds
    more. Settings that a format does not define are never guessed: a
    MissingSettingsError names them.
    """
    from . import foreign, hub

    ref = model_ref(path, config)
    if hub.is_hub_name(ref.path):  # hf:ORG/NAME[@REV] or timm:NAME: the files of a snapshot in the HF cache
        found = hub.resolve(ref.path)
        try:
            loaded = foreign.load_hf_vitmae(found.folder, device, ref.config)
        except MissingSettingsError as e:  # named as the user named it, so the CLI can point at the flag
            raise MissingSettingsError(ref.path, found.explain_missing(e.missing), shown=ref.path) from None
        except CheckpointError as e:
            raise CheckpointError(f"{ref.path} (commit {found.commit}): {e}") from None
        loaded.path, loaded.provenance = ref.path, {**loaded.provenance, "hub": found.provenance()}
        return loaded
    try:
        path = require_exists(ref.path, "checkpoint")
    except FileNotFoundError as e:
        raise CheckpointError(str(e)) from None
    if path.is_dir():
        if (path / META_FILE).exists():
            return load_own_checkpoint(path, device, ref.config)
        if (path / "config.json").exists():
            return foreign.load_hf_vitmae(path, device, ref.config)
        raise CheckpointError(f"{path}: a directory with neither {META_FILE} (mimmia) nor config.json "
                              f"(Hugging Face ViTMAE)")
    return foreign.load_official_mae(path, device, config=ref.config)
