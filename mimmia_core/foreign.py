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

from .checkpoint import (CheckpointError, LoadedModel, MissingSettingsError, config_from_fields, decoder_keys,
                         model_from_weights, read_safetensors, settings_provenance, torch_load_checked)
from .model import IMAGENET_MEAN, IMAGENET_STD, PRESETS, MAEConfig, MaskedAutoencoderViT
from .model_ref import check_settings

# Heads cannot be read from weights (qkv is 3D x D for any head count); only the
# official presets' published shapes define them.
OFFICIAL_ENCODERS = {(c.embed_dim, c.depth, c.patch_size): name for name, c in PRESETS.items()
                     if name.startswith("mae_vit_")}
OFFICIAL_DECODER = (PRESETS["mae_vit_base_patch16"].decoder_embed_dim, PRESETS["mae_vit_base_patch16"].decoder_depth)
OFFICIAL_DECODER_HEADS = PRESETS["mae_vit_base_patch16"].decoder_num_heads
OFFICIAL_LAYER_NORM_EPS = 1e-6
# the official releases that carry a decoder: (preset, trained with norm_pix_loss)
_SIZES = {"base": "mae_vit_base_patch16", "large": "mae_vit_large_patch16", "huge": "mae_vit_huge_patch14"}
OFFICIAL_RELEASES = {**{f"mae_visualize_vit_{size}.pth": (preset, False) for size, preset in _SIZES.items()},
                     "mae_visualize_vit_large_ganloss.pth": (_SIZES["large"], False),
                     **{f"mae_pretrain_vit_{size}_full.pth": (preset, True) for size, preset in _SIZES.items()}}
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


def infer_official_config(sd: dict, path="state dict") -> dict:
    """The architecture fields that official-name weights (name -> tensor or shape) do tell.

    Patch size, channels and width come from patch_embed.proj.weight, the image
    size from pos_embed's length, depths from the numbered blocks, mlp_ratio
    from fc1. Head counts and preprocessing are not in weights: see official_settings.
    """
    shape = {k: tuple(getattr(v, "shape", v)) for k, v in sd.items()}
    needed = [k for k in ("patch_embed.proj.weight", "pos_embed", "blocks.0.mlp.fc1.weight") if k not in shape]
    if needed:
        raise CheckpointError(f"{path}: not an MAE/ViT state dict with official key names; missing {needed} "
                              f"(found e.g. {sorted(sd)[:5]})")
    width, in_chans, patch, _ = shape["patch_embed.proj.weight"]
    grid = math.isqrt(shape["pos_embed"][1] - 1)
    if grid * grid != shape["pos_embed"][1] - 1:
        raise CheckpointError(f"{path}: pos_embed has {shape['pos_embed'][1]} rows, not a square grid plus cls")
    arch = dict(img_size=grid * patch, patch_size=patch, in_chans=in_chans, embed_dim=width,
                depth=_count_blocks(sd, "blocks", path), mlp_ratio=shape["blocks.0.mlp.fc1.weight"][0] / width)
    if "decoder_embed.weight" in shape:
        arch.update(decoder_embed_dim=shape["decoder_embed.weight"][0],
                    decoder_depth=_count_blocks(sd, "decoder_blocks", path))
        fc1 = shape.get("decoder_blocks.0.mlp.fc1.weight")
        if fc1 is not None and fc1[0] / arch["decoder_embed_dim"] != arch["mlp_ratio"]:
            raise CheckpointError(f"{path}: encoder and decoder MLPs have different ratios "
                                  f"({arch['mlp_ratio']} vs {fc1[0] / arch['decoder_embed_dim']}), "
                                  f"which this MAE does not support")
    return arch


