import os
import time
import warnings

import numpy as np
import pytest

from mimmia_core import atomic as mio
from mimmia_core.atomic import WriteWarning
from mimmia_core.cache import ScoreCache

REQUEST = dict(model="ab12", source="cd34", spec={"mask_ratio": 0.75, "num_masks": 8, "seed": 0,
                                                  "distance": "masked_mse"}, precision="fp32", version=1)


def test_roundtrip_returns_equal_arrays(tmp_path):
    cache = ScoreCache(tmp_path)
    assert cache.get(REQUEST) is None
    arrays = {"ids": np.arange(5, dtype=np.int64), "per_mask": np.random.default_rng(0).random((3, 5))}
    cache.put(REQUEST, arrays)
    got = cache.get(REQUEST)
    assert set(got) == {"ids", "per_mask"}
    for name in arrays:
        np.testing.assert_array_equal(got[name], arrays[name])
        assert got[name].dtype == arrays[name].dtype


def test_key_is_canonical_and_depends_on_every_part():
    key = ScoreCache.key(REQUEST)
    assert len(key) == 64
    assert ScoreCache.key(dict(reversed(list(REQUEST.items())))) == key  # order does not matter
    for name, other in [("model", "ab13"), ("source", "cd35"), ("precision", "bf16"), ("version", 2),
                        ("spec", {**REQUEST["spec"], "seed": 1}), ("spec", {**REQUEST["spec"], "distance": "psnr"})]:
        assert ScoreCache.key({**REQUEST, name: other}) != key, name
    with pytest.raises(ValueError, match="JSON"):
        ScoreCache.key({"model": object()})
    with pytest.raises(ValueError, match="JSON"):
        ScoreCache.key({"ratio": float("nan")})


def test_an_entry_for_another_request_is_a_miss(tmp_path):
    """A file under this request's key that answers another request (renamed, tampered) is never used."""
    cache = ScoreCache(tmp_path)
    other = {**REQUEST, "source": "ff00"}
    cache.put(other, {"a": np.ones(2)})
    os.replace(cache.path(ScoreCache.key(other)), cache.path(ScoreCache.key(REQUEST)))
    assert cache.get(REQUEST) is None and cache.get(other) is None


def test_default_root_follows_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("MIMMIA_CACHE", str(tmp_path / "c"))
    assert ScoreCache().root == tmp_path / "c"


def test_failed_write_warns_and_leaves_no_partial_file(tmp_path, monkeypatch):
    cache = ScoreCache(tmp_path)

    def broken_replace(src, dst):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(mio.os, "replace", broken_replace)
    with pytest.warns(WriteWarning, match="could not write the score cache .*No space left.*--cache-dir"):
        assert cache.put(REQUEST, {"x": np.ones(3)}) is None
    assert list(tmp_path.iterdir()) == []
    assert cache.get(REQUEST) is None


def test_unwritable_root_warns(tmp_path):
    (tmp_path / "file").write_text("in the way")
    cache = ScoreCache(tmp_path / "file" / "cache")
    with pytest.warns(WriteWarning, match="not cached"):
        cache.put(REQUEST, {"x": np.ones(3)})


def test_corrupt_entry_is_a_miss(tmp_path):
    cache = ScoreCache(tmp_path)
    cache.path(ScoreCache.key(REQUEST)).write_bytes(b"not an npz")
    assert cache.get(REQUEST) is None
    with pytest.raises(ValueError, match="not a cache key"):
        cache.path("../etc/passwd")


def test_stale_temporary_files_are_removed(tmp_path):
    stale, fresh = tmp_path / "x.npz.abc.tmp", tmp_path / "y.npz.def.tmp"
    stale.write_bytes(b"half")
    fresh.write_bytes(b"being written")
    old = time.time() - 2 * 3600
    os.utime(stale, (old, old))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ScoreCache(tmp_path).put(REQUEST, {"x": np.ones(3)})
    assert not stale.exists() and fresh.exists()


def test_read_only_roots_are_searched_but_never_written(tmp_path):
    bundled, own = ScoreCache(tmp_path / "bundled", read_only_roots=()), tmp_path / "own"
    request = {"model": "m", "source": "s"}
    bundled.put(request, {"a": np.arange(3.0)})
    cache = ScoreCache(own, read_only_roots=(tmp_path / "bundled",))
    assert np.array_equal(cache.get(request)["a"], np.arange(3.0))
    other = {"model": "m", "source": "t"}
    assert cache.get(other) is None
    cache.put(other, {"a": np.ones(2)})
    assert (own / f"{ScoreCache.key(other)}.npz").is_file()
    assert not (tmp_path / "bundled" / f"{ScoreCache.key(other)}.npz").exists()


def test_damaged_bytes_anywhere_are_a_miss(tmp_path):
    cache = ScoreCache(tmp_path, read_only_roots=())
    cache.put(REQUEST, {"ids": np.arange(50), "per_mask": np.random.default_rng(0).random((8, 50))})
    path = cache.path(ScoreCache.key(REQUEST))
    whole, rng = path.read_bytes(), np.random.default_rng(1)
    for cut in range(0, len(whole), 97):
        path.write_bytes(whole[:cut])
        assert cache.get(REQUEST) is None, cut
    for _ in range(100):
        damaged = bytearray(whole)
        for at in rng.integers(0, len(whole), 4):
            damaged[at] ^= 0xFF
        path.write_bytes(bytes(damaged))
        got = cache.get(REQUEST)
        assert got is None or np.array_equal(got["per_mask"], np.random.default_rng(0).random((8, 50)))


def test_stale_temporary_files_are_removed_when_a_cache_is_opened(tmp_path):
    stale, fresh = tmp_path / "a.npz.x.tmp", tmp_path / "b.npz.y.tmp"
    stale.write_bytes(b"half")
    fresh.write_bytes(b"being written")
    old = time.time() - mio.STALE_TMP_SECONDS - 60
    os.utime(stale, (old, old))
    ScoreCache(tmp_path)
    assert not stale.exists() and fresh.exists()
    ScoreCache(tmp_path / "nothing" / "yet")  # a root that does not exist yet is fine


def test_a_mismatching_bundled_entry_is_ignored(make_model, make_source, tmp_path):
    """A read-only entry that claims the request but holds other ids: recomputed, the bundle untouched."""
    import dataclasses

    from mimmia_core.checkpoint import LoadedModel
    from mimmia_core.scorer import Scorer
    from mimmia_core.scores import ScoreSpec, score_images
    model, source, spec = make_model(), make_source(4), ScoreSpec(num_masks=2)
    loaded = LoadedModel(model, "mem", "mimmia")
    bundle = ScoreCache(tmp_path / "bundle", read_only_roots=())
    request = Scorer()._request(model, source, kind="scores", spec=dataclasses.asdict(spec))
    bundle.put(request, {"ids": source.ids[::-1].copy(), "per_mask": np.zeros((2, 4))})
    before = bundle.path(ScoreCache.key(request)).read_bytes()
    scorer = Scorer(cache=ScoreCache(tmp_path / "own", read_only_roots=(tmp_path / "bundle",)))
    assert not scorer.is_cached(loaded, source, spec)
    got = scorer.scores(loaded, source, spec)
    np.testing.assert_array_equal(got.per_mask, score_images(model, source, spec).per_mask)
    assert bundle.path(ScoreCache.key(request)).read_bytes() == before
    assert Scorer(cache=ScoreCache(tmp_path / "own", read_only_roots=(tmp_path / "bundle",))).is_cached(
        loaded, source, spec)  # the fresh scores went to the own cache, which is searched first
