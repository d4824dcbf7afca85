"""Shared by the benchmarks: our MAE and transformers' ViTMAEForPreTraining on identical weights,
the masked-patch MSE each computes, agreement checks, timing and the report."""
import json
import os
import statistics
import time

import torch
from torch.utils.flop_counter import FlopCounterMode
from transformers import ViTMAEConfig, ViTMAEForPreTraining

from mimmia_core.checkpoint import hf_to_official
from mimmia_core.config import MAEConfig, get_config
from mimmia_core.model import MaskedAutoencoderViT, build_model
from mimmia_core.distances import batch_distances

SHAPES = {
    "mae_tiny_28": get_config("mae_tiny_28"),
    "vit_b16_224": get_config("mae_vit_base_patch16"),
}


# --------------------------------------------------------------------------
# ours -> transformers (5.x names), checked against checkpoint.hf_to_official
# --------------------------------------------------------------------------
def hf_config(c: MAEConfig, mask_ratio: float) -> ViTMAEConfig:
    return ViTMAEConfig(
        image_size=c.img_size, patch_size=c.patch_size, num_channels=c.in_chans, hidden_size=c.embed_dim,
        num_hidden_layers=c.depth, num_attention_heads=c.num_heads, intermediate_size=int(c.embed_dim * c.mlp_ratio),
        decoder_hidden_size=c.decoder_embed_dim, decoder_num_hidden_layers=c.decoder_depth,
        decoder_num_attention_heads=c.decoder_num_heads,
        decoder_intermediate_size=int(c.decoder_embed_dim * c.mlp_ratio), hidden_act="gelu",
        layer_norm_eps=c.layer_norm_eps, qkv_bias=True, mask_ratio=mask_ratio, norm_pix_loss=c.norm_pix_loss,
        hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)


_LAYER_PARTS = {"attn.proj": "attention.o_proj", "mlp.fc1": "mlp.fc1", "mlp.fc2": "mlp.fc2",
                "norm1": "layernorm_before", "norm2": "layernorm_after"}
_NAMES = {"cls_token": "vit.embeddings.cls_token", "pos_embed": "vit.embeddings.position_embeddings",
          "patch_embed.proj": "vit.embeddings.patch_embeddings.projection", "norm": "vit.layernorm",
          "mask_token": "decoder.mask_token", "decoder_pos_embed": "decoder.decoder_pos_embed",
          "decoder_embed": "decoder.decoder_embed", "decoder_norm": "decoder.decoder_norm",
          "decoder_pred": "decoder.decoder_pred"}


def official_to_hf(sd: dict) -> dict:
    """Official / mimmia names -> transformers 5.x names, qkv split into q, k, v."""
    out = {}
    for k, v in sd.items():
        stem, _, leaf = k.rpartition(".")
        if k.startswith(("blocks.", "decoder_blocks.")):
            stack, idx, part = stem.split(".", 2)
            prefix = f"vit.layers.{idx}" if stack == "blocks" else f"decoder.decoder_layers.{idx}"
            if part == "attn.qkv":
                for name, chunk in zip("qkv", v.chunk(3)):
                    out[f"{prefix}.attention.{name}_proj.{leaf}"] = chunk
            else:
                out[f"{prefix}.{_LAYER_PARTS[part]}.{leaf}"] = v
        elif k in _NAMES:
            out[_NAMES[k]] = v
        else:
            out[f"{_NAMES[stem]}.{leaf}"] = v
    return out


def to_hf(model: MaskedAutoencoderViT, mask_ratio: float) -> ViTMAEForPreTraining:
    """transformers' ViTMAEForPreTraining with exactly our weights (SDPA attention, eval mode)."""
    sd = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    converted = official_to_hf(sd)
    back = hf_to_official(converted)
    assert set(back) == set(sd) and all(torch.equal(back[k], sd[k]) for k in sd), "key map does not round-trip"
    hf = ViTMAEForPreTraining(hf_config(model.config, mask_ratio))
    hf.load_state_dict(converted, strict=True)
    return hf.to(model.pos_embed.device).eval()


