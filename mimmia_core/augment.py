"""MAE's pre-training augmentation on a batch: random resized crop (area 0.2 to 1) and horizontal flip.

As torchvision's RandomResizedCrop(size, scale=(0.2, 1.0), ratio=(3/4, 4/3)) followed by
RandomHorizontalFlip, drawn per image from a seeded generator and applied to the whole batch by one
bilinear grid_sample. One difference: torchvision redraws a crop that does not fit in the image (up
to ten times, then takes a centre crop); here a side that does not fit is cut to the image's side.
"""
import math

import torch
import torch.nn.functional as F

AUGMENTS = ("none", "crop-flip")
CROP_SCALE = (0.2, 1.0)     # crop area, as a fraction of the image
CROP_RATIO = (3 / 4, 4 / 3)  # crop width / height, drawn log-uniformly


def check_augment(name: str) -> str:
    if name not in AUGMENTS:
        raise ValueError(f"--augment must be one of {', '.join(AUGMENTS)}, got {name!r}")
    return name


def crop_flip_theta(n: int, generator: torch.Generator) -> torch.Tensor:
    """n affine maps [n,2,3] from output to input coordinates ([-1, 1]): a random crop, flipped half the time."""
    u = torch.rand(n, 5, generator=generator, dtype=torch.float64)
    area = CROP_SCALE[0] + (CROP_SCALE[1] - CROP_SCALE[0]) * u[:, 0]
    log_lo, log_hi = math.log(CROP_RATIO[0]), math.log(CROP_RATIO[1])
    ratio = torch.exp(log_lo + (log_hi - log_lo) * u[:, 1])
    w, h = (area * ratio).sqrt().clamp(max=1), (area / ratio).sqrt().clamp(max=1)  # sides, fractions of the image
    cx, cy = (1 - w) * (2 * u[:, 2] - 1), (1 - h) * (2 * u[:, 3] - 1)  # centres that keep the crop inside
    flip = torch.where(u[:, 4] < 0.5, -1.0, 1.0).to(torch.float64)
    zero = torch.zeros_like(w)
    return torch.stack([torch.stack([w * flip, zero, cx], 1), torch.stack([zero, h, cy], 1)], 1)


def crop_flip(imgs: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """imgs [N,C,H,W] float -> [N,C,H,W]: each image cropped at random, resized back and maybe flipped."""
    if imgs.shape[0] == 0:  # an empty Poisson batch of DP-SGD (affine_grid refuses one)
        return imgs
    theta = crop_flip_theta(imgs.shape[0], generator).to(imgs.device, imgs.dtype)
    grid = F.affine_grid(theta, list(imgs.shape), align_corners=False)
    return F.grid_sample(imgs, grid, mode="bilinear", padding_mode="border", align_corners=False)


def augment(imgs: torch.Tensor, name: str, generator: torch.Generator) -> torch.Tensor:
    """The augmentation `name` (AUGMENTS) of a batch of normalised images [N,C,H,W]."""
    return imgs if check_augment(name) == "none" else crop_flip(imgs, generator)


__all__ = ["AUGMENTS", "CROP_SCALE", "CROP_RATIO", "check_augment", "crop_flip_theta", "crop_flip", "augment"]
