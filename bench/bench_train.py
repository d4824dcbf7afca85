"""CPU training speed: one MAE pre-training step, ours vs transformers' ViTMAEForPreTraining.

    python -m bench.bench_train [--quick] [--threads 2] [--shape mae_tiny_28] [--batch 64]

Both sides start from identical weights, see the same images and mask noise,
and take the step `mimmia_core.train.train_mae` takes (forward with MAE's
masked-patch loss, backward, AdamW with MAE's betas and weight decay), fp32.
The first losses must agree before anything is timed.
"""
import argparse

import torch

from bench.common import SHAPES, build_pair, median_seconds, random_batch, report
from mimmia_core.model import mask_noise

MASK_RATIO = 0.75


def make_step(net, loss_fn, imgs, noises):
    optimizer = torch.optim.AdamW(net.parameters(), lr=1e-4, betas=(0.9, 0.95), weight_decay=0.05)
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
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    batch, repeats = (8, 2) if args.quick else (args.batch, args.repeats)

    model, hf = build_pair(args.shape, MASK_RATIO)
    model.train()
    hf.train()
    imgs, _ = random_batch(model.config, batch)
    noises = mask_noise(0, range(batch), 4, model.config.num_patches)  # the same 4 masks cycle on both sides
    ours = make_step(model, lambda x, n: model(x, MASK_RATIO, n)[0], imgs, noises)
    theirs = make_step(hf, lambda x, n: hf(pixel_values=x, noise=n).loss, imgs, noises)

    first = [(ours().item(), theirs().item()) for _ in range(2)]
    for a, b in first:
        if abs(a - b) > 1e-4 * abs(b):
            raise AssertionError(f"losses differ on identical weights and inputs: ours {a} vs transformers {b}")
    seconds = median_seconds({"ours": ours, "hf": theirs}, repeats)
    rows = [{"variant": name, "rate": 1 / s, "note": f"{batch / s:,.0f} images/s"} for name, s in seconds.items()]
    rows[0]["note"] += f"; first losses {first[0][0]:.6f} (ours) vs {first[0][1]:.6f} (hf)"
    report(f"CPU training, {args.shape}, batch {batch}, {torch.get_num_threads()} threads", rows, baseline="hf",
           unit="steps/s", extra={"shape": args.shape, "batch": batch})


if __name__ == "__main__":
    main()
