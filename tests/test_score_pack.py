"""Score packs: the bundled grid's storage. Compact but checked: every value within PACK_RTOL, the values
named exact kept exact, a request answered only by its own entry, PSNR derived exactly as distances.psnr
would give it, a check that names every metric the quantisation moves, and a Scorer that reads a pack
never scores."""
import numpy as np
import torch

from mimmia_core.attacks import run_attack
from mimmia_core.cache import ScoreCache
from mimmia_core.cache_request import request_key
from mimmia_core.distances import psnr
from mimmia_core.experiment import load_demo_experiment
from mimmia_core import score_pack
from mimmia_core.pack_check import check_pack, grid_settings, pack_exactly
from mimmia_core.score_pack import PACK_RTOL, ScorePack, write_pack
from mimmia_core.scorer import Scorer
from mimmia_core.scores import ScoreSpec


def _request(distance, model="m1"):
    return dict(kind="scores", model=model, source="s1", precision="fp32", version=2,
                spec={"mask_ratio": 0.5, "num_masks": 3, "seed": 0, "distance": distance})


def _entries():
    rng = np.random.default_rng(0)
    ids = np.array([5, 9, 2, 40], dtype=np.int64)
    mse = rng.uniform(1e-3, 5e-2, (3, 4))
    return ids, mse, [(_request("pixel_mse"), {"ids": ids, "per_mask": mse}),
                      (_request("psnr"), {"ids": ids, "per_mask": -10 * np.log10(mse)}),
                      (_request("masked_mse", "m2"), {"ids": ids, "per_mask": 2 * mse})]


def test_pack_answers_each_request_within_rtol_and_derives_psnr(tmp_path):
    ids, mse, entries = _entries()
    pack = ScorePack(write_pack(entries, tmp_path / "scores.pack.npz"))
    got = pack.get(_request("pixel_mse"))
    np.testing.assert_array_equal(got["ids"], ids)
    assert got["per_mask"].dtype == np.float64 and not np.array_equal(got["per_mask"], mse)  # quantised
    assert np.all(np.abs(got["per_mask"] - mse) <= PACK_RTOL * mse)
    assert np.abs(got["per_mask"] / mse - 1).max() < 1e-4  # 65,535 steps of a range of 50x: within 3e-5
    derived = pack.get(_request("psnr"))["per_mask"]
    np.testing.assert_allclose(derived, psnr(torch.from_numpy(got["per_mask"])).numpy())
    np.testing.assert_allclose(derived, -10 * np.log10(mse), rtol=PACK_RTOL)
    with np.load(tmp_path / "scores.pack.npz") as z:
        assert sum(name.startswith("ids") for name in z.files) == 1  # shared ids stored once
        assert not any("per_mask" in name for name in z.files)  # every value in the one quantised array
    assert pack.get(_request("masked_mse")) is None  # m1 has no masked_mse entry
    assert pack.get({**_request("pixel_mse"), "precision": "bf16"}) is None


def test_named_entries_and_patched_images_come_back_exact(tmp_path):
    ids, mse, entries = _entries()
    mse32 = mse.astype(np.float32).astype(np.float64)  # scores are computed in fp32: float32 holds them exactly
    entries = [(r, {**a, "per_mask": a["per_mask"].astype(np.float32).astype(np.float64)}) for r, a in entries]
    patched, whole = request_key(_request("pixel_mse")), request_key(_request("masked_mse", "m2"))
    pack = ScorePack(write_pack(entries, tmp_path / "p.pack.npz", exact={whole}, patches={patched: {9, 40}}))
    got = pack.get(_request("pixel_mse"))["per_mask"]
    np.testing.assert_array_equal(got[:, [1, 3]], mse32[:, [1, 3]])  # ids 9 and 40: exact
    assert not np.array_equal(got[:, [0, 2]], mse32[:, [0, 2]])  # the others quantised
    np.testing.assert_array_equal(pack.get(_request("masked_mse", "m2"))["per_mask"], 2 * mse32)
    psnr_exact = entries[1][1]["per_mask"]
    np.testing.assert_allclose(pack.get(_request("psnr"))["per_mask"][:, [1, 3]], psnr_exact[:, [1, 3]], rtol=1e-6)


