"""GPU scoring speed: ViT-B/16 at 224, mask ratio 0.75, K masks per image; one command.

    python -m bench.bench_gpu [--images 64,256] [--masks 8] [--total 4096] [--no-compile]
    python -m bench.bench_gpu --smoke      # the same script on CPU at the demo's tiny size

Checks first, on identical weights and inputs: ours fp32 = transformers fp32
(TF32 off), ours bf16 vs ours fp32 (largest relative difference, correlation of
the per-image scores), ours bf16 vs transformers bf16. Then times, in
image-masks/s (median of --repeats, round-robin):
  one batch of N images x K masks (each N of --images), bf16 autocast:
    ours plain (images repeated K times: no shared patch embedding), ours with
    the patch embedding shared by the K masks, ours + torch.compile, and
    transformers' ViTMAEForPreTraining (SDPA) at its best batch size;
  end to end, `score_images` over --total uint8 images in host memory (pinned
    prefetch, mask noise, normalisation, host copies of the scores included):
    plain, torch.compile, CUDA graphs, torch.compile + CUDA graphs.
A variant that fails is reported as failed; the others still run. Each row also
shows its share of the bf16 roofline: the matrix-product FLOPs of one image-mask
(torch.utils.flop_counter) against the best rate bf16 torch.mm reaches on this GPU.
"""
import argparse
import json

import numpy as np
import torch

from bench.common import (build_pair, check_close, hf_scores_batched, hf_scores_per_mask, matmul_flops,
                          matmul_peak, median_seconds, ours_scores, ours_scores_unshared, random_batch, report)
from mimmia_core.data import ArraySource
from mimmia_core.masking import mask_noise
from mimmia_core.scores import ScoreSpec, score_images

MASK_RATIO = 0.75


def bf16(device):
    return torch.autocast(torch.device(device).type, dtype=torch.bfloat16)


def checks(model, hf, imgs, noise, device) -> dict:
    tf32 = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    with torch.inference_mode():
        ours32 = ours_scores(model, imgs, noise, MASK_RATIO)
        hf32 = hf_scores_per_mask(hf, imgs, noise)
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = tf32
    with torch.inference_mode():
        with bf16(device):
            ours16 = ours_scores(model, imgs, noise, MASK_RATIO)
            hf16 = hf_scores_batched(hf, imgs, noise)
    out = {"ours_fp32_vs_hf_fp32_max_rel": check_close("ours fp32 vs transformers fp32", ours32, hf32, rtol=1e-3),
           "ours_bf16_vs_fp32_max_rel": check_close("ours bf16 vs fp32", ours16, ours32, rtol=5e-2),
           "ours_bf16_vs_hf_bf16_max_rel": check_close("ours bf16 vs transformers bf16", ours16, hf16, rtol=5e-2)}
    per_image32, per_image16 = ours32.mean(0).double().cpu().numpy(), ours16.mean(0).double().cpu().numpy()
    out["ours_bf16_vs_fp32_corr"] = float(np.corrcoef(per_image32, per_image16)[0, 1])
    if not out["ours_bf16_vs_fp32_corr"] > 0.99:
        raise AssertionError(f"bf16 and fp32 per-image scores correlate only {out['ours_bf16_vs_fp32_corr']:.4f}")
    print("checks:", json.dumps(out))
    return out


def timed(rows: list, fns: dict, repeats: int, device, work: int, notes: dict | None = None):
    """Time fns round-robin; a variant that raises is reported as failed and left out."""
    ok = {}
    for name, fn in fns.items():
        try:
            fn()  # also compiles / captures
            ok[name] = fn
        except Exception as e:  # noqa: BLE001 - report and go on with the other variants
            print(f"{name}: failed: {type(e).__name__}: {str(e).splitlines()[0][:200]}")
    for name, s in median_seconds(ok, repeats, device, warmup=False).items():
        rows.append({"variant": name, "rate": work / s, "note": (notes or {}).get(name, "")})


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--smoke", action="store_true", help="run on CPU at mae_tiny_28 size, without compile")
    p.add_argument("--images", default="64,256", help="images per batch to try (times K masks = rows per forward)")
    p.add_argument("--masks", type=int, default=8)
    p.add_argument("--total", type=int, default=4096, help="images scored end to end")
    p.add_argument("--hf-batches", default="128,256,512,1024", help="transformers batch sizes (image-masks) to try")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--no-compile", action="store_true")
    args = p.parse_args(argv)
    if args.smoke:
        args.images, args.masks, args.total, args.repeats, args.no_compile = "2,4", 2, 16, 1, True
        args.hf_batches = "4,8"
        torch.set_num_threads(1)
        return args, "cpu", "mae_tiny_28"
    if not torch.cuda.is_available():
        raise SystemExit("bench_gpu needs a CUDA GPU; use --smoke to check the script on CPU")
    return args, "cuda", "vit_b16_224"


