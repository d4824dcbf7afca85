import contextlib
import dataclasses
import io
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from mimmia_core.cache import ScoreCache
from mimmia_core.checkpoint import CheckpointError, LoadedModel, save_checkpoint
from mimmia_core.cli import main
from mimmia_core.data import ArraySource
from mimmia_core.masking import mask_noise
from mimmia_core.model import build_model
from mimmia_core.reconstruction import reconstruct
from mimmia_core import runtime, scores
from mimmia_core.distances import DISTANCES
from mimmia_core.encodermi import embedding_similarity
from mimmia_core.scorer import Scorer
from mimmia_core.scores import Scores, ScoreSpec, score_distances, score_images


def reference(model, source, spec):
    """Each distance by the plain forward, one image and one mask at a time."""
    L, c = model.config.num_patches, model.config
    images, ids = torch.from_numpy(source.images(np.arange(len(source)))), source.ids
    noise = mask_noise(spec.seed, ids, spec.num_masks, L)
    out = {d: np.zeros((spec.num_masks, len(source))) for d in DISTANCES}
    with torch.no_grad():
        for k in range(spec.num_masks):
            for i in range(len(source)):
                x = model.normalize(images[i:i + 1])
                loss, pred, mask = model(x, spec.mask_ratio, noise[k, i:i + 1])
                out["masked_mse"][k, i] = loss.item()
                out["all_mse"][k, i] = ((pred - model.patch_targets(x)) ** 2).mean().item()
                rec = reconstruct(model, images[i:i + 1], spec.mask_ratio, noise[k, i:i + 1])
                m = model.unpatchify(rec.mask[..., None].repeat(1, 1, c.patch_size ** 2 * c.in_chans)).bool()
                diff = (rec.reconstruction - rec.original)[m]
                out["pixel_mse"][k, i] = (diff ** 2).mean().item()
                out["pixel_l1"][k, i] = diff.abs().mean().item()
                unclamped = model.unpatchify(model.target_to_input(pred, model.patchify(x)))
                unclamped = unclamped * model.pixel_std.view(1, -1, 1, 1) + model.pixel_mean.view(1, -1, 1, 1)
                out["pixel_mse_raw"][k, i] = ((unclamped - rec.original)[m] ** 2).mean().item()
    out["psnr"] = 10 * np.log10(1 / out["pixel_mse"])
    return out


@pytest.mark.parametrize("norm_pix_loss,channels", [(False, 1), (True, 1), (True, 3)])
def test_distances_match_per_image_reference(make_model, make_source, norm_pix_loss, channels):
    model, source = make_model(norm_pix_loss, channels), make_source(5, channels)
    spec = ScoreSpec(mask_ratio=0.6, num_masks=3, seed=4)
    ids, per = score_distances(model, source, spec, batch_size=2)
    ref = reference(model, source, spec)
    np.testing.assert_array_equal(ids, source.ids)
    for d in DISTANCES:
        assert per[d].shape == (3, 5)
        np.testing.assert_allclose(per[d], ref[d], rtol=1e-4, atol=1e-6, err_msg=d)
    # the masked patches are what is scored: masked and all-patch MSE differ
    assert not np.allclose(per["masked_mse"], per["all_mse"])
    # clamping the prediction to [0, 1] only ever lowers the error; this untrained model overshoots
    assert (per["pixel_mse_raw"] >= per["pixel_mse"] - 1e-9).all() and (per["pixel_mse_raw"] > per["pixel_mse"]).any()


def test_scores_do_not_depend_on_batch_size_or_order(make_model, make_source):
    model, source = make_model(), make_source(11)
    spec = ScoreSpec(num_masks=4, distance="masked_mse")
    runs = [score_images(model, source, spec, batch_size=b).per_mask for b in (1, 3, 7)]
    for r in runs[1:]:
        np.testing.assert_allclose(r, runs[0], rtol=1e-5, atol=1e-7)
    reversed_ids = source.ids[::-1]
    back = score_images(model, source.subset(reversed_ids), spec, batch_size=4)
    np.testing.assert_array_equal(back.ids, reversed_ids)
    np.testing.assert_allclose(back.per_mask[:, ::-1], runs[0], rtol=1e-5, atol=1e-7)


