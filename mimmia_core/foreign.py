"""Checkpoints made elsewhere: facebookresearch/mae .pth files, timm ViT encoders
(same key names as the official code) and Hugging Face transformers ViTMAE
directories. Each becomes a `MaskedAutoencoderViT` inside a `LoadedModel`.

Pickled files are read with `torch.load(weights_only=True)`, which unpickles
tensors and plain containers only; the one class allowed on top is
argparse.Namespace, the `args` of official training checkpoints. Nothing in
a file can run code. No transformers import: its key names are mapped here.
"""
import argparse
import json
import math
import re
from dataclasses import replace
from pathlib import Path

import torch

from .checkpoint import (CheckpointError, LoadedModel, decoder_keys, load_state_dict_checked, read_safetensors,
                         torch_load_checked)
from .model import IMAGENET_MEAN, IMAGENET_STD, PRESETS, MAEConfig, MaskedAutoencoderViT

# Heads cannot be read from weights (qkv is 3D x D for any head count): the
# official widths use the official presets, other widths assume 64-wide heads.
OFFICIAL_HEADS = {768: 12, 1024: 16, 1280: 16}
OFFICIAL_DECODER_HEADS = {512: 16}
HEAD_DIM = 64
ARGS_KEPT = ("model", "mask_ratio", "norm_pix_loss", "input_size", "epochs", "batch_size", "blr", "weight_decay")


# --------------------------------------------------------------------------
# Reading files
# --------------------------------------------------------------------------
def _check_tensors(sd, path) -> dict:
    if not isinstance(sd, dict) or not sd:
        raise CheckpointError(f"{path}: expected a state dict (name -> tensor), got {type(sd).__name__}")
    bad = [k for k, v in sd.items() if not (isinstance(k, str) and isinstance(v, torch.Tensor))]
    if bad:
        raise CheckpointError(f"{path}: not a state dict: entries {bad[:4]} are not named tensors")
    return {k: v.float() if v.is_floating_point() else v for k, v in sd.items()}


def _read_official(path: Path) -> tuple[dict, dict]:
    """(state dict, args dict) from a .pth/.bin/.safetensors file."""
    if path.suffix == ".safetensors":
        return _check_tensors(read_safetensors(path), path), {}
    obj = torch_load_checked(path)
    args = {}
    if isinstance(obj, dict) and isinstance(obj.get("model"), dict):
        raw = obj.get("args")
        raw = vars(raw) if isinstance(raw, argparse.Namespace) else raw if isinstance(raw, dict) else {}
        args = {k: raw[k] for k in ARGS_KEPT if isinstance(raw.get(k), (str, int, float, bool))}
        if isinstance(obj.get("epoch"), int):
            args["epoch"] = obj["epoch"]
        obj = obj["model"]
    elif isinstance(obj, dict) and obj and not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(f"{path}: neither {{'model': state_dict}} nor a bare state dict; "
                              f"top-level keys: {sorted(map(str, obj))[:8]}")
    sd = _check_tensors(obj, path)
    if all(k.startswith("module.") for k in sd):  # saved from a DistributedDataParallel wrapper
        sd = {k[len("module."):]: v for k, v in sd.items()}
    return sd, args


# --------------------------------------------------------------------------
# Official MAE (and timm ViT) state dicts
# --------------------------------------------------------------------------
def _count_blocks(keys, prefix: str, path) -> int:
    found = {int(m.group(1)) for k in keys if (m := re.match(rf"{prefix}\.(\d+)\.", k))}
    if found != set(range(len(found))):
        raise CheckpointError(f"{path}: {prefix} are numbered {sorted(found)}, expected 0..{len(found) - 1}")
    return len(found)


def _guess_heads(width: int, table: dict) -> int | None:
    if width in table:
        return table[width]
    return width // HEAD_DIM if width % HEAD_DIM == 0 else None


