"""MAE pre-training: AdamW, linear warmup then half-cycle cosine, per iteration.

One plain loop for target, shadow and reference models alike. bf16 autocast on
CUDA, fp32 on CPU; DistributedDataParallel when launched by torchrun. Defenses are
options: DP-SGD (mimmia_core.dp), MAE's crop-and-flip augmentation
(mimmia_core.augment), weight decay, and early stopping by epoch snapshots; each
checkpoint names those it had in provenance["defenses"].
"""
import io
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

from .atomic import atomic_write_bytes, recover_dir
from .augment import CROP_RATIO, CROP_SCALE, augment, check_augment
from .checkpoint import CheckpointError, save_checkpoint, torch_load_checked
from .data import ImageSource
from .distributed import init_from_env
from .dp import DPConfig, DPRun, as_dp_config, dp_backward, make_private, plan_dp, poisson_batches, reseed_noise
from .masking import check_mask_ratio, check_seed, check_visible
from .model import MaskedAutoencoderViT

STATE_FILE = "train_state.pt"
PROGRESS_EVERY = 10  # steps between progress-bar loss readings
# what a resumed run must share with the run it continues (epochs, save_epochs and keep_state may change)
RECIPE_FIELDS = ("batch_size", "lr", "blr", "min_lr", "warmup_epochs", "weight_decay", "betas", "mask_ratio",
                 "clip_grad", "seed", "augment", "dp")
AUGMENT_STREAM, DP_NOISE_STREAM = 1 << 20, 1 << 21  # epoch streams beside 0 (shuffle) and 1 + rank (masks)


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
    augment: str = "none"           # "crop-flip": MAE's random resized crop (area 0.2-1) and horizontal flip
    dp: DPConfig | None = None      # DP-SGD (mimmia_core.dp); a dict is read as DPConfig fields

    def __post_init__(self):
        check_mask_ratio(self.mask_ratio)
        check_augment(self.augment)
        self.dp = as_dp_config(self.dp)
        if self.dp is not None and (self.clip_grad or self.compile):
            raise ValueError("DP-SGD clips each sample's gradient (--dp-clip) and runs uncompiled; "
                             "drop --clip-grad and --compile")
        if self.epochs < 1 or self.batch_size < 1:
            raise ValueError(f"epochs and batch_size must be positive, got {self.epochs} and {self.batch_size}")
        check_seed(self.seed)


def lr_at(cfg: TrainConfig, base_lr: float, epoch: float) -> float:
    """Linear warmup, then half-cycle cosine down to min_lr; `epoch` is fractional."""
    if epoch < cfg.warmup_epochs:
        return base_lr * epoch / cfg.warmup_epochs
    progress = (epoch - cfg.warmup_epochs) / max(cfg.epochs - cfg.warmup_epochs, 1e-8)
    return cfg.min_lr + (base_lr - cfg.min_lr) * 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))


def _epoch_seed(seed: int, epoch: int, stream: int) -> int:
    return int(np.random.SeedSequence((seed, epoch, stream)).generate_state(1)[0])


