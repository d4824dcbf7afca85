"""Reconstruction scores of a source: how it is scored (ScoreSpec), the result (Scores), the pass.

`score_images` masks every image K times with masks seeded by its id
(`mask_noise`), reconstructs its image-masks in one forward per batch (the
patch embedding and the targets are computed once per image and shared by its
masks) and keeps only the (K, N) distances (distances.batch_distances),
streaming the source batch by batch (runtime.stream). A large K is split into
chunks of masks, with the same scores. The distances are defined in distances.py.
"""
from dataclasses import dataclass

import numpy as np

from .data import ImageSource
from .distances import (DISTANCES, aggregate_masks, batch_distances, check_distances, log_distance,
                        member_signal)
from .masking import check_mask_ratio, check_seed, check_visible, mask_noise
from .model import MaskedAutoencoderViT
from .runtime import in_mask_chunks, on_device, rows_per_forward, stream


@dataclass(frozen=True)
class ScoreSpec:
    """How images are scored: mask ratio, K masks per image, their seed, the distance."""
    mask_ratio: float = 0.75
    num_masks: int = 8
    seed: int = 0
    distance: str = "masked_mse"

    def __post_init__(self):
        object.__setattr__(self, "mask_ratio", check_mask_ratio(self.mask_ratio))
        if isinstance(self.num_masks, bool) or not isinstance(self.num_masks, (int, np.integer)):
            raise ValueError(f"num_masks must be an integer, got {self.num_masks!r}")
        object.__setattr__(self, "num_masks", int(self.num_masks))
        object.__setattr__(self, "seed", check_seed(self.seed))
        if self.num_masks < 1:
            raise ValueError(f"num_masks must be at least 1, got {self.num_masks}")
        if self.distance not in DISTANCES:
            raise ValueError(f"unknown distance {self.distance!r}; choose one of {DISTANCES}")


@dataclass
class Scores:
    ids: np.ndarray       # (N,) int64
    per_mask: np.ndarray  # (K, N) float64: the distance per mask and image (PSNR in dB)
    spec: ScoreSpec

    def __post_init__(self):
        self.ids = np.asarray(self.ids, dtype=np.int64)
        self.per_mask = np.asarray(self.per_mask, dtype=np.float64)
        if self.per_mask.shape != (self.spec.num_masks, len(self.ids)):
            raise ValueError(f"per_mask has shape {self.per_mask.shape}, expected "
                             f"({self.spec.num_masks}, {len(self.ids)}) for {self.spec.num_masks} masks")

    def aggregate(self, how: str = "mean") -> np.ndarray:
        """The per-mask values reduced over the K masks: (N,) (distances.aggregate_masks)."""
        return aggregate_masks(self.per_mask, how)

    def signal(self, how: str = "mean") -> np.ndarray:
        """Membership signal, higher = more member-like: -distance, or +PSNR (distances.member_signal)."""
        return member_signal(self.aggregate(how), self.spec.distance)

    def distances(self) -> np.ndarray:
        """(K, N) per-mask values where lower means more member-like (PSNR is negated)."""
        return -member_signal(self.per_mask, self.spec.distance)

    def log_distances(self) -> np.ndarray:
        """(K, N) log distances, lower = more member-like (distances.log_distance)."""
        return log_distance(self.per_mask, self.spec.distance)

    def require_finite(self, model) -> "Scores":
        """These scores, or a ValueError naming the model and how many per-mask scores are NaN or infinite."""
        refuse_non_finite(self.per_mask, f"model {model}",
                          f" ({self.spec.distance} at mask ratio {self.spec.mask_ratio:g}, per image and mask): "
                          f"its reconstructions overflow or are undefined; check the weights (a diverged "
                          f"training run?) and its mean/std settings")
        return self


def refuse_non_finite(values, what: str, context: str = "") -> None:
    """The one finiteness check of scores: a ValueError '<what>: B of N scores are NaN or infinite<context>'."""
    values = np.asarray(values)
    bad = int((~np.isfinite(values)).sum())
    if bad:
        raise ValueError(f"{what}: {bad} of {values.size} scores are NaN or infinite{context}")


def score_distances(model: MaskedAutoencoderViT, source: ImageSource, spec: ScoreSpec, distances=DISTANCES, *,
                    batch_size: int = 256, device=None, progress=None, precision: str = "auto",
                    compile: bool = False, cuda_graphs: bool = False) -> tuple[np.ndarray, dict]:
    """Several distances from one pass: (ids, {distance: (K, N) float64}). See score_images."""
    distances = check_distances(distances)
    L = model.config.num_patches
    check_visible(L, spec.mask_ratio)
    masks = min(spec.num_masks, rows_per_forward(model, on_device(model, device), batch_size))
    ids, results = stream(
        model, source, batch_size, device, progress, precision,
        noise_fn=lambda ids: mask_noise(spec.seed, ids, spec.num_masks, L),
        fn=in_mask_chunks(lambda imgs, noise: batch_distances(model, imgs, noise, spec.mask_ratio, distances),
                          masks),
        rows_per_image=masks, compile=compile, cuda_graphs=cuda_graphs)
    per_mask = np.concatenate(results, axis=2)  # (D, K, N)
    return ids, dict(zip(distances, per_mask))


def score_images(model: MaskedAutoencoderViT, source: ImageSource, spec: ScoreSpec, *, batch_size: int = 256,
                 device=None, progress=None, precision: str = "auto", compile: bool = False,
                 cuda_graphs: bool = False) -> Scores:
    """Score every image of `source` under spec.num_masks seeded masks.

    model: an MAE with its decoder; device: run there (the model is moved), else
    where the model is; batch_size: images per forward (on CPU at most
    images_per_forward); progress: callable(done_images, total_images);
    precision: "auto" (bf16 autocast on CUDA, fp32 elsewhere), "fp32" or "bf16";
    compile / cuda_graphs: opt-in fast paths (torch.compile; CUDA graphs, CUDA
    only; both = compile with mode "reduce-overhead"), same scores within float
    tolerance. A score depends only on the image, its id, the spec and the
    weights, not on batch size or order.
    """
    ids, per = score_distances(model, source, spec, (spec.distance,), batch_size=batch_size, device=device,
                               progress=progress, precision=precision, compile=compile, cuda_graphs=cuda_graphs)
    return Scores(ids, per[spec.distance], spec)


__all__ = ["ScoreSpec", "Scores", "refuse_non_finite", "score_distances", "score_images"]