def build_pair(shape: str, mask_ratio: float, seed: int = 0, device="cpu"):
    model = build_model(SHAPES[shape], seed=seed).to(device).eval()
    return model, to_hf(model, mask_ratio)


# --------------------------------------------------------------------------
# The score both sides compute: masked-patch MSE, (K, N)
# --------------------------------------------------------------------------
def ours_scores(model, imgs, noise, mask_ratio):
    return batch_distances(model, imgs, noise, mask_ratio, ("masked_mse",))[0]


def ours_scores_unshared(model, imgs, noise, mask_ratio):
    """Our model with the images repeated K times: no shared patch embedding or targets."""
    K, N, L = noise.shape
    return batch_distances(model, imgs.repeat(K, 1, 1, 1), noise.reshape(1, K * N, L), mask_ratio,
                           ("masked_mse",))[0].view(K, N)


def _hf_masked_mse(hf, imgs, noise):
    out = hf(pixel_values=imgs, noise=noise)
    target = hf.patchify(imgs)
    if hf.config.norm_pix_loss:
        mean, var = target.mean(-1, keepdim=True), target.var(-1, keepdim=True)
        target = (target - mean) / (var + 1.0e-6) ** 0.5
    err = ((out.logits.float() - target) ** 2).mean(-1)
    return (err * out.mask).sum(-1) / out.mask.sum(-1)


def hf_scores_per_mask(hf, imgs, noise):
    """What a transformers user writes: one forward per mask (K forwards of N images)."""
    return torch.stack([_hf_masked_mse(hf, imgs, noise[k]) for k in range(noise.shape[0])])


def hf_scores_batched(hf, imgs, noise):
    """transformers with the K masks batched: the images repeated K times, one forward."""
    K, N, L = noise.shape
    return _hf_masked_mse(hf, imgs.repeat(K, 1, 1, 1), noise.reshape(K * N, L)).view(K, N)


def random_batch(config: MAEConfig, n: int, seed: int = 0, device="cpu"):
    """n random smooth images of varied contrast, normalised (N, C, H, W), and their uint8
    originals (N, H, W, C): unlike pixel noise, their scores spread out."""
    g = torch.Generator().manual_seed(seed)
    low = torch.rand(n, config.in_chans, config.grid_size, config.grid_size, generator=g) - 0.5
    contrast = 0.05 + 0.95 * torch.rand(n, 1, 1, 1, generator=g)
    smooth = torch.nn.functional.interpolate(low, size=config.img_size, mode="bilinear", align_corners=False)
    pixels = 0.5 + contrast * smooth + 0.02 * torch.randn(n, config.in_chans, config.img_size, config.img_size,
                                                          generator=g)
    images = (pixels.clamp(0, 1) * 255).round().to(torch.uint8)
    mean = torch.tensor(config.mean).view(1, -1, 1, 1)
    std = torch.tensor(config.std).view(1, -1, 1, 1)
    return ((images.float() / 255 - mean) / std).to(device), images.permute(0, 2, 3, 1).contiguous()


def check_close(name: str, a: torch.Tensor, b: torch.Tensor, rtol: float) -> float:
    """Largest relative difference; raises if above rtol (agreement is checked before timing)."""
    a, b = a.double().cpu(), b.double().cpu()
    rel = ((a - b).abs() / b.abs().clamp(min=1e-12)).max().item()
    if not rel <= rtol:
        raise AssertionError(f"{name}: scores differ by {rel:.3g} relative (allowed {rtol:g})")
    return rel


# --------------------------------------------------------------------------
# Timing and the report
# --------------------------------------------------------------------------
def sync(device):
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def round_robin_seconds(fns: dict, repeats: int, device="cpu", warmup: bool = True) -> dict:
    """Seconds of each call of each fn, {name: [repeats]}, timed round-robin (after a warm-up call
    each): repetition i of every variant runs back to back, so load from other processes hits
    every variant alike."""
    for fn in fns.values() if warmup else ():
        fn()
    times = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            sync(device)
            t0 = time.perf_counter()
            fn()
            sync(device)
            times[name].append(time.perf_counter() - t0)
    return times