def infer_official_config(sd: dict, path="state dict", preset: str | None = None) -> tuple[dict, str]:
    """Architecture fields read from official-name weights, and how the heads were chosen.

    Patch size, channels and width come from patch_embed.proj.weight, the image
    size from pos_embed's length, depths from the numbered blocks, mlp_ratio
    from fc1. Heads: the named official `preset` (training args.model) if its
    widths match, else the official table (768->12, 1024->16, 1280->16, decoder
    512->16), else width / 64; None when the width is not a multiple of 64.
    """
    needed = [k for k in ("patch_embed.proj.weight", "pos_embed", "blocks.0.mlp.fc1.weight") if k not in sd]
    if needed:
        raise CheckpointError(f"{path}: not an MAE/ViT state dict with official key names; missing {needed} "
                              f"(found e.g. {sorted(sd)[:5]})")
    width, in_chans, patch, _ = sd["patch_embed.proj.weight"].shape
    grid = math.isqrt(sd["pos_embed"].shape[1] - 1)
    if grid * grid != sd["pos_embed"].shape[1] - 1:
        raise CheckpointError(f"{path}: pos_embed has {sd['pos_embed'].shape[1]} rows, not a square grid plus cls")
    arch = dict(img_size=grid * patch, patch_size=patch, in_chans=in_chans, embed_dim=width,
                depth=_count_blocks(sd, "blocks", path), mlp_ratio=sd["blocks.0.mlp.fc1.weight"].shape[0] / width)
    if "decoder_embed.weight" in sd:
        arch.update(decoder_embed_dim=sd["decoder_embed.weight"].shape[0],
                    decoder_depth=_count_blocks(sd, "decoder_blocks", path))
        fc1 = sd.get("decoder_blocks.0.mlp.fc1.weight")
        if fc1 is not None and fc1.shape[0] / arch["decoder_embed_dim"] != arch["mlp_ratio"]:
            raise CheckpointError(f"{path}: encoder and decoder MLPs have different ratios "
                                  f"({arch['mlp_ratio']} vs {fc1.shape[0] / arch['decoder_embed_dim']}), "
                                  f"which this MAE does not support")
    known = PRESETS.get(preset) if isinstance(preset, str) else None
    if known and known.embed_dim == width and ("decoder_embed_dim" not in arch
                                               or known.decoder_embed_dim == arch["decoder_embed_dim"]):
        arch.update(num_heads=known.num_heads, decoder_num_heads=known.decoder_num_heads)
        return arch, f"preset {preset} (training args)"
    arch["num_heads"] = _guess_heads(width, OFFICIAL_HEADS)
    arch["decoder_num_heads"] = _guess_heads(arch.get("decoder_embed_dim", MAEConfig.decoder_embed_dim),
                                             OFFICIAL_DECODER_HEADS)
    return arch, f"official widths, else width/{HEAD_DIM}"


def _from_official_state(sd: dict, path: Path, device, config, args: dict, provenance: dict,
                         source_format: str) -> LoadedModel:
    head = sorted(k for k in sd if k.startswith(("head.", "fc_norm.")))
    if head:
        raise CheckpointError(
            f"{path}: holds a classification head ({', '.join(head[:4])}): this is a fine-tuned classifier, not an "
            f"MAE pre-training checkpoint. Fine-tuning changed its encoder, so it says nothing reliable about the "
            f"pre-training set; use a pre-training release (mae_pretrain_vit_*, mae_visualize_vit_*).")
    overrides = config.to_dict() if isinstance(config, MAEConfig) else dict(config or {})
    unknown = sorted(set(overrides) - set(MAEConfig.__dataclass_fields__))
    if unknown:
        raise CheckpointError(f"unknown MAEConfig fields in config: {unknown}")
    arch, heads_source = infer_official_config(sd, path, args.get("model"))
    fields = {**arch, **overrides}
    unknown_heads = [f for f in ("num_heads", "decoder_num_heads") if fields[f] is None]
    if unknown_heads:
        raise CheckpointError(f"{path}: cannot tell {' and '.join(unknown_heads)} from the weights (the width is "
                              f"not one of the official ones nor a multiple of {HEAD_DIM}); pass "
                              f"config={{{', '.join(repr(f) + ': ...' for f in unknown_heads)}}}")
    if "norm_pix_loss" in overrides:
        pix_source = "caller config"
    elif "norm_pix_loss" in args:
        fields["norm_pix_loss"], pix_source = bool(args["norm_pix_loss"]), "training args"
    elif path.name.endswith("_full.pth"):  # the official '_full' releases were trained with norm_pix_loss
        fields["norm_pix_loss"], pix_source = True, "file name (official '_full' release)"
    else:
        pix_source = "not recorded in the file; assumed False"
    if "mean" not in fields:  # official preprocessing for RGB; 0.5 / 0.5 otherwise
        rgb = fields["in_chans"] == 3
        fields["mean"] = IMAGENET_MEAN if rgb else (0.5,) * fields["in_chans"]
        fields["std"] = IMAGENET_STD if rgb else (0.5,) * fields["in_chans"]
    try:
        cfg = MAEConfig.from_dict(fields)
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"{path}: cannot build an MAE from these weights and config ({e})") from e

    dec_in_file = decoder_keys(sd)
    model = MaskedAutoencoderViT(cfg)
    missing = load_state_dict_checked(model, sd, str(path))
    if missing and dec_in_file:
        raise CheckpointError(f"{path}: the decoder is incomplete; missing {missing[:6]}")
    provenance = {**provenance, "file": path.name, "num_heads_source": "caller config" if "num_heads" in overrides
                  else heads_source, "norm_pix_loss_source": pix_source, **({"args": args} if args else {})}
    return LoadedModel(model.to(device).eval(), str(path), source_format, not missing, provenance, missing)


