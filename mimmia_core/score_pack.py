"""A score pack: many cache entries in one read-only .npz, as the demo bundle ships its grid of scores.

A ScoreCache entry per file repeats its ids, its request and a zip header; thousands of them (every
mask ratio of the slider, every distance, every model and source) would not fit the bundle. A pack
holds every entry's values in one array, each distinct ids array once, and an index of key ->
request, so a read still checks that the entry answers the request.

Values are stored log-quantised: a positive float array becomes uint16 steps of its own log range,
so each value comes back within PACK_RTOL (relative; about 10x finer than float16 at the same two
bytes, and checked when writing); the steps of each mask ratio are one array, lzma-compressed as byte
planes (it finds what deflate's window cannot: pixel_mse and pixel_mse_raw nearly repeat each other)
and decompressed at its first read. An array that is
not all positive and finite, or whose range is too wide for PACK_RTOL, is kept exact (float32 where
that is lossless, as scores are computed in fp32; else float64), as are the entries named in `exact`
and, in an entry named in `patches`, the values of those images: pack_check.py names the values whose
quantisation would move a metric the dashboard shows. PSNR entries that equal distances.psnr of the
pack's pixel_mse entry (within PACK_RTOL) are not stored but derived from it on reading.
"""
import hashlib
import io
import json
import lzma
import threading
from pathlib import Path

import numpy as np
import torch

from .atomic import atomic_write_bytes
from .cache_request import canonical, request_key
from .distances import psnr

PACK_SUFFIX = ".pack.npz"
INDEX, VALUES = "index", "values"  # the members holding the JSON index and (VALUES-<chunk>) the quantised values
PATCH_COLUMNS, PATCH_VALUES = "patch-columns", "patch-values"  # the exactly kept values and their columns
PACK_VERSION = 4
PACK_RTOL = 2e-4  # the largest relative error of a quantised value
STEPS = 65535


def _psnr_of(pixel_mse: np.ndarray) -> np.ndarray:
    return psnr(torch.from_numpy(np.asarray(pixel_mse, np.float64))).numpy()


def _derivable(entries: dict, request: dict, arrays: dict, exact: set) -> str | None:
    """The key of the pixel_mse entry a PSNR entry is derived from, if it reproduces it as stored; else None."""
    spec = request.get("spec") or {}
    if request.get("kind") != "scores" or spec.get("distance") != "psnr":
        return None
    key = request_key({**request, "spec": {**spec, "distance": "pixel_mse"}})
    if key not in entries:
        return None
    mse = np.asarray(entries[key][1]["per_mask"], np.float64)
    q, lo, step = (None, 0.0, 0.0) if key in exact else _quantised(mse)
    derived = _psnr_of(mse if q is None else _dequantised(q, lo, step))
    wanted = np.asarray(arrays["per_mask"], np.float64)
    if derived.shape != wanted.shape or not np.all(np.abs(derived - wanted) <= PACK_RTOL * np.abs(wanted)):
        return None
    return key


def _quantised(a) -> tuple[np.ndarray | None, float, float]:
    """(uint16 steps, log of the smallest value, log step), or (None, 0, 0) where PACK_RTOL cannot be met."""
    a = np.asarray(a, np.float64)
    if a.size == 0 or not (np.isfinite(a).all() and (a > 0).all()):
        return None, 0.0, 0.0
    logs = np.log(a)
    lo, step = float(logs.min()), float(logs.max() - logs.min()) / STEPS or 1.0
    q = np.round((logs - lo) / step).astype(np.uint16)
    if not np.all(np.abs(np.exp(lo + q * step) - a) <= PACK_RTOL * a):
        return None, 0.0, 0.0
    return q, lo, step


def _dequantised(q, lo: float, step: float) -> np.ndarray:
    return np.exp(lo + np.asarray(q, np.float64) * step)


def _lossless(a: np.ndarray) -> np.ndarray:
    """a as float32 if that holds every value exactly, else a."""
    if a.dtype.kind != "f" or a.dtype == np.float32:
        return a
    single = a.astype(np.float32)
    return single if np.array_equal(single.astype(a.dtype), a, equal_nan=True) else a


class _Values:
    """The pack's concatenated arrays: quantised values (uint16) in chunks, one per mask ratio (a read
    decompresses only its own), and the exact patches' columns and values."""

    def __init__(self):
        self.steps, self.columns, self.exact = {}, [], []

    @staticmethod
    def _append(chunks: list, a: np.ndarray) -> int:
        offset = sum(len(c) for c in chunks)
        chunks.append(np.ravel(a))
        return offset

    def store(self, a: np.ndarray, columns, chunk: str) -> dict | None:
        """A reference to `a` quantised into `chunk` (the last-axis `columns` exact), or None where it cannot be."""
        q, lo, step = _quantised(a) if a.dtype.kind == "f" else (None, 0.0, 0.0)
        if q is None:
            return None
        ref = {"chunk": chunk, "offset": self._append(self.steps.setdefault(chunk, []), q), "shape": list(a.shape),
               "lo": lo, "step": step}
        if len(columns):
            ref["patch"] = [self._append(self.columns, columns), len(columns), self._append(self.exact, a[..., columns])]
        return ref

    def members(self) -> dict:
        """{VALUES-<chunk>: a chunk's uint16 steps as lzma-compressed byte planes, PATCH_COLUMNS, PATCH_VALUES}."""
        out = {}
        for chunk, steps in self.steps.items():
            planes = np.concatenate(steps).astype("<u2").view(np.uint8).reshape(-1, 2).T  # low bytes, then high
            out[f"{VALUES}-{chunk}"] = np.frombuffer(lzma.compress(np.ascontiguousarray(planes).tobytes(),
                                                                   preset=9 | lzma.PRESET_EXTREME), np.uint8)
        return {**out, PATCH_COLUMNS: np.concatenate(self.columns).astype(np.int32) if self.columns else np.zeros(0, np.int32),
                PATCH_VALUES: _lossless(np.concatenate(self.exact)) if self.exact else np.zeros(0, np.float32)}


