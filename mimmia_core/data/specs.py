"""Source specs: the short strings every data flag takes (demo, fashion-mnist:test, folder:PATH?mode=L, ...)."""
import re

import numpy as np

from .datasets import SPLITS, TORCHVISION_SETS, load_demo, load_digits, load_fashion_mnist, load_npz, load_torchvision
from .folder import MAX_SIDE, ImageFolderSource
from .sources import ImageSource


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


def _classes(query: str, spec: str) -> tuple:
    """"classes=5,7,8,9" -> (5, 7, 8, 9)."""
    key, _, value = query.partition("=")
    try:
        classes = tuple(sorted({int(c) for c in value.split(",") if c.strip()}))
    except ValueError:
        classes = ()
    if key != "classes" or not classes:
        raise ValueError(f"bad source spec {spec!r}: a labelled source takes ?classes=A,B,... (whole numbers), "
                         f"e.g. fashion-mnist:train?classes=5,7,8,9")
    return classes


def with_classes(source: ImageSource, classes: tuple, spec: str) -> ImageSource:
    """The images of `source` whose label is one of `classes`, reopened by `spec`."""
    if source.labels is None:
        raise ValueError(f"source spec {spec!r}: {source.name} has no labels, so ?classes= cannot pick from it")
    picked = source.subset(source.ids[np.isin(source.labels, classes)], name=f"{source.name}[{spec.partition('?')[2]}]")
    if len(picked) == 0:
        raise ValueError(f"source spec {spec!r}: no image of {source.name} has a label in {list(classes)}")
    picked.spec = spec
    return picked


def open_source(spec: str) -> ImageSource:
    """Open an image source from a short spec; a labelled source (all but folder:) takes ?classes=A,B:

        demo                                  the bundled Fashion-MNIST subset
        fashion-mnist[:train|:test][@ROOT]    IDX files (default: $MIMMIA_FASHION_MNIST, Debian's copy)
        mnist:ROOT[:train|:test]              torchvision layout under ROOT
        cifar10:ROOT[:train|:test]            torchvision layout (ROOT/cifar-10-batches-py)
        cifar100:ROOT[:train|:test]           torchvision layout (ROOT/cifar-100-python)
        folder:PATH[?mode=L|RGB][&resize=HxW] image files under PATH (ImageFolderSource)
        npz:PATH                              an .npz with images [, ids, labels]
        digits                                scikit-learn's digits, upsampled to 28x28

    The split defaults to train. The returned source's `.spec` reopens it.
    """
    if not isinstance(spec, str):
        raise ValueError(f"a source spec is a string such as 'demo' or 'npz:PATH', got {type(spec).__name__}")
    kind, _, rest = spec.partition(":")
    if kind != "folder" and "?" in spec:
        base, _, query = spec.partition("?")
        return with_classes(open_source(base), _classes(query, spec), spec)
    if spec == "digits":
        return load_digits()
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
    raise ValueError(f"unknown source spec {spec!r}; use demo, digits, fashion-mnist[:train|:test][@ROOT], "
                     f"mnist|cifar10|cifar100:ROOT[:train|:test], folder:PATH or npz:PATH")
