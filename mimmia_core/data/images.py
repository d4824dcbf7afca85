"""Image files to uint8 arrays: decoding (a pixel cap read from the header first), modes, crop and resize."""
import io
import re
import struct
import warnings

import numpy as np
from PIL import Image

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".gif")


# The largest image decoded (uploads, folder files), checked on the header's size before any pixel is
# decoded; PIL's own decompression-bomb limit is about 89M pixels, far more than any MAE input needs.
MAX_IMAGE_PIXELS = 4096 * 4096


GREY_MODES = ("1", "L", "LA", "La", "I", "F")  # and I;16*. Palette (P) images, GIFs among them, open as RGB


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


def decode_image(fp, what: str) -> Image.Image:
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


def convert_mode(img: Image.Image, mode: str, what: str, steps: list | None = None) -> Image.Image:
    """To mode "L" or "RGB". 16-bit grey is scaled to 8 bit; transparency is
    flattened onto black; RGB -> L is PIL's ITU-R 601-2 luma; L -> RGB repeats
    the grey value; palette images take their palette colours. `steps`, if given,
    receives a phrase for each of these that was done."""
    steps = [] if steps is None else steps
    source = img.mode
    if img.mode.startswith("I;16"):
        wide = np.asarray(img).astype(np.uint32)
        img = Image.fromarray(((wide * 255 + 32767) // 65535).astype(np.uint8), "L")
        steps.append("16-bit grey scaled to 8 bit")
    elif img.mode in ("I", "F"):
        raise ValueError(f"{what} has 32-bit {'integer' if img.mode == 'I' else 'float'} pixels (mode {img.mode}); "
                         f"save it with 8 or 16 bits per channel")
    if img.mode in ("RGBA", "RGBa", "LA", "La", "PA") or "transparency" in img.info:
        img = Image.alpha_composite(Image.new("RGBA", img.size, (0, 0, 0, 255)), img.convert("RGBA"))
        steps.append(f"transparency ({source}) flattened onto black")
    grey = source in GREY_MODES or source.startswith("I;16")
    if mode == "L" and not grey:
        colour = {"RGB": "colour (RGB)", "RGBA": "colour (RGBA)", "P": "palette colours", "PA": "palette colours"}
        steps.append(f"{colour.get(source, source)} to grey by ITU-R 601-2 luma, as the model takes 1 channel")
    if mode == "RGB" and grey:
        steps.append("grey repeated into 3 channels, as the model takes colour")
    try:
        return img.convert(mode)
    except ValueError as e:
        raise ValueError(f"{what}: cannot convert mode {img.mode} to {mode} ({e})") from e


def crop_resize(img: Image.Image, height: int, width: int) -> Image.Image:
    """Center-crop to the aspect ratio of (height, width), then resize (bicubic)."""
    W, H = img.size
    cw, ch = min(W, round(H * width / height)), min(H, round(W * height / width))
    left, top = (W - cw) // 2, (H - ch) // 2
    return img.crop((left, top, left + cw, top + ch)).resize((width, height), Image.Resampling.BICUBIC)


def as_array(img: Image.Image) -> np.ndarray:
    a = np.asarray(img, dtype=np.uint8)
    return a[..., None] if a.ndim == 2 else a


class ImageSizeError(ValueError):
    """An image of another size than the model's; `size` (width, height) and `expected` say which."""

    def __init__(self, size: tuple, expected: int):
        self.size, self.expected = tuple(size), expected
        super().__init__(f"the image is {size[0]}x{size[1]} pixels but the model expects {expected}x{expected}; "
                         f"resize it first, or load it with resize=True (center-crop, then resize)")


def load_image_bytes(data: bytes, img_size: int, in_chans: int, resize: bool = False,
                     steps: list | None = None) -> np.ndarray:
    """Decode an uploaded image file to uint8 (img_size, img_size, in_chans).

    The first frame is used (GIF, WebP). The image becomes the model's
    channels: grey (in_chans=1) by ITU-R 601-2 luma from colour, or RGB
    (in_chans=3) by repeating grey; transparency is flattened onto black and
    16-bit grey is scaled to 8 bit. An image of another size is refused unless
    `resize`, which center-crops it to a square and resizes it (bicubic); one
    over MAX_IMAGE_PIXELS is refused from its header, before it is decoded.
    `steps`, if given, receives what convert_mode did.
    """
    if in_chans not in (1, 3):
        raise ValueError(f"in_chans must be 1 or 3, got {in_chans}")
    img = convert_mode(decode_image(io.BytesIO(data), "the upload"), "L" if in_chans == 1 else "RGB", "the upload",
                       steps)
    if img.size != (img_size, img_size):
        if not resize:
            raise ImageSizeError(img.size, img_size)
        img = crop_resize(img, img_size, img_size)
    return as_array(img)
