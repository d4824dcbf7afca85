"""An on-disk cache of score arrays, keyed on explicit fingerprints.

An entry answers one request: the model fingerprint (weights and config), the
source fingerprint, the scoring spec, precision and code version. Its key is
the sha256 of the request's canonical JSON, and the entry stores the request
itself, so a read checks that the entry answers this request (a renamed,
tampered or colliding file is a miss). Entries are .npz files written
atomically; stale temporary files are removed.

The demo bundle ships its scores as a pack of entries (score_pack.py), which
read-only roots serve as well.
"""
import io
import json
import os
import warnings
from pathlib import Path

import numpy as np

from .assets import DEMO_DIR
from .atomic import WriteWarning, atomic_write_bytes, clean_stale_tmp
from .cache_request import canonical, request_key
from .score_pack import packs_in

BUNDLED_CACHE = DEMO_DIR / "cache"  # the demo bundle's precomputed scores, wherever assets.py finds it
REQUEST = "request"  # the array holding an entry's request


def default_cache_dir() -> Path:
    return Path(os.environ.get("MIMMIA_CACHE") or Path.home() / ".cache" / "mimmia")


class ScoreCache:
    """Arrays by request under `root` (default: $MIMMIA_CACHE or ~/.cache/mimmia).

    `read_only_roots` are searched after `root` and never written, their entry files
    and their packs (score_pack.py): by default the demo bundle's precomputed scores,
    which only ever match the demo's own models and data since requests hold
    fingerprints.
    """

    def __init__(self, root=None, read_only_roots=(BUNDLED_CACHE,)):
        self.root = Path(root) if root is not None else default_cache_dir()
        self.read_only_roots = tuple(Path(r) for r in read_only_roots)
        self._packs = [pack for r in self.read_only_roots for pack in packs_in(r)]
        clean_stale_tmp(self.root)  # on opening, and again at the first write
        self._cleaned = False

    @staticmethod
    def key(request: dict) -> str:
        """sha256 of the request's canonical JSON."""
        return request_key(request)

    def path(self, key: str) -> Path:
        if len(key) != 64 or any(ch not in "0123456789abcdef" for ch in key):
            raise ValueError(f"not a cache key: {key!r}")
        return self.root / f"{key}.npz"

    def get(self, request: dict) -> dict[str, np.ndarray] | None:
        """The arrays stored for this request, or None: absent, unreadable, or an entry for another request."""
        name, text = self.path(self.key(request)).name, canonical(request)
        for root in (self.root, *self.read_only_roots):
            try:
                with np.load(root / name, allow_pickle=False) as z:
                    if REQUEST not in z.files or str(z[REQUEST]) != text:
                        continue
                    return {n: z[n] for n in z.files if n != REQUEST}
            except Exception:  # noqa: BLE001 -- damaged bytes raise many types (BadZipFile, NotImplementedError ...)
                continue  # unreadable: a miss, recomputed
        for pack in self._packs:
            arrays = pack.get(request)
            if arrays is not None:
                return arrays
        return None

    def entries(self):
        """(request, arrays) of every readable entry in `root` (not the read-only roots)."""
        for path in sorted(self.root.glob("*.npz")):
            try:
                with np.load(path, allow_pickle=False) as z:
                    request = json.loads(str(z[REQUEST]))
                    arrays = {n: z[n] for n in z.files if n != REQUEST}
            except Exception:  # noqa: BLE001 -- a damaged entry is skipped, as a read would miss it
                continue
            yield request, arrays

    def put(self, request: dict, arrays: dict) -> Path | None:
        """Store arrays for the request; a cache that cannot be written warns (WriteWarning) and returns None."""
        buf = io.BytesIO()
        np.savez(buf, **{name: np.asarray(a) for name, a in arrays.items()}, **{REQUEST: np.array(canonical(request))})
        try:
            if not self._cleaned:
                clean_stale_tmp(self.root)
                self._cleaned = True
            return atomic_write_bytes(self.path(self.key(request)), buf.getvalue())
        except OSError as e:
            warnings.warn(f"could not write the score cache in {self.root} ({e.strerror or e}); the scores were "
                          f"computed and are used, but not cached: set --cache-dir or $MIMMIA_CACHE to a writable "
                          f"folder", WriteWarning, stacklevel=2)
            return None


__all__ = ["ScoreCache", "default_cache_dir", "BUNDLED_CACHE"]
