"""Datasets on disk: Fashion-MNIST IDX files, torchvision's layouts, .npz files, the bundled demo, and
scikit-learn's digits (another distribution, for shadow studies)."""
import gzip
import os
import struct
import zipfile
import zlib
from pathlib import Path

import numpy as np
import torch
from sklearn.datasets import load_digits as sklearn_digits

from ..assets import DEMO_DIR
from ..paths import require_exists
from .sources import ArraySource, as_ids

# $MIMMIA_FASHION_MNIST, then Debian's dataset-fashion-mnist package
FASHION_MNIST_DIRS = tuple(Path(d) for d in (os.environ.get("MIMMIA_FASHION_MNIST"),
                                             "/usr/share/datasets/fashion-mnist") if d)


FASHION_MNIST_FILES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
                       "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}


DEMO_DATA = DEMO_DIR / "fashion_mnist_subset.npz"


TORCHVISION_SETS = {"cifar10": "CIFAR10", "cifar100": "CIFAR100", "mnist": "MNIST", "fashion-mnist": "FashionMNIST"}


SPLITS = ("train", "test")


NPZ_HOWTO = "save one with numpy.savez(PATH, images=..., ids=..., labels=...)"


def _read_idx(path: Path) -> np.ndarray:
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            data = f.read()
    except (OSError, EOFError, zlib.error) as e:  # not gzip, cut short, a folder ...
        raise ValueError(f"{path}: cannot be read as an IDX file ({e})") from e
    if len(data) < 4 or data[:3] != b"\0\0\x08":
        raise ValueError(f"{path}: not an unsigned-byte IDX file")
    ndim = data[3]
    if len(data) < 4 + 4 * ndim:
        raise ValueError(f"{path}: IDX header is cut short")
    shape = struct.unpack(">" + "I" * ndim, data[4:4 + 4 * ndim])
    if len(data) != 4 + 4 * ndim + int(np.prod(shape)):
        raise ValueError(f"{path}: IDX header says shape {shape} but the file holds {len(data)} bytes")
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


def _find_idx(root: Path, stem: str) -> Path:
    for candidate in (root / (stem + ".gz"), root / stem, root / "FashionMNIST" / "raw" / (stem + ".gz"),
                      root / "FashionMNIST" / "raw" / stem):
        if candidate.exists():
            return candidate
    raise FileNotFoundError(f"{stem}(.gz) not found under {root}")


def load_fashion_mnist(root=None, split: str = "train", download: bool = False) -> ArraySource:
    """Fashion-MNIST from IDX files (gzipped or not, in `root` or in torchvision's
    root/FashionMNIST/raw); ids are the indices in the official split."""
    if split not in SPLITS:
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    if root and not download:
        require_exists(root, "Fashion-MNIST root")
    roots = [Path(root)] if root else [d for d in FASHION_MNIST_DIRS if d.exists()]
    if download:
        import torchvision
        root = root or "data"
        torchvision.datasets.FashionMNIST(str(root), train=split == "train", download=True)
        roots = [Path(root)]
    img_stem, lbl_stem = FASHION_MNIST_FILES[split]
    for r in roots:
        try:
            images = _read_idx(_find_idx(r, img_stem))
            labels = _read_idx(_find_idx(r, lbl_stem))
        except FileNotFoundError:
            continue
        source = ArraySource(images, labels=labels, name=f"fashion-mnist-{split}")
        source.spec = f"fashion-mnist:{split}" + (f"@{root}" if root else "")
        return source
    raise FileNotFoundError(f"Fashion-MNIST {split} files not found in {[str(r) for r in roots or FASHION_MNIST_DIRS]}; "
                            f"give the folder as fashion-mnist:{split}@ROOT, set $MIMMIA_FASHION_MNIST, or install "
                            f"Debian's dataset-fashion-mnist")


