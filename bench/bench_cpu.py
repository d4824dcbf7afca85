"""CPU scoring speed: mimmia's scoring engine vs transformers' ViTMAE on identical weights and inputs.

    python -m bench.bench_cpu [--quick] [--threads 1,2] [--shapes mae_tiny_28,vit_b16_224] [--no-memory] [--no-compile]
                              [--profile]

For each thread count and shape both sides compute the masked-patch MSE of N images
under K masks (mask ratio 0.75); the scores are checked to agree before anything is
timed. Peers: transformers the way a user runs it, one forward per mask (K forwards
of N images: it has no shared-patch-embedding path), and transformers with the K
masks batched (images repeated K times). Ours: `score_images` end to end (uint8
images in, mask noise and normalisation included; on CPU it cuts forwards to
cache-sized chunks and runs one forward per thread side by side), `batch_distances`
as one forward over all K*N rows (split ops, like transformers), the opt-in
`compile=True` (torch.compile), and, as an opt-in that is not bit-identical,
`score_images` with bf16 autocast on CPU.

Timing on a shared machine: the variants run round-robin, `score_images` and
transformers per mask back to back, and the in-run ratio printed under each table
is the median over repetitions of their paired time ratio, with the load average.

Roofline: the matrix-product FLOPs of one image-mask (torch.utils.flop_counter) and
the best rate torch.mm reaches here give the ceiling no fp32 implementation passes;
each row shows the share of that peak it sustains.

Memory: scores N and 10N images (bench/score_memory.py, a fresh process each) and
compares the resident set while scoring (streaming: it must not grow with the number of images).
"""
import argparse
import json
import os
import statistics
import subprocess
import sys

import numpy as np
import torch

from bench.bench_train import profile as op_profile
from bench.common import (build_pair, check_close, hf_scores_batched, hf_scores_per_mask, load_average,
                          matmul_flops, matmul_peak, ours_scores, paired_speedup, random_batch, report,
                          round_robin_seconds)
from mimmia_core.data import ArraySource
from mimmia_core.masking import mask_noise
from mimmia_core.scores import ScoreSpec, score_images

MASK_RATIO = 0.75
FULL = {"mae_tiny_28": dict(images=64, masks=8, repeats=7), "vit_b16_224": dict(images=2, masks=8, repeats=3)}
QUICK = {"mae_tiny_28": dict(images=16, masks=4, repeats=2), "vit_b16_224": dict(images=1, masks=2, repeats=1)}


def bench_shape(shape: str, images: int, masks: int, repeats: int, compile: bool, peaks: dict,
                profile: bool = False):
    model, hf = build_pair(shape, MASK_RATIO)
    c = model.config
    imgs, uint8 = random_batch(c, images)
    ids = np.arange(images, dtype=np.int64)
    noise = mask_noise(0, ids, masks, c.num_patches)
    source = ArraySource(uint8.numpy(), ids)
    spec = ScoreSpec(mask_ratio=MASK_RATIO, num_masks=masks)
    variants = {  # name: (scores, allowed relative difference to transformers); the headline pair first
        "ours score_images": (lambda: score_images(model, source, spec).per_mask, 1e-4),
        "hf per mask": (lambda: hf_scores_per_mask(hf, imgs, noise), 1e-4),
        "ours one forward": (lambda: ours_scores(model, imgs, noise, MASK_RATIO), 1e-4),
        "hf masks batched": (lambda: hf_scores_batched(hf, imgs, noise), 1e-4),
    }
    if compile:
        variants["ours score_images compile=True"] = (
            lambda: score_images(model, source, spec, compile=True).per_mask, 1e-4)
    variants["ours score_images bf16 (opt-in; not identical)"] = (
        lambda: score_images(model, source, spec, precision="bf16").per_mask, 5e-2)
    with torch.inference_mode():
        reference, flops = matmul_flops(lambda: hf_scores_per_mask(hf, imgs, noise))
        flops /= images * masks
        agreement = {name: check_close(name, torch.as_tensor(fn()), reference, rtol)
                     for name, (fn, rtol) in variants.items()}
        load_before = load_average()
        times = round_robin_seconds({name: fn for name, (fn, _) in variants.items()}, repeats)
        load_after = load_average()
    seconds = {name: statistics.median(t) for name, t in times.items()}
    speedup = paired_speedup(times, "ours score_images", "hf per mask")
    rows = [{"variant": name, "rate": masks * images / seconds[name],
             "note": f"max rel. diff to hf {agreement[name]:.1e}"} for name in variants]
    best_hf = max(r["rate"] for r in rows if r["variant"].startswith("hf"))
    footnote = (f"Against transformers at its best here ({best_hf:,.1f} image-masks/s) the fp32 ceiling is "
                f"{peaks['fp32'] / flops / best_hf:.2f}x, and 2x would take {200 * best_hf * flops / peaks['fp32']:.0f}% "
                f"of the fp32 peak. bf16 torch.mm peaks at {peaks['bf16'] / 1e9:,.0f} GFLOP/s: only the opt-in bf16 "
                f"path can pass the fp32 ceiling, and its scores are not identical.")
    threads = torch.get_num_threads()
    load = f"load average {load_before:.1f} before, {load_after:.1f} after the timed runs, on {os.cpu_count()} cores"
    footnote += (f"\nIn-run ratio: ours score_images is {speedup:.2f}x transformers per mask, the median of "
                 f"{repeats} back-to-back pairs ({threads} threads; {load}).")
    report(f"CPU scoring, {shape}, N={images} images x K={masks} masks, {threads} threads", rows,
           baseline="hf per mask", flops=flops, peak=peaks["fp32"], footnote=footnote,
           extra={"shape": shape, "images": images, "masks": masks, "threads": threads,
                  "bf16_peak_gflops": round(peaks["bf16"] / 1e9), "paired_ratio": round(speedup, 3),
                  "load_before": round(load_before, 2), "load_after": round(load_after, 2)})
    if profile and threads == 1:  # torch.profiler does not see score_images' worker threads
        for name in ("ours score_images", "hf per mask"):
            op_profile(f"{shape}, {name}, 1 thread", variants[name][0], steps=3)


