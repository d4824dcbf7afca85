import math
import re

import numpy as np
import pytest
import torch

from mimmia_core.config import PRESETS, MAEConfig, get_config
from mimmia_core.masking import check_mask_ratio, mask_noise, num_masked, num_visible, smallest_mask_ratio
from mimmia_core.model import build_model
from mimmia_core.pos_embed import get_2d_sincos_pos_embed
from mimmia_core.reconstruction import reconstruct


def per_image_loss(model, imgs, noise, mask_ratio=0.75):
    """Masked-patch MSE per image, from one batched forward."""
    with torch.no_grad():
        _, pred, mask = model(imgs, mask_ratio, noise)
    err = ((pred - model.patch_targets(imgs)) ** 2).mean(-1)
    return (err * mask).sum(1) / mask.sum(1)


# ---- patches ---------------------------------------------------------------
def test_patchify_layout_and_round_trip(make_model):
    rgb = make_model(in_chans=3)
    imgs = torch.randn(2, 3, 16, 16)
    patches = rgb.patchify(imgs)
    assert patches.shape == (2, 16, 4 * 4 * 3)
    # patch (row 1, column 2) holds pixels [4:8, 8:12] as (p, q, c)
    expected = imgs[:, :, 4:8, 8:12].permute(0, 2, 3, 1).reshape(2, -1)
    torch.testing.assert_close(patches[:, 1 * 4 + 2], expected, rtol=0, atol=0)
    torch.testing.assert_close(rgb.unpatchify(patches), imgs, rtol=0, atol=0)


# ---- masking ---------------------------------------------------------------
@pytest.mark.parametrize("ratio, visible", [(0.75, 4), (0.3, 11), (0.5, 8), (0.99, 0), (0.01, 15)])
def test_mask_counts_floor_like_the_official_code(tiny_model, ratio, visible):
    assert num_visible(16, ratio) == visible == int(16 * (1 - ratio))
    assert num_masked(16, ratio) == 16 - visible
    x = torch.randn(5, 16, 8)
    noise = mask_noise(1, range(5), 1, 16)[0]
    kept, mask, ids_restore = tiny_model.random_masking(x, ratio, noise)
    assert kept.shape == (5, visible, 8)
    assert mask.sum(1).tolist() == [16 - visible] * 5
    # the kept tokens are the lowest-noise patches, in noise order
    order = noise.argsort(1)[:, :visible]
    torch.testing.assert_close(kept, torch.gather(x, 1, order[..., None].expand(-1, -1, 8)))
    assert (mask.gather(1, order) == 0).all()


def test_smallest_mask_ratio_masks_one_patch():
    assert num_masked(49, smallest_mask_ratio(49)) == 1


@pytest.mark.parametrize("bad", [0, 1, 1.0, -0.1, 1.5, float("nan"), float("inf")])
def test_bad_mask_ratios_are_refused(tiny_model, tiny_images, bad):
    with pytest.raises(ValueError, match="mask_ratio must lie strictly between 0 and 1"):
        check_mask_ratio(bad)
    noise = mask_noise(0, range(6), 1, 16)[0]
    with pytest.raises(ValueError, match="mask_ratio"):
        tiny_model(tiny_model.normalize(tiny_images), bad, noise)
    with pytest.raises(ValueError, match="mask_ratio"):
        reconstruct(tiny_model, tiny_images, bad, noise)


def test_mask_noise_depends_on_seed_id_and_mask_index_only():
    full = mask_noise(7, [3, 7, 11, 20], 3, 16)
    assert full.shape == (3, 4, 16) and full.dtype == torch.float64
    assert ((full >= 0) & (full < 1)).all()
    # another batch, another order, fewer masks: the same rows
    part = mask_noise(7, [20, 3], 2, 16)
    torch.testing.assert_close(part[:, 0], full[:2, 3], rtol=0, atol=0)
    torch.testing.assert_close(part[:, 1], full[:2, 0], rtol=0, atol=0)
    torch.testing.assert_close(mask_noise(7, np.array([11]), 3, 16)[:, 0], full[:, 2], rtol=0, atol=0)
    # masks differ across k, images and seeds
    assert not torch.equal(full[0], full[1])
    assert not torch.equal(full[0, 0], full[0, 1])
    assert not torch.equal(mask_noise(8, [3], 1, 16)[0, 0], full[0, 0])
    # argsort sees no ties
    assert all(len(set(row.tolist())) == 16 for row in full.reshape(-1, 16))


def splitmix64(x: int) -> int:
    """SplitMix64's finaliser (Steele, Lea and Flood 2014) in Python integers, mod 2**64."""
    m = (1 << 64) - 1
    x = (x + 0x9E3779B97F4A7C15) & m
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & m
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & m
    return x ^ (x >> 31)


