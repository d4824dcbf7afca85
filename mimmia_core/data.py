"""Image sources: uint8 images (N, H, W, C) with stable int64 ids.

Every source answers `len`, `ids`, `images(positions)`, `fingerprint()` and
`batches(batch_size)`; scoring and training stream from `batches`, so memory
does not grow with the number of images. A source opened from a spec string
(see `open_source`) keeps it in `.spec`, which manifests record.
"""
import gzip
import hashlib
import io
import os
import re
import struct
import warnings
import zipfile
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

from .assets import DEMO_DIR

from .paths import require_exists

# $MIMMIA_FASHION_MNIST, then Debian's dataset-fashion-mnist package
FASHION_MNIST_DIRS = tuple(Path(d) for d in (os.environ.get("MIMMIA_FASHION_MNIST"),
                                             "/usr/share/datasets/fashion-mnist") if d)
FASHION_MNIST_FILES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
                       "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}
DEMO_DATA = DEMO_DIR / "fashion_mnist_subset.npz"
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".gif")
TORCHVISION_SETS = {"cifar10": "CIFAR10", "cifar100": "CIFAR100", "mnist": "MNIST", "fashion-mnist": "FashionMNIST"}
SPLITS = ("train", "test")
MAX_SIDE = 4096  # the largest side a folder source may be resized to (resize=HxW)
# The largest image decoded (uploads, folder files), checked on the header's size before any pixel is
# decoded; PIL's own decompression-bomb limit is about 89M pixels, far more than any MAE input needs.
MAX_IMAGE_PIXELS = 4096 * 4096
INT64_MIN, INT64_MAX = -2 ** 63, 2 ** 63 - 1
GREY_MODES = ("1", "L", "LA", "La", "I", "F")  # and I;16*. Palette (P) images, GIFs among them, open as RGB
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


# --------------------------------------------------------------------------
# Decoding image files
# --------------------------------------------------------------------------
PIL_ERRORS = (OSError, SyntaxError, ValueError, EOFError, struct.error, Image.DecompressionBombError)


def _too_big(what: str, pixels: str) -> ValueError:
    return ValueError(f"{what} is {pixels} pixels, over the cap of {MAX_IMAGE_PIXELS} pixels "
                      f"(MAX_IMAGE_PIXELS); downscale it first")


def _unreadable(e: Exception, what: str) -> ValueError:
    if isinstance(e, Image.UnidentifiedImageError):
        return ValueError(f"{what} is not an image: its bytes are in no format PIL reads (PNG, JPEG, ...)")
    if isinstance(e, Image.DecompressionBombError):  # PIL says "Image size (N pixels) exceeds limit ..."
        found = re.search(r"\((\d+) pixels\)", str(e))
        return _too_big(what, found[1] if found else f"more than {2 * Image.MAX_IMAGE_PIXELS}")
    return ValueError(f"{what} is not an image that PIL can read ({e})")


def _decode(fp, what: str) -> Image.Image:
    """The first frame of an image file, fully decoded; anything unreadable, or bigger than
    MAX_IMAGE_PIXELS by its header (checked before decoding), is a ValueError."""
    try:
        with warnings.catch_warnings():  # PIL warns of big images; the cap below refuses them anyway
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(fp)
    except PIL_ERRORS as e:
        raise _unreadable(e, what) from e
    if img.width * img.height > MAX_IMAGE_PIXELS:
        raise _too_big(what, f"{img.width}x{img.height} = {img.width * img.height}")
    try:
        img.load()
    except PIL_ERRORS as e:
        raise _unreadable(e, what) from e
    return img


