"""A folder of image files as a source, decoded per batch."""
import hashlib

import numpy as np
from PIL import Image

from ..paths import require_exists
from .images import GREY_MODES, IMAGE_SUFFIXES, as_array, convert_mode, crop_resize, decode_image
from .sources import ImageSource

MAX_SIDE = 4096  # the largest side a folder source may be resized to (resize=HxW)


def checked_resize(resize) -> tuple | None:
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
        self.resize = checked_resize(resize)
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
            return decode_image(f, str(self.root / self.relpaths[pos]))

    def images(self, positions) -> np.ndarray:
        out = np.empty((len(positions), *self.size, 1 if self.mode == "L" else 3), dtype=np.uint8)
        for i, pos in enumerate(np.asarray(positions)):
            path = self.root / self.relpaths[pos]
            img = convert_mode(self._open(pos), self.mode, str(path))
            if self.resize:
                img = crop_resize(img, *self.resize)
            elif (img.height, img.width) != self.size:
                raise ValueError(f"{path} is {img.width}x{img.height} pixels but {self.relpaths[0]} is "
                                 f"{self.size[1]}x{self.size[0]}; all images must have one size "
                                 f"(or pass resize=(height, width))")
            out[i] = as_array(img)
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