def test_cpu_forward_cap_keeps_scores(make_model, make_source, monkeypatch):
    model, source = make_model(), make_source(5)
    spec = ScoreSpec(num_masks=3, distance="pixel_l1")
    whole = score_images(model, source, spec, batch_size=5).per_mask
    monkeypatch.setattr(runtime, "CPU_ACTIVATION_BYTES", 1)
    assert runtime.images_per_forward(model, 3) == 1
    seen = []
    capped = score_images(model, source, spec, batch_size=5, progress=lambda d, t: seen.append(d)).per_mask
    assert seen == [1, 2, 3, 4, 5]
    np.testing.assert_allclose(capped, whole, rtol=1e-5, atol=1e-7)


def test_masks_vary_with_seed_and_mask_index(make_model, make_source):
    model, source = make_model(), make_source(4)
    a = score_images(model, source, ScoreSpec(num_masks=3, seed=0)).per_mask
    b = score_images(model, source, ScoreSpec(num_masks=3, seed=1)).per_mask
    assert not np.allclose(a, b)
    assert not np.allclose(a[0], a[1])


def test_progress_reports_every_image(make_model, make_source):
    model, source, seen = make_model(), make_source(7), []
    score_images(model, source, ScoreSpec(num_masks=2), batch_size=3, progress=lambda d, t: seen.append((d, t)))
    assert seen == [(3, 7), (6, 7), (7, 7)]


def test_compile_gives_the_same_scores(make_model, make_source, inductor):
    model, source = make_model(), make_source(5)
    spec = ScoreSpec(num_masks=2, distance="pixel_mse")
    plain = score_images(model, source, spec, batch_size=3).per_mask
    compiled = score_images(model, source, spec, batch_size=3, compile=True).per_mask
    np.testing.assert_allclose(compiled, plain, rtol=1e-4, atol=1e-6)


def test_cuda_graphs_refused_on_cpu(make_model, make_source):
    with pytest.raises(ValueError, match="cuda_graphs needs a CUDA device"):
        score_images(make_model(), make_source(2), ScoreSpec(num_masks=1), device="cpu", cuda_graphs=True)


