"""Score packs: the bundled grid's storage. Compact but checked: every value within COMPACT_RTOL, a request
answered only by its own entry, PSNR derived exactly as distances.psnr would give it, and a Scorer that
reads a pack never scores."""
import numpy as np
import torch

from mimmia_core.attacks import run_attack
from mimmia_core.cache import ScoreCache
from mimmia_core.cache_request import COMPACT_RTOL, compact_array
from mimmia_core.distances import psnr
from mimmia_core.experiment import load_demo_experiment
from mimmia_core.score_pack import ScorePack, write_pack
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


def test_compact_array_keeps_what_float16_cannot_hold():
    assert compact_array(np.array([0.1, 20.0])).dtype == np.float16
    assert compact_array(np.array([1e-9, 0.1])).dtype == np.float64  # subnormal in float16: kept exact
    assert compact_array(np.array([1e6])).dtype == np.float64  # beyond float16's range
    assert compact_array(np.array([3, 4])).dtype.kind == "i"


def test_pack_answers_each_request_within_rtol_and_derives_psnr(tmp_path):
    ids, mse, entries = _entries()
    pack = ScorePack(write_pack(entries, tmp_path / "scores.pack.npz"))
    got = pack.get(_request("pixel_mse"))
    np.testing.assert_array_equal(got["ids"], ids)
    assert got["per_mask"].dtype == np.float16
    assert np.all(np.abs(got["per_mask"] - mse) <= COMPACT_RTOL * mse)
    derived = pack.get(_request("psnr"))["per_mask"]
    np.testing.assert_allclose(derived, psnr(torch.from_numpy(got["per_mask"].astype(np.float64))).numpy())
    np.testing.assert_allclose(derived, -10 * np.log10(mse), rtol=COMPACT_RTOL)
    with np.load(tmp_path / "scores.pack.npz") as z:
        assert sum(name.startswith("ids") for name in z.files) == 1  # shared ids stored once
        assert not any(name.endswith("per_mask") and "psnr" in name for name in z.files)
    assert pack.get(_request("masked_mse")) is None  # m1 has no masked_mse entry
    assert pack.get({**_request("pixel_mse"), "precision": "bf16"}) is None


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
