"""Checkpoints: one loader per format, on one shared base.

    base      LoadedModel, errors, fingerprints, shape checks, safe readers
    own       mimmia's folder (model.safetensors + mimmia.json)
    official  facebookresearch/mae .pth files, bare state dicts, timm folders
    hf        Hugging Face transformers ViTMAE folders
    attach    an encoder with another model's decoder
    describe  a JSON-ready summary

`load_model` picks the format, and resolves published names (hub.resolve).
"""
from pathlib import Path

from .. import hub
from ..model_ref import model_ref
from ..paths import require_exists
from .attach import attach_decoder
from .base import (DECODER_PREFIXES, CheckpointError, LoadedModel, MissingSettingsError, config_fingerprint,
                   decoder_keys, model_fingerprint, model_from_weights, read_json, torch_load_checked,
                   weights_fingerprint)
from .describe import assumed_settings, describe_checkpoint
from .hf import hf_to_official, load_hf_vitmae
from .official import infer_official_config, load_official_mae, load_timm_dir, official_settings, timm_num_heads
from .own import META_FILE, WEIGHTS_FILE, load_own_checkpoint, save_checkpoint


def _load_folder(path: Path, device, config) -> LoadedModel:
    """A mimmia folder, a timm hub folder or a transformers ViTMAE folder, by what it holds."""
    if (path / META_FILE).exists():
        return load_own_checkpoint(path, device, config)
    if (path / "config.json").exists():
        cfg = read_json(path / "config.json")
        if "architecture" in cfg and "model_type" not in cfg:
            return load_timm_dir(path, device, config)
        return load_hf_vitmae(path, device, config)
    raise CheckpointError(f"{path}: a directory with neither {META_FILE} (mimmia) nor config.json "
                          f"(Hugging Face ViTMAE or timm)")


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
    ref = model_ref(path, config)
    if hub.is_hub_name(ref.path):  # hf:ORG/NAME[@REV] or timm:NAME: the files of a snapshot in the HF cache
        found = hub.resolve(ref.path)
        try:
            loaded = _load_folder(Path(found.folder), device, ref.config)
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
        return _load_folder(path, device, ref.config)
    return load_official_mae(path, device, config=ref.config)


__all__ = ["load_model", "LoadedModel", "CheckpointError", "MissingSettingsError", "save_checkpoint",
           "load_own_checkpoint", "load_official_mae", "load_hf_vitmae", "load_timm_dir", "attach_decoder",
           "describe_checkpoint", "assumed_settings", "infer_official_config", "official_settings", "hf_to_official", "timm_num_heads",
           "weights_fingerprint", "config_fingerprint", "model_fingerprint", "model_from_weights", "decoder_keys",
           "torch_load_checked", "DECODER_PREFIXES", "META_FILE", "WEIGHTS_FILE"]