def _epoch_generator(seed: int, epoch: int, stream: int) -> torch.Generator:
    """The random stream of one epoch: stream 0 shuffles the data (the same on every
    rank), stream 1 + rank draws that rank's masks, AUGMENT_STREAM + rank its crops and
    flips. Seeding per epoch lets a resumed run draw exactly what an uninterrupted one
    would, on every rank."""
    return torch.Generator().manual_seed(_epoch_seed(seed, epoch, stream))


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def train_mae(model: MaskedAutoencoderViT, source: ImageSource, cfg: TrainConfig, out_dir=None,
              resume: bool = False, provenance: dict | None = None, progress=True,
              device: torch.device | str | None = None, distributed: bool = True) -> list[float]:
    """Pre-train `model` on every image of `source`; returns the mean loss of each epoch run.
    Only parameters that require grad are trained. `progress`: True for a tqdm bar, or a
    callable(epochs_done, epochs), called after each epoch (a dashboard's bar). `distributed`: under
    torchrun (WORLD_SIZE > 1) the ranks train this one model together (DDP); False: this process trains it
    alone, on `device` (a reference farm's rank, training its own models).

    With `out_dir`, the final model is saved there (mimmia format), epochs in
    `save_epochs` under out_dir/epochs/, and a resumable state after each epoch.
    """
    check_visible(model.config.num_patches, cfg.mask_ratio)
    rank, world, device, net = _place(model, cfg, device, distributed)
    total_batch = cfg.batch_size * world
    base_lr = cfg.lr if cfg.lr is not None else cfg.blr * total_batch / 256
    optimizer, dp_run = _optimizer(model, cfg, base_lr, len(source), world)
    recipe = {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(cfg).items() if k in RECIPE_FIELDS}
    recipe.update(world_size=world, **({"dp_noise_multiplier": dp_run.noise_multiplier} if dp_run else {}))
    start_epoch, losses = 0, []
    if len(source) < total_batch:  # before anything is written
        raise ValueError(f"{source.name} has {len(source)} images, fewer than one batch of {total_batch}; "
                         f"lower --batch-size or give more images")
    out_dir = Path(out_dir) if out_dir else None
    if out_dir and rank == 0:
        recover_dir(out_dir)  # a kill during the last save may have left the state aside
        out_dir.mkdir(parents=True, exist_ok=True)
    if resume and out_dir and (out_dir / STATE_FILE).exists():
        start_epoch, losses = _resume(out_dir / STATE_FILE, model, optimizer, recipe)
    steps_per_epoch = len(source) // total_batch  # drop the last partial batch, as MAE does
    bar = tqdm(total=cfg.epochs * steps_per_epoch, initial=start_epoch * steps_per_epoch,
               disable=progress is not True or rank != 0, unit="step", dynamic_ncols=True)
    for epoch in range(start_epoch, cfg.epochs):
        losses.append(_train_epoch(net, model, optimizer, source, cfg, base_lr, epoch, (rank, world), bar, dp_run))
        if not math.isfinite(losses[-1]):
            raise FloatingPointError(f"the loss became {losses[-1]} in epoch {epoch + 1}; lower the lr")
        if callable(progress):
            progress(epoch + 1, cfg.epochs)
        if out_dir and rank == 0:
            if epoch + 1 in cfg.save_epochs:
                save_checkpoint(model, out_dir / "epochs" / f"epoch-{epoch + 1:04d}",
                                _provenance(cfg, source, epoch + 1, world, provenance, dp_run))
            state = {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "epoch": epoch + 1,
                     "losses": losses, "recipe": recipe}
            buf = io.BytesIO()
            torch.save(state, buf)
            atomic_write_bytes(out_dir / STATE_FILE, buf.getvalue())
    bar.close()
    model.eval()
    if out_dir and rank == 0:
        save_checkpoint(model, out_dir, _provenance(cfg, source, cfg.epochs, world, provenance, dp_run))
        if not cfg.keep_state:
            (out_dir / STATE_FILE).unlink(missing_ok=True)
    return losses


def _place(model: MaskedAutoencoderViT, cfg: TrainConfig, device, distributed: bool):
    """(rank, world size, device, the network to call): the model moved there, in DDP and compiled as asked."""
    rank, world = init_from_env() if distributed else (0, 1)
    if torch.cuda.is_available() and world > 1:
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        torch.cuda.set_device(device)
    device = torch.device(device) if device is not None else default_device()
    model.to(device).train()
    net = torch.nn.parallel.DistributedDataParallel(model) if world > 1 else model
    return rank, world, device, torch.compile(net) if cfg.compile else net


