"""CPU scoring speed: mimmia's scoring engine vs transformers' ViTMAE on identical weights and inputs.

    python -m bench.bench_cpu [--quick] [--threads 2] [--shapes mae_tiny_28,vit_b16_224] [--no-memory]

For each shape both sides compute the masked-patch MSE of N images under K masks
(mask ratio 0.75); the scores are checked to agree before anything is timed.
Peers: transformers the way a user runs it, one forward per mask (K forwards of
N images: it has no shared-patch-embedding path), and transformers with the K
masks batched (images repeated K times). Ours: `score_images` end to end (uint8
images in, mask noise and normalisation included; on CPU it cuts forwards to
cache-sized chunks), and `batch_distances` as one forward over all K*N rows; and,
as an opt-in that is not bit-identical, `score_images` with bf16 autocast on CPU.

Memory: scores 10x more images in a child process each and compares peak RSS
(streaming means the peak must not grow with the number of images).
"""
import argparse
import json
import resource
import subprocess
import sys

import numpy as np
import torch

from bench.common import (SHAPES, build_pair, check_close, hf_scores_batched, hf_scores_per_mask, median_seconds,
                          ours_scores, random_batch, report)
from mimmia_core.data import ArraySource, ImageSource
from mimmia_core.model import build_model, mask_noise
from mimmia_core.scoring import ScoreSpec, score_images

MASK_RATIO = 0.75
FULL = {"mae_tiny_28": dict(images=64, masks=8, repeats=7), "vit_b16_224": dict(images=2, masks=8, repeats=3)}
QUICK = {"mae_tiny_28": dict(images=16, masks=4, repeats=2), "vit_b16_224": dict(images=1, masks=2, repeats=1)}


def bench_shape(shape: str, images: int, masks: int, repeats: int):
    model, hf = build_pair(shape, MASK_RATIO)
    c = model.config
    imgs, uint8 = random_batch(c, images)
    ids = np.arange(images, dtype=np.int64)
    noise = mask_noise(0, ids, masks, c.num_patches)
    source = ArraySource(uint8.numpy(), ids)
    spec = ScoreSpec(mask_ratio=MASK_RATIO, num_masks=masks)
    variants = {  # name: (scores, allowed relative difference to transformers)
        "ours score_images": (lambda: score_images(model, source, spec).per_mask, 1e-4),
        "ours one forward": (lambda: ours_scores(model, imgs, noise, MASK_RATIO), 1e-4),
        "hf per mask": (lambda: hf_scores_per_mask(hf, imgs, noise), 1e-4),
        "hf masks batched": (lambda: hf_scores_batched(hf, imgs, noise), 1e-4),
        "ours score_images bf16 (opt-in; not identical)":
            (lambda: score_images(model, source, spec, precision="bf16").per_mask, 5e-2),
    }
    with torch.inference_mode():
        reference = hf_scores_per_mask(hf, imgs, noise)
        agreement = {name: check_close(name, torch.as_tensor(fn()), reference, rtol)
                     for name, (fn, rtol) in variants.items()}
        seconds = median_seconds({name: fn for name, (fn, _) in variants.items()}, repeats)
    rows = [{"variant": name, "rate": masks * images / seconds[name],
             "note": f"max rel. diff to hf {agreement[name]:.1e}"} for name in variants]
    report(f"CPU scoring, {shape}, N={images} images x K={masks} masks, {torch.get_num_threads()} threads", rows,
           baseline="hf per mask", extra={"shape": shape, "images": images, "masks": masks})


class SyntheticSource(ImageSource):
    """n images made from their ids on demand: the source itself holds nothing."""

    def __init__(self, n: int, shape: tuple):
        self.ids, self.shape, self.name = np.arange(n, dtype=np.int64), shape, f"synthetic-{n}"

    def images(self, positions) -> np.ndarray:
        ids = self.ids[np.asarray(positions)]
        pixels = np.arange(int(np.prod(self.shape)), dtype=np.int64)
        return ((ids[:, None] * 2654435761 + pixels * 40503) % 251).astype(np.uint8).reshape(-1, *self.shape)


def memory_child(n: int, masks: int):
    """Score n synthetic images with the demo shape; print peak RSS before and after, in MiB."""
    torch.set_num_threads(1)
    model = build_model(SHAPES["mae_tiny_28"]).eval()
    c = model.config
    source = SyntheticSource(n, (c.img_size, c.img_size, c.in_chans))
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    scores = score_images(model, source, ScoreSpec(num_masks=masks))
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"images": n, "peak_rss_mib": after, "rss_before_mib": before,
                      "mean_score": float(scores.per_mask.mean())}))


def bench_memory(small: int, masks: int):
    peaks = {}
    for n in (small, 10 * small):
        out = subprocess.run([sys.executable, "-m", "bench.bench_cpu", "--memory-child", str(n), "--masks", str(masks)],
                             check=True, capture_output=True, text=True).stdout
        peaks[n] = json.loads(out.strip().splitlines()[-1])
    ratio = peaks[10 * small]["peak_rss_mib"] / peaks[small]["peak_rss_mib"]
    print(f"\n## Peak memory, mae_tiny_28, K={masks}\n\n| images | peak RSS MiB | RSS before scoring MiB |\n"
          f"| ---: | ---: | ---: |")
    for n, p in peaks.items():
        print(f"| {n:,} | {p['peak_rss_mib']:.0f} | {p['rss_before_mib']:.0f} |")
    print(f"ratio {ratio:.3f} (target <= 1.5): {'ok' if ratio <= 1.5 else 'TOO HIGH'}")
    print(json.dumps({"bench": "cpu peak memory", "masks": masks, "peaks": peaks, "ratio": round(ratio, 3)}))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="tiny sizes and 1-2 repeats: checks that it runs")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--shapes", default="mae_tiny_28,vit_b16_224")
    p.add_argument("--no-memory", action="store_true")
    p.add_argument("--memory-child", type=int, help=argparse.SUPPRESS)
    p.add_argument("--masks", type=int, default=8, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.memory_child:
        return memory_child(args.memory_child, args.masks)
    torch.set_num_threads(args.threads)
    sizes = QUICK if args.quick else FULL
    for shape in args.shapes.split(","):
        bench_shape(shape, **sizes[shape])
    if not args.no_memory:
        bench_memory(*((500, 2) if args.quick else (6000, 8)))


if __name__ == "__main__":
    main()
