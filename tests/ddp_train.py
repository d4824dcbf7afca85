"""Tiny training fixtures for test_train.py. Run as a script by two processes
with torchrun's environment (RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT), it
trains with DistributedDataParallel (gloo on CPU) straight for 6 epochs into
OUT_DIR/straight, and for 3 epochs then resumed to 6 into OUT_DIR/resumed, and
saves what each rank ended with in OUT_DIR/rank<r>.pt:

    python -m torch.distributed.run --standalone --nproc_per_node 2 tests/ddp_train.py OUT_DIR
"""
import sys

import numpy as np
import torch

from mimmia_core.data import ArraySource
from mimmia_core.config import MAEConfig
from mimmia_core.model import build_model
from mimmia_core.train import TrainConfig, train_mae

TINY = MAEConfig(img_size=16, patch_size=4, in_chans=1, embed_dim=32, depth=1, num_heads=4, decoder_embed_dim=32,
                 decoder_depth=1, decoder_num_heads=4, mlp_ratio=2.0, mean=(0.5,), std=(0.5,))


def smooth_images(n: int, seed: int = 0) -> ArraySource:
    """n 16x16 grey images of random low-frequency waves: masked patches are predictable."""
    rng = np.random.default_rng(seed)
    u = np.arange(16)[None, :, None]
    v = np.arange(16)[None, None, :]
    f = rng.uniform(0.1, 0.5, (2, n, 1, 1))
    phase = rng.uniform(0, 2 * np.pi, (2, n, 1, 1))
    waves = 128 + 110 * np.sin(f[0] * u + phase[0]) * np.cos(f[1] * v + phase[1])
    return ArraySource(waves.round().astype(np.uint8)[..., None], ids=np.arange(500, 500 + n), name="waves")


def train(out_dir, epochs, resume=False):
    model = build_model(TINY, seed=0)
    cfg = TrainConfig(epochs=epochs, batch_size=8, lr=2e-3, min_lr=2e-3, warmup_epochs=1, seed=3, keep_state=True)
    return model, train_mae(model, smooth_images(64), cfg, out_dir=out_dir, resume=resume, progress=False)


if __name__ == "__main__":
    import torch.distributed as dist

    torch.set_num_threads(1)
    out_dir = sys.argv[1]
    straight, losses = train(f"{out_dir}/straight", 6)
    train(f"{out_dir}/resumed", 3)
    resumed, resumed_losses = train(f"{out_dir}/resumed", 6, resume=True)
    rank, world = dist.get_rank(), dist.get_world_size()
    torch.save({"world": world, "losses": losses, "state": straight.state_dict(), "resumed_losses": resumed_losses,
                "resumed_state": resumed.state_dict()}, f"{out_dir}/rank{rank}.pt")
    dist.destroy_process_group()
