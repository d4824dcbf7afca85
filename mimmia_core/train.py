"""MAE pre-training: AdamW, linear warmup then half-cycle cosine, per iteration.

One plain loop for target, shadow and reference models alike. bf16 autocast on
CUDA, fp32 on CPU; DistributedDataParallel when launched by torchrun.
"""
import math
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from timm.optim import param_groups_weight_decay
from tqdm import tqdm

from .checkpoint import save_checkpoint
from .data import ImageSource
from .model import MaskedAutoencoderViT, check_mask_ratio

STATE_FILE = "train_state.pt"
PROGRESS_EVERY = 10  # steps between progress-bar loss readings
# what a resumed run must share with the run it continues (epochs, save_epochs and keep_state may change)
RECIPE_FIELDS = ("batch_size", "lr", "blr", "min_lr", "warmup_epochs", "weight_decay", "betas", "mask_ratio",
                 "clip_grad", "seed")


@dataclass
class TrainConfig:
    epochs: int = 100
    batch_size: int = 64            # per process
    lr: float | None = None         # absolute rate; None means blr * total_batch / 256
    blr: float = 1.5e-4
    min_lr: float = 0.0
    warmup_epochs: float = 5.0
    weight_decay: float = 0.05
    betas: tuple = (0.9, 0.95)
    mask_ratio: float = 0.75
    clip_grad: float | None = None
    seed: int = 0
    save_epochs: tuple = ()         # also keep the model as it was after these epochs
    keep_state: bool = False        # keep train_state.pt after the last epoch (to extend training)
    compile: bool = False           # torch.compile the forward and backward (same losses within float tolerance)

    def __post_init__(self):
        check_mask_ratio(self.mask_ratio)
        if self.epochs < 1 or self.batch_size < 1:
            raise ValueError(f"epochs and batch_size must be positive, got {self.epochs} and {self.batch_size}")
        if self.seed < 0:
            raise ValueError(f"seed must be non-negative, got {self.seed}")


def lr_at(cfg: TrainConfig, base_lr: float, epoch: float) -> float:
    """Linear warmup, then half-cycle cosine down to min_lr; `epoch` is fractional."""
    if epoch < cfg.warmup_epochs:
        return base_lr * epoch / cfg.warmup_epochs
    progress = (epoch - cfg.warmup_epochs) / max(cfg.epochs - cfg.warmup_epochs, 1e-8)
    return cfg.min_lr + (base_lr - cfg.min_lr) * 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))