def median_seconds(fns: dict, repeats: int, device="cpu", warmup: bool = True) -> dict:
    """Median seconds per call of each fn, timed round-robin (round_robin_seconds)."""
    return {name: statistics.median(t) for name, t in round_robin_seconds(fns, repeats, device, warmup).items()}


def paired_speedup(times: dict, ours: str, peer: str) -> float:
    """The median over repetitions of peer time / our time, each pair timed back to back: an
    in-run ratio that a load changing between repetitions does not skew."""
    return statistics.median(p / o for o, p in zip(times[ours], times[peer]))


def load_average() -> float:
    """The 1-minute load average (runnable processes), to print beside timings on a shared machine."""
    return os.getloadavg()[0]


def matmul_flops(fn) -> tuple:
    """(fn's result, FLOPs of the matrix products in that call): convolutions and linear layers,
    forward and backward, counted by torch.utils.flop_counter. CPU attention kernels are not
    counted, so a ceiling derived from this count is generous."""
    with FlopCounterMode(display=False) as counter:
        result = fn()
    return result, counter.get_total_flops()


PEAK_SIZES = ((1024, 1024, 1024), (2048, 2048, 2048), (4096, 4096, 4096), (8192, 768, 3072))
GPU_PEAK_SIZES = PEAK_SIZES + ((8192, 8192, 8192), (16384, 16384, 16384))


def matmul_peak(dtype=torch.float32, device="cpu", repeats: int = 5) -> float:
    """The best FLOP/s torch.mm reaches here (this device, dtype and thread count) on large
    products: an upper bound on what any variant's matrix products sustain."""
    best = 0.0
    for m, k, n in GPU_PEAK_SIZES if torch.device(device).type == "cuda" else PEAK_SIZES:
        a, b = torch.randn(m, k, dtype=dtype, device=device), torch.randn(k, n, dtype=dtype, device=device)
        seconds = median_seconds({"mm": lambda: a @ b}, repeats, device)["mm"]
        best = max(best, 2 * m * k * n / seconds)
    return best


def report(title: str, rows: list, baseline: str, unit: str = "image-masks/s", extra: dict | None = None,
           flops: float | None = None, peak: float | None = None, peak_name: str = "fp32 peak", footnote: str = ""):
    """rows: dicts with 'variant', 'rate' (higher is better) and optional 'note'. Prints a table
    with each rate's ratio to the baseline row, then one JSON line. With `flops` (matrix-product
    FLOPs per unit) and `peak` (FLOP/s), each row also shows the FLOP/s it sustains and its share
    of the peak, and the table ends with the ceiling the peak sets."""
    base = next(r["rate"] for r in rows if r["variant"] == baseline)
    roofline = flops is not None and peak is not None
    print(f"\n## {title}\n")
    numbers = [unit, f"x {baseline}"] + (["GFLOP/s", f"% {peak_name}"] if roofline else [])
    print("| variant | " + " | ".join(numbers) + " | note |")
    print("| --- |" + " ---: |" * len(numbers) + " --- |")
    for r in rows:
        line = f"| {r['variant']} | {r['rate']:,.1f} | {r['rate'] / base:.2f} |"
        if roofline:
            line += f" {r['rate'] * flops / 1e9:,.0f} | {100 * r['rate'] * flops / peak:.0f}% |"
        print(f"{line} {r.get('note', '')} |")
    summary = {}
    if roofline:
        ceiling = peak / flops
        summary = {"gflop_per_unit": round(flops / 1e9, 4), "peak_gflops": round(peak / 1e9, 1),
                   "ceiling_rate": round(ceiling, 2), "ceiling_ratio": round(ceiling / base, 3)}
        print(f"\nCeiling: {flops / 1e9:.4g} GFLOP of matrix products per {unit.split('/')[0].rstrip('s')}; "
              f"torch.mm peaks at {peak / 1e9:,.0f} GFLOP/s here ({peak_name}), so no implementation with the "
              f"same products exceeds {ceiling:,.1f} {unit}, {ceiling / base:.2f}x {baseline}.")
    if footnote:
        print(footnote)
    print(json.dumps({"bench": title, "unit": unit, "baseline": baseline, **(extra or {}), **summary,
                      "rows": [{**r, "ratio": round(r["rate"] / base, 3)} for r in rows]}))
