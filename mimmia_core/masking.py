"""Masking: how many patches a ratio hides, and seeded noise that decides which.

The noise is a pure function of (seed, image id, mask index): SplitMix64 on
numpy uint64 (wrapping arithmetic), so an image's K masks are the same whatever
batch, order, device or world size it is scored in.
"""
import math

import numpy as np
import torch

def check_mask_ratio(mask_ratio: float) -> float:
    r = float(mask_ratio)
    if not (0.0 < r < 1.0):  # also refuses NaN
        raise ValueError(f"mask_ratio must lie strictly between 0 and 1, got {mask_ratio!r}")
    return r


def num_visible(num_patches: int, mask_ratio: float) -> int:
    """Patches kept visible; int() floors, exactly as the official code."""
    return int(num_patches * (1 - check_mask_ratio(mask_ratio)))


def num_masked(num_patches: int, mask_ratio: float) -> int:
    """The real number of masked patches at this ratio."""
    return num_patches - num_visible(num_patches, mask_ratio)


def smallest_mask_ratio(num_patches: int) -> float:
    """The smallest ratio that still masks a patch (one of them)."""
    return 0.5 / num_patches


def largest_mask_ratio(num_patches: int) -> float:
    """The largest ratio that still leaves a patch visible, rounded down to 4 decimals."""
    ratio = math.floor((1 - 1 / num_patches) * 1e4) / 1e4
    while num_visible(num_patches, ratio) < 1:  # float rounding at the boundary
        ratio -= 1e-4
    return ratio


def check_visible(num_patches: int, mask_ratio: float) -> float:
    """The mask ratio, if it leaves at least one of num_patches patches visible; else a ValueError."""
    if num_visible(num_patches, mask_ratio) < 1:
        largest = (f"the largest ratio that keeps one patch visible is {largest_mask_ratio(num_patches):g}"
                   if num_patches > 1 else "an image of one patch cannot be masked")
        raise ValueError(f"mask_ratio {mask_ratio:g} leaves none of the {num_patches} patches visible "
                         f"(int({num_patches} * (1 - {mask_ratio:g})) = 0), so the encoder would see nothing; "
                         f"{largest}")
    return float(mask_ratio)


def check_seed(seed) -> int:
    """A mask seed as an int: an integer in 0..2**63-1 (it seeds 64-bit hashing)."""
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or not 0 <= int(seed) < 1 << 63:
        raise ValueError(f"seed must lie in 0..2**63-1, got {seed!r}")
    return int(seed)


_GOLDEN, _MIX1, _MIX2 = np.uint64(0x9E3779B97F4A7C15), np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB)


def _splitmix64(x: np.ndarray) -> np.ndarray:
    """The SplitMix64 finaliser on uint64 arrays."""
    x = x + _GOLDEN
    x = (x ^ (x >> np.uint64(30))) * _MIX1
    x = (x ^ (x >> np.uint64(27))) * _MIX2
    return x ^ (x >> np.uint64(31))


def mask_noise(seed: int, image_ids, num_masks: int, num_patches: int) -> torch.Tensor:
    """Noise (K, N, L) float64 in [0, 1) for masking, a pure function of (seed, image id, mask index).

    53 random bits per value, so argsort ties never occur in practice.
    """
    seed = check_seed(seed)
    ids = np.asarray(image_ids, dtype=np.int64)
    if ids.ndim != 1:
        raise ValueError(f"image_ids must be one-dimensional, got shape {tuple(ids.shape)}")
    with np.errstate(over="ignore"):
        key = _splitmix64(_splitmix64(np.array([seed], np.uint64)) ^ ids.view(np.uint64))  # (N,)
        key = _splitmix64(key[None, :] ^ _splitmix64(np.arange(num_masks, dtype=np.uint64))[:, None])  # (K, N)
        bits = _splitmix64(key[..., None] + np.arange(num_patches, dtype=np.uint64) * _GOLDEN)  # (K, N, L)
    return torch.from_numpy((bits >> np.uint64(11)).astype(np.float64) / float(1 << 53))


__all__ = ["mask_noise", "check_mask_ratio", "check_visible", "check_seed", "num_masked", "num_visible",
           "smallest_mask_ratio", "largest_mask_ratio"]