@pytest.mark.parametrize("seed, image_id", [(0, 0), (7, 123456789), (2 ** 63 - 1, -1), (5, -2 ** 63)])
def test_mask_noise_is_splitmix64_of_seed_id_mask_and_patch(seed, image_id):
    m = (1 << 64) - 1
    got = mask_noise(seed, [image_id], 2, 5)
    for k in range(2):
        key = splitmix64(splitmix64(splitmix64(seed) ^ (image_id & m)) ^ splitmix64(k))
        want = [(splitmix64((key + p * 0x9E3779B97F4A7C15) & m) >> 11) / 2 ** 53 for p in range(5)]
        assert got[k, 0].tolist() == want


def test_per_image_loss_does_not_depend_on_batch_size(tiny_model, tiny_images):
    ids = np.array([5, 9, 12, 40, 41, 77])
    imgs = tiny_model.normalize(tiny_images)
    noise = mask_noise(3, ids, 1, 16)[0]
    whole = per_image_loss(tiny_model, imgs, noise)
    parts = []
    for sl in (slice(0, 1), slice(1, 3), slice(3, 6)):
        parts.append(per_image_loss(tiny_model, imgs[sl], mask_noise(3, ids[sl], 1, 16)[0]))
    torch.testing.assert_close(torch.cat(parts), whole, rtol=1e-5, atol=1e-6)
    # reversing the batch reverses the losses
    rev = per_image_loss(tiny_model, imgs.flip(0), mask_noise(3, ids[::-1].copy(), 1, 16)[0])
    torch.testing.assert_close(rev.flip(0), whole, rtol=1e-5, atol=1e-6)


def test_k_masks_share_the_patch_embedding(tiny_model, tiny_images):
    K, N = 3, 4
    imgs = tiny_model.normalize(tiny_images[:N])
    noise = mask_noise(0, range(N), K, 16)  # (K, N, L)
    with torch.no_grad():
        loss, pred, mask = tiny_model(imgs, 0.75, noise.reshape(K * N, 16))
        assert pred.shape == (K * N, 16, 16) and mask.shape == (K * N, 16)
        for k in range(K):
            loss_k, pred_k, mask_k = tiny_model(imgs, 0.75, noise[k])
            torch.testing.assert_close(pred[k * N:(k + 1) * N], pred_k, rtol=1e-5, atol=1e-6)
            torch.testing.assert_close(mask[k * N:(k + 1) * N], mask_k, rtol=0, atol=0)
        with pytest.raises(ValueError, match="noise has 5 rows for 4 images"):
            tiny_model(imgs, 0.75, noise[0, :1].repeat(5, 1))


