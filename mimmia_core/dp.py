"""DP-SGD for MAE pre-training: Opacus's clipping, noise, Poisson sampling and privacy accountant.

Opacus's GradSampleModule cannot wrap this MAE. In its "hooks" and "functorch" modes the top module,
which owns raw parameters (cls_token, mask_token), becomes one functorch layer, and Opacus refuses a
layer with buffers (pixel_mean, pixel_std); "ew" (expanded weights) cannot pass the token addition.
So the per-sample gradients are computed the way Opacus's functorch mode computes them for a layer,
torch.func.vmap of grad over a functional_call, but of the whole MAE: each image with its own mask.
timm's attention (F.scaled_dot_product_attention) runs there on its math kernel, which vmap batches. They go to Opacus's DPOptimizer as `p.grad_sample`. The optimizer
clips each sample's gradient to max_grad_norm (over all parameters together), adds Gaussian noise
of std noise_multiplier * max_grad_norm, and divides by the expected batch size.

Batches are Poisson samples, as Opacus's DPDataLoader draws them: each step keeps each image with
probability q = batch_size / N (UniformWithReplacementSampler), for N // batch_size steps per epoch.
The RDP accountant is given that q and the steps taken. The noise is seeded (not secure_mode).
"""
import math
from dataclasses import dataclass, fields

import numpy as np
import torch
from opacus.accountants import RDPAccountant
from opacus.accountants.utils import get_noise_multiplier
from opacus.optimizers import DPOptimizer
from opacus.utils.uniform_sampler import UniformWithReplacementSampler
from torch.func import functional_call, grad_and_value, vmap
from torch.nn.attention import SDPBackend, sdpa_kernel

ACCOUNTANT = "rdp"


def _positive(value, flag: str, zero_ok: bool = False) -> float:
    v = float(value)
    if not math.isfinite(v) or v < 0 or (v == 0 and not zero_ok):
        raise ValueError(f"{flag} must be a finite number {'>= 0' if zero_ok else '> 0'}, got {value!r}")
    return v


@dataclass(frozen=True)
class DPConfig:
    """DP-SGD settings: a noise multiplier, or a target epsilon that the accountant turns into one."""
    max_grad_norm: float = 1.0          # per-sample clipping norm (--dp-clip)
    noise_multiplier: float | None = None  # noise std / max_grad_norm (--dp-noise); 0 clips without privacy
    epsilon: float | None = None        # target epsilon at the end of training (--dp-epsilon)
    delta: float | None = None          # None: 1 / (10 N), N the training images (--dp-delta)

    def __post_init__(self):
        _positive(self.max_grad_norm, "--dp-clip")
        if (self.noise_multiplier is None) == (self.epsilon is None):
            raise ValueError("DP-SGD needs --dp-noise or --dp-epsilon (exactly one of them)")
        if self.noise_multiplier is not None:
            _positive(self.noise_multiplier, "--dp-noise", zero_ok=True)
        if self.epsilon is not None:
            _positive(self.epsilon, "--dp-epsilon")
        if self.delta is not None and not 0 < float(self.delta) < 1:
            raise ValueError(f"--dp-delta must lie strictly between 0 and 1, got {self.delta!r}")


def as_dp_config(value) -> DPConfig | None:
    """None, a DPConfig, or a dict of DPConfig's fields (a study's JSON) as a DPConfig."""
    if value is None or isinstance(value, DPConfig):
        return value
    names = [f.name for f in fields(DPConfig)]
    if not isinstance(value, dict) or set(value) - set(names):
        raise ValueError(f"dp takes a DPConfig or a dict of {', '.join(names)}, got {value!r}")
    return DPConfig(**value)


@dataclass(frozen=True)
class DPRun:
    """The mechanism of one training run, resolved from a DPConfig and the data."""
    noise_multiplier: float
    max_grad_norm: float
    sample_rate: float      # q = batch_size / N
    steps_per_epoch: int
    delta: float
    target_epsilon: float | None

    def epsilon(self, epochs: int) -> float | None:
        """The epsilon spent after `epochs` epochs at this delta; None when the noise is 0 (no guarantee)."""
        if self.noise_multiplier == 0:
            return None
        steps = epochs * self.steps_per_epoch
        if steps == 0:
            return 0.0
        accountant = RDPAccountant()
        accountant.history = [(self.noise_multiplier, self.sample_rate, steps)]
        return float(accountant.get_epsilon(delta=self.delta))

    def record(self, epochs: int) -> dict:
        """The defense as the checkpoint's provenance names it."""
        return {"name": "dp-sgd", "epsilon": self.epsilon(epochs), "delta": self.delta,
                "target_epsilon": self.target_epsilon, "noise_multiplier": self.noise_multiplier,
                "max_grad_norm": self.max_grad_norm, "sample_rate": self.sample_rate,
                "steps": epochs * self.steps_per_epoch, "accountant": ACCOUNTANT, "sampling": "poisson"}


