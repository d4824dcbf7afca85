"""Official facebookresearch/mae key names: .pth training checkpoints and releases, bare state
dicts (timm ViT weights), either as .safetensors, and timm hub folders.

Head counts and preprocessing are not in weights: they come from the caller's settings, the
training args, a timm config, or only what the official format defines (official_settings).
"""
import argparse
import math
import re
from pathlib import Path

import torch

from ..config import IMAGENET_MEAN, IMAGENET_STD, PRESETS, MAEConfig
from ..model_ref import check_settings
from .base import (CheckpointError, LoadedModel, MissingSettingsError, check_tensors, config_from_fields,
                   model_from_weights, read_hub_weights, read_json, read_safetensors, settings_provenance,
                   state_dict_from, torch_load_checked)

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


def _read_official(path: Path) -> tuple[dict, dict]:
    """(state dict, args dict) from a .pth/.bin/.safetensors file; args are what a training checkpoint records."""
    if path.suffix == ".safetensors":
        return check_tensors(read_safetensors(path), path), {}
    obj = torch_load_checked(path)
    args = {}
    if isinstance(obj, dict) and isinstance(obj.get("model"), dict):
        raw = obj.get("args")
        raw = vars(raw) if isinstance(raw, argparse.Namespace) else raw if isinstance(raw, dict) else {}
        args = {k: raw[k] for k in ARGS_KEPT if isinstance(raw.get(k), (str, int, float, bool))}
        if isinstance(obj.get("epoch"), int):
            args["epoch"] = obj["epoch"]
    return state_dict_from(obj, path), args


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
    return LoadedModel(model, str(path), source_format, provenance, missing)


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


def timm_num_heads(architecture: str) -> int | None:
    """The head count timm's registry gives an architecture name, or None for a name timm does not know."""
    import timm

    try:
        with torch.device("meta"):
            model = timm.create_model(architecture, pretrained=False)
        return int(model.blocks[0].attn.num_heads)
    except Exception:  # noqa: BLE001 -- unknown names and non-ViT architectures alike mean "not known"
        return None


def load_timm_dir(directory, device="cpu", config=None) -> LoadedModel:
    """A timm hub folder (config.json with 'architecture', e.g. timm/vit_base_patch16_224.mae): official
    key names; heads come from timm's architecture, mean/std from pretrained_cfg."""
    directory = Path(directory)
    given = check_settings(config, f"{directory} settings")
    cfg = read_json(directory / "config.json")
    pre = cfg.get("pretrained_cfg") or {}
    read = {k: tuple(pre[k]) for k in ("mean", "std") if isinstance(pre.get(k), (list, tuple))}
    heads = timm_num_heads(str(cfg["architecture"]))
    if heads is not None:
        read["num_heads"] = heads
    provenance = {"format": "timm", "architecture": cfg["architecture"], "tag": pre.get("tag")}
    return _from_official_state(read_hub_weights(directory), directory, device, given, read, provenance, "timm")
