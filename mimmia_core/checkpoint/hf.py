"""Hugging Face transformers ViTMAE folders (config.json, preprocessor_config.json, weights):
4.x and 5.x key names mapped to the official ones, without transformers at run time."""
import math
import re
from pathlib import Path

import torch

from ..model_ref import check_settings
from .base import (CheckpointError, LoadedModel, MissingSettingsError, config_from_fields, model_from_weights,
                   read_hub_weights, read_json, settings_provenance)

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


def _hf_preprocessing(directory: Path, channels: int) -> dict:
    """mean/std from preprocessor_config.json; {} where it does not state them."""
    pre = directory / "preprocessor_config.json"
    if not pre.exists():
        return {}
    p = read_json(pre)
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
    """A transformers ViTMAEForPreTraining (or ViTMAEModel, encoder-only) folder with config.json.

    The architecture, heads, LayerNorm eps and norm_pix_loss come from
    config.json, mean/std from preprocessor_config.json; `config` (MAEConfig
    fields) overrides them. Without a stated mean/std the load is refused.
    """
    directory = Path(directory)
    given = check_settings(config, f"{directory} settings")
    cfg = read_json(directory / "config.json")
    if cfg.get("model_type") != "vit_mae":
        raise CheckpointError(f"{directory}: config.json model_type is {cfg.get('model_type')!r}, not 'vit_mae'")
    fields, assumed = _hf_fields(cfg, directory)
    fields.update(_hf_preprocessing(directory, given.get("in_chans", fields["in_chans"])), **given)
    missing = {f: "the folder has no preprocessor_config.json stating image_mean and image_std"
               for f in ("mean", "std") if f not in fields}
    if missing:
        raise MissingSettingsError(directory, missing)
    config = config_from_fields(fields, directory)
    raw = read_hub_weights(directory)
    model, missing_decoder = model_from_weights(config, hf_to_official(raw, directory), directory, device)
    provenance = {"format": "hf_vitmae", "architectures": cfg.get("architectures"), "key_names": _hf_key_names(raw),
                  "transformers_version": cfg.get("transformers_version"),
                  "mask_ratio": cfg.get("mask_ratio", HF_DEFAULTS["mask_ratio"]),
                  **settings_provenance(given, {k: v for k, v in assumed.items() if k not in given})}
    return LoadedModel(model, str(directory), "hf_vitmae", provenance, missing_decoder)
