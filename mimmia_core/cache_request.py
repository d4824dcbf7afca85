"""What a cache entry answers and how its arrays are stored: the request's canonical JSON, its key, and
the compact (float16) form of score arrays that the bundled caches use."""
import hashlib
import json

import numpy as np

COMPACT_RTOL = 1e-3  # float16's relative rounding is at most 2**-11 (4.9e-4) for normal numbers


def canonical(request: dict) -> str:
    """The request as canonical JSON; its parts must be JSON values (str, finite numbers, lists, dicts)."""
    try:
        return json.dumps(request, sort_keys=True, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError) as e:
        raise ValueError(f"cache request parts must be finite JSON values, got {request!r} ({e})") from e


def request_key(request: dict) -> str:
    """sha256 of the request's canonical JSON."""
    return hashlib.sha256(canonical(request).encode()).hexdigest()


def compact_array(a) -> np.ndarray:
    """a as float16 if it is a float array whose every value float16 holds within COMPACT_RTOL, else a."""
    a = np.asarray(a)
    if a.dtype.kind != "f" or a.dtype == np.float16:
        return a
    with np.errstate(over="ignore", under="ignore", invalid="ignore"):
        half = a.astype(np.float16)
        fits = np.isfinite(a).all() and (np.abs(half.astype(np.float64) - a) <= COMPACT_RTOL * np.abs(a)).all()
    return half if fits else a


__all__ = ["canonical", "request_key", "compact_array", "COMPACT_RTOL"]