@pytest.mark.parametrize("kwargs,match", [
    (dict(mask_ratio=0.0), "mask_ratio"), (dict(mask_ratio=1.0), "mask_ratio"),
    (dict(mask_ratio=float("nan")), "mask_ratio"), (dict(num_masks=0), "num_masks"),
    (dict(num_masks=2.5), "num_masks"), (dict(distance="ssim"), "unknown distance"),
])
def test_invalid_spec(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ScoreSpec(**kwargs)


def test_bad_inputs(make_model, make_source):
    model = make_model()
    with pytest.raises(ValueError, match="no images"):
        score_images(model, ArraySource(np.zeros((0, 16, 16, 1), np.uint8)), ScoreSpec())
    with pytest.raises(ValueError, match="batch_size"):
        score_images(model, make_source(2), ScoreSpec(), batch_size=0)
    with pytest.raises(ValueError, match="shape"):
        score_images(model, ArraySource(np.zeros((2, 8, 8, 1), np.uint8)), ScoreSpec())
    with pytest.raises(ValueError, match="precision"):
        score_images(model, make_source(2), ScoreSpec(), precision="fp8")
    with pytest.raises(ValueError, match="unknown distances"):
        score_distances(model, make_source(2), ScoreSpec(), ("masked_mse", "ssim"))
    with pytest.raises(ValueError, match="num_views"):
        embedding_similarity(model, make_source(2), num_views=1)


def test_aggregate_and_signal():
    per = np.array([[1.0, 4.0], [3.0, 2.0], [2.0, 9.0]])
    s = Scores(np.array([5, 6]), per, ScoreSpec(num_masks=3))
    np.testing.assert_allclose(s.aggregate("mean"), [2.0, 5.0])
    np.testing.assert_allclose(s.aggregate("min"), [1.0, 2.0])
    np.testing.assert_allclose(s.aggregate("median"), [2.0, 4.0])
    np.testing.assert_allclose(s.signal("min"), [-1.0, -2.0])
    psnr = Scores(np.array([5, 6]), per, ScoreSpec(num_masks=3, distance="psnr"))
    np.testing.assert_allclose(psnr.signal(), [2.0, 5.0])
    with pytest.raises(ValueError, match="aggregate"):
        s.aggregate("max")
    with pytest.raises(ValueError, match="per_mask has shape"):
        Scores(np.array([5, 6]), per, ScoreSpec(num_masks=2))


def test_embedding_similarity_shape_determinism_and_range(make_model, make_source):
    model, source = make_model(), make_source(9)
    a = embedding_similarity(model, source, num_views=4, seed=3, batch_size=2)
    b = embedding_similarity(model, source, num_views=4, seed=3, batch_size=9)
    assert a.shape == (9,)
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    assert np.all(a <= 1 + 1e-6) and np.all(a >= -1 - 1e-6)
    c = embedding_similarity(model, source, num_views=4, seed=4, batch_size=9)
    assert not np.allclose(a, c)
    # identical views (a constant image) are perfectly similar
    flat = ArraySource(np.full((2, 16, 16, 1), 77, np.uint8))
    np.testing.assert_allclose(embedding_similarity(model, flat, num_views=3), 1.0, atol=1e-5)


def loaded(model, has_decoder=True):
    return LoadedModel(model, "mem", "mimmia", missing_decoder_keys=[] if has_decoder else ["decoder_pred.weight"])


def test_scorer_memo_disk_cache_and_all_distances(make_model, make_source, tmp_path):
    model, source = make_model(), make_source(6)
    calls = []
    scorer = Scorer(cache=ScoreCache(tmp_path), batch_size=4, progress=lambda d, t: calls.append(d))
    spec = ScoreSpec(num_masks=2)
    first = scorer.scores(loaded(model), source, spec)
    direct = score_images(model, source, spec)
    np.testing.assert_allclose(first.per_mask, direct.per_mask, rtol=1e-6)
    n_calls = len(calls)
    # every distance came from that one pass
    for d in DISTANCES:
        other = scorer.scores(loaded(model), source, ScoreSpec(num_masks=2, distance=d))
        np.testing.assert_allclose(other.per_mask, score_images(model, source, other.spec).per_mask, rtol=1e-6)
    assert len(calls) == n_calls
    assert len(list(tmp_path.glob("*.npz"))) == len(DISTANCES)
    with pytest.raises(ValueError):
        first.per_mask[0, 0] = 1.0  # shared arrays are read-only
    # a fresh scorer reads the disk cache without scoring
    fresh = Scorer(cache=ScoreCache(tmp_path), progress=lambda d, t: calls.append(d))
    np.testing.assert_array_equal(fresh.scores(loaded(model), source, spec).per_mask, first.per_mask)
    assert len(calls) == n_calls
    # another spec or other weights are scored anew
    scorer.scores(loaded(model), source, ScoreSpec(num_masks=2, seed=1))
    assert len(calls) > n_calls


def test_scorer_with_a_tiny_memo_and_no_disk_cache(make_model, make_source):
    model, source = make_model(), make_source(3)
    scorer = Scorer(memo_size=1)
    for d in ("psnr", "masked_mse", "psnr"):
        got = scorer.scores(loaded(model), source, ScoreSpec(num_masks=2, distance=d))
        np.testing.assert_allclose(got.per_mask, score_images(model, source, got.spec).per_mask, rtol=1e-6)


def test_scorer_notices_weights_changed_in_place(make_model, make_source, tmp_path):
    model, source = make_model(), make_source(3)
    scorer = Scorer(cache=ScoreCache(tmp_path))
    before = scorer.scores(loaded(model), source, ScoreSpec(num_masks=1)).per_mask.copy()
    with torch.no_grad():
        model.decoder_pred.bias.add_(0.5)
    after = scorer.scores(loaded(model), source, ScoreSpec(num_masks=1)).per_mask
    assert not np.allclose(before, after)
    model.load_state_dict(make_model(seed=1).state_dict())
    reloaded = scorer.scores(loaded(model), source, ScoreSpec(num_masks=1)).per_mask
    np.testing.assert_allclose(reloaded, score_images(make_model(seed=1), source, ScoreSpec(num_masks=1)).per_mask,
                               rtol=1e-6)


def test_scorer_refuses_encoder_only_and_caches_similarity(make_model, make_source, tmp_path):
    model, source = make_model(), make_source(4)
    scorer = Scorer(cache=ScoreCache(tmp_path))
    with pytest.raises(CheckpointError, match="encoder-only"):
        scorer.scores(loaded(model, has_decoder=False), source, ScoreSpec())
    sim = scorer.similarity(loaded(model, has_decoder=False), source, num_views=3, seed=1)
    np.testing.assert_allclose(sim, embedding_similarity(model, source, num_views=3, seed=1), rtol=1e-6)
    again = Scorer(cache=ScoreCache(tmp_path)).similarity(loaded(model), source, num_views=3, seed=1)
    np.testing.assert_array_equal(again, sim)
    assert source.ids.flags.writeable  # the cache copies, it does not freeze the caller's arrays


@pytest.mark.parametrize("change", [dict(num_heads=4, decoder_num_heads=4), dict(mean=(0.3,), std=(0.2,))])
def test_same_weights_other_settings_never_share_scores(make_model, make_source, tmp_path, change):
    """Regression: a reference with the target's weights but other heads or preprocessing was served the
    target's scores (AUC 0.5, exit 0). Both through one Scorer and one cache give their own no-cache scores."""
    from dataclasses import replace
    a = make_model()
    b = build_model(replace(a.config, **change)).eval()
    b.load_state_dict(a.state_dict())
    source, spec = make_source(5), ScoreSpec(num_masks=2)
    scorer = Scorer(cache=ScoreCache(tmp_path))
    got_a, got_b = scorer.scores(loaded(a), source, spec), scorer.scores(loaded(b), source, spec)
    np.testing.assert_allclose(got_a.per_mask, score_images(a, source, spec).per_mask, rtol=1e-6)
    np.testing.assert_allclose(got_b.per_mask, score_images(b, source, spec).per_mask, rtol=1e-6)
    assert np.abs(got_a.per_mask - got_b.per_mask).max() > 1e-4
    fresh = Scorer(cache=ScoreCache(tmp_path))  # and from the disk cache alone
    np.testing.assert_array_equal(fresh.scores(loaded(b), source, spec).per_mask, got_b.per_mask)


@pytest.mark.parametrize("damage", ["truncate", "garbage", "other ids", "other shape"])
def test_a_damaged_or_mismatching_entry_is_recomputed_and_replaced(make_model, make_source, tmp_path, damage):
    model, source, spec = make_model(), make_source(4), ScoreSpec(num_masks=2)
    scorer = Scorer(cache=ScoreCache(tmp_path, read_only_roots=()))
    right = scorer.scores(loaded(model), source, spec).per_mask.copy()
    request = scorer._request(model, source, kind="scores", spec=dataclasses.asdict(spec))
    path = scorer.cache.path(ScoreCache.key(request))
    if damage == "truncate":
        path.write_bytes(path.read_bytes()[:200])
    elif damage == "garbage":
        path.write_bytes(b"\0" * 64)
    else:  # an entry that claims this request, with other ids or another shape
        arrays = dict(ids=source.ids + 1, per_mask=right) if damage == "other ids" else \
            dict(ids=source.ids, per_mask=right[:1])
        scorer.cache.put(request, arrays)
    fresh = Scorer(cache=ScoreCache(tmp_path, read_only_roots=()))
    assert not fresh.is_cached(loaded(model), source, spec)
    np.testing.assert_allclose(fresh.scores(loaded(model), source, spec).per_mask, right, rtol=1e-6)
    assert Scorer(cache=ScoreCache(tmp_path, read_only_roots=())).is_cached(loaded(model), source, spec)


def test_many_masks_are_split_across_forwards_with_the_same_scores(make_model, make_source, monkeypatch):
    model, source = make_model(norm_pix_loss=True), make_source(5)
    spec = ScoreSpec(mask_ratio=0.6, num_masks=7, seed=3)
    whole = score_distances(model, source, spec, batch_size=5)[1]
    rows, real = [], scores.batch_distances

    def counting(model, imgs, noise, *args):
        rows.append(noise.shape[0] * noise.shape[1])
        return real(model, imgs, noise, *args)
    monkeypatch.setattr(scores, "batch_distances", counting)
    c = model.config
    widest = (c.num_patches + 1) * max(c.embed_dim, c.decoder_embed_dim) * c.mlp_ratio * 4
    monkeypatch.setattr(runtime, "CPU_ACTIVATION_BYTES", 3 * widest)  # 3 image-masks per forward
    assert runtime.rows_per_forward(model, torch.device("cpu"), 5) == 3
    split = score_distances(model, source, spec, batch_size=5)[1]
    assert max(rows) == 3 and rows.count(3) == 2 * 5 and rows.count(1) == 5  # masks 0-2, 3-5, 6 per image
    for d in DISTANCES:
        np.testing.assert_array_equal(split[d], whole[d], err_msg=d)  # bit for bit


def test_a_mask_ratio_that_leaves_no_patch_visible_is_refused(make_model, make_source):
    model, source = make_model(), make_source(2)  # 16 patches
    with pytest.raises(ValueError, match=r"mask_ratio 0.99 leaves none of the 16 patches visible .* largest ratio "
                                         r"that keeps one patch visible is 0.9375"):
        score_images(model, source, ScoreSpec(mask_ratio=0.99))
    assert score_images(model, source, ScoreSpec(mask_ratio=0.9375, num_masks=1)).per_mask.shape == (1, 2)


@pytest.mark.parametrize("seed", [-1, 2**63, 2**64 + 5, 1.5, True])
def test_a_seed_outside_64_bits_is_refused_by_name(seed):
    with pytest.raises(ValueError, match=rf"seed must lie in 0..2\*\*63-1, got {re.escape(repr(seed))}"):
        ScoreSpec(seed=seed)
    with pytest.raises(ValueError, match=r"seed must lie in 0..2\*\*63-1"):
        mask_noise(seed, [1, 2], 1, 16)
    assert ScoreSpec(seed=np.int64(2**63 - 1)).seed == 2**63 - 1


def test_non_finite_scores_are_refused_naming_the_model():
    per = np.array([[1.0, np.nan, 2.0], [np.inf, 1.0, 1.0]])
    scores = Scores(np.array([1, 2, 3]), per, ScoreSpec(num_masks=2))
    with pytest.raises(ValueError, match=r"model ck/target: 2 of 6 scores are NaN or infinite \(masked_mse at mask "
                                         r"ratio 0.75, per image and mask\)"):
        scores.require_finite("ck/target")
    ok = Scores(np.array([1, 2, 3]), np.ones((2, 3)), ScoreSpec(num_masks=2))
    assert ok.require_finite("m") is ok


def test_an_unwritable_cache_warns_and_still_returns_the_scores(make_model, make_source, tmp_path):
    from mimmia_core.atomic import WriteWarning
    (tmp_path / "file").write_text("in the way")
    model, source, spec = make_model(), make_source(3), ScoreSpec(num_masks=2)
    scorer = Scorer(cache=ScoreCache(tmp_path / "file" / "cache", read_only_roots=()))
    with pytest.warns(WriteWarning, match="could not write the score cache"):
        got = scorer.scores(loaded(model), source, spec)
    np.testing.assert_array_equal(got.per_mask, score_images(model, source, spec).per_mask)


def test_store_distances_are_checked():
    with pytest.raises(ValueError, match=r"store_distances: unknown distances \['ssim'\]"):
        Scorer(store_distances=("masked_mse", "ssim"))


def _score_cli(tmp_path, model, images, *extra):
    """`mimmia score` on a saved tiny model and the images: (exit code, stdout + stderr, --out path)."""
    save_checkpoint(model, tmp_path / "ck")
    np.savez(tmp_path / "data.npz", images=images.images(np.arange(4)), ids=images.ids)
    out, text = tmp_path / "scores.csv", io.StringIO()
    with contextlib.redirect_stdout(text), contextlib.redirect_stderr(text):
        code = main(["score", "--model", str(tmp_path / "ck"), "--data", f"npz:{tmp_path / 'data.npz'}",
                     "--num-masks", "2", "--out", str(out), "--device", "cpu", "--no-cache", *extra])
    return code, text.getvalue(), out


def test_score_cli_refuses_non_finite_scores(make_model, make_source, tmp_path):
    model = make_model()
    with torch.no_grad():
        model.decoder_pred.bias[0] = float("nan")
    code, text, out = _score_cli(tmp_path, model, make_source(4))
    assert code == 2 and not out.exists()
    assert f"mimmia score: error: model {tmp_path / 'ck'}: 8 of 8 scores are NaN or infinite (masked_mse" in text


def test_score_cli_keeps_the_scores_when_out_cannot_be_written(make_model, make_source, tmp_path, monkeypatch):
    from mimmia_core import atomic
    real = atomic.atomic_write_bytes

    def refuse_out(path, data):
        if Path(path) == tmp_path / "scores.csv":
            raise PermissionError(13, "Permission denied", str(path))
        return real(path, data)
    monkeypatch.setattr(atomic, "atomic_write_bytes", refuse_out)
    model = make_model()
    code, text, out = _score_cli(tmp_path, model, make_source(4), "--distance", "pixel_mse_raw")
    assert code == 0 and not out.exists()
    saved = Path(re.search(r"it is saved at (\S+) instead", text).group(1))
    assert "warning: could not write the scores to" in text and f"wrote {saved}" in text
    rows = saved.read_text().splitlines()
    want = score_images(model, make_source(4), ScoreSpec(num_masks=2, distance="pixel_mse_raw"))
    assert rows[0] == "id,mean_pixel_mse_raw,mask_0,mask_1" and len(rows) == 5
    assert [float(r.split(",")[3]) for r in rows[1:]] == pytest.approx(want.per_mask[1], rel=1e-6)


def test_sign_floor_and_aggregation_have_one_definition():
    from mimmia_core.distances import (DISTANCE_FLOOR, aggregate_masks, distance_sign, log_distance, member_signal,
                                       psnr)
    assert distance_sign("psnr") == 1.0 and all(distance_sign(d) == -1.0 for d in DISTANCES if d != "psnr")
    with pytest.raises(ValueError, match="unknown distance"):
        distance_sign("ssim")
    per = np.array([[1.0, 4.0], [3.0, 2.0], [2.0, 9.0]])
    np.testing.assert_array_equal(member_signal(per, "pixel_l1"), -per)
    np.testing.assert_array_equal(aggregate_masks(per, "median"), [2.0, 4.0])
    s = Scores(np.array([5, 6]), per, ScoreSpec(num_masks=3, distance="psnr"))
    np.testing.assert_array_equal(s.distances(), -per)
    np.testing.assert_array_equal(s.signal("min"), [1.0, 2.0])
    # one floor: a perfect reconstruction's PSNR is 100 dB, and its log distance is the log of that floor,
    # whether it is read as pixel_mse or as PSNR
    mse = torch.tensor([0.0, 1e-12, 1e-4], dtype=torch.float64)
    db = psnr(mse).numpy()
    np.testing.assert_allclose(db, [100.0, 100.0, 40.0])
    np.testing.assert_allclose(log_distance(db, "psnr"), log_distance(mse.numpy(), "pixel_mse"), rtol=1e-12)
    assert log_distance([0.0], "masked_mse")[0] == np.log(DISTANCE_FLOOR)


def test_progress_is_per_call_and_with_progress_shares_the_memo(make_model, make_source):
    model, source, spec = make_model(), make_source(5), ScoreSpec(num_masks=2)
    default, mine = [], []
    scorer = Scorer(batch_size=2, progress=lambda d, t: default.append(d))
    scorer.scores(loaded(model), source, spec, progress=lambda d, t: mine.append(d))
    assert mine == [2, 4, 5] and default == []
    scorer.similarity(loaded(model), source, num_views=2)
    assert default == [2, 4, 5]
    other = []
    view = scorer.with_progress(lambda d, t: other.append(d))
    assert view.is_cached(loaded(model), source, spec)  # the same memo
    view.scores(loaded(model), source, replace_seed(spec))
    assert other == [2, 4, 5] and scorer.is_cached(loaded(model), source, replace_seed(spec))


def replace_seed(spec):
    return dataclasses.replace(spec, seed=spec.seed + 1)


def test_a_scoring_pass_does_not_block_cached_reads(make_model, make_source, monkeypatch):
    import threading

    from mimmia_core import scorer as scorer_module
    model, spec = make_model(), ScoreSpec(num_masks=1)
    cached, slow = make_source(3), make_source(3, seed=1)
    scorer = Scorer()
    want = scorer.scores(loaded(model), cached, spec).per_mask
    started, release, real = threading.Event(), threading.Event(), scorer_module.score_distances

    def blocking(*args, **kwargs):
        started.set()
        assert release.wait(10)
        return real(*args, **kwargs)
    monkeypatch.setattr(scorer_module, "score_distances", blocking)
    worker = threading.Thread(target=scorer.scores, args=(loaded(model), slow, spec))
    worker.start()
    assert started.wait(10)
    try:
        assert scorer.is_cached(loaded(model), cached, spec) and not scorer.is_cached(loaded(model), slow, spec)
        np.testing.assert_array_equal(scorer.scores(loaded(model), cached, spec).per_mask, want)  # served meanwhile
    finally:
        release.set()
        worker.join(10)
    assert scorer.is_cached(loaded(model), slow, spec)


def test_fewer_masks_are_served_from_a_wider_cached_entry(make_model, make_source, tmp_path):
    """Mask k depends on (seed, image id, k) only: K = 2 is the first two rows of a cached K = 5."""
    model, source = make_model(), make_source(4)
    passes = []
    Scorer(cache=ScoreCache(tmp_path)).scores(loaded(model), source, ScoreSpec(num_masks=5, seed=3))
    fresh = Scorer(cache=ScoreCache(tmp_path), progress=lambda done, total: passes.append(done))
    narrow = ScoreSpec(num_masks=2, seed=3, distance="psnr")
    assert fresh.is_cached(loaded(model), source, narrow)
    got = fresh.scores(loaded(model), source, narrow)
    assert passes == [] and got.per_mask.shape == (2, 4) and got.spec == narrow
    np.testing.assert_allclose(got.per_mask, score_images(model, source, narrow).per_mask, rtol=1e-6)
    assert not fresh.is_cached(loaded(model), source, ScoreSpec(num_masks=6, seed=3))
    assert not fresh.is_cached(loaded(model), source, ScoreSpec(num_masks=2, seed=4))
