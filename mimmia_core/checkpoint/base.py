"""What every checkpoint format shares: the loaded model and its errors, fingerprints, the
checks of weights against settings (on the meta device, before anything is allocated), and
the safe readers of weight files.

Pickled files are read with `torch.load(weights_only=True)`, which unpickles tensors and
plain containers only; the one class allowed on top is argparse.Namespace, the `args` of
official training checkpoints. Nothing in a file can run code.
"""
import argparse
import hashlib
import json
import pickle
import re
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file

from ..config import MAEConfig
from ..model import MaskedAutoencoderViT
from ..model_ref import settings_howto

DECODER_PREFIXES = ("decoder_embed.", "mask_token", "decoder_pos_embed", "decoder_blocks.", "decoder_norm.",
                    "decoder_pred.")


class CheckpointError(ValueError):
    """A checkpoint that cannot be loaded as asked; the message says what is wrong."""


class MissingSettingsError(CheckpointError):
    """Settings that a file does not record and that change the scores; the message names each
    one, why it cannot be read, and how to supply it."""

    def __init__(self, path, missing: dict, shown: str | None = None):
        self.path, self.missing = str(path), dict(missing)
        self.shown = shown or Path(path).name  # how the user names the model: a file name, or hf:ORG/NAME
        reasons = "; ".join(f"{name}: {why}" for name, why in self.missing.items())
        super().__init__(f"{path}: cannot tell {', '.join(self.missing)} from the file ({reasons}). mimmia does "
                         f"not guess settings that change the scores: {settings_howto(self.shown, missing)}")

    @property
    def query(self) -> str:
        """The settings to add after '?', to be filled in: 'num_heads=...&mean=...'."""
        return "&".join(f"{name}=..." for name in self.missing)


@dataclass
class LoadedModel:
    """A model together with what is known about where it came from."""
    model: MaskedAutoencoderViT
    path: str
    source_format: str                  # "mimmia", "official_mae", "hf_vitmae", "timm" or "attached"
    provenance: dict = field(default_factory=dict)
    missing_decoder_keys: list = field(default_factory=list)  # an encoder-only file's absent decoder

    @property
    def has_decoder(self) -> bool:
        return not self.missing_decoder_keys

    @property
    def config(self) -> MAEConfig:
        return self.model.config

    @property
    def fingerprint(self) -> str:
        return model_fingerprint(self.model, skip=set(self.missing_decoder_keys))

    @property
    def decoder_howto(self) -> str:
        """How to give an encoder-only model a decoder, in the CLI's terms."""
        return (f"fit a decoder to this encoder on your own images (`mimmia fit-decoder --encoder {self.path} "
                f"--data YOUR_IMAGES --out DIR`, then use DIR as the model), use a checkpoint that carries the "
                f"decoder (official 'visualize' or '_full' releases), or attach another model's decoder "
                f"(--decoder-from shadow, attach_decoder())")

    def require_decoder(self) -> MaskedAutoencoderViT:
        if not self.has_decoder:
            shown = ", ".join(self.missing_decoder_keys[:4])
            raise CheckpointError(
                f"{self.path} is encoder-only: reconstruction needs the MAE decoder, and these weights are "
                f"missing: {shown}{', ...' if len(self.missing_decoder_keys) > 4 else ''}. To attack it, "
                f"{self.decoder_howto}.")
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
    model = MaskedAutoencoderViT(config, init=False)  # the weights come next; missing ones stay a placeholder
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


def check_tensors(sd, path) -> dict:
    if not isinstance(sd, dict) or not sd:
        raise CheckpointError(f"{path}: expected a state dict (name -> tensor), got {type(sd).__name__}")
    bad = [k for k, v in sd.items() if not (isinstance(k, str) and isinstance(v, torch.Tensor))]
    if bad:
        raise CheckpointError(f"{path}: not a state dict: entries {bad[:4]} are not named tensors")
    return {k: v.float() if v.is_floating_point() else v for k, v in sd.items()}


def state_dict_from(obj, path) -> dict:
    """The state dict of an unpickled file: {'model': state_dict, ...} or a bare state dict (a
    DistributedDataParallel 'module.' prefix removed), its tensors checked and floats made float32."""
    if isinstance(obj, dict) and isinstance(obj.get("model"), dict):
        obj = obj["model"]
    elif isinstance(obj, dict) and obj and not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(f"{path}: neither {{'model': state_dict}} nor a bare state dict; "
                              f"top-level keys: {sorted(map(str, obj))[:8]}")
    sd = check_tensors(obj, path)
    if all(k.startswith("module.") for k in sd):  # saved from a DistributedDataParallel wrapper
        sd = {k[len("module."):]: v for k, v in sd.items()}
    return sd


def read_json(path: Path) -> dict:
    try:
        d = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{path}: not readable JSON ({e})") from e
    if not isinstance(d, dict):
        raise CheckpointError(f"{path}: expected a JSON object")
    return d


def _shard_path(directory: Path, name, index: Path) -> Path:
    """A shard named by an index file, confined to the model folder by its name: relative, no '..'
    (a Hugging Face cache snapshot links its files into blobs/, so resolved paths may lie elsewhere)."""
    if not isinstance(name, str) or not name:
        raise CheckpointError(f"{index}: weight_map names a shard {name!r}, not a file name")
    parts = Path(name).parts
    if Path(name).is_absolute() or ".." in parts or "\\" in name:
        raise CheckpointError(f"{index}: the shard {name!r} lies outside the model folder {directory}; "
                              f"refused (an index may only name files inside its folder)")
    return directory / name


def read_hub_weights(directory: Path) -> dict:
    """model.safetensors, sharded safetensors, or pytorch_model.bin (weights only)."""
    if (directory / "model.safetensors").exists():
        return check_tensors(read_safetensors(directory / "model.safetensors"), directory)
    index = directory / "model.safetensors.index.json"
    if index.exists():
        weight_map = read_json(index).get("weight_map")
        if not isinstance(weight_map, dict) or not weight_map:
            raise CheckpointError(f"{index}: no weight_map object naming the shards")
        sd = {}
        for name in sorted(set(map(str, weight_map.values()))):
            sd.update(read_safetensors(_shard_path(directory, name, index)))
        return check_tensors(sd, directory)
    if (directory / "pytorch_model.bin").exists():
        return state_dict_from(torch_load_checked(directory / "pytorch_model.bin"), directory / "pytorch_model.bin")
    raise CheckpointError(f"{directory}: no model.safetensors, model.safetensors.index.json or pytorch_model.bin")