def _chunk(request: dict) -> str:
    ratio = (request.get("spec") or {}).get("mask_ratio")
    return "other" if ratio is None else f"ratio{ratio:g}"


def write_pack(entries, path, exact=(), patches=None) -> Path:
    """Write (request, arrays) pairs (arrays: "ids" plus score arrays) as one pack at `path`, atomically;
    the entries whose request keys are in `exact` unquantised, and in the entry of each key of `patches`
    the values of those image ids (the last axis) exact."""
    exact, patches = set(exact), patches or {}
    entries = {request_key(request): (request, arrays) for request, arrays in entries}
    index, members, ids_names, values = {}, {}, {}, _Values()
    for key, (request, arrays) in entries.items():
        ids = np.ascontiguousarray(arrays["ids"], dtype=np.int64)
        ids_name = ids_names.setdefault(hashlib.sha256(ids.tobytes()).hexdigest()[:16], f"ids-{len(ids_names)}")
        members[ids_name] = ids
        item = {"request": canonical(request), "ids": ids_name, "arrays": {}}
        columns = np.flatnonzero(np.isin(ids, list(patches.get(key, ()))))
        source = None if key in exact or len(columns) else _derivable(entries, request, arrays, exact)
        if source is not None:
            item["psnr_of"] = source
        for name, a in arrays.items() if source is None else ():
            if name == "ids":
                continue
            a = np.asarray(a)
            columns_here = columns if a.ndim and a.shape[-1] == len(ids) else []
            ref = None if key in exact else values.store(a, columns_here, _chunk(request))
            if ref is None:
                ref = {"member": f"{key}-{name}"}
                members[ref["member"]] = _lossless(a)
            item["arrays"][name] = ref
        index[key] = item
    buf = io.BytesIO()
    np.savez_compressed(buf, **members, **values.members(),
                        **{INDEX: np.array(json.dumps({"version": PACK_VERSION, "entries": index}))})
    return atomic_write_bytes(Path(path), buf.getvalue())


class ScorePack:
    """A pack opened for reading (once, then kept open); `get(request)` is ScoreCache.get's answer from it."""

    def __init__(self, path):
        self.path = Path(path)
        self._file, self._index, self._chunks, self._patches = None, None, {}, None
        self._lock = threading.Lock()  # one reader at a time: a zip file is not read safely by two threads

    def _open(self) -> dict:
        """The index, opening the pack at the first call; a damaged pack has an empty index."""
        if self._index is None:
            try:
                self._file = np.load(self.path, allow_pickle=False)
                doc = json.loads(str(self._file[INDEX]))
                self._index = doc["entries"] if doc.get("version") == PACK_VERSION else {}
                self._patches = self._file[PATCH_COLUMNS], self._file[PATCH_VALUES].astype(np.float64)
            except Exception:  # noqa: BLE001 -- a damaged pack is a miss for every request
                self._index = {}
        return self._index

    def get(self, request: dict) -> dict[str, np.ndarray] | None:
        with self._lock:
            return self._get(request)

    def _array(self, ref: dict) -> np.ndarray:
        if "member" in ref:
            a = self._file[ref["member"]]
            return a.astype(np.float64) if a.dtype == np.float32 else a
        size = int(np.prod(ref["shape"]))
        q = self._steps(ref["chunk"])[ref["offset"]:ref["offset"] + size]
        a = _dequantised(q, ref["lo"], ref["step"]).reshape(ref["shape"])
        if "patch" in ref:
            (at, n, values_at), (columns, values) = ref["patch"], self._patches
            shape = a[..., :n].shape
            a[..., columns[at:at + n]] = values[values_at:values_at + int(np.prod(shape))].reshape(shape)
        return a

    def _steps(self, chunk: str) -> np.ndarray:
        """A chunk's uint16 steps, decompressed at its first read."""
        if chunk not in self._chunks:
            planes = np.frombuffer(lzma.decompress(self._file[f"{VALUES}-{chunk}"].tobytes()), np.uint8).reshape(2, -1)
            self._chunks[chunk] = np.ascontiguousarray(planes.T).view("<u2").ravel()
        return self._chunks[chunk]

    def _get(self, request: dict) -> dict[str, np.ndarray] | None:
        item = self._open().get(request_key(request))
        if item is None or item["request"] != canonical(request):
            return None
        try:
            arrays = {"ids": self._file[item["ids"]], **{n: self._array(r) for n, r in item["arrays"].items()}}
        except Exception:  # noqa: BLE001 -- damaged bytes raise many types
            return None
        if "psnr_of" in item:
            source = self._index.get(item["psnr_of"])
            mse = None if source is None else self._get(json.loads(source["request"]))
            if mse is None:
                return None
            arrays["per_mask"] = _psnr_of(mse["per_mask"])
        return arrays


def packs_in(folder) -> list:
    """The packs in a folder, in name order."""
    return [ScorePack(p) for p in sorted(Path(folder).glob(f"*{PACK_SUFFIX}"))]


__all__ = ["ScorePack", "write_pack", "packs_in", "PACK_SUFFIX", "PACK_RTOL"]