def _official_heads(arch: dict, known: dict, assumed: dict, missing: dict) -> None:
    """num_heads / decoder_num_heads: known (caller, training args, timm), else an official preset's shape."""
    shape = (arch["embed_dim"], arch["depth"], arch["patch_size"])
    if "num_heads" not in known:
        preset = OFFICIAL_ENCODERS.get(shape)
        if preset:
            known["num_heads"] = PRESETS[preset].num_heads
            assumed["num_heads"] = (f"the weights have the shape of the official {preset} "
                                    f"({shape[0]} wide, {shape[1]} deep), published with {known['num_heads']} heads")
        else:
            missing["num_heads"] = (f"an encoder {shape[0]} wide and {shape[1]} deep (patch {shape[2]}) has no "
                                    f"official shape, and weights do not record head counts")
    if "decoder_embed_dim" not in arch or "decoder_num_heads" in known:
        return  # encoder-only: the placeholder decoder is never used
    shape = (arch["decoder_embed_dim"], arch["decoder_depth"])
    if shape == OFFICIAL_DECODER:
        known["decoder_num_heads"] = OFFICIAL_DECODER_HEADS
        assumed["decoder_num_heads"] = (f"the decoder has the official shape ({shape[0]} wide, {shape[1]} deep), "
                                        f"published with {OFFICIAL_DECODER_HEADS} heads")
    else:
        missing["decoder_num_heads"] = (f"a decoder {shape[0]} wide and {shape[1]} deep has no official shape, and "
                                        f"weights do not record head counts")


def _official_preprocessing(arch: dict, name: str, known: dict, assumed: dict, missing: dict) -> None:
    """mean/std, norm_pix_loss and LayerNorm eps, where the official format defines them."""
    if "mean" not in known and "std" not in known and arch["in_chans"] == 3:
        known.update(mean=IMAGENET_MEAN, std=IMAGENET_STD)
        assumed["mean"] = assumed["std"] = "MAE's own code normalises RGB input with ImageNet mean/std"
    for field in ("mean", "std"):
        if field not in known:
            missing[field] = (f"a .pth does not record its preprocessing, and nothing defines it for "
                              f"{arch['in_chans']}-channel input" if arch["in_chans"] != 3 else
                              "given without the other; give both")
    release, norm_pix_loss = OFFICIAL_RELEASES.get(name, (None, None))
    if "norm_pix_loss" not in known:
        if release and OFFICIAL_ENCODERS.get((arch["embed_dim"], arch["depth"], arch["patch_size"])) == release:
            known["norm_pix_loss"] = norm_pix_loss
            assumed["norm_pix_loss"] = (f"the official release {name} was trained "
                                        f"{'with' if norm_pix_loss else 'without'} norm_pix_loss")
        elif "decoder_embed_dim" in arch:
            missing["norm_pix_loss"] = ("the file has no training args, so it does not say whether the decoder "
                                        "predicts pixels or per-patch normalised pixels")
    if "layer_norm_eps" not in known:
        known["layer_norm_eps"] = OFFICIAL_LAYER_NORM_EPS
        assumed["layer_norm_eps"] = f"MAE's own code (and timm's ViT) use LayerNorm eps {OFFICIAL_LAYER_NORM_EPS}"


def _from_args(args: dict, arch: dict, path) -> dict:
    """Settings a training checkpoint's args record: the model preset's heads, norm_pix_loss; input_size checked."""
    known = {}
    if isinstance(args.get("input_size"), int) and args["input_size"] != arch["img_size"]:
        raise CheckpointError(f"{path}: the training args say input_size {args['input_size']}, but pos_embed is "
                              f"for {arch['img_size']}x{arch['img_size']} images")
    preset = PRESETS.get(args.get("model")) if isinstance(args.get("model"), str) else None
    if preset is not None and (preset.embed_dim, preset.depth, preset.patch_size) == (
            arch["embed_dim"], arch["depth"], arch["patch_size"]):
        known["num_heads"] = preset.num_heads
        if (arch.get("decoder_embed_dim"), arch.get("decoder_depth")) == (preset.decoder_embed_dim,
                                                                          preset.decoder_depth):
            known["decoder_num_heads"] = preset.decoder_num_heads
    if "norm_pix_loss" in args:
        known["norm_pix_loss"] = bool(args["norm_pix_loss"])
    return known