def bench_memory(small: int, masks: int):
    """RSS while scoring `small` and 10x as many images, each in a fresh process."""
    runs = {}
    for n in (small, 10 * small):
        out = subprocess.run([sys.executable, "-m", "bench.score_memory", str(n), str(masks)], check=True,
                             capture_output=True, text=True).stdout
        runs[n] = json.loads(out.strip().splitlines()[-1])
    big, base = runs[10 * small], runs[small]
    ratio = big["rss_scoring_mib"] / base["rss_scoring_mib"]
    growth = (big["rss_scoring_mib"] - big["rss_before_mib"]) / max(base["rss_scoring_mib"] - base["rss_before_mib"], 1)
    print(f"\n## Memory scoring, mae_tiny_28, K={masks}, 1 thread\n\n"
          f"| images | RSS before MiB | largest RSS while scoring MiB | process peak RSS MiB |\n"
          f"| ---: | ---: | ---: | ---: |")
    for n, r in runs.items():
        print(f"| {n:,} | {r['rss_before_mib']:.0f} | {r['rss_scoring_mib']:.0f} | {r['peak_rss_mib']:.0f} |")
    print(f"scoring RSS ratio {ratio:.3f} (target <= 1.5: {'ok' if ratio <= 1.5 else 'TOO HIGH'}); "
          f"growth over the RSS before scoring: {base['rss_scoring_mib'] - base['rss_before_mib']:.0f} vs "
          f"{big['rss_scoring_mib'] - big['rss_before_mib']:.0f} MiB (ratio {growth:.2f})")
    print(json.dumps({"bench": "cpu memory", "masks": masks, "runs": runs, "scoring_rss_ratio": round(ratio, 3),
                      "growth_ratio": round(growth, 3)}))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="tiny sizes and 1-2 repeats: checks that it runs")
    p.add_argument("--threads", default="1,2", help="comma-separated thread counts, each timed in turn")
    p.add_argument("--shapes", default="mae_tiny_28,vit_b16_224")
    p.add_argument("--no-memory", action="store_true")
    p.add_argument("--no-compile", action="store_true", help="skip the torch.compile variant (compiling takes a minute)")
    p.add_argument("--profile", action="store_true",
                   help="at 1 thread, also print where score_images' and transformers' time goes, op by op")
    p.add_argument("--memory-images", type=int, default=6000, help="compared with 10x as many")
    p.add_argument("--memory-masks", type=int, default=8)
    args = p.parse_args(argv)
    sizes = QUICK if args.quick else FULL
    for threads in map(int, args.threads.split(",")):
        torch.set_num_threads(threads)
        peaks = {name: matmul_peak(dtype, repeats=1 if args.quick else 5)
                 for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16))}
        for shape in args.shapes.split(","):
            bench_shape(shape, **sizes[shape], compile=not (args.quick or args.no_compile), peaks=peaks,
                        profile=args.profile)
    torch.set_num_threads(max(map(int, args.threads.split(","))))
    if not args.no_memory:
        bench_memory(*((500, 2) if args.quick else (args.memory_images, args.memory_masks)))


if __name__ == "__main__":
    main()
