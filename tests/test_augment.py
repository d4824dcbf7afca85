"""MAE's crop-and-flip augmentation (mimmia_core.augment) on batches, and in training."""
import numpy as np
import pytest
import torch

from mimmia_core.augment import CROP_RATIO, augment, crop_flip, crop_flip_theta
from mimmia_core.model import build_model
from mimmia_core.train import TrainConfig, train_mae


def _images(n: int = 64) -> torch.Tensor:
    return torch.randn(n, 1, 16, 16, generator=torch.Generator().manual_seed(0))


def test_crop_flip_is_reproducible_for_a_seed_and_changes_the_images():
    imgs = _images()
    a = crop_flip(imgs, torch.Generator().manual_seed(5))
    b = crop_flip(imgs, torch.Generator().manual_seed(5))
    c = crop_flip(imgs, torch.Generator().manual_seed(6))
    assert a.shape == imgs.shape and torch.equal(a, b) and not torch.equal(a, c)
    assert ((a - imgs).flatten(1).abs().max(dim=1).values > 1e-3).all()  # every image changed
    assert torch.equal(augment(imgs, "none", torch.Generator()), imgs)


def test_crop_areas_ratios_and_flips_follow_maes_recipe():
    theta = crop_flip_theta(4000, torch.Generator().manual_seed(0))
    w, h, cx, cy = theta[:, 0, 0].abs(), theta[:, 1, 1], theta[:, 0, 2], theta[:, 1, 2]
    area = w * h  # fractions of the image
    assert area.min() >= 0.2 - 1e-9 and area.max() <= 1 + 1e-9 and 0.55 < area.mean() < 0.65
    fits = (w < 1) & (h < 1)  # a side cut to the image changes the ratio; elsewhere it is as drawn
    assert (w[fits] / h[fits]).min() >= CROP_RATIO[0] - 1e-9 and (w[fits] / h[fits]).max() <= CROP_RATIO[1] + 1e-9
    assert ((cx.abs() <= 1 - w + 1e-9) & (cy.abs() <= 1 - h + 1e-9)).all()  # the crop lies inside the image
    assert 0.45 < (theta[:, 0, 0] < 0).double().mean() < 0.55  # half flipped


def test_a_full_crop_flipped_is_the_mirror_image():
    imgs = _images(1)
    theta = torch.tensor([[[-1.0, 0, 0], [0, 1.0, 0]]])
    grid = torch.nn.functional.affine_grid(theta, list(imgs.shape), align_corners=False)
    out = torch.nn.functional.grid_sample(imgs, grid, mode="bilinear", padding_mode="border", align_corners=False)
    torch.testing.assert_close(out, imgs.flip(-1))  # the map convention crop_flip_theta uses


def test_training_with_augmentation_is_reproducible_and_differs(tiny_config, smooth_source, tmp_path):
    source = smooth_source(16)
    run = lambda augment: train_mae(build_model(tiny_config, seed=0), source,
                                    TrainConfig(epochs=2, batch_size=4, lr=1e-3, warmup_epochs=0, augment=augment),
                                    progress=False)
    assert run("crop-flip") == run("crop-flip") != run("none")


def test_unknown_augmentation_is_refused():
    with pytest.raises(ValueError, match="--augment"):
        TrainConfig(augment="mixup")
    assert np.isfinite(crop_flip(_images(0), torch.Generator()).numpy()).all()  # an empty batch passes
