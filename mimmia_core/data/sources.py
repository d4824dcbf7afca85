"""Image sources: uint8 images (N, H, W, C) with stable int64 ids, streamed batch by batch."""
import hashlib

import numpy as np

INT64_MIN, INT64_MAX = -2 ** 63, 2 ** 63 - 1
DTYPE_KINDS = {"b": "boolean", "f": "float", "c": "complex", "U": "text", "S": "bytes"}


def _ids_range_error(value, what: str) -> ValueError:
    return ValueError(f"ids must fit in int64 (-2**63 to 2**63 - 1); {what} holds {value}")


def as_ids(ids, what: str) -> np.ndarray:
    """`ids` as int64 ids, refusing anything that would be truncated or wrap around: float ids (even 3.0),
    booleans, text, and ids outside int64. Negative ids are allowed (mask seeding takes any int64).
    `what` names the ids in messages."""
    arr = np.asarray(ids, dtype=object) if isinstance(ids, (list, tuple, int)) else np.asarray(ids)
    if arr.dtype == object:  # Python ints stay exact here, however large
        for v in arr.flat:
            if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, np.integer)):
                v = v.item() if isinstance(v, np.generic) else v
                kind = DTYPE_KINDS.get(np.asarray(v).dtype.kind, type(v).__name__)
                raise ValueError(f"ids must be integers; {what} holds {kind} ids such as {v!r}")
            if not INT64_MIN <= v <= INT64_MAX:
                raise _ids_range_error(v, what)
        return arr.astype(np.int64)
    if arr.size and arr.dtype.kind not in "iu":
        flat = arr.ravel()
        odd = flat[flat != np.floor(flat)] if arr.dtype.kind == "f" else flat[:0]
        example = (odd if odd.size else flat)[0].item()
        raise ValueError(f"ids must be integers; {what} holds {DTYPE_KINDS.get(arr.dtype.kind, str(arr.dtype))} "
                         f"ids such as {example!r}")
    if arr.dtype.kind == "u" and arr.size and arr.max() > INT64_MAX:
        raise _ids_range_error(int(arr.max()), what)
    return arr.astype(np.int64)


class UnknownIdsError(KeyError, ValueError):
    """Ids a source does not hold: a ValueError, and a KeyError for callers that catch that."""
    __str__ = Exception.__str__


class ImageSource:
    """Base class: subclasses set `name` and `ids` and implement `images`."""
    name: str = "images"
    ids: np.ndarray
    labels: np.ndarray | None = None
    spec: str | None = None  # the open_source() spec that reopens this source, if any

    def __len__(self) -> int:
        return len(self.ids)

    def images(self, positions) -> np.ndarray:
        raise NotImplementedError

    @property
    def image_shape(self) -> tuple:
        if len(self) == 0:
            raise ValueError(f"{self.name} holds no images, so it has no image shape")
        return tuple(self.images(np.arange(1))[0].shape)

    def fingerprint(self) -> str:
        """A hash of the ids and the decoded pixels, computed once."""
        if getattr(self, "_fingerprint", None) is None:
            h = hashlib.sha256(self.ids.astype("<i8").tobytes())
            for _, images in self.batches(4096):
                h.update(np.ascontiguousarray(images).tobytes())
            self._fingerprint = h.hexdigest()[:16]
        return self._fingerprint

    def batches(self, batch_size: int):
        """Yield (ids, images) in order, batch_size images at a time."""
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        for start in range(0, len(self), batch_size):
            pos = np.arange(start, min(start + batch_size, len(self)))
            yield self.ids[pos], self.images(pos)

    def positions_of(self, ids) -> np.ndarray:
        ids = as_ids(ids, f"the ids asked of {self.name}")
        if len(self.ids) == 0 and ids.size:
            raise UnknownIdsError(f"{self.name} holds no images; {ids.size} ids asked, e.g. {ids.ravel()[:5].tolist()}")
        order = np.argsort(self.ids, kind="stable")
        found = np.searchsorted(self.ids, ids, sorter=order)
        found = np.clip(found, 0, len(self.ids) - 1)
        pos = order[found]
        bad = self.ids[pos] != ids
        if bad.any():
            raise UnknownIdsError(f"{self.name}: {int(bad.sum())} ids not in the source, e.g. {ids[bad][:5].tolist()}")
        return pos

    def subset(self, ids, name: str | None = None) -> "ImageSource":
        return Subset(self, ids, name)


class ArraySource(ImageSource):
    """Images held in memory (Fashion-MNIST, CIFAR, .npz files, the demo bundle)."""

    def __init__(self, images: np.ndarray, ids=None, labels=None, name: str = "array"):
        images = np.asarray(images)
        if images.ndim == 3:
            images = images[..., None]
        if images.ndim != 4 or images.shape[-1] not in (1, 3):
            raise ValueError(f"{name}: images must be (N, H, W) or (N, H, W, 1|3), got shape {images.shape}")
        if images.dtype != np.uint8:
            raise ValueError(f"{name}: images must be uint8, got {images.dtype}")
        self._images = images
        self.ids = np.arange(len(images), dtype=np.int64) if ids is None else as_ids(ids, f"the ids of {name}")
        if self.ids.shape != (len(images),) or len(np.unique(self.ids)) != len(self.ids):
            raise ValueError(f"{name}: ids must be unique, one per image ({len(images)} images, "
                             f"{self.ids.size} ids, {len(np.unique(self.ids))} distinct)")
        self.labels = None if labels is None else np.asarray(labels)
        if self.labels is not None and len(self.labels) != len(images):
            raise ValueError(f"{name}: {len(self.labels)} labels for {len(images)} images")
        self.name = name

    def images(self, positions) -> np.ndarray:
        return self._images[np.asarray(positions)]


class Subset(ImageSource):
    """The images of `source` with the given ids, in that order."""

    def __init__(self, source: ImageSource, ids, name: str | None = None):
        self.source = source
        self._pos = source.positions_of(ids)
        self.ids = source.ids[self._pos]
        self.labels = None if source.labels is None else source.labels[self._pos]
        self.name = name or f"{source.name}[{len(self.ids)}]"

    def images(self, positions) -> np.ndarray:
        return self.source.images(self._pos[np.asarray(positions)])


def source_spec(source: ImageSource) -> str:
    """The spec that reopens `source` with open_source."""
    if not source.spec:
        raise ValueError(f"{source.name} was not opened from a spec; save it with numpy.savez "
                         f"(images, ids, labels) and open it as npz:PATH")
    return source.spec