def load_official_mae(path, device="cpu", config: MAEConfig | dict | None = None) -> LoadedModel:
    """A facebookresearch/mae checkpoint ({'model': state_dict[, 'args': Namespace]}),
    a bare state dict with the same names (timm ViT weights such as
    vit_base_patch16_224.mae), or either as .safetensors.

    The architecture is inferred from the weights (see infer_official_config).
    `config` overrides it: a full MAEConfig, or a dict of fields, e.g.
    {"num_heads": 4, "norm_pix_loss": True}. Encoder-only files (mae_pretrain_vit_*,
    timm) load with has_decoder=False; their decoder is random and require_decoder()
    refuses it.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such file")
    sd, args = _read_official(path)
    return _from_official_state(sd, path, device, config, args, {"format": "official_mae"}, "official_mae")


# --------------------------------------------------------------------------
# Hugging Face directories
# --------------------------------------------------------------------------
# transformers ViTMAEConfig defaults, for fields a config.json leaves out
HF_DEFAULTS = dict(image_size=224, patch_size=16, num_channels=3, hidden_size=768, num_hidden_layers=12,
                   num_attention_heads=12, intermediate_size=3072, decoder_hidden_size=512,
                   decoder_num_hidden_layers=8, decoder_num_attention_heads=16, decoder_intermediate_size=2048,
                   hidden_act="gelu", layer_norm_eps=1e-12, mask_ratio=0.75, norm_pix_loss=False)
# a layer: transformers 4.x "vit.encoder.layer.N", 5.x "vit.layers.N"; decoder 4.x / 5.x in memory
# "decoder.decoder_layers.N", and 5.x save_pretrained writes "decoder.decoder_encoder.layer.N"
_HF_LAYER = re.compile(r"^(vit\.encoder\.layer|vit\.layers|decoder\.decoder_layers|decoder\.decoder_encoder\.layer)"
                       r"\.(\d+)\.(.+)\.(weight|bias)$")
_HF_LAYER_PARTS = {  # 4.x name, 5.x name -> official name
    "attention.attention.query": "q", "attention.q_proj": "q",
    "attention.attention.key": "k", "attention.k_proj": "k",
    "attention.attention.value": "v", "attention.v_proj": "v",
    "attention.output.dense": "attn.proj", "attention.o_proj": "attn.proj",
    "intermediate.dense": "mlp.fc1", "mlp.fc1": "mlp.fc1",
    "output.dense": "mlp.fc2", "mlp.fc2": "mlp.fc2",
    "layernorm_before": "norm1", "layernorm_after": "norm2",
}
_HF_NAMES = {
    "vit.embeddings.cls_token": "cls_token", "vit.embeddings.position_embeddings": "pos_embed",
    "vit.embeddings.patch_embeddings.projection.weight": "patch_embed.proj.weight",
    "vit.embeddings.patch_embeddings.projection.bias": "patch_embed.proj.bias",
    "vit.layernorm.weight": "norm.weight", "vit.layernorm.bias": "norm.bias",
    "decoder.mask_token": "mask_token", "decoder.decoder_pos_embed": "decoder_pos_embed",
    "decoder.decoder_embed.weight": "decoder_embed.weight", "decoder.decoder_embed.bias": "decoder_embed.bias",
    "decoder.decoder_norm.weight": "decoder_norm.weight", "decoder.decoder_norm.bias": "decoder_norm.bias",
    "decoder.decoder_pred.weight": "decoder_pred.weight", "decoder.decoder_pred.bias": "decoder_pred.bias",
}


def hf_to_official(sd: dict, path="state dict") -> dict:
    """transformers ViTMAE weights (4.x or 5.x names) -> official names, q/k/v fused into qkv.
    A missing q/k/v bias (qkv_bias=False) becomes zeros, which computes the same."""
    if not any(k.startswith("vit.") for k in sd):  # saved from ViTMAEModel, the encoder alone
        sd = {"vit." + k: v for k, v in sd.items()}
    out, qkv, unknown = {}, {}, []
    for k, v in sd.items():
        m = _HF_LAYER.match(k)
        if m and m.group(3) in _HF_LAYER_PARTS:
            block = f"{'blocks' if m.group(1).startswith('vit') else 'decoder_blocks'}.{m.group(2)}"
            part = _HF_LAYER_PARTS[m.group(3)]
            if part in ("q", "k", "v"):
                qkv.setdefault(block, {})[(part, m.group(4))] = v
            else:
                out[f"{block}.{part}.{m.group(4)}"] = v
        elif k in _HF_NAMES:
            out[_HF_NAMES[k]] = v
        else:
            unknown.append(k)
    if unknown:
        raise CheckpointError(f"{path}: unknown ViTMAE weights {sorted(unknown)[:6]}")
    for block, parts in qkv.items():
        if any((p, "weight") not in parts for p in "qkv"):
            raise CheckpointError(f"{path}: {block} lacks one of the query/key/value weights")
        out[f"{block}.attn.qkv.weight"] = torch.cat([parts[(p, "weight")] for p in "qkv"])
        out[f"{block}.attn.qkv.bias"] = torch.cat([parts.get((p, "bias"), torch.zeros(len(parts[(p, "weight")])))
                                                   for p in "qkv"])
    return out


def _square(value, name: str) -> int:
    if isinstance(value, (list, tuple)):
        if len(value) != 2 or value[0] != value[1]:
            raise ValueError(f"{name} {value} is not square; only square images are supported")
        value = value[0]
    return int(value)


def _read_json(path: Path) -> dict:
    try:
        d = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{path}: not readable JSON ({e})") from e
    if not isinstance(d, dict):
        raise CheckpointError(f"{path}: expected a JSON object")
    return d


def _read_hub_weights(directory: Path) -> dict:
    """model.safetensors, sharded safetensors, or pytorch_model.bin (weights only)."""
    if (directory / "model.safetensors").exists():
        return _check_tensors(read_safetensors(directory / "model.safetensors"), directory)
    index = directory / "model.safetensors.index.json"
    if index.exists():
        shards = sorted(set(_read_json(index).get("weight_map", {}).values()))
        sd = {}
        for shard in shards:
            sd.update(read_safetensors(directory / shard))
        return _check_tensors(sd, directory)
    if (directory / "pytorch_model.bin").exists():
        return _read_official(directory / "pytorch_model.bin")[0]
    raise CheckpointError(f"{directory}: no model.safetensors, model.safetensors.index.json or pytorch_model.bin")


def _hf_preprocessing(directory: Path, channels: int) -> tuple[tuple, tuple, str]:
    pre = directory / "preprocessor_config.json"
    if pre.exists():
        p = _read_json(pre)
        if "image_mean" in p and "image_std" in p:
            mean, std = tuple(p["image_mean"]), tuple(p["image_std"])
            if len(mean) != channels or len(std) != channels:
                raise CheckpointError(f"{pre}: image_mean/image_std {mean} / {std} do not have {channels} values")
            return mean, std, "preprocessor_config.json"
    if channels == 3:
        return IMAGENET_MEAN, IMAGENET_STD, "ImageNet defaults (no preprocessor_config.json)"
    return (0.5,) * channels, (0.5,) * channels, "0.5 / 0.5 defaults (no preprocessor_config.json)"


def _hf_config(cfg: dict, mean, std, path) -> MAEConfig:
    c = {**HF_DEFAULTS, **cfg}
    if c["hidden_act"] != "gelu":
        raise CheckpointError(f"{path}: hidden_act {c['hidden_act']!r} is not supported (MAE uses exact 'gelu')")
    try:
        ratio = c["intermediate_size"] / c["hidden_size"]
        if c["decoder_intermediate_size"] / c["decoder_hidden_size"] != ratio:
            raise ValueError(f"encoder and decoder MLP ratios differ ({c['intermediate_size']}/{c['hidden_size']} "
                             f"vs {c['decoder_intermediate_size']}/{c['decoder_hidden_size']}), which this MAE "
                             f"does not support")
        return MAEConfig(
            img_size=_square(c["image_size"], "image_size"), patch_size=_square(c["patch_size"], "patch_size"),
            in_chans=c["num_channels"], embed_dim=c["hidden_size"], depth=c["num_hidden_layers"],
            num_heads=c["num_attention_heads"], decoder_embed_dim=c["decoder_hidden_size"],
            decoder_depth=c["decoder_num_hidden_layers"], decoder_num_heads=c["decoder_num_attention_heads"],
            mlp_ratio=ratio, layer_norm_eps=float(c["layer_norm_eps"]), norm_pix_loss=bool(c["norm_pix_loss"]),
            mean=mean, std=std)
    except (TypeError, ValueError, ZeroDivisionError) as e:
        raise CheckpointError(f"{path}: config.json does not describe a buildable MAE ({e})") from e


def load_hf_vitmae(directory, device="cpu") -> LoadedModel:
    """A Hugging Face hub directory: a transformers ViTMAEForPreTraining (or
    ViTMAEModel, encoder-only) with config.json, or a timm ViT encoder
    (config.json with 'architecture', e.g. timm/vit_base_patch16_224.mae).

    LayerNorm eps is taken from config.json (transformers writes 1e-12), mean/std
    from preprocessor_config.json when present, else ImageNet's.
    """
    directory = Path(directory)
    cfg = _read_json(directory / "config.json")
    if "architecture" in cfg and "model_type" not in cfg:
        return _load_timm_dir(directory, cfg, device)
    if cfg.get("model_type") != "vit_mae":
        raise CheckpointError(f"{directory}: config.json model_type is {cfg.get('model_type')!r}, not 'vit_mae'")
    channels = cfg.get("num_channels", HF_DEFAULTS["num_channels"])
    mean, std, pre_source = _hf_preprocessing(directory, channels)
    config = _hf_config(cfg, mean, std, directory)
    raw = _read_hub_weights(directory)
    sd = hf_to_official(raw, directory)
    model = MaskedAutoencoderViT(config)
    missing = load_state_dict_checked(model, sd, str(directory))
    if missing and decoder_keys(sd):
        raise CheckpointError(f"{directory}: the decoder is incomplete; missing {missing[:6]}")
    names = ("transformers 5.x" if any(".q_proj." in k for k in raw) else
             "transformers 5.x save_pretrained" if any("decoder_encoder.layer" in k for k in raw) else
             "transformers 4.x")
    provenance = {"format": "hf_vitmae", "architectures": cfg.get("architectures"), "key_names": names,
                  "transformers_version": cfg.get("transformers_version"),
                  "mask_ratio": cfg.get("mask_ratio", HF_DEFAULTS["mask_ratio"]),
                  "norm_pix_loss": config.norm_pix_loss, "layer_norm_eps": config.layer_norm_eps,
                  "preprocessing_source": pre_source}
    return LoadedModel(model.to(device).eval(), str(directory), "hf_vitmae", not missing, provenance, missing)


def _load_timm_dir(directory: Path, cfg: dict, device) -> LoadedModel:
    """timm hub weights use the official names; mean/std come from pretrained_cfg."""
    pre = cfg.get("pretrained_cfg") or {}
    overrides = {k: tuple(pre[k]) for k in ("mean", "std") if k in pre}
    provenance = {"format": "timm", "architecture": cfg["architecture"], "tag": pre.get("tag")}
    return _from_official_state(_read_hub_weights(directory), directory, device, overrides, {}, provenance, "timm")


# --------------------------------------------------------------------------
# Encoder-only models and descriptions
# --------------------------------------------------------------------------
def attach_decoder(encoder: LoadedModel, decoder_from: LoadedModel) -> LoadedModel:
    """The target's encoder with another MAE's decoder (the paper's encoder-only
    setting: the adversary puts its shadow decoder on the released encoder).

    Preprocessing comes from the encoder; the target space (norm_pix_loss) from
    the decoder, which was trained for it.
    """
    decoder_from.require_decoder()
    e, d = encoder.config, decoder_from.config
    wrong = [f"{f}: encoder {getattr(e, f)} vs decoder's model {getattr(d, f)}"
             for f in ("img_size", "patch_size", "in_chans", "embed_dim", "mlp_ratio")
             if getattr(e, f) != getattr(d, f)]
    if wrong:
        raise CheckpointError(f"cannot put the decoder of {decoder_from.path} on the encoder of {encoder.path}; "
                              f"they differ in {'; '.join(wrong)}")
    config = replace(e, decoder_embed_dim=d.decoder_embed_dim, decoder_depth=d.decoder_depth,
                     decoder_num_heads=d.decoder_num_heads, norm_pix_loss=d.norm_pix_loss)
    warnings = []
    if (e.mean, e.std) != (d.mean, d.std):
        warnings.append(f"the decoder was trained with mean/std {d.mean} / {d.std}, the encoder uses "
                        f"{e.mean} / {e.std}")
    if e.layer_norm_eps != d.layer_norm_eps:
        warnings.append(f"decoder LayerNorm eps changed from {d.layer_norm_eps} to the encoder's {e.layer_norm_eps}")
    enc_sd, dec_sd = encoder.model.state_dict(), decoder_from.model.state_dict()
    old_decoder = set(decoder_keys(enc_sd))
    state = {k: v for k, v in enc_sd.items() if k not in old_decoder}
    state.update({k: dec_sd[k] for k in decoder_keys(dec_sd)})
    model = MaskedAutoencoderViT(config)
    path = f"{encoder.path} + decoder of {decoder_from.path}"
    load_state_dict_checked(model, state, path, allow_missing_decoder=False)
    provenance = {"format": "attached", "encoder": {"path": encoder.path, "source_format": encoder.source_format,
                                                    "fingerprint": encoder.fingerprint, **encoder.provenance},
                  "decoder": {"path": decoder_from.path, "source_format": decoder_from.source_format,
                              "fingerprint": decoder_from.fingerprint}, "warnings": warnings}
    device = next(encoder.model.parameters()).device
    return LoadedModel(model.to(device).eval(), path, "attached", True, provenance, [])


def describe_checkpoint(loaded: LoadedModel) -> dict:
    """A JSON-ready summary for the Models page and `inspect`."""
    c = loaded.config
    dec = set(decoder_keys(name for name, _ in loaded.model.named_parameters()))
    counts = {"encoder": 0, "decoder": 0}
    for name, p in loaded.model.named_parameters():
        counts["decoder" if name in dec else "encoder"] += p.numel()
    if not loaded.has_decoder:
        counts["decoder"] = 0  # the placeholder decoder holds no trained weights
    return {
        "path": loaded.path,
        "source_format": loaded.source_format,
        "architecture": {k: v for k, v in c.to_dict().items() if k not in ("mean", "std", "norm_pix_loss")},
        "num_patches": c.num_patches,
        "preprocessing": {"mean": list(c.mean), "std": list(c.std)},
        "target_space": c.target_space,
        "norm_pix_loss": c.norm_pix_loss,
        "has_decoder": loaded.has_decoder,
        "missing_decoder_keys": list(loaded.missing_decoder_keys),
        "parameters": counts,
        "provenance": loaded.provenance,
        "fingerprint": loaded.fingerprint,
    }


__all__ = ["load_official_mae", "load_hf_vitmae", "attach_decoder", "describe_checkpoint", "infer_official_config",
           "hf_to_official"]
