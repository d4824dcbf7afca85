"""The worker of test_train.py's DDP test. Run by two processes with torchrun's environment (RANK,
WORLD_SIZE, MASTER_ADDR, MASTER_PORT) on OUT_DIR holding config.json (the tests' tiny MAEConfig) and
waves.npz (their training images), it trains with DistributedDataParallel (gloo on CPU) straight for 6
epochs into OUT_DIR/straight, and for 3 epochs then resumed to 6 into OUT_DIR/resumed, and saves what
each rank ended with in OUT_DIR/rank<r>.pt:

    python -m torch.distributed.run --standalone --nproc_per_node 2 tests/ddp_train.py OUT_DIR
"""
import json
import sys
from pathlib import Path

import torch
import torch.distributed as dist

from mimmia_core.config import MAEConfig
from mimmia_core.data import open_source
from mimmia_core.model import build_model
from mimmia_core.train import TrainConfig, train_mae


def train(out_dir: Path, folder: str, epochs: int, resume: bool = False):
    model = build_model(MAEConfig.from_dict(json.loads((out_dir / "config.json").read_text())), seed=0)
    cfg = TrainConfig(epochs=epochs, batch_size=8, lr=2e-3, min_lr=2e-3, warmup_epochs=1, seed=3, keep_state=True)
    source = open_source(f"npz:{out_dir / 'waves.npz'}")
    return model, train_mae(model, source, cfg, out_dir=out_dir / folder, resume=resume, progress=False)


if __name__ == "__main__":
    torch.set_num_threads(1)
    out = Path(sys.argv[1])
    straight, losses = train(out, "straight", 6)
    train(out, "resumed", 3)
    resumed, resumed_losses = train(out, "resumed", 6, resume=True)
    rank, world = dist.get_rank(), dist.get_world_size()
    torch.save({"world": world, "losses": losses, "state": straight.state_dict(), "resumed_losses": resumed_losses,
                "resumed_state": resumed.state_dict()}, out / f"rank{rank}.pt")
    dist.destroy_process_group()