def plan_dp(dp: DPConfig, num_samples: int, batch_size: int, epochs: int) -> DPRun:
    """Resolve δ, the sample rate and (for a target ε) the noise multiplier for training on num_samples."""
    if batch_size > num_samples:
        raise ValueError(f"--batch-size {batch_size} is above the {num_samples} training images")
    sample_rate, steps = batch_size / num_samples, num_samples // batch_size
    delta = float(dp.delta) if dp.delta is not None else 0.1 / num_samples
    if dp.noise_multiplier is not None:
        noise = float(dp.noise_multiplier)
    else:
        noise = float(get_noise_multiplier(target_epsilon=dp.epsilon, target_delta=delta, sample_rate=sample_rate,
                                           steps=epochs * steps, accountant=ACCOUNTANT))
    return DPRun(noise, float(dp.max_grad_norm), sample_rate, steps, delta, dp.epsilon)


def make_private(optimizer: torch.optim.Optimizer, run: DPRun, expected_batch_size: int) -> DPOptimizer:
    """Wrap an optimizer: it clips per-sample gradients and adds noise before each step."""
    return DPOptimizer(optimizer, noise_multiplier=run.noise_multiplier, max_grad_norm=run.max_grad_norm,
                       expected_batch_size=expected_batch_size, loss_reduction="mean")


def reseed_noise(optimizer: DPOptimizer, seed: int, device: torch.device) -> None:
    """Seed the optimizer's Gaussian noise (on the parameters' device), e.g. once per epoch."""
    optimizer.generator = torch.Generator(device=device).manual_seed(seed)


def poisson_batches(num_samples: int, sample_rate: float, steps: int, generator: torch.Generator) -> list:
    """`steps` Poisson batches: arrays of positions, each position kept with probability sample_rate."""
    sampler = UniformWithReplacementSampler(num_samples=num_samples, sample_rate=sample_rate,
                                            generator=generator, steps=steps)
    return [np.asarray(idx, dtype=np.int64) for idx in sampler]


def per_sample_grads(model, imgs: torch.Tensor, mask_ratio: float, noise: torch.Tensor):
    """Per-sample losses [N] and gradients {name: [N, *shape]} of the trainable parameters.
    imgs [N,C,H,W] normalised, noise [N,L]: image n is masked by noise row n alone."""
    params = {n: p.detach() for n, p in model.named_parameters() if p.requires_grad}
    fixed = {**{n: p for n, p in model.named_parameters() if not p.requires_grad}, **dict(model.named_buffers())}

    def loss_of_one(params, img, row):
        loss, _, _ = functional_call(model, {**params, **fixed}, (img[None], mask_ratio, row[None]))
        return loss

    with sdpa_kernel(SDPBackend.MATH):  # the attention kernel that vmap batches (the fused ones loop per sample)
        grads, losses = vmap(grad_and_value(loss_of_one), in_dims=(None, 0, 0))(params, imgs, noise)
    return losses, grads


def dp_backward(model, imgs: torch.Tensor, mask_ratio: float, noise: torch.Tensor) -> torch.Tensor | None:
    """Set `p.grad_sample` of every trainable parameter for a DPOptimizer step; the batch's mean loss,
    or None for an empty Poisson batch (whose step still adds noise)."""
    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    if imgs.shape[0] == 0:
        for _, p in trainable:
            p.grad_sample = torch.zeros((0, *p.shape), device=p.device, dtype=p.dtype)
        return None
    losses, grads = per_sample_grads(model, imgs, mask_ratio, noise)
    for n, p in trainable:
        p.grad_sample = grads[n]
    return losses.mean()


__all__ = ["DPConfig", "as_dp_config", "DPRun", "plan_dp", "make_private", "reseed_noise", "poisson_batches", "per_sample_grads",
           "dp_backward"]