def _convert(img: Image.Image, mode: str, what: str) -> Image.Image:
    """To mode "L" or "RGB". 16-bit grey is scaled to 8 bit; transparency is
    flattened onto black; RGB -> L is PIL's ITU-R 601-2 luma; L -> RGB repeats
    the grey value; palette images take their palette colours."""
    if img.mode.startswith("I;16"):
        wide = np.asarray(img).astype(np.uint32)
        img = Image.fromarray(((wide * 255 + 32767) // 65535).astype(np.uint8), "L")
    elif img.mode in ("I", "F"):
        raise ValueError(f"{what} has 32-bit {'integer' if img.mode == 'I' else 'float'} pixels (mode {img.mode}); "
                         f"save it with 8 or 16 bits per channel")
    if img.mode in ("RGBA", "RGBa", "LA", "La", "PA") or "transparency" in img.info:
        img = Image.alpha_composite(Image.new("RGBA", img.size, (0, 0, 0, 255)), img.convert("RGBA"))
    try:
        return img.convert(mode)
    except ValueError as e:
        raise ValueError(f"{what}: cannot convert mode {img.mode} to {mode} ({e})") from e


def _crop_resize(img: Image.Image, height: int, width: int) -> Image.Image:
    """Center-crop to the aspect ratio of (height, width), then resize (bicubic)."""
    W, H = img.size
    cw, ch = min(W, round(H * width / height)), min(H, round(W * height / width))
    left, top = (W - cw) // 2, (H - ch) // 2
    return img.crop((left, top, left + cw, top + ch)).resize((width, height), Image.Resampling.BICUBIC)


def _as_array(img: Image.Image) -> np.ndarray:
    a = np.asarray(img, dtype=np.uint8)
    return a[..., None] if a.ndim == 2 else a


class ImageSizeError(ValueError):
    """An image of another size than the model's; `size` (width, height) and `expected` say which."""

    def __init__(self, size: tuple, expected: int):
        self.size, self.expected = tuple(size), expected
        super().__init__(f"the image is {size[0]}x{size[1]} pixels but the model expects {expected}x{expected}; "
                         f"resize it first, or load it with resize=True (center-crop, then resize)")


def load_image_bytes(data: bytes, img_size: int, in_chans: int, resize: bool = False) -> np.ndarray:
    """Decode an uploaded image file to uint8 (img_size, img_size, in_chans).

    The first frame is used (GIF, WebP). The image becomes the model's
    channels: grey (in_chans=1) by ITU-R 601-2 luma from colour, or RGB
    (in_chans=3) by repeating grey; transparency is flattened onto black and
    16-bit grey is scaled to 8 bit. An image of another size is refused unless
    `resize`, which center-crops it to a square and resizes it (bicubic); one
    over MAX_IMAGE_PIXELS is refused from its header, before it is decoded.
    """
    if in_chans not in (1, 3):
        raise ValueError(f"in_chans must be 1 or 3, got {in_chans}")
    img = _convert(_decode(io.BytesIO(data), "the upload"), "L" if in_chans == 1 else "RGB", "the upload")
    if img.size != (img_size, img_size):
        if not resize:
            raise ImageSizeError(img.size, img_size)
        img = _crop_resize(img, img_size, img_size)
    return _as_array(img)


def _checked_resize(resize) -> tuple | None:
    """(height, width) as ints, each 1..MAX_SIDE; None stays None."""
    if resize is None:
        return None
    if (not isinstance(resize, (tuple, list)) or len(resize) != 2
            or any(isinstance(v, bool) or not isinstance(v, (int, np.integer)) for v in resize)):
        raise ValueError(f"resize must be (height, width), two whole numbers of pixels, got {resize!r}")
    if not all(1 <= v <= MAX_SIDE for v in resize):
        raise ValueError(f"resize sides must each be 1 to {MAX_SIDE} pixels (MAX_SIDE), got {resize[0]}x{resize[1]}")
    return int(resize[0]), int(resize[1])


class ImageFolderSource(ImageSource):
    """Every image file under `root` (png, jpg/jpeg, bmp, webp, gif first frame),
    found recursively; hidden files and folders are skipped.

    Files are sorted by their relative path and an image's id is its position
    in that list, so adding or removing files renumbers the files after it
    (the fingerprint changes too). Images are decoded per batch, never held.
    All images are converted to `mode` ("L" or "RGB"; default: "L" if the first
    image is grey, else "RGB", as for palette images and GIFs) and must share
    the first image's size, unless `resize=(height, width)` (each side 1 to
    MAX_SIDE) center-crops and resizes each one. Images over MAX_IMAGE_PIXELS
    are refused. If every file lies in a sub-folder, `labels` index `classes`,
    the first sub-folder names.
    """

    def __init__(self, root, mode: str | None = None, resize: tuple | None = None, name: str | None = None):
        self.root = require_exists(root, "image folder")
        if not self.root.is_dir():
            raise ValueError(f"{self.root} is a file, not a folder; give the folder that holds the images"
                             + (f", or open the file as npz:{root}" if self.root.suffix == ".npz" else ""))
        if mode not in (None, "L", "RGB"):
            raise ValueError(f"mode must be 'L' (grey) or 'RGB', got {mode!r}")
        self.resize = _checked_resize(resize)
        self.relpaths = sorted(p.relative_to(self.root).as_posix() for p in self.root.rglob("*")
                               if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()
                               and not any(part.startswith(".") for part in p.relative_to(self.root).parts))
        if not self.relpaths:
            raise ValueError(f"{self.root}: no image files ({', '.join(IMAGE_SUFFIXES)})")
        self.ids = np.arange(len(self.relpaths), dtype=np.int64)
        self.name = name or self.root.resolve().name
        first = self._open(0)
        self.mode = mode or ("L" if first.mode in GREY_MODES or first.mode.startswith("I;16") else "RGB")
        self.size = self.resize or (first.height, first.width)
        if all("/" in p for p in self.relpaths):
            top = [p.split("/", 1)[0] for p in self.relpaths]
            self.classes = sorted(set(top))
            self.labels = np.searchsorted(self.classes, top).astype(np.int64)
        else:
            self.classes = None
        self.options = {"mode": mode} if mode else {}  # the spec's options, as given
        self.options.update({"resize": f"{self.resize[0]}x{self.resize[1]}"} if self.resize else {})
        self.spec = f"folder:{root}" + ("?" + "&".join(f"{k}={v}" for k, v in self.options.items())
                                        if self.options else "")

    def _open(self, pos: int) -> Image.Image:
        with open(self.root / self.relpaths[pos], "rb") as f:
            return _decode(f, str(self.root / self.relpaths[pos]))

    def images(self, positions) -> np.ndarray:
        out = np.empty((len(positions), *self.size, 1 if self.mode == "L" else 3), dtype=np.uint8)
        for i, pos in enumerate(np.asarray(positions)):
            path = self.root / self.relpaths[pos]
            img = _convert(self._open(pos), self.mode, str(path))
            if self.resize:
                img = _crop_resize(img, *self.resize)
            elif (img.height, img.width) != self.size:
                raise ValueError(f"{path} is {img.width}x{img.height} pixels but {self.relpaths[0]} is "
                                 f"{self.size[1]}x{self.size[0]}; all images must have one size "
                                 f"(or pass resize=(height, width))")
            out[i] = _as_array(img)
        return out

    def fingerprint(self) -> str:
        """A hash of every file's relative path and bytes, plus mode and resize."""
        if getattr(self, "_fingerprint", None) is None:
            h = hashlib.sha256(f"{self.mode} {self.resize}".encode())
            for rel in self.relpaths:
                content = hashlib.sha256()
                with open(self.root / rel, "rb") as f:
                    for chunk in iter(lambda: f.read(1 << 20), b""):
                        content.update(chunk)
                h.update(rel.encode() + b"\0" + content.digest())
            self._fingerprint = h.hexdigest()[:16]
        return self._fingerprint


# --------------------------------------------------------------------------
# Datasets
# --------------------------------------------------------------------------
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


NPZ_HOWTO = "save one with numpy.savez(PATH, images=..., ids=..., labels=...)"


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


def load_demo() -> ArraySource:
    """The bundled Fashion-MNIST subset; ids are the official training-set indices."""
    source = load_npz(DEMO_DATA, name="demo-fashion-mnist")
    source.spec = "demo"
    return source


def _split_suffix(rest: str, spec: str) -> tuple[str, str]:
    """"ROOT:test" -> ("ROOT", "test"); no suffix means "train"."""
    head, _, tail = rest.rpartition(":")
    if head and tail in SPLITS:
        return head, tail
    if not rest:
        raise ValueError(f"source spec {spec!r} needs a root folder, e.g. {spec.rstrip(':')}:data")
    return rest, "train"


def _folder_options(query: str, spec: str) -> tuple:
    """"mode=L&resize=32x32" -> ("L", (32, 32)); anything else in the query is refused."""
    items = [item.partition("=")[::2] for item in query.split("&") if item]
    keys = [k for k, _ in items]
    if set(keys) - {"mode", "resize"} or len(set(keys)) != len(keys):
        raise ValueError(f"bad source spec {spec!r}: folder options are mode=L|RGB and resize=HxW, each at most once")
    options = dict(items)
    if options.get("mode", "L") not in ("L", "RGB"):
        raise ValueError(f"bad source spec {spec!r}: mode must be L (grey) or RGB, got {options['mode']!r}")
    resize = options.get("resize")
    if resize is not None:
        match = re.fullmatch(r"([0-9]{1,9})x([0-9]{1,9})", resize)
        if not match:
            raise ValueError(f"bad source spec {spec!r}: resize must be HEIGHTxWIDTH in whole pixels, each 1 to "
                             f"{MAX_SIDE}, e.g. resize=32x32")
        resize = int(match[1]), int(match[2])
    return options.get("mode"), resize


def open_source(spec: str) -> ImageSource:
    """Open an image source from a short spec:

        demo                                  the bundled Fashion-MNIST subset
        fashion-mnist[:train|:test][@ROOT]    IDX files (default: $MIMMIA_FASHION_MNIST, Debian's copy)
        mnist:ROOT[:train|:test]              torchvision layout under ROOT
        cifar10:ROOT[:train|:test]            torchvision layout (ROOT/cifar-10-batches-py)
        cifar100:ROOT[:train|:test]           torchvision layout (ROOT/cifar-100-python)
        folder:PATH[?mode=L|RGB][&resize=HxW] image files under PATH (ImageFolderSource)
        npz:PATH                              an .npz with images [, ids, labels]

    The split defaults to train. The returned source's `.spec` reopens it.
    """
    if not isinstance(spec, str):
        raise ValueError(f"a source spec is a string such as 'demo' or 'npz:PATH', got {type(spec).__name__}")
    kind, _, rest = spec.partition(":")
    if spec == "demo":
        return load_demo()
    if kind.startswith("fashion-mnist"):
        head, _, root = spec.partition("@")
        split = head.partition(":")[2] or "train"
        if head.partition(":")[0] != "fashion-mnist" or split not in SPLITS:
            raise ValueError(f"bad source spec {spec!r}; expected fashion-mnist[:train|:test][@ROOT]")
        return load_fashion_mnist(root or None, split)
    if kind in TORCHVISION_SETS:
        root, split = _split_suffix(rest, spec)
        return load_torchvision(kind, root, train=split == "train")
    if kind == "folder" and rest:
        path, _, query = rest.partition("?")
        return ImageFolderSource(path, *_folder_options(query, spec))
    if kind == "npz" and rest:
        return load_npz(rest)
    raise ValueError(f"unknown source spec {spec!r}; use demo, fashion-mnist[:train|:test][@ROOT], "
                     f"mnist|cifar10|cifar100:ROOT[:train|:test], folder:PATH or npz:PATH")


def _fit_hint(source: ImageSource, img_size: int, in_chans: int) -> str:
    """How to open `source` so its images fit a model, in the terms the user opened it with."""
    while isinstance(source, Subset):
        source = source.source
    h, w, c = source.image_shape
    if isinstance(source, ImageFolderSource):
        mode, resize, why = source.options.get("mode"), source.options.get("resize"), []
        if c != in_chans:
            mode = "L" if in_chans == 1 else "RGB"
            why.append("mode=L turns colour into grey" if in_chans == 1 else "mode=RGB repeats grey in 3 channels")
        if (h, w) != (img_size, img_size):
            resize = f"{img_size}x{img_size}"
            why.append(f"resize={resize} center-crops and resizes each image")
        query = "&".join(f"{k}={v}" for k, v in (("mode", mode), ("resize", resize)) if v)
        return f"open the folder as folder:{source.root}?{query} ({'; '.join(why)})"
    shape = (f"(N, {img_size}, {img_size}) or (N, {img_size}, {img_size}, 1)" if in_chans == 1
             else f"(N, {img_size}, {img_size}, 3)")
    where = f"the 'images' array of {source.spec[4:]}" if (source.spec or "").startswith("npz:") else "the images"
    return (f"{where} must be uint8 shaped {shape}; crop, resize and make them {'grey' if in_chans == 1 else 'RGB'} "
            f"(or write them as image files and open the folder with ?mode=&resize=), and {NPZ_HOWTO}, then open it "
            f"as npz:PATH")


def check_images_fit(source: ImageSource, img_size: int, in_chans: int, model_name: str) -> None:
    """Refuse a source whose images are not (img_size, img_size, in_chans), saying how to open it so they are."""
    h, w, c = source.image_shape
    if (h, w, c) != (img_size, img_size, in_chans):
        raise ValueError(f"{source.name}: images are {h}x{w} with {c} channel(s), but the model {model_name} "
                         f"expects {img_size}x{img_size} with {in_chans} channel(s); "
                         f"{_fit_hint(source, img_size, in_chans)}")


def source_spec(source: ImageSource) -> str:
    """The spec that reopens `source` with open_source."""
    if not source.spec:
        raise ValueError(f"{source.name} was not opened from a spec; save it with numpy.savez "
                         f"(images, ids, labels) and open it as npz:PATH")
    return source.spec
