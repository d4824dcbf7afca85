"""EncoderMI (Liu et al., 2021): how alike the encoder embeds augmented views of an image.

Each image gets num_views random resized crops with random horizontal flips,
drawn from uniforms that are a pure function of (seed, image id, view)
(`view_noise`); the signal is the mean pairwise cosine similarity of their
encoder embeddings. It needs no decoder and no mask.
"""
import numpy as np
import torch
import torch.nn.functional as F

from .data import ImageSource
from .masking import mask_noise
from .model import MaskedAutoencoderViT
from .runtime import stream

CROP_SCALE = (0.2, 1.0)  # random resized crop as in MAE pre-training
CROP_RATIO = (3 / 4, 4 / 3)


def view_noise(seed: int, ids, num_views: int) -> torch.Tensor:
    """(V, N, 5) uniforms drawing each view's crop and flip: a pure function of (seed, image id, view)."""
    return mask_noise(seed, ids, num_views, 5)


def augment_views(imgs: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """Random resized crops (scale CROP_SCALE, aspect CROP_RATIO) with random horizontal flips,
    drawn by noise (V, N, 5) from view_noise: (V*N, C, H, W), view-major."""
    u = noise.to(imgs.device, torch.float32)
    num_views = u.shape[0]
    area = CROP_SCALE[0] + (CROP_SCALE[1] - CROP_SCALE[0]) * u[..., 0]
    lo, hi = np.log(CROP_RATIO[0]), np.log(CROP_RATIO[1])
    ratio = torch.exp(lo + (hi - lo) * u[..., 1])
    w, h = (area * ratio).sqrt().clamp(max=1), (area / ratio).sqrt().clamp(max=1)  # fractions of the side
    flip = torch.where(u[..., 4] < 0.5, -1.0, 1.0)
    theta = torch.zeros(*u.shape[:2], 2, 3, device=imgs.device)
    theta[..., 0, 0], theta[..., 0, 2] = w * flip, (1 - w) * (2 * u[..., 2] - 1)
    theta[..., 1, 1], theta[..., 1, 2] = h, (1 - h) * (2 * u[..., 3] - 1)
    views = imgs.repeat(num_views, 1, 1, 1)
    grid = F.affine_grid(theta.flatten(0, 1), list(views.shape), align_corners=False)
    return F.grid_sample(views, grid, mode="bilinear", padding_mode="border", align_corners=False)


def view_similarity(model: MaskedAutoencoderViT, imgs: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """(1, N): mean pairwise cosine similarity of the encoder embeddings of each image's views
    (noise (V, N, 5) from view_noise).

    The embedding is the mean of the encoder's patch tokens after its final norm,
    on all patches (no masking): MAE's loss never trains the cls output.
    """
    num_views = noise.shape[0]
    feats = model.forward_features(augment_views(imgs, noise))[:, 1:].mean(dim=1)
    feats = F.normalize(feats.float(), dim=-1).view(num_views, imgs.shape[0], -1)
    pair_sum = (feats.sum(dim=0) ** 2).sum(dim=-1) - (feats ** 2).sum(dim=(0, 2))  # sum over v != w
    return (pair_sum / (num_views * (num_views - 1)))[None]


def embedding_similarity(model: MaskedAutoencoderViT, source: ImageSource, *, num_views: int = 8, seed: int = 0,
                         batch_size: int = 256, device=None, progress=None, precision: str = "auto") -> np.ndarray:
    """EncoderMI-style signal (Liu et al., 2021), (N,): how alike the encoder sees num_views augmented
    views of each image; higher = more member-like. Needs no decoder."""
    if isinstance(num_views, bool) or not isinstance(num_views, (int, np.integer)) or num_views < 2:
        raise ValueError(f"num_views must be an integer of at least 2, got {num_views!r}")
    _, results = stream(model, source, batch_size, device, progress, precision,
                        noise_fn=lambda ids: view_noise(seed, ids, num_views),
                        fn=lambda imgs, noise: view_similarity(model, imgs, noise), rows_per_image=num_views)
    return np.concatenate(results, axis=1)[0]


__all__ = ["CROP_SCALE", "CROP_RATIO", "view_noise", "augment_views", "view_similarity", "embedding_similarity"]
