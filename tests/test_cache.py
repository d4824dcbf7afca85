import numpy as np
import pytest

from mimmia_core import atomic as mio
from mimmia_core.cache import ScoreCache

PARTS = dict(model="ab12", source="cd34", spec={"mask_ratio": 0.75, "num_masks": 8, "seed": 0,
                                                "distance": "masked_mse"}, precision="fp32", version=1)


def test_roundtrip_returns_equal_arrays(tmp_path):
    cache = ScoreCache(tmp_path)
    key = cache.key(**PARTS)
    assert cache.get(key) is None
    arrays = {"ids": np.arange(5, dtype=np.int64), "per_mask": np.random.default_rng(0).random((3, 5))}
    cache.put(key, arrays)
    got = cache.get(key)
    assert set(got) == {"ids", "per_mask"}
    for name in arrays:
        np.testing.assert_array_equal(got[name], arrays[name])
        assert got[name].dtype == arrays[name].dtype


def test_key_is_canonical_and_depends_on_every_part():
    cache = ScoreCache("unused")
    key = cache.key(**PARTS)
    assert len(key) == 64
    assert cache.key(**dict(reversed(list(PARTS.items())))) == key  # order does not matter
    for name, other in [("model", "ab13"), ("source", "cd35"), ("precision", "bf16"), ("version", 2),
                        ("spec", {**PARTS["spec"], "seed": 1}), ("spec", {**PARTS["spec"], "distance": "psnr"})]:
        assert cache.key(**{**PARTS, name: other}) != key, name
    with pytest.raises(ValueError, match="JSON"):
        cache.key(model=object())
    with pytest.raises(ValueError, match="JSON"):
        cache.key(ratio=float("nan"))


def test_default_root_follows_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("MIMMIA_CACHE", str(tmp_path / "c"))
    assert ScoreCache().root == tmp_path / "c"


def test_failed_write_leaves_no_partial_file(tmp_path, monkeypatch):
    cache = ScoreCache(tmp_path)
    key = cache.key(**PARTS)

    def broken_replace(src, dst):
        raise OSError("disk full")
    monkeypatch.setattr(mio.os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk full"):
        cache.put(key, {"x": np.ones(3)})
    assert list(tmp_path.iterdir()) == []
    assert cache.get(key) is None


def test_corrupt_entry_is_a_miss(tmp_path):
    cache = ScoreCache(tmp_path)
    key = cache.key(**PARTS)
    cache.path(key).write_bytes(b"not an npz")
    assert cache.get(key) is None
    with pytest.raises(ValueError, match="not a cache key"):
        cache.path("../etc/passwd")


def test_read_only_roots_are_searched_but_never_written(tmp_path):
    bundled, own = ScoreCache(tmp_path / "bundled", read_only_roots=()), tmp_path / "own"
    key = ScoreCache.key(model="m", source="s")
    bundled.put(key, {"a": np.arange(3.0)})
    cache = ScoreCache(own, read_only_roots=(tmp_path / "bundled",))
    assert key in cache and np.array_equal(cache.get(key)["a"], np.arange(3.0))
    other = ScoreCache.key(model="m", source="t")
    assert other not in cache and cache.get(other) is None
    cache.put(other, {"a": np.ones(2)})
    assert (own / f"{other}.npz").is_file() and not (tmp_path / "bundled" / f"{other}.npz").exists()