# ---- position embedding ----------------------------------------------------
def test_sincos_layout_is_sin_w_cos_w_sin_h_cos_h(tiny_model):
    D, G = 16, 3
    emb = get_2d_sincos_pos_embed(D, G, cls_token=True)
    assert emb.shape == (G * G + 1, D)
    assert (emb[0] == 0).all()
    omega = 1.0 / 10000 ** (np.arange(D // 4) / (D // 4))
    for h in range(G):
        for w in range(G):
            want = np.concatenate([np.sin(w * omega), np.cos(w * omega), np.sin(h * omega), np.cos(h * omega)])
            np.testing.assert_allclose(emb[1 + h * G + w], want, atol=1e-12)
    pos = get_2d_sincos_pos_embed(32, 4, cls_token=True)
    torch.testing.assert_close(tiny_model.pos_embed[0], torch.from_numpy(pos).float())
    assert not tiny_model.pos_embed.requires_grad
    with pytest.raises(ValueError, match="divisible by 4"):
        get_2d_sincos_pos_embed(18, 3)


# ---- reconstruct -----------------------------------------------------------
@pytest.mark.parametrize("norm_pix_loss", [False, True])
def test_reconstruct(make_model, norm_pix_loss):
    model = make_model(norm_pix_loss=norm_pix_loss, in_chans=3, seed=1)
    tiny_images = torch.randint(0, 256, (6, 16, 16, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    noise = mask_noise(0, range(6), 1, 16)[0]
    r = reconstruct(model, tiny_images, 0.6, noise)
    assert r.num_masked == num_masked(16, 0.6) == 10
    assert r.mask.sum(1).tolist() == [10] * 6
    assert r.target_space == ("normalized_patches" if norm_pix_loss else "pixels")
    assert r.display_uses_original_patch_stats is norm_pix_loss
    for t in (r.original, r.masked, r.reconstruction, r.pasted):
        assert t.shape == (6, 3, 16, 16) and 0 <= t.min() and t.max() <= 1
    torch.testing.assert_close(r.original, tiny_images.permute(0, 3, 1, 2).float() / 255, atol=1e-6, rtol=0)
    pix_mask = model.unpatchify(r.mask[..., None].expand(-1, -1, 48)).bool()
    assert torch.equal(r.pasted[~pix_mask], r.original[~pix_mask])
    assert torch.equal(r.pasted[pix_mask], r.reconstruction[pix_mask])
    assert (r.masked[pix_mask] == 0.5).all()
    torch.testing.assert_close(r.patch_error, ((r.pred - r.target) ** 2).mean(-1))
    with torch.no_grad():
        loss, _, _ = model(model.normalize(tiny_images), 0.6, noise)
    torch.testing.assert_close((r.patch_error * r.mask).sum() / r.mask.sum(), loss)


def test_normalize_refuses_wrong_images(make_model):
    rgb = make_model(in_chans=3)
    with pytest.raises(ValueError, match=r"\(N, 16, 16, 3\)"):
        rgb.normalize(torch.zeros(2, 3, 16, 16, dtype=torch.uint8))
    with pytest.raises(ValueError, match="uint8"):
        rgb.normalize(torch.zeros(2, 16, 16, 3))


# ---- configs ---------------------------------------------------------------
@pytest.mark.parametrize("name, patches, width, depth, heads", [
    ("mae_vit_base_patch16", 196, 768, 12, 12), ("mae_vit_large_patch16", 196, 1024, 24, 16),
    ("mae_vit_huge_patch14", 256, 1280, 32, 16)])
def test_official_presets(name, patches, width, depth, heads):
    c = get_config(name)
    assert (c.num_patches, c.embed_dim, c.depth, c.num_heads) == (patches, width, depth, heads)
    assert (c.decoder_embed_dim, c.decoder_depth, c.decoder_num_heads) == (512, 8, 16)
    assert c.layer_norm_eps == 1e-6 and c.in_chans == 3 and c.mlp_ratio == 4.0


def test_small_preset_builds_with_the_right_shapes():
    c = get_config("mae_tiny_28", depth=1, decoder_depth=1)
    model = build_model(c)
    imgs = torch.zeros(2, 1, 28, 28)
    with torch.no_grad():
        loss, pred, mask = model(imgs, 0.75, mask_noise(0, [0, 1], 1, c.num_patches)[0])
    assert pred.shape == (2, 49, 16) and mask.shape == (2, 49) and math.isfinite(loss.item())
    assert model.pos_embed.shape == (1, 50, c.embed_dim)
    assert model.decoder_pos_embed.shape == (1, 50, c.decoder_embed_dim)
    assert set(PRESETS) >= {"mae_tiny_28", "mae_small_28", "mae_small_32"}


def test_config_validation_and_round_trip(tiny_config):
    assert MAEConfig.from_dict(tiny_config.to_dict()) == tiny_config
    with pytest.raises(ValueError, match="unknown preset"):
        get_config("mae_vit_giant")
    with pytest.raises(ValueError, match="not a multiple of patch_size"):
        MAEConfig(img_size=30, patch_size=4)
    with pytest.raises(ValueError, match="not divisible by its 5 heads"):
        MAEConfig(embed_dim=32, num_heads=5)
    with pytest.raises(ValueError, match=r"mean needs 1 value\(s\), one per channel"):
        MAEConfig(in_chans=1)
    with pytest.raises(ValueError, match="unknown MAEConfig fields"):
        MAEConfig.from_dict({**tiny_config.to_dict(), "depthh": 3})


@pytest.mark.parametrize("fields, words", [
    (dict(patch_size=0), "patch_size must be a positive integer, got 0"),
    (dict(img_size=224.0), "img_size must be a positive integer, got 224.0"),
    (dict(depth=True), "depth must be a positive integer"),
    (dict(layer_norm_eps=float("nan")), "layer_norm_eps must be a positive finite number"),
    (dict(mlp_ratio=-4), "mlp_ratio must be a positive finite number"),
    (dict(norm_pix_loss="yes"), "norm_pix_loss must be true or false"),
    (dict(mean=(0.5, float("nan"), 0.5)), "mean must hold finite numbers"),
    (dict(std=(0.2, 0.0, 0.2)), "std must be positive"),
    (dict(mean="0.5"), "mean must be a list of 3 numbers"),
    (dict(embed_dim=18, num_heads=3), "divisible by 4"),
])
def test_config_fields_are_checked_before_any_model_is_built(fields, words):
    with pytest.raises(ValueError, match=re.escape(words)):
        MAEConfig(**fields)


def test_layer_norm_eps_reaches_every_layer_norm(tiny_config):
    from dataclasses import replace
    model = build_model(replace(tiny_config, layer_norm_eps=1e-12))
    eps = {m.eps for m in model.modules() if isinstance(m, torch.nn.LayerNorm)}
    assert eps == {1e-12}


def test_seeded_build_is_reproducible(tiny_config):
    a, b, c = build_model(tiny_config, 3), build_model(tiny_config, 3), build_model(tiny_config, 4)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    assert not torch.equal(a.blocks[0].attn.qkv.weight, c.blocks[0].attn.qkv.weight)
