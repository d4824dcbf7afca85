"""The scoring kernel's fast path (K masks per forward, patches gathered from the un-repeated images,
the decoder input scattered, forwards side by side in CPU worker threads) gives the scores of a
straightforward computation: each image and mask alone, through MAE's steps as the official code
writes them."""
import numpy as np
import pytest
import torch

from mimmia_core import runtime
from mimmia_core.distances import DISTANCES, DISTANCE_FLOOR
from mimmia_core.masking import mask_noise, num_visible
from mimmia_core.scores import ScoreSpec, score_distances, score_images


def reference_pred(model, img, noise, mask_ratio):
    """One normalised image [1,C,H,W] under one mask's noise [1,L]: (pred [1,L,P], mask [1,L]), by
    MAE's repeat, gather, cat and argsort steps."""
    x = model.patch_embed(img) + model.pos_embed[:, 1:, :]
    L, D = x.shape[1], x.shape[2]
    keep = num_visible(L, mask_ratio)
    ids_shuffle = torch.argsort(noise, dim=1)
    ids_restore = torch.argsort(ids_shuffle, dim=1)
    x = torch.gather(x, 1, ids_shuffle[:, :keep, None].expand(-1, -1, D))
    mask = torch.ones(1, L)
    mask[:, :keep] = 0
    mask = torch.gather(mask, 1, ids_restore)
    x = torch.cat([model.cls_token + model.pos_embed[:, :1, :], x], dim=1)
    for blk in model.blocks:
        x = blk(x)
    x = model.decoder_embed(model.norm(x))
    tokens = torch.cat([x[:, 1:], model.mask_token.repeat(1, L - keep, 1)], dim=1)
    tokens = torch.gather(tokens, 1, ids_restore[..., None].expand(-1, -1, x.shape[2]))
    x = torch.cat([x[:, :1], tokens], dim=1) + model.decoder_pos_embed
    for blk in model.decoder_blocks:
        x = blk(x)
    return model.decoder_pred(model.decoder_norm(x))[:, 1:], mask


def reference_distances(model, img, noise, mask_ratio) -> dict:
    """Every distance of one image under one mask, from distances.py's definitions, one at a time."""
    pred, mask = reference_pred(model, img, noise, mask_ratio)
    patches = model.patchify(img)
    target, recon = patches, pred
    if model.config.norm_pix_loss:
        mean, std = patches.mean(-1, keepdim=True), (patches.var(-1, keepdim=True) + 1e-6) ** 0.5
        target, recon = (patches - mean) / std, pred * std + mean
    pp = model.config.patch_size ** 2
    mean, std = model.pixel_mean.repeat(pp), model.pixel_std.repeat(pp)
    shown, original = (recon * std + mean).clamp(0, 1), (patches * std + mean).clamp(0, 1)
    masked = mask[0].bool()
    err = ((pred - target) ** 2).mean(-1)[0]
    pixel_mse = ((shown - original) ** 2).mean(-1)[0][masked].mean()
    return {"masked_mse": err[masked].mean(), "all_mse": err.mean(), "pixel_mse": pixel_mse,
            "pixel_mse_raw": (((recon - patches) * std) ** 2).mean(-1)[0][masked].mean(),
            "pixel_l1": (shown - original).abs().mean(-1)[0][masked].mean(),
            "psnr": -10 * torch.log10(pixel_mse.clamp(min=DISTANCE_FLOOR))}


@pytest.mark.parametrize("norm_pix_loss, in_chans, mask_ratio", [(False, 1, 0.75), (True, 1, 0.5), (True, 3, 0.9)])
def test_fast_path_matches_one_image_and_mask_at_a_time(make_model, make_source, norm_pix_loss, in_chans,
                                                        mask_ratio):
    model, source = make_model(norm_pix_loss=norm_pix_loss, in_chans=in_chans), make_source(5, channels=in_chans)
    spec = ScoreSpec(mask_ratio=mask_ratio, num_masks=3, seed=4)
    ids, fast = score_distances(model, source, spec, batch_size=2)
    (_, images), = source.batches(len(source))
    noise = mask_noise(spec.seed, ids, spec.num_masks, model.config.num_patches)
    with torch.inference_mode():
        imgs = model.normalize(torch.from_numpy(np.ascontiguousarray(images)))
        slow = [[reference_distances(model, imgs[n:n + 1], noise[k, n:n + 1], mask_ratio) for n in range(len(ids))]
                for k in range(spec.num_masks)]
    for d in DISTANCES:
        expected = np.array([[float(cell[d]) for cell in row] for row in slow])
        np.testing.assert_allclose(fast[d], expected, rtol=1e-5, atol=1e-7, err_msg=d)


def test_scores_do_not_depend_on_batch_size_or_threads(make_model, make_source):
    model, source = make_model(norm_pix_loss=True), make_source(9)
    spec = ScoreSpec(num_masks=4, seed=2, distance="pixel_mse")
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        serial = score_images(model, source, spec, batch_size=9).per_mask
        torch.set_num_threads(2)  # two worker threads, one forward each
        for b in (1, 2, 4):
            np.testing.assert_allclose(score_images(model, source, spec, batch_size=b).per_mask, serial,
                                       rtol=1e-5, atol=1e-7)
        assert torch.get_num_threads() == 2  # the pass gives its threads back
    finally:
        torch.set_num_threads(threads)


def test_cpu_workers_run_one_thread_each_and_restore_the_count():
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        with runtime.cpu_workers(torch.device("cpu")) as workers:
            assert (workers, torch.get_num_threads()) == (2, 1)
        assert torch.get_num_threads() == 2
        with pytest.raises(RuntimeError, match="inside"):
            with runtime.cpu_workers(torch.device("cpu")):
                raise RuntimeError("inside a pass")
        assert torch.get_num_threads() == 2
        with runtime.cpu_workers(torch.device("cpu"), enabled=False) as workers:
            assert (workers, torch.get_num_threads()) == (1, 2)
    finally:
        torch.set_num_threads(threads)


def test_a_failing_forward_in_a_worker_reaches_the_caller(make_model, make_source, monkeypatch):
    model, source = make_model(), make_source(6)
    calls = []

    def broken(self, images):
        calls.append(len(images))
        if len(calls) == 2:
            raise ValueError("broken batch")
        return real(self, images)
    real = type(model).normalize
    monkeypatch.setattr(type(model), "normalize", broken)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        with pytest.raises(ValueError, match="broken batch"):
            score_images(model, source, ScoreSpec(num_masks=2), batch_size=2)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(threads)
