"""mimmia's own format: a folder holding model.safetensors (weights) and mimmia.json
(architecture, preprocessing, target space, provenance), written as one folder."""
import json
from pathlib import Path

import torch
from safetensors.torch import save_file

from ..atomic import atomic_dir
from ..config import MAEConfig
from ..model import MaskedAutoencoderViT
from ..model_ref import check_settings
from .base import (CheckpointError, LoadedModel, check_weight_shapes, config_from_fields, model_from_weights,
                   read_safetensors, safetensors_shapes, settings_provenance)

FORMAT_VERSION = 1


WEIGHTS_FILE = "model.safetensors"


META_FILE = "mimmia.json"


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
    return LoadedModel(model, str(path), "mimmia", provenance, missing)