def official_settings(arch: dict, path, given: dict, read: dict) -> tuple[dict, dict]:
    """(MAEConfig fields, {field: why it was assumed}) for official-name weights.

    Precedence: `given` (the caller), then `read` (training args, a timm config),
    then only what the official format itself defines (the presets' published
    shapes, ImageNet mean/std for RGB, the official releases' norm_pix_loss,
    LayerNorm eps 1e-6). Anything else raises MissingSettingsError.
    """
    known, assumed, missing = {**read, **given}, {}, {}
    _official_heads({**arch, **given}, known, assumed, missing)
    _official_preprocessing({**arch, **given}, Path(str(path)).name, known, assumed, missing)
    if missing:
        raise MissingSettingsError(path, missing)
    return {**arch, **known}, assumed


def _refuse_classifier(sd: dict, path) -> None:
    head = sorted(k for k in sd if k.startswith(("head.", "fc_norm.")))
    if head:
        raise CheckpointError(
            f"{path}: holds a classification head ({', '.join(head[:4])}): this is a fine-tuned classifier, not an "
            f"MAE pre-training checkpoint. Fine-tuning changed its encoder, so it says nothing reliable about the "
            f"pre-training set; use a pre-training release (mae_pretrain_vit_*, mae_visualize_vit_*).")


def _from_official_state(sd: dict, path, device, given: dict, read: dict, provenance: dict,
                         source_format: str) -> LoadedModel:
    _refuse_classifier(sd, path)
    fields, assumed = official_settings(infer_official_config(sd, path), path, given, read)
    config = config_from_fields(fields, path)
    model, missing = model_from_weights(config, sd, path, device)
    provenance = {**provenance, "file": Path(str(path)).name, **settings_provenance(given, assumed)}
    return LoadedModel(model, str(path), source_format, not missing, provenance, missing)


