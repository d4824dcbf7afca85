"""Distributed scoring throughput: 1 to N torchrun ranks scoring one source, and the scaling efficiency.

    python -m bench.bench_distributed [--quick] [--ranks 1,2] [--images 512] [--masks 8] [--threads 1]
    python -m bench.bench_distributed --device cuda --shape vit_b16_224 --images 8192   # 1..N GPUs

Each row launches `torchrun --standalone --nproc-per-node R` on this script's worker, which scores the
first IMAGES images with `Scorer.scores` (no cache, masked-patch MSE, mask ratio 0.75), the images
sharded across the R ranks and the scores gathered on every rank (mimmia_core/distributed.py). The time
is rank 0's wall time of the whole call, between two barriers, after a warm-up call (process start,
imports, the gloo rendezvous and model loading are not counted); the median over the repeats. Peer:
1 rank in the same run; the scaling efficiency of R ranks is rate(R) / (R * rate(1)). On CPU every rank
gets --threads threads, and a last row gives 1 rank with R * threads threads, the same cores used by
threads instead of ranks. On CUDA rank r runs on cuda:r (bf16); the default --ranks there is 1..every GPU.

Shapes: `demo`, the demo bundle's target (assets/demo/models/target, 28 px) on the demo images;
`vit_b16_224`, a ViT-B/16 MAE with random weights on random smooth 224 px images. Before the table,
every R-rank run's scores are checked against the 1-rank run's: bit-identical on CPU fp32, within bf16
tolerance on CUDA (the threads row within 1e-5: more threads may round a large product differently).
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

from bench.common import random_batch, report
from mimmia_core.assets import DEMO_DIR
from mimmia_core.checkpoint import LoadedModel, load_model
from mimmia_core.config import get_config
from mimmia_core.data import ArraySource, open_source
from mimmia_core.distributed import init_from_env, rank_device, shutdown
from mimmia_core.model import build_model
from mimmia_core.scorer import Scorer
from mimmia_core.scores import ScoreSpec

REPO = Path(__file__).resolve().parent.parent


def workload(shape: str, images: int, device: torch.device) -> tuple:
    """(LoadedModel on device, the source of `images` images): the same on every rank."""
    if shape == "demo":
        source = open_source("demo")
        if images > len(source):
            raise ValueError(f"--images {images}: the demo holds {len(source)} images")
        return load_model(DEMO_DIR / "models" / "target", device), source.subset(source.ids[:images], name="demo")
    model = build_model(get_config("mae_vit_base_patch16"), seed=0).to(device).eval()
    _, uint8 = random_batch(model.config, min(images, 256))
    pixels = np.resize(uint8.numpy(), (images, *uint8.shape[1:]))  # 256 images over and over, each with its id
    return LoadedModel(model, "random ViT-B/16", "mimmia"), ArraySource(pixels, name="smooth224")


def worker(args) -> None:
    """One rank: a warm-up call, then `repeats` timed calls; rank 0 saves the times and the scores."""
    torch.set_num_threads(args.threads)
    rank, world = init_from_env()
    device = rank_device(torch.device(args.device))
    loaded, source = workload(args.shape, args.images, device)
    spec = ScoreSpec(num_masks=args.masks)
    warm = source.ids[:min(len(source), args.batch_size * world)]  # a full batch on every rank
    Scorer(device, batch_size=args.batch_size).scores(loaded, source.subset(warm), spec)
    times = []
    for _ in range(args.repeats):
        scorer = Scorer(device, batch_size=args.batch_size)  # a fresh memo: every call scores
        _barrier()
        t0 = time.perf_counter()
        scores = scorer.scores(loaded, source, spec)
        _barrier()
        times.append(time.perf_counter() - t0)
    if rank == 0:
        np.save(Path(args.worker) / "scores.npy", scores.per_mask)
        (Path(args.worker) / "times.json").write_text(json.dumps(times))
    shutdown()


def _barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def launch(args, ranks: int, threads: int, folder: Path) -> tuple[float, np.ndarray]:
    """(median seconds of one scoring call, the scores) of a torchrun job of `ranks` ranks."""
    folder.mkdir(parents=True)
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(ranks),
           "-m", "bench.bench_distributed", "--worker", str(folder), "--threads", str(threads),
           *(f"--{k.replace('_', '-')}={getattr(args, k)}" for k in ("shape", "images", "masks", "device",
                                                                      "batch_size", "repeats"))]
    run = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
    if run.returncode:
        raise RuntimeError(f"{ranks} rank(s) failed:\n{run.stderr[-3000:]}")
    return statistics.median(json.loads((folder / "times.json").read_text())), np.load(folder / "scores.npy")


def check_agreement(name: str, scores: np.ndarray, reference: np.ndarray, rtol: float) -> str:
    """rtol 0: bit-identical (ranks on CPU fp32, the same threads each); else the largest relative difference."""
    if rtol == 0:
        if not np.array_equal(scores, reference):
            raise AssertionError(f"{name}: scores differ from 1 rank's (expected bit-identical on CPU fp32)")
        return "bit-identical to 1 rank"
    rel = float(np.max(np.abs(scores - reference) / np.maximum(np.abs(reference), 1e-12)))
    if not rel <= rtol:
        raise AssertionError(f"{name}: scores differ from 1 rank's by {rel:.3g} relative (allowed {rtol:g})")
    return f"max rel. diff to 1 rank {rel:.1e}"


def bench(args) -> None:
    cuda = torch.device(args.device).type == "cuda"
    ranks = [int(r) for r in args.ranks.split(",")] if args.ranks else \
        list(range(1, torch.cuda.device_count() + 1)) if cuda else [1, 2]
    if ranks[0] != 1:
        raise ValueError("--ranks must start with 1 (the peer)")
    runs = {}
    with tempfile.TemporaryDirectory() as tmp:
        for r in ranks:
            runs[f"{r} rank{'s' * (r > 1)}"] = (r, launch(args, r, args.threads, Path(tmp) / f"r{r}"))
        if not cuda and ranks[-1] > 1:
            runs[f"1 rank, {ranks[-1] * args.threads} threads"] = (  # the cores of the last row, as threads
                ranks[-1], launch(args, 1, ranks[-1] * args.threads, Path(tmp) / "threads"))
    work = args.images * args.masks
    base_rate = work / runs["1 rank"][1][0]
    rows, reference = [], runs["1 rank"][1][1]
    for name, (scale, (seconds, scores)) in runs.items():  # scale: how many times 1 rank's cores or GPUs
        # bf16 on CUDA; more threads may sum a large product in another order (fp32 rounding)
        rtol = 2e-2 if cuda else 1e-5 if "threads" in name else 0.0
        agree = check_agreement(name, scores, reference, rtol)
        rate = work / seconds
        efficiency = rate / (scale * base_rate)
        rows.append({"variant": name, "rate": rate, "seconds": round(seconds, 4), "scale": scale,
                     "efficiency": round(efficiency, 3), "note": f"scaling efficiency {efficiency:.2f}; {agree}"})
    where = f"{torch.cuda.get_device_name(0)}" if cuda else f"CPU, {args.threads} thread(s) per rank"
    report(f"Distributed scoring, {args.shape}, N={args.images} images x K={args.masks} masks, {where}", rows,
           baseline="1 rank", extra={"shape": args.shape, "images": args.images, "masks": args.masks,
                                     "device": args.device, "threads": args.threads},
           footnote="Scaling efficiency: rate / (R x rate of 1 rank), R the ranks (or, for the threads row, the "
                    "rank count whose cores it uses); 1.00 is perfect scaling.")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="64 images, 2 masks, 1 repeat: checks that it runs")
    p.add_argument("--ranks", default=None, help="comma-separated rank counts, from 1 (default: 1,2 on CPU, "
                                                 "1..every GPU on CUDA)")
    p.add_argument("--shape", choices=("demo", "vit_b16_224"), default="demo")
    p.add_argument("--images", type=int, default=512)
    p.add_argument("--masks", type=int, default=8)
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--threads", type=int, default=1, help="threads per rank (CPU)")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--worker", help=argparse.SUPPRESS)  # the folder a rank of a launched job reports into
    args = p.parse_args(argv)
    if args.quick:
        args.images, args.masks, args.repeats = 64, 2, 1
    if args.worker:
        worker(args)
    else:
        bench(args)


if __name__ == "__main__":
    main()
