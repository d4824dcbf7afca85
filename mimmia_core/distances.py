"""Reconstruction distances (Li et al., 2024): their definitions, and how a distance becomes a signal.

Distances, per image and mask, over the MASKED patches unless said otherwise:
  masked_mse     MSE in the model's target space (what MAE's loss uses);
  all_mse        MSE in the target space over all patches;
  pixel_mse      MSE in pixel space: the reconstruction is mapped back to pixels
                 (norm_pix_loss predictions are un-normalised with each original
                 patch's mean and deviation, then the model's mean/std undone) and
                 CLAMPED to [0, 1], as `reconstruct` displays it, then compared
                 with the original pixels in [0, 1];
  pixel_mse_raw  the same WITHOUT the clamp: a prediction beyond [0, 1] counts its
                 full error. Comparable between models that normalise
                 differently (the pixel default of attacks.comparable_spec);
  pixel_l1       pixel_mse's clamped reconstruction, mean absolute error;
  psnr           10 log10(1 / max(pixel_mse, DISTANCE_FLOOR)) in dB (at most 100 dB).
Target-space distances (TARGET_SPACE_DISTANCES) are in each model's own units.

A distance is lower for a closer reconstruction, PSNR higher: `distance_sign` is
the one place that knows it, `member_signal` turns values into the membership
signal (higher = more member-like), `log_distance` into log distances, and
`aggregate_masks` reduces the K masks of an image to one value.
"""
import numpy as np
import torch

SCORING_VERSION = 2  # bump when a score's definition changes: old cache entries then miss
DISTANCES = ("masked_mse", "all_mse", "pixel_mse", "pixel_mse_raw", "pixel_l1", "psnr")
TARGET_SPACE_DISTANCES = ("masked_mse", "all_mse")  # in each model's own normalisation
PIXEL_DISTANCES = ("pixel_mse", "pixel_mse_raw", "pixel_l1", "psnr")
HIGHER_IS_CLOSER = ("psnr",)  # in dB; every other distance is lower for a closer reconstruction
AGGREGATES = ("mean", "min", "median")
DISTANCE_FLOOR = 1e-10  # an MSE below this counts as this: a perfect reconstruction has 100 dB and a finite log


def check_distances(distances, what: str = "unknown distances") -> tuple:
    """The distances as a tuple, or a ValueError '<what> [...]; choose from DISTANCES'."""
    unknown = [d for d in distances if d not in DISTANCES]
    if unknown:
        raise ValueError(f"{what} {unknown}; choose from {DISTANCES}")
    return tuple(distances)


# --------------------------------------------------------------------------
# Definitions, on tensors
# --------------------------------------------------------------------------
def masked_patch_mean(per_patch: torch.Tensor, mask: torch.Tensor, dim=-1) -> torch.Tensor:
    """The mean of per-patch values (..., L) over the masked patches (mask 1 = removed) along dim
    (None: over everything, as MAE's loss)."""
    return (per_patch * mask).sum(dim) / mask.sum(dim)


def patch_mse(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """(..., L, p*p*C) predictions and targets in the target space -> (..., L) MSE per patch, in fp32."""
    return ((pred.float() - target) ** 2).mean(dim=-1)


def masked_patch_mse(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, dim=-1) -> torch.Tensor:
    """MSE over the masked patches in the target space: MAE's loss (dim=None) and masked_mse (dim=-1)."""
    return masked_patch_mean(patch_mse(pred, target), mask, dim)


def psnr(mse: torch.Tensor) -> torch.Tensor:
    """Peak signal-to-noise ratio in dB of an MSE of pixels in [0, 1], the MSE floored at DISTANCE_FLOOR."""
    return -10 * torch.log10(mse.clamp(min=DISTANCE_FLOOR))


def batch_distances(model, imgs: torch.Tensor, noise: torch.Tensor, mask_ratio: float,
                    distances=DISTANCES) -> torch.Tensor:
    """(len(distances), K, N) float32 distances of N normalised images under K masks, for an MAE `model`.

    noise: (K, N, L), e.g. mask_noise(seed, ids, K, L). One encoder and decoder
    forward over the K*N rows (k-major); patch embedding and targets once per image.
    """
    K, N, L = noise.shape
    latent, mask, ids_restore = model.forward_encoder(imgs, mask_ratio, noise.reshape(K * N, L))
    pred = model.forward_decoder(latent, ids_restore)
    pred, mask = pred.view(K, N, L, -1), mask.view(K, N, L)
    rows = {}
    if "masked_mse" in distances or "all_mse" in distances:
        err = patch_mse(pred, model.patch_targets(imgs))  # (K, N, L) in fp32
        rows["masked_mse"] = masked_patch_mean(err, mask)
        rows["all_mse"] = err.mean(dim=-1)
    if set(PIXEL_DISTANCES) & set(distances):
        patches = model.patchify(imgs)
        recon = model.target_to_input(pred, patches)
        diff = model.patch_pixels(recon) - model.patch_pixels(patches)
        rows["pixel_mse"] = masked_patch_mean((diff ** 2).mean(dim=-1), mask)
        rows["pixel_l1"] = masked_patch_mean(diff.abs().mean(dim=-1), mask)
        rows["psnr"] = psnr(rows["pixel_mse"])
        raw = (recon - patches) * model.pixel_std.repeat(model.config.patch_size ** 2)  # pixels, unclamped
        rows["pixel_mse_raw"] = masked_patch_mean((raw ** 2).mean(dim=-1), mask)
    return torch.stack([rows[d] for d in distances])


# --------------------------------------------------------------------------
# From distances to signals, on arrays
# --------------------------------------------------------------------------
def aggregate_masks(per_mask: np.ndarray, how: str = "mean") -> np.ndarray:
    """(K, N) -> (N,): the values reduced over the K masks of each image, by mean, min or median."""
    if how not in AGGREGATES:
        raise ValueError(f"unknown aggregate {how!r}; choose one of {AGGREGATES}")
    return getattr(np, how)(np.asarray(per_mask), axis=0)


def distance_sign(distance: str) -> float:
    """+1.0 where a higher value means a closer reconstruction (PSNR), -1.0 for every other distance:
    sign * value is the membership signal, higher = more member-like."""
    if distance not in DISTANCES:
        raise ValueError(f"unknown distance {distance!r}; choose one of {DISTANCES}")
    return 1.0 if distance in HIGHER_IS_CLOSER else -1.0


def member_signal(values: np.ndarray, distance: str) -> np.ndarray:
    """Values of `distance` (per mask or aggregated) as membership signal: -distance, or +PSNR."""
    return distance_sign(distance) * np.asarray(values, np.float64)


def log_distance(values: np.ndarray, distance: str) -> np.ndarray:
    """Log distances, lower = more member-like: log(max(d, DISTANCE_FLOOR)); PSNR = -10 log10(floored
    MSE) is already a log MSE, so it becomes exactly the log of the floored pixel_mse."""
    values = np.asarray(values, np.float64)
    if distance in HIGHER_IS_CLOSER:
        return -values * (np.log(10) / 10)
    distance_sign(distance)  # refuses an unknown distance
    return np.log(np.maximum(values, DISTANCE_FLOOR))


__all__ = ["SCORING_VERSION", "DISTANCES", "TARGET_SPACE_DISTANCES", "PIXEL_DISTANCES", "HIGHER_IS_CLOSER",
           "AGGREGATES", "DISTANCE_FLOOR", "check_distances", "masked_patch_mean", "patch_mse", "masked_patch_mse",
           "psnr", "batch_distances", "aggregate_masks", "distance_sign", "member_signal", "log_distance"]
