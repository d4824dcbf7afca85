"""A score pack: many cache entries in one read-only .npz, as the demo bundle ships its grid of scores.

A ScoreCache entry per file repeats its ids, its request and a zip header; thousands of them (every
mask ratio of the slider, every distance, every model and source) would not fit the bundle. A pack
stores each entry's arrays compact (cache_request.compact_array: float16 within COMPACT_RTOL; a float16
array as its high bytes, then its low bytes), each distinct ids array once, and an index of key -> request, so a read still checks that the entry answers the
request. PSNR entries that equal distances.psnr of the pack's pixel_mse entry (within COMPACT_RTOL)
are not stored but derived from it on reading. Members are read lazily, one entry at a time.
"""
import hashlib
import io
import json
import threading
from pathlib import Path

import numpy as np
import torch

from .atomic import atomic_write_bytes
from .cache_request import COMPACT_RTOL, canonical, compact_array, request_key
from .distances import psnr

PACK_SUFFIX = ".pack.npz"
INDEX = "index"  # the member holding the JSON index
PACK_VERSION = 2


def _psnr_of(pixel_mse: np.ndarray) -> np.ndarray:
    return psnr(torch.from_numpy(np.asarray(pixel_mse, np.float64))).numpy()


def _pixel_mse_request(request: dict) -> dict | None:
    spec = request.get("spec")
    if request.get("kind") != "scores" or not spec or spec.get("distance") != "psnr":
        return None
    return {**request, "spec": {**spec, "distance": "pixel_mse"}}


def _derivable(entries: dict, request: dict, arrays: dict) -> str | None:
    """The key of the pixel_mse entry a PSNR entry is derived from, if it reproduces it; else None."""
    source = _pixel_mse_request(request)
    key = None if source is None else request_key(source)
    if key not in entries:
        return None
    derived = _psnr_of(entries[key][1]["per_mask"])
    exact = np.asarray(arrays["per_mask"], np.float64)
    if derived.shape != exact.shape or not np.all(np.abs(derived - exact) <= COMPACT_RTOL * np.abs(exact)):
        return None
    return key


def _shuffled(a: np.ndarray) -> tuple[np.ndarray, tuple | None]:
    """A float16 array as (2, size) uint8 planes (high bytes, low bytes) and its shape; others as they are."""
    if a.dtype != np.float16:
        return a, None
    planes = np.ascontiguousarray(a, dtype="<f2").view(np.uint8).reshape(-1, 2).T[::-1]
    return np.ascontiguousarray(planes), a.shape


def _unshuffled(planes: np.ndarray, shape) -> np.ndarray:
    return np.ascontiguousarray(planes[::-1].T).view("<f2").reshape(shape)


def write_pack(entries, path) -> Path:
    """Write (request, arrays) pairs (arrays: "ids" plus score arrays) as one pack at `path`, atomically."""
    entries = {request_key(request): (request, arrays) for request, arrays in entries}
    index, members, ids_names = {}, {}, {}
    for key, (request, arrays) in entries.items():
        ids = np.ascontiguousarray(arrays["ids"], dtype=np.int64)
        ids_name = ids_names.setdefault(hashlib.sha256(ids.tobytes()).hexdigest()[:16], f"ids-{len(ids_names)}")
        members[ids_name] = ids
        item = {"request": canonical(request), "ids": ids_name, "arrays": {}}
        source = _derivable(entries, request, arrays)
        if source is not None:
            item["psnr_of"] = source
        else:
            for name, a in arrays.items():
                if name != "ids":
                    item["arrays"][name] = f"{key}-{name}"
                    members[f"{key}-{name}"], shape = _shuffled(compact_array(a))
                    if shape is not None:
                        item.setdefault("float16", {})[name] = list(shape)
        index[key] = item
    buf = io.BytesIO()
    np.savez_compressed(buf, **members, **{INDEX: np.array(json.dumps({"version": PACK_VERSION, "entries": index}))})
    return atomic_write_bytes(Path(path), buf.getvalue())


class ScorePack:
    """A pack opened for reading (once, then kept open); `get(request)` is ScoreCache.get's answer from it."""

    def __init__(self, path):
        self.path = Path(path)
        self._file, self._index = None, None
        self._lock = threading.Lock()  # one reader at a time: a zip file is not read safely by two threads

    def _open(self) -> dict:
        """The index, opening the pack at the first call; a damaged pack has an empty index."""
        if self._index is None:
            try:
                self._file = np.load(self.path, allow_pickle=False)
                doc = json.loads(str(self._file[INDEX]))
                self._index = doc["entries"] if doc.get("version") == PACK_VERSION else {}
            except Exception:  # noqa: BLE001 -- a damaged pack is a miss for every request
                self._index = {}
        return self._index

    def get(self, request: dict) -> dict[str, np.ndarray] | None:
        with self._lock:
            return self._get(request)

    def _get(self, request: dict) -> dict[str, np.ndarray] | None:
        item = self._open().get(request_key(request))
        if item is None or item["request"] != canonical(request):
            return None
        try:
            arrays = {"ids": self._file[item["ids"]]}
            for name, member in item["arrays"].items():
                shape = item.get("float16", {}).get(name)
                arrays[name] = self._file[member] if shape is None else _unshuffled(self._file[member], shape)
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


__all__ = ["ScorePack", "write_pack", "packs_in", "PACK_SUFFIX"]