def load_torchvision(name: str, root, train: bool = True, download: bool = False) -> ArraySource:
    """A torchvision dataset ("cifar10", "cifar100", "mnist", "fashion-mnist") in
    its on-disk layout under `root`, as uint8 NHWC; ids are the dataset indices."""
    import torchvision.datasets

    if name not in TORCHVISION_SETS:
        raise ValueError(f"unknown torchvision dataset {name!r}; choose one of {sorted(TORCHVISION_SETS)}")
    split = "train" if train else "test"
    if not download:
        require_exists(root, f"{name} root")
    try:
        ds = getattr(torchvision.datasets, TORCHVISION_SETS[name])(str(root), train=train, download=download)
    except RuntimeError as e:
        raise FileNotFoundError(f"{name} ({split}) not found or corrupted under {root}: {e}") from e
    source = ArraySource(np.asarray(ds.data), labels=np.asarray(ds.targets), name=f"{name}-{split}")
    source.spec = f"{name}:{root}:{split}"
    return source


def _not_npz(path: Path) -> str | None:
    """Why `path` is not an .npz (zip) archive, or None if it is one."""
    try:
        with open(path, "rb") as f:
            head = f.read(6)
    except OSError as e:
        raise ValueError(f"{path}: cannot be read ({e.strerror})") from e
    if zipfile.is_zipfile(path):
        return None
    if not head:
        return "it is empty, not an .npz (zip) archive"
    if head == b"\x93NUMPY":
        return "it is a .npy file (one array), not an .npz (zip) archive"
    if head.startswith(b"PK"):
        return "it starts like a zip archive but is cut short or damaged, so it is not a readable .npz (zip) archive"
    return "it is not an .npz (zip) archive"


def _read_npz(path: Path) -> dict:
    """The images, ids and labels arrays in an .npz; a damaged archive or member is a ValueError."""
    try:
        with np.load(path, allow_pickle=False) as z:
            files = z.files
            arrays = {k: z[k] for k in ("images", "ids", "labels") if k in files}
    except (OSError, EOFError, zipfile.BadZipFile, zlib.error) as e:
        raise ValueError(f"{path}: a damaged .npz archive ({e}); {NPZ_HOWTO}") from e
    except ValueError as e:  # object arrays (pickles) and bad .npy headers
        raise ValueError(f"{path}: an array in the .npz cannot be read ({e}); {NPZ_HOWTO}") from e
    if "images" not in arrays:
        raise ValueError(f"{path}: an .npz image source needs an 'images' array, found {files}")
    for key, value in arrays.items():
        if not isinstance(value, np.ndarray):  # a member without the .npy header comes back as bytes
            raise ValueError(f"{path}: '{key}' in the archive is not a .npy array; {NPZ_HOWTO}")
    return arrays


def load_npz(path, name: str | None = None) -> ArraySource:
    """An .npz with `images` (uint8, N x H x W [x C]) and optional integer `ids` and `labels`."""
    path = require_exists(path, ".npz file")
    if path.is_dir():
        raise ValueError(f"{path} is a folder, not an .npz file; open a folder of images as folder:{path}")
    reason = _not_npz(path)
    if reason:
        raise ValueError(f"{path}: {reason}; {NPZ_HOWTO}")
    arrays = _read_npz(path)
    ids = as_ids(arrays["ids"], f"the 'ids' array of {path}") if "ids" in arrays else None
    source = ArraySource(arrays["images"], ids, arrays.get("labels"), name or path.stem)
    source.spec = f"npz:{path}"
    return source


def load_digits(size: int = 28) -> ArraySource:
    """scikit-learn's 1,797 handwritten digits (8x8, ships with scikit-learn), upsampled bilinearly to
    size x size grey uint8, ids 0..1796, labels 0..9: images from another distribution than Fashion-MNIST."""
    digits = sklearn_digits()
    small = torch.from_numpy(digits.images[:, None].astype(np.float32) / 16.0)
    big = torch.nn.functional.interpolate(small, size=(size, size), mode="bilinear", align_corners=False)
    images = (big.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    source = ArraySource(images, np.arange(len(images)), digits.target, name="digits")
    source.spec = "digits"
    return source


def load_demo() -> ArraySource:
    """The bundled Fashion-MNIST subset; ids are the official training-set indices."""
    source = load_npz(DEMO_DATA, name="demo-fashion-mnist")
    source.spec = "demo"
    return source
