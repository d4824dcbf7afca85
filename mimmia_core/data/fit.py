"""Whether a source's images fit a model, and if not, how to make them fit, in the source's own terms."""
from .datasets import NPZ_HOWTO
from .folder import ImageFolderSource
from .sources import ImageSource, Subset

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