def load_official_mae(path, device="cpu", config: MAEConfig | dict | None = None) -> LoadedModel:
    """A facebookresearch/mae checkpoint ({'model': state_dict[, 'args': Namespace]}),
    a bare state dict with the same names (timm ViT weights such as
    vit_base_patch16_224.mae), or either as .safetensors.

    The architecture is read from the weights; heads, preprocessing and target
    space from `config` (MAEConfig fields), the training args, or what the
    official format defines (see official_settings); never guessed. Encoder-only
    files (mae_pretrain_vit_*, timm) load with has_decoder=False.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such file")
    given = check_settings(config, f"{path} settings")
    sd, args = _read_official(path)
    read = _from_args(args, infer_official_config(sd, path), path)
    provenance = {"format": "official_mae", **({"args": args} if args else {})}
    return _from_official_state(sd, path, device, given, read, provenance, "official_mae")


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


def _read_hub_weights(directory: Path) -> dict:
    """model.safetensors, sharded safetensors, or pytorch_model.bin (weights only)."""
    if (directory / "model.safetensors").exists():
        return _check_tensors(read_safetensors(directory / "model.safetensors"), directory)
    index = directory / "model.safetensors.index.json"
    if index.exists():
        weight_map = _read_json(index).get("weight_map")
        if not isinstance(weight_map, dict) or not weight_map:
            raise CheckpointError(f"{index}: no weight_map object naming the shards")
        sd = {}
        for name in sorted(set(map(str, weight_map.values()))):
            sd.update(read_safetensors(_shard_path(directory, name, index)))
        return _check_tensors(sd, directory)
    if (directory / "pytorch_model.bin").exists():
        return _read_official(directory / "pytorch_model.bin")[0]
    raise CheckpointError(f"{directory}: no model.safetensors, model.safetensors.index.json or pytorch_model.bin")


def _hf_preprocessing(directory: Path, channels: int) -> dict:
    """mean/std from preprocessor_config.json; {} where it does not state them."""
    pre = directory / "preprocessor_config.json"
    if not pre.exists():
        return {}
    p = _read_json(pre)
    if p.get("do_rescale", True) and not math.isclose(float(p.get("rescale_factor", 1 / 255)), 1 / 255):
        raise CheckpointError(f"{pre}: rescale_factor {p['rescale_factor']} is not 1/255; mimmia scales pixels "
                              f"to [0, 1] and cannot reproduce this preprocessing")
    if p.get("do_normalize", True) is False:
        return dict(mean=(0.0,) * channels, std=(1.0,) * channels)
    if "image_mean" not in p or "image_std" not in p:
        return {}
    mean, std = p["image_mean"], p["image_std"]
    mean, std = ([mean] * channels if isinstance(mean, (int, float)) else mean,
                 [std] * channels if isinstance(std, (int, float)) else std)
    if not isinstance(mean, list) or not isinstance(std, list) or len(mean) != channels or len(std) != channels:
        raise CheckpointError(f"{pre}: image_mean/image_std {p['image_mean']} / {p['image_std']} do not have "
                              f"{channels} values")
    return dict(mean=tuple(mean), std=tuple(std))


def _hf_fields(cfg: dict, path) -> tuple[dict, dict]:
    """(MAEConfig fields, {field: assumed why}) from a ViTMAE config.json; transformers' defaults fill gaps."""
    nulls = sorted(k for k in HF_DEFAULTS if k in cfg and cfg[k] is None)
    if nulls:
        raise CheckpointError(f"{path}/config.json: {', '.join(nulls)} {'is' if len(nulls) == 1 else 'are'} null; "
                              f"give a value, or leave the key out for transformers' default")
    c = {**HF_DEFAULTS, **cfg}
    if c["hidden_act"] != "gelu":
        raise CheckpointError(f"{path}: hidden_act {c['hidden_act']!r} is not supported (MAE uses exact 'gelu')")
    try:
        ratio = c["intermediate_size"] / c["hidden_size"]
        if c["decoder_intermediate_size"] / c["decoder_hidden_size"] != ratio:
            raise ValueError(f"encoder and decoder MLP ratios differ ({c['intermediate_size']}/{c['hidden_size']} "
                             f"vs {c['decoder_intermediate_size']}/{c['decoder_hidden_size']})")
        fields = dict(
            img_size=_square(c["image_size"], "image_size"), patch_size=_square(c["patch_size"], "patch_size"),
            in_chans=c["num_channels"], embed_dim=c["hidden_size"], depth=c["num_hidden_layers"],
            num_heads=c["num_attention_heads"], decoder_embed_dim=c["decoder_hidden_size"],
            decoder_depth=c["decoder_num_hidden_layers"], decoder_num_heads=c["decoder_num_attention_heads"],
            mlp_ratio=ratio, layer_norm_eps=c["layer_norm_eps"], norm_pix_loss=c["norm_pix_loss"])
    except (TypeError, ValueError, ZeroDivisionError) as e:
        raise CheckpointError(f"{path}: config.json does not describe a buildable MAE ({e})") from e
    assumed = {k: f"not in config.json; transformers' ViTMAEConfig default {HF_DEFAULTS[k]!r}"
               for k in HF_DEFAULTS if k not in cfg and k not in ("hidden_act", "mask_ratio")}
    return fields, assumed


def _hf_key_names(raw: dict) -> str:
    return ("transformers 5.x" if any(".q_proj." in k for k in raw) else
            "transformers 5.x save_pretrained" if any("decoder_encoder.layer" in k for k in raw) else
            "transformers 4.x")


