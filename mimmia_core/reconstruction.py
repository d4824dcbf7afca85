"""What a viewer shows of one reconstruction: MAE's visualisation demo as data."""
from dataclasses import dataclass, field

import torch

from .masking import check_visible, num_masked
from .model import MaskedAutoencoderViT


@dataclass
class Reconstruction:
    """Everything a viewer needs for one batch of images and one mask each."""
    pred: torch.Tensor            # (N, L, p*p*C), in the target space
    target: torch.Tensor          # (N, L, p*p*C), in the target space
    mask: torch.Tensor            # (N, L), 1 = masked
    patch_error: torch.Tensor     # (N, L), MSE per patch in the target space
    original: torch.Tensor        # (N, C, H, W), pixels in [0, 1]
    masked: torch.Tensor          # original with masked patches greyed out
    reconstruction: torch.Tensor  # (N, C, H, W), pixels in [0, 1]
    pasted: torch.Tensor          # reconstruction + visible patches
    num_masked: int
    target_space: str             # "pixels" or "normalized_patches"
    display_uses_original_patch_stats: bool = field(default=False)

    @property
    def error_unit(self) -> str:
        """The unit of patch_error: a mean squared difference in the target space."""
        if self.target_space == "normalized_patches":
            return "squared per-patch standardised value (MSE)"
        return "squared normalised pixel value, ((x - mean) / std)² (MSE)"

    def masked_error(self, index: int = 0) -> float:
        """Image `index`'s patch_error averaged over its masked patches (what MAE's loss averages)."""
        return float(self.patch_error[index][self.mask[index] > 0.5].mean())


@torch.no_grad()
def reconstruct(model: MaskedAutoencoderViT, images: torch.Tensor, mask_ratio: float,
                noise: torch.Tensor) -> Reconstruction:
    """Mask, reconstruct and compare, as MAE's visualisation demo does.

    images: uint8 (N, H, W, C); noise: (N, L), e.g. mask_noise(seed, ids, 1, L)[0].
    For norm_pix_loss models the prediction lives in per-patch standardised space;
    the pixel display then borrows each original patch's mean and variance, and
    `display_uses_original_patch_stats` says so.
    """
    check_visible(model.config.num_patches, mask_ratio)
    model.eval()
    imgs = model.normalize(images)
    loss, pred, mask = model(imgs, mask_ratio, noise.to(imgs.device))
    pred = pred.float()
    target = model.patch_targets(imgs)
    patch_error = ((pred - target) ** 2).mean(dim=-1)

    recon = model.unpatchify(model.target_to_input(pred, model.patchify(imgs)))
    p, C = model.config.patch_size, model.config.in_chans
    mask_img = model.unpatchify(mask.unsqueeze(-1).repeat(1, 1, p * p * C))
    original = model.denormalize(imgs)
    reconstruction = model.denormalize(recon)
    return Reconstruction(
        pred=pred, target=target, mask=mask, patch_error=patch_error,
        original=original,
        masked=original * (1 - mask_img) + 0.5 * mask_img,
        reconstruction=reconstruction,
        pasted=original * (1 - mask_img) + reconstruction * mask_img,
        num_masked=num_masked(model.config.num_patches, mask_ratio),
        target_space=model.config.target_space,
        display_uses_original_patch_stats=model.config.norm_pix_loss,
    )


__all__ = ["Reconstruction", "reconstruct"]
