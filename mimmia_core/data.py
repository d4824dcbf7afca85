"""Image sources: uint8 images (N, H, W, C) with stable int64 ids.

Every source answers `len`, `ids`, `images(positions)`, `fingerprint()` and
`batches(batch_size)`; scoring and training stream from `batches`, so memory
does not grow with the number of images.
"""
import gzip
import hashlib
import struct
from pathlib import Path

import numpy as np

FASHION_MNIST_DIRS = (Path(__file__).resolve().parent.parent.parent / "shared" / "datasets" / "fashion-mnist",
                      Path("/usr/share/datasets/fashion-mnist"))
FASHION_MNIST_FILES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
                       "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}
DEMO_DATA = Path(__file__).resolve().parent.parent / "assets" / "demo" / "fashion_mnist_subset.npz"


class ImageSource:
    """Base class: subclasses set `name` and `ids` and implement `images`."""
    name: str = "images"
    ids: np.ndarray

    def __len__(self) -> int:
        return len(self.ids)

    def images(self, positions) -> np.ndarray:
        raise NotImplementedError

    @property
    def image_shape(self) -> tuple:
        return tuple(self.images(np.arange(min(1, len(self))))[0].shape)

    def fingerprint(self) -> str:
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
        ids = np.asarray(ids, dtype=np.int64)
        order = np.argsort(self.ids, kind="stable")
        found = np.searchsorted(self.ids, ids, sorter=order)
        found = np.clip(found, 0, len(self.ids) - 1)
        pos = order[found]
        bad = self.ids[pos] != ids
        if bad.any():
            raise KeyError(f"{self.name}: {int(bad.sum())} ids not in the source, e.g. {ids[bad][:5].tolist()}")
        return pos

    def subset(self, ids, name: str | None = None) -> "ImageSource":
        return Subset(self, ids, name)


class ArraySource(ImageSource):
    """Images held in memory (Fashion-MNIST, .npz files, the demo bundle)."""

    def __init__(self, images: np.ndarray, ids=None, labels=None, name: str = "array"):
        images = np.asarray(images)
        if images.ndim == 3:
            images = images[..., None]
        if images.ndim != 4 or images.shape[-1] not in (1, 3):
            raise ValueError(f"{name}: images must be (N, H, W) or (N, H, W, 1|3), got shape {images.shape}")
        if images.dtype != np.uint8:
            raise ValueError(f"{name}: images must be uint8, got {images.dtype}")
        self._images = images
        self.ids = np.arange(len(images), dtype=np.int64) if ids is None else np.asarray(ids, dtype=np.int64)
        if len(self.ids) != len(images) or len(np.unique(self.ids)) != len(self.ids):
            raise ValueError(f"{name}: ids must be unique, one per image")
        self.labels = None if labels is None else np.asarray(labels)
        self.name = name

    def images(self, positions) -> np.ndarray:
        return self._images[np.asarray(positions)]


class Subset(ImageSource):
    """The images of `source` with the given ids, in that order."""

    def __init__(self, source: ImageSource, ids, name: str | None = None):
        self.source = source
        self.ids = np.asarray(ids, dtype=np.int64)
        self._pos = source.positions_of(self.ids)
        self.name = name or f"{source.name}[{len(self.ids)}]"

    def images(self, positions) -> np.ndarray:
        return self.source.images(self._pos[np.asarray(positions)])


def _read_idx(path: Path) -> np.ndarray:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        data = f.read()
    zero, dtype_code, ndim = struct.unpack(">HBB", data[:4])
    if zero != 0 or dtype_code != 0x08:
        raise ValueError(f"{path}: not an unsigned-byte IDX file")
    shape = struct.unpack(">" + "I" * ndim, data[4:4 + 4 * ndim])
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


def _find_idx(root: Path, stem: str) -> Path:
    for candidate in (root / (stem + ".gz"), root / stem, root / "FashionMNIST" / "raw" / (stem + ".gz"),
                      root / "FashionMNIST" / "raw" / stem):
        if candidate.exists():
            return candidate
    raise FileNotFoundError(f"{stem}(.gz) not found under {root}")


def load_fashion_mnist(root=None, split: str = "train", download: bool = False) -> ArraySource:
    """Fashion-MNIST from IDX files; ids are the indices in the official split."""
    if split not in FASHION_MNIST_FILES:
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    roots = [Path(root)] if root else [d for d in FASHION_MNIST_DIRS if d.exists()]
    if download:
        import torchvision
        target = Path(root or "data")
        torchvision.datasets.FashionMNIST(str(target), train=split == "train", download=True)
        roots = [target]
    img_stem, lbl_stem = FASHION_MNIST_FILES[split]
    for r in roots:
        try:
            images = _read_idx(_find_idx(r, img_stem))
            labels = _read_idx(_find_idx(r, lbl_stem))
        except FileNotFoundError:
            continue
        return ArraySource(images, labels=labels, name=f"fashion-mnist-{split}")
    raise FileNotFoundError(f"Fashion-MNIST {split} files not found in {[str(r) for r in roots] or FASHION_MNIST_DIRS}; "
                            f"pass root= or download=True")


def load_npz(path, name: str | None = None) -> ArraySource:
    """An .npz with `images` (uint8, N x H x W [x C]) and optional `ids` and `labels`."""
    with np.load(path, allow_pickle=False) as z:
        if "images" not in z:
            raise ValueError(f"{path}: an .npz image source needs an 'images' array, found {list(z.keys())}")
        return ArraySource(z["images"], z["ids"] if "ids" in z else None,
                           z["labels"] if "labels" in z else None, name or Path(path).stem)


def load_demo() -> ArraySource:
    """The bundled Fashion-MNIST subset; ids are the official training-set indices."""
    return load_npz(DEMO_DATA, name="demo-fashion-mnist")
