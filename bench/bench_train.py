"""CPU training speed: one MAE pre-training step, ours vs transformers' ViTMAEForPreTraining.

    python -m bench.bench_train [--quick] [--threads 2] [--shape mae_tiny_28] [--batch 64] [--profile]

Both sides start from identical weights, see the same images and mask noise,
and take the step `mimmia_core.train.train_mae` takes (forward with MAE's
masked-patch loss, backward, fused AdamW with MAE's betas and weight decay; the
fused AdamW is also what transformers' Trainer picks by default), fp32;
ours also with `TrainConfig(compile=True)` (torch.compile of the forward and
backward). The first losses must agree before anything is timed. As in
bench_cpu, the matrix-product FLOPs of a step and the best torch.mm rate here
give the ceiling no fp32 implementation passes. --profile then prints where
each side's step time goes (torch.profiler, self CPU time per op).
"""
import argparse

import torch

import copy

from bench.common import SHAPES, build_pair, matmul_flops, matmul_peak, median_seconds, random_batch, report
from mimmia_core.masking import mask_noise

MASK_RATIO = 0.75


def make_step(net, loss_fn, imgs, noises):
    optimizer = torch.optim.AdamW(net.parameters(), lr=1e-4, betas=(0.9, 0.95), weight_decay=0.05, fused=True)
    state = {"i": 0}

    def step():
        noise = noises[state["i"] % len(noises)]
        state["i"] += 1
        loss = loss_fn(imgs, noise)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return loss.detach()
    return step


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="a small batch and 2 repeats: checks that it runs")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--shape", default="mae_tiny_28", choices=sorted(SHAPES))
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--no-compile", action="store_true", help="skip the torch.compile variant (compiling takes a minute)")
    p.add_argument("--profile", action="store_true", help="also print each side's time per op over 10 steps")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    batch, repeats = (8, 2) if args.quick else (args.batch, args.repeats)

    model, hf = build_pair(args.shape, MASK_RATIO)
    model.train()
    hf.train()
    imgs, _ = random_batch(model.config, batch)
    noises = mask_noise(0, range(batch), 4, model.config.num_patches)  # the same 4 masks cycle on both sides
    compiled = copy.deepcopy(model)
    steps = {
        "ours": make_step(model, lambda x, n: model(x, MASK_RATIO, n)[0], imgs, noises),
        "hf": make_step(hf, lambda x, n: hf(pixel_values=x, noise=n).loss, imgs, noises),
    }
    if not (args.quick or args.no_compile):
        net = torch.compile(compiled)  # what train_mae runs with TrainConfig(compile=True)
        steps["ours compile=True"] = make_step(compiled, lambda x, n: net(x, MASK_RATIO, n)[0], imgs, noises)

    first = {name: [step().item() for _ in range(2)] for name, step in steps.items()}
    for name, losses in first.items():
        for a, b in zip(losses, first["hf"]):
            if abs(a - b) > 1e-4 * abs(b):
                raise AssertionError(f"{name}: losses differ on identical weights and inputs: {a} vs transformers {b}")
    flops = matmul_flops(steps["hf"])[1]
    peak = matmul_peak(torch.float32, repeats=1 if args.quick else 5)
    seconds = median_seconds(steps, repeats)
    rows = [{"variant": name, "rate": 1 / s, "note": f"{batch / s:,.0f} images/s; first loss {first[name][0]:.6f}"}
            for name, s in seconds.items()]
    report(f"CPU training, {args.shape}, batch {batch}, {torch.get_num_threads()} threads", rows, baseline="hf",
           unit="steps/s", extra={"shape": args.shape, "batch": batch}, flops=flops, peak=peak)
    if args.profile:
        for name, step in steps.items():
            profile(name, step)


def profile(name: str, step, steps: int = 10, rows: int = 12):
    """Self CPU time per op over `steps` steps, as a share of the total."""
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            step()
    ops = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    total = sum(e.self_cpu_time_total for e in ops)
    print(f"\n### {name}: {total / steps / 1e3:.1f} ms of op time per step\n\n| op | ms per step | share |\n| --- | ---: | ---: |")
    for e in ops[:rows]:
        print(f"| {e.key[:60]} | {e.self_cpu_time_total / steps / 1e3:.1f} | {100 * e.self_cpu_time_total / total:.0f}% |")


if __name__ == "__main__":
    main()