def test_a_positive_array_that_cannot_be_quantised_is_kept_exact(tmp_path):
    ids = np.arange(3, dtype=np.int64)
    for values in (np.array([[0.0, 0.1, 0.2]]), np.array([[1e-30, 1.0, 1e30]])):  # a zero; a range too wide
        request = _request("pixel_l1")
        pack = ScorePack(write_pack([(request, {"ids": ids, "per_mask": values})], tmp_path / "x.pack.npz"))
        np.testing.assert_array_equal(pack.get(request)["per_mask"], values)


def test_a_damaged_pack_is_a_miss_and_a_read_only_root_serves_packs(tmp_path):
    _, _, entries = _entries()
    write_pack(entries, tmp_path / "scores.pack.npz")
    cache = ScoreCache(tmp_path / "own", read_only_roots=(tmp_path,))
    assert cache.get(_request("masked_mse", "m2"))["per_mask"].shape == (3, 4)
    (tmp_path / "scores.pack.npz").write_bytes(b"not a zip")
    assert ScorePack(tmp_path / "scores.pack.npz").get(_request("pixel_mse")) is None


def test_the_bundled_grid_serves_every_slider_position_without_scoring(monkeypatch, tmp_path):
    """Any ratio of the grid, K <= 8 and any distance are served by the bundled pack (a pass would raise)."""
    exp = load_demo_experiment("cpu")
    scorer = Scorer("cpu", cache=ScoreCache(tmp_path))  # an empty own cache; the bundle's is read-only

    def no_pass(*args, **kwargs):
        raise AssertionError("scored although the bundle holds these scores")
    monkeypatch.setattr(scorer, "_score_pass", no_pass)
    for ratio, k, distance in [(0.05, 8, "masked_mse"), (0.35, 1, "psnr"), (0.75, 4, "pixel_l1"),
                               (0.95, 8, "pixel_mse_raw"), (0.5, 3, "all_mse")]:
        result = run_attack("calibrated", exp, ScoreSpec(ratio, k, 0, distance), scorer)
        assert np.isfinite(result.metrics["auc"]) and result.spec.num_masks == k, (ratio, k, distance)


def test_pack_exactly_keeps_exact_what_a_coarse_quantisation_would_move(tiny_bundle, tmp_path, monkeypatch):
    """With 63 steps per array (far coarser than the shipped 65,535) metrics do move; pack_exactly patches
    the images next to the moved thresholds (and whole entries where needed) until a whole check passes."""
    monkeypatch.setattr(score_pack, "STEPS", 63)
    monkeypatch.setattr(score_pack, "PACK_RTOL", 0.5)  # else such coarse steps are refused and stored exact
    exp = load_demo_experiment("cpu", tiny_bundle)
    exact = Scorer("cpu", cache=ScoreCache(tmp_path / "exact", read_only_roots=()), memo_size=64)
    settings = grid_settings(["paper", "calibrated"], [0.5], 2, distances=["masked_mse", "pixel_mse", "psnr"])
    for attack in ("paper", "calibrated"):
        run_attack(attack, exp, ScoreSpec(0.5, 2, 0), exact)
    entries = list(exact.cache.entries())
    path = tmp_path / "pack" / "scores.pack.npz"
    path.parent.mkdir()
    write_pack(entries, path)
    plain = Scorer("cpu", cache=ScoreCache(tmp_path / "own", read_only_roots=(path.parent,)), memo_size=64)
    assert check_pack(exp, exact, plain, settings).failures, "63 steps should move some metric"
    check, kept = pack_exactly(entries, path, exp, exact, settings)
    assert not check.failures and check.settings == len(settings)
    assert kept["patched_images"] + kept["exact_entries"] > 0
    packed = Scorer("cpu", cache=ScoreCache(tmp_path / "own2", read_only_roots=(path.parent,)), memo_size=64)
    assert not check_pack(exp, exact, packed, settings).failures  # the written pack, read afresh