def _optimizer(model: MaskedAutoencoderViT, cfg: TrainConfig, base_lr: float, num_images: int, world: int):
    """(AdamW, None), or for DP-SGD (Opacus's DPOptimizer around it, the resolved DPRun)."""
    optimizer = torch.optim.AdamW(param_groups_weight_decay(model, cfg.weight_decay), lr=base_lr, betas=cfg.betas,
                                  fused=True)
    if cfg.dp is None:
        return optimizer, None
    if world > 1:
        raise ValueError("DP-SGD runs in one process (its Poisson batches and accountant are not distributed); "
                         "launch without torchrun")
    run = plan_dp(cfg.dp, num_images, cfg.batch_size, cfg.epochs)
    return make_private(optimizer, run, cfg.batch_size), run


def _batches(cfg: TrainConfig, num_images: int, epoch: int, placement: tuple, dp_run: DPRun | None) -> list:
    """This rank's positions for each step of an epoch: a shuffle cut into batches (the last partial one
    dropped, as MAE does), or for DP-SGD Poisson batches."""
    rank, world = placement
    gen = _epoch_generator(cfg.seed, epoch, 0)
    if dp_run is not None:
        return poisson_batches(num_images, dp_run.sample_rate, dp_run.steps_per_epoch, gen)
    total, perm = cfg.batch_size * world, torch.randperm(num_images, generator=gen)
    return [perm[s * total:(s + 1) * total][rank::world].numpy() for s in range(num_images // total)]


def _step(net, model, optimizer, imgs, noise, cfg: TrainConfig, dp_run: DPRun | None, autocast):
    """One optimizer step on a batch; its mean loss (None for an empty DP-SGD batch, which still steps)."""
    optimizer.zero_grad(set_to_none=True)
    if dp_run is not None:
        with autocast:
            loss = dp_backward(model, imgs, cfg.mask_ratio, noise)  # per-sample gradients
    else:
        with autocast:
            loss, _, _ = net(imgs, cfg.mask_ratio, noise)
        loss.backward()
        if cfg.clip_grad:
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.clip_grad)
    optimizer.step()
    return loss


def _train_epoch(net, model, optimizer, source: ImageSource, cfg: TrainConfig, base_lr: float, epoch: int,
                 placement: tuple, bar, dp_run: DPRun | None = None) -> float:
    """One epoch of steps on this rank; the mean loss over the steps (averaged over the ranks)."""
    rank, world = placement
    batches = _batches(cfg, len(source), epoch, placement, dp_run)
    device = model.pos_embed.device
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" \
        else torch.autocast("cpu", enabled=False)
    noise_gen = _epoch_generator(cfg.seed, epoch, 1 + rank)
    augment_gen = _epoch_generator(cfg.seed, epoch, AUGMENT_STREAM + rank)
    if dp_run is not None:
        reseed_noise(optimizer, _epoch_seed(cfg.seed, epoch, DP_NOISE_STREAM), device)
    epoch_loss, counted, seen, t0 = torch.zeros((), device=device), 0, 0, time.perf_counter()
    for step, pos in enumerate(batches):
        for g in optimizer.param_groups:
            g["lr"] = lr_at(cfg, base_lr, epoch + step / len(batches))
        imgs = augment(model.normalize(torch.from_numpy(source.images(pos))), cfg.augment, augment_gen)
        noise = torch.rand(len(pos), model.config.num_patches, generator=noise_gen).to(imgs.device)
        loss = _step(net, model, optimizer, imgs, noise, cfg, dp_run, autocast)
        bar.update(1)
        seen += len(pos) * world
        if loss is None:
            continue
        epoch_loss, counted = epoch_loss + loss.detach(), counted + 1
        if step % PROGRESS_EVERY == 0:  # reading the loss waits for the device: not every step
            bar.set_postfix(epoch=epoch + 1, loss=f"{loss.item():.4f}",
                            img_s=f"{seen / (time.perf_counter() - t0):.0f}", refresh=False)
    if world > 1:
        dist.all_reduce(epoch_loss)
        epoch_loss /= world
    return epoch_loss.item() / counted if counted else math.nan


def _resume(path: Path, model: MaskedAutoencoderViT, optimizer, recipe: dict) -> tuple[int, list]:
    """Load a training state into model and optimizer; (epochs done, their losses). A state file that
    is unreadable, of another shape or another recipe is a CheckpointError naming it."""
    fix = f"delete {path} to start afresh, or drop --resume"
    try:
        state = torch_load_checked(path)
    except CheckpointError as e:
        raise CheckpointError(f"{str(e).rstrip('.')}; {fix}") from None
    problem = _state_problem(state)
    if problem:
        raise CheckpointError(f"{path} is not a mimmia training state: {problem}; {fix}")
    saved = state.get("recipe", recipe)  # older state files did not record it
    changed = {k: (saved.get(k), v) for k, v in recipe.items() if saved.get(k) != v}
    if changed:
        raise ValueError(f"{path} was trained with another recipe (was, now): {changed}; resume with the same "
                         f"settings, only epochs, save_epochs and keep_state may change"
                         + (" (with --dp-epsilon, epochs set the noise: keep them)" if "dp_noise_multiplier" in changed
                            else ""))
    try:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
    except (RuntimeError, ValueError, KeyError, TypeError) as e:
        why = " ".join(str(e).split())  # one line
        raise CheckpointError(f"{path} does not fit this model and optimizer ({why[:300]}); {fix}") from None
    return state["epoch"], list(state["losses"])


def _state_problem(state) -> str | None:
    """What is wrong with the contents of a train_state.pt, or None."""
    if not isinstance(state, dict):
        return f"it holds a {type(state).__name__}, not a dict"
    missing = [k for k in ("model", "optimizer", "epoch", "losses") if k not in state]
    if missing:
        return f"missing {', '.join(missing)}"
    if not isinstance(state["model"], dict) or not all(isinstance(v, torch.Tensor) for v in state["model"].values()):
        return "'model' is not a dict of tensors"
    if not isinstance(state["optimizer"], dict) or not {"state", "param_groups"} <= set(state["optimizer"]):
        return "'optimizer' is not an optimizer state dict"
    epoch, losses = state["epoch"], state["losses"]
    if isinstance(epoch, bool) or not isinstance(epoch, int) or epoch < 0:
        return f"'epoch' is {epoch!r}, not a count of epochs"
    if not isinstance(losses, list) or len(losses) != epoch or \
            not all(isinstance(x, float) and math.isfinite(x) for x in losses):
        return f"'losses' is not a list of {epoch} finite floats"
    if not isinstance(state.get("recipe", {}), dict):
        return "'recipe' is not a dict"
    return None


def _defenses(cfg: TrainConfig, epochs: int, dp_run: DPRun | None) -> list[dict]:
    """The defenses of a model trained with cfg for `epochs` epochs, each named, for reports and the dashboard."""
    out = [dp_run.record(epochs)] if dp_run is not None else []
    if cfg.augment != "none":
        out.append({"name": "augmentation", "augment": cfg.augment, "crop_scale": list(CROP_SCALE),
                    "crop_ratio": list(CROP_RATIO), "flip": True})
    if cfg.weight_decay > 0:
        out.append({"name": "weight-decay", "weight_decay": cfg.weight_decay})
    if epochs < cfg.epochs:
        out.append({"name": "early-stopping", "epochs": epochs, "schedule_epochs": cfg.epochs})
    return out


def _provenance(cfg: TrainConfig, source: ImageSource, epochs: int, world: int, extra: dict | None,
                dp_run: DPRun | None = None) -> dict:
    return {
        "trained_by": "mimmia_core.train",
        "data": {"name": source.name, "fingerprint": source.fingerprint(), "num_images": len(source)},
        "epochs": epochs,
        "mask_ratio": cfg.mask_ratio,
        "seed": cfg.seed,
        "world_size": world,
        "train_config": {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(cfg).items()},
        "defenses": _defenses(cfg, epochs, dp_run),
        "torch": torch.__version__,
        **(extra or {}),
    }


__all__ = ["TrainConfig", "train_mae", "lr_at", "default_device"]
