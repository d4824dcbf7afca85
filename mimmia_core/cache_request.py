"""What a cache entry answers: the request's canonical JSON and its key."""
import hashlib
import json


def canonical(request: dict) -> str:
    """The request as canonical JSON; its parts must be JSON values (str, finite numbers, lists, dicts)."""
    try:
        return json.dumps(request, sort_keys=True, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError) as e:
        raise ValueError(f"cache request parts must be finite JSON values, got {request!r} ({e})") from e


def request_key(request: dict) -> str:
    """sha256 of the request's canonical JSON."""
    return hashlib.sha256(canonical(request).encode()).hexdigest()


__all__ = ["canonical", "request_key"]