def _epoch_generator(seed: int, epoch: int, stream: int) -> torch.Generator:
    """The random stream of one epoch: stream 0 shuffles the data (the same on every
    rank), stream 1 + rank draws that rank's masks. Seeding per epoch lets a resumed
    run draw exactly what an uninterrupted one would, on every rank."""
    return torch.Generator().manual_seed(int(np.random.SeedSequence((seed, epoch, stream)).generate_state(1)[0]))


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _distributed() -> tuple[int, int]:
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    if dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def train_mae(model: MaskedAutoencoderViT, source: ImageSource, cfg: TrainConfig, out_dir=None,
              resume: bool = False, provenance: dict | None = None, progress: bool = True,
              device: torch.device | str | None = None) -> list[float]:
    """Pre-train `model` on every image of `source`; returns the mean loss of each epoch run.

    With `out_dir`, the final model is saved there (mimmia format), epochs in
    `save_epochs` under out_dir/epochs/, and a resumable state after each epoch.
    """
    rank, world = _distributed()
    if torch.cuda.is_available() and world > 1:
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        torch.cuda.set_device(device)
    device = torch.device(device) if device is not None else default_device()
    model.to(device).train()
    net = torch.nn.parallel.DistributedDataParallel(model) if world > 1 else model
    if cfg.compile:
        net = torch.compile(net)

    total_batch = cfg.batch_size * world
    base_lr = cfg.lr if cfg.lr is not None else cfg.blr * total_batch / 256
    optimizer = torch.optim.AdamW(param_groups_weight_decay(model, cfg.weight_decay), lr=base_lr, betas=cfg.betas,
                                  fused=True)
    recipe = {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(cfg).items() if k in RECIPE_FIELDS}
    recipe["world_size"] = world
    start_epoch, losses = 0, []
    out_dir = Path(out_dir) if out_dir else None
    if out_dir and rank == 0:
        out_dir.mkdir(parents=True, exist_ok=True)
    if resume and out_dir and (out_dir / STATE_FILE).exists():
        state = torch.load(out_dir / STATE_FILE, map_location="cpu", weights_only=True)
        saved = state.get("recipe", recipe)  # older state files did not record it
        changed = {k: (saved.get(k), v) for k, v in recipe.items() if saved.get(k) != v}
        if changed:
            raise ValueError(f"{out_dir / STATE_FILE} was trained with another recipe (was, now): {changed}; "
                             f"resume with the same settings, only epochs, save_epochs and keep_state may change")
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        start_epoch, losses = state["epoch"], state["losses"]

    n = len(source)
    if n < total_batch:
        raise ValueError(f"{source.name} has {n} images, fewer than one batch of {total_batch}")
    steps_per_epoch = n // total_batch  # drop the last partial batch, as MAE does
    L = model.config.num_patches
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" \
        else torch.autocast("cpu", enabled=False)

    bar = tqdm(total=cfg.epochs * steps_per_epoch, initial=start_epoch * steps_per_epoch,
               disable=not progress or rank != 0, unit="step", dynamic_ncols=True)
    for epoch in range(start_epoch, cfg.epochs):
        perm = torch.randperm(n, generator=_epoch_generator(cfg.seed, epoch, 0))
        noise_gen = _epoch_generator(cfg.seed, epoch, 1 + rank)
        epoch_loss, t0 = torch.zeros((), device=device), time.perf_counter()
        for step in range(steps_per_epoch):
            for g in optimizer.param_groups:
                g["lr"] = lr_at(cfg, base_lr, epoch + step / steps_per_epoch)
            pos = perm[step * total_batch:(step + 1) * total_batch][rank::world].numpy()
            imgs = model.normalize(torch.from_numpy(source.images(pos)))
            noise = torch.rand(len(pos), L, generator=noise_gen)
            with autocast:
                loss, _, _ = net(imgs, cfg.mask_ratio, noise)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.clip_grad:
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.clip_grad)
            optimizer.step()
            epoch_loss += loss.detach()
            bar.update(1)
            if step % PROGRESS_EVERY == 0:  # reading the loss waits for the device: not every step
                bar.set_postfix(epoch=epoch + 1, loss=f"{loss.item():.4f}",
                                img_s=f"{(step + 1) * total_batch / (time.perf_counter() - t0):.0f}", refresh=False)
        if world > 1:
            dist.all_reduce(epoch_loss)
            epoch_loss /= world
        losses.append(epoch_loss.item() / steps_per_epoch)
        if not math.isfinite(losses[-1]):
            raise FloatingPointError(f"the loss became {losses[-1]} in epoch {epoch + 1}; lower the lr")

        if out_dir and rank == 0:
            if epoch + 1 in cfg.save_epochs:
                save_checkpoint(model, out_dir / "epochs" / f"epoch-{epoch + 1:04d}",
                                _provenance(cfg, source, epoch + 1, world, provenance))
            state = {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "epoch": epoch + 1,
                     "losses": losses, "recipe": recipe}
            torch.save(state, out_dir / (STATE_FILE + ".tmp"))
            os.replace(out_dir / (STATE_FILE + ".tmp"), out_dir / STATE_FILE)
    bar.close()
    model.eval()
    if out_dir and rank == 0:
        save_checkpoint(model, out_dir, _provenance(cfg, source, cfg.epochs, world, provenance))
        if not cfg.keep_state:
            (out_dir / STATE_FILE).unlink(missing_ok=True)
    return losses


def _provenance(cfg: TrainConfig, source: ImageSource, epochs: int, world: int, extra: dict | None) -> dict:
    return {
        "trained_by": "mimmia_core.train",
        "data": {"name": source.name, "fingerprint": source.fingerprint(), "num_images": len(source)},
        "epochs": epochs,
        "mask_ratio": cfg.mask_ratio,
        "seed": cfg.seed,
        "world_size": world,
        "train_config": {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(cfg).items()},
        "torch": torch.__version__,
        **(extra or {}),
    }


__all__ = ["TrainConfig", "train_mae", "lr_at", "default_device"]