def kernel_rows(args, model, hf, imgs, noise, sizes, device) -> list:
    """The scoring forward alone, ours at each batch size, then transformers at its best batch size (last row)."""
    K, c, rows = args.masks, model.config, []
    compiled = None if args.no_compile else torch.compile(lambda x, n: ours_scores(model, x, n, MASK_RATIO),
                                                          dynamic=False)
    with torch.inference_mode(), bf16(device):
        for n in sizes:
            x, z = imgs[:n], noise[:, :n]
            kernel = {f"ours plain (no sharing), N={n}": lambda x=x, z=z: ours_scores_unshared(model, x, z, MASK_RATIO),
                      f"ours shared patch embedding, N={n}": lambda x=x, z=z: ours_scores(model, x, z, MASK_RATIO)}
            if compiled is not None:
                kernel[f"ours shared + compile, N={n}"] = lambda x=x, z=z: compiled(x, z)
            timed(rows, kernel, args.repeats, device, K * n)
        hf_rows = []
        for b in (int(x) for x in args.hf_batches.split(",")):
            x, _ = random_batch(c, b, seed=1, device=device)
            n1 = mask_noise(1, np.arange(b), 1, c.num_patches).to(device)
            timed(hf_rows, {f"transformers bf16 SDPA, batch {b}": lambda x=x, n1=n1: hf_scores_per_mask(hf, x, n1)},
                  args.repeats, device, b)
        if hf_rows:
            rows.append({**max(hf_rows, key=lambda r: r["rate"]),
                         "note": "best of " + ", ".join(f"{r['variant'].rsplit(' ', 1)[1]}: {r['rate']:,.0f}"
                                                        for r in hf_rows)})
    return rows


def end_to_end(args, model, uint8, n, device) -> dict:
    """uint8 images in host memory -> (K, N) scores on the host, by score_images and its fast paths."""
    source = ArraySource(np.tile(uint8.numpy(), (-(-args.total // n), 1, 1, 1))[:args.total], name="bench")
    spec, run = ScoreSpec(mask_ratio=MASK_RATIO, num_masks=args.masks), dict(batch_size=n, device=device)
    e2e = {"score_images plain": lambda: score_images(model, source, spec, **run)}
    if not args.no_compile:
        e2e["score_images compile"] = lambda: score_images(model, source, spec, compile=True, **run)
    if device == "cuda":
        e2e["score_images cuda_graphs"] = lambda: score_images(model, source, spec, cuda_graphs=True, **run)
        if not args.no_compile:
            e2e["score_images compile + cuda_graphs"] = lambda: score_images(model, source, spec, compile=True,
                                                                            cuda_graphs=True, **run)
    return e2e


def main(argv=None):
    args, device, shape = parse_args(argv)
    cuda = device == "cuda"
    K, sizes = args.masks, [int(n) for n in args.images.split(",")]
    N = max(sizes)
    model, hf = build_pair(shape, MASK_RATIO, device=device)
    c = model.config
    imgs, uint8 = random_batch(c, N, device=device)
    noise = mask_noise(0, np.arange(N), K, c.num_patches).to(device)
    check = checks(model, hf, imgs, noise, device)
    with torch.inference_mode():
        flops = matmul_flops(lambda: ours_scores(model, imgs, noise, MASK_RATIO))[1] / (K * N)
    peak = matmul_peak(torch.bfloat16, device, repeats=1 if args.smoke else 5)
    rows = kernel_rows(args, model, hf, imgs, noise, sizes, device)
    base = rows[-1]["variant"]
    timed(rows, end_to_end(args, model, uint8, N, device), max(1, args.repeats // 2), device, K * args.total)

    name = torch.cuda.get_device_name() if cuda else "cpu (smoke)"
    best = max((r for r in rows if r["variant"] != base), key=lambda r: r["rate"])
    hf_best = rows[[r["variant"] for r in rows].index(base)]["rate"]
    footnote = (f"Issue targets (H200, ViT-B/16): >= 20,000 image-masks/s, >= 50% of the bf16 peak, >= 1.4x "
                f"transformers at its best. Best here: {best['variant']}, {best['rate']:,.0f} image-masks/s, "
                f"{100 * best['rate'] * flops / peak:.0f}% of the bf16 peak, {best['rate'] / hf_best:.2f}x transformers.")
    report(f"GPU scoring, {shape}, mask {MASK_RATIO}, K={K}, N={args.images} images per batch "
           f"(end to end: {N}), {name}", rows, baseline=base, flops=flops, peak=peak, peak_name="bf16 peak",
           footnote=footnote,
           extra={"shape": shape, "masks": K, "images": sizes, "total": args.total, "device": name, "checks": check,
                  "peak_gpu_mib": torch.cuda.max_memory_allocated() / 2 ** 20 if cuda else None})


if __name__ == "__main__":
    main()
