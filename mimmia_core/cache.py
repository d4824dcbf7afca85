"""An on-disk cache of score arrays, keyed on explicit fingerprints.

A key is the sha256 of the canonical JSON of what the arrays were computed
from (model weights fingerprint, source fingerprint, scoring spec, code
version), never of the arrays or models themselves. Entries are .npz files
written atomically, so a reader sees a whole entry or none.
"""
import hashlib
import io
import json
import os
import zipfile
from pathlib import Path

import numpy as np

from .atomic import atomic_write_bytes


BUNDLED_CACHE = Path(__file__).resolve().parent.parent / "assets" / "demo" / "cache"


def default_cache_dir() -> Path:
    return Path(os.environ.get("MIMMIA_CACHE") or Path.home() / ".cache" / "mimmia")


class ScoreCache:
    """Arrays by key under `root` (default: $MIMMIA_CACHE or ~/.cache/mimmia).

    `read_only_roots` are searched after `root` and never written: by default the
    demo bundle's precomputed scores, which only ever match the demo's own
    models and data since keys are fingerprints.
    """

    def __init__(self, root=None, read_only_roots=(BUNDLED_CACHE,)):
        self.root = Path(root) if root is not None else default_cache_dir()
        self.read_only_roots = tuple(Path(r) for r in read_only_roots)

    @staticmethod
    def key(**parts) -> str:
        """sha256 of the parts as canonical JSON; parts must be JSON values (str, numbers, lists, dicts)."""
        try:
            text = json.dumps(parts, sort_keys=True, separators=(",", ":"), allow_nan=False)
        except (TypeError, ValueError) as e:
            raise ValueError(f"cache key parts must be finite JSON values, got {parts!r} ({e})") from e
        return hashlib.sha256(text.encode()).hexdigest()

    def path(self, key: str) -> Path:
        if len(key) != 64 or any(ch not in "0123456789abcdef" for ch in key):
            raise ValueError(f"not a cache key: {key!r}")
        return self.root / f"{key}.npz"

    def get(self, key: str) -> dict[str, np.ndarray] | None:
        """The arrays stored under key, or None if absent or unreadable."""
        name = self.path(key).name
        for root in (self.root, *self.read_only_roots):
            try:
                with np.load(root / name, allow_pickle=False) as z:
                    return {n: z[n] for n in z.files}
            except (OSError, ValueError, EOFError, zipfile.BadZipFile):
                continue
        return None

    def __contains__(self, key: str) -> bool:
        name = self.path(key).name
        return any((root / name).is_file() for root in (self.root, *self.read_only_roots))

    def put(self, key: str, arrays: dict) -> Path:
        buf = io.BytesIO()
        np.savez(buf, **{name: np.asarray(a) for name, a in arrays.items()})
        return atomic_write_bytes(self.path(key), buf.getvalue())


__all__ = ["ScoreCache", "default_cache_dir", "BUNDLED_CACHE"]