def load_hf_vitmae(directory, device="cpu", config=None) -> LoadedModel:
    """A Hugging Face hub directory: a transformers ViTMAEForPreTraining (or
    ViTMAEModel, encoder-only) with config.json, or a timm ViT encoder
    (config.json with 'architecture', e.g. timm/vit_base_patch16_224.mae).

    The architecture, heads, LayerNorm eps and norm_pix_loss come from
    config.json, mean/std from preprocessor_config.json; `config` (MAEConfig
    fields) overrides them. Without a stated mean/std the load is refused.
    """
    directory = Path(directory)
    given = check_settings(config, f"{directory} settings")
    cfg = _read_json(directory / "config.json")
    if "architecture" in cfg and "model_type" not in cfg:
        return _load_timm_dir(directory, cfg, device, given)
    if cfg.get("model_type") != "vit_mae":
        raise CheckpointError(f"{directory}: config.json model_type is {cfg.get('model_type')!r}, not 'vit_mae'")
    fields, assumed = _hf_fields(cfg, directory)
    fields.update(_hf_preprocessing(directory, given.get("in_chans", fields["in_chans"])), **given)
    missing = {f: "the folder has no preprocessor_config.json stating image_mean and image_std"
               for f in ("mean", "std") if f not in fields}
    if missing:
        raise MissingSettingsError(directory, missing)
    config = config_from_fields(fields, directory)
    raw = _read_hub_weights(directory)
    model, missing_decoder = model_from_weights(config, hf_to_official(raw, directory), directory, device)
    provenance = {"format": "hf_vitmae", "architectures": cfg.get("architectures"), "key_names": _hf_key_names(raw),
                  "transformers_version": cfg.get("transformers_version"),
                  "mask_ratio": cfg.get("mask_ratio", HF_DEFAULTS["mask_ratio"]),
                  **settings_provenance(given, {k: v for k, v in assumed.items() if k not in given})}
    return LoadedModel(model, str(directory), "hf_vitmae", not missing_decoder, provenance, missing_decoder)


def timm_num_heads(architecture: str) -> int | None:
    """The head count timm's registry gives an architecture name, or None for a name timm does not know."""
    import timm

    try:
        with torch.device("meta"):
            model = timm.create_model(architecture, pretrained=False)
        return int(model.blocks[0].attn.num_heads)
    except Exception:  # noqa: BLE001 -- unknown names and non-ViT architectures alike mean "not known"
        return None


def _load_timm_dir(directory: Path, cfg: dict, device, given: dict) -> LoadedModel:
    """timm hub weights use the official names; heads come from timm's architecture, mean/std from pretrained_cfg."""
    pre = cfg.get("pretrained_cfg") or {}
    read = {k: tuple(pre[k]) for k in ("mean", "std") if isinstance(pre.get(k), (list, tuple))}
    heads = timm_num_heads(str(cfg["architecture"]))
    if heads is not None:
        read["num_heads"] = heads
    provenance = {"format": "timm", "architecture": cfg["architecture"], "tag": pre.get("tag")}
    return _from_official_state(_read_hub_weights(directory), directory, device, given, read, provenance, "timm")


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
    path = f"{encoder.path} + decoder of {decoder_from.path}"
    model, _ = model_from_weights(config, state, path, allow_missing_decoder=False)
    provenance = {"format": "attached", "encoder": {"path": encoder.path, "source_format": encoder.source_format,
                                                    "fingerprint": encoder.fingerprint, **encoder.provenance},
                  "decoder": {"path": decoder_from.path, "source_format": decoder_from.source_format,
                              "fingerprint": decoder_from.fingerprint}, "warnings": warnings}
    device = next(encoder.model.parameters()).device
    return LoadedModel(model.to(device).eval(), path, "attached", True, provenance, [])


def _assumed(provenance: dict) -> dict:
    """Every setting assumed rather than read, also those of an attached model's encoder."""
    encoder = provenance.get("encoder", {}).get("settings_assumed", {}) if provenance.get("format") == "attached" \
        else {}
    return {**{f"encoder {k}": v for k, v in encoder.items()}, **provenance.get("settings_assumed", {})}


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
        "settings_assumed": _assumed(loaded.provenance),
        "provenance": loaded.provenance,
        "fingerprint": loaded.fingerprint,
    }


__all__ = ["load_official_mae", "load_hf_vitmae", "attach_decoder", "describe_checkpoint", "infer_official_config",
           "hf_to_official"]
