"""Image sources: uint8 images (N, H, W, C) with stable int64 ids.

Every source answers `len`, `ids`, `images(positions)`, `fingerprint()` and
`batches(batch_size)`; scoring and training stream from `batches`, so memory
does not grow with the number of images. A source opened from a spec string
(see `open_source`) keeps it in `.spec`, which manifests record.

    sources   ImageSource, ArraySource, Subset; id checks
    images    decoding image files and uploads (pixel cap, modes, crop and resize)
    folder    ImageFolderSource
    datasets  Fashion-MNIST, torchvision datasets, .npz files, the bundled demo
    specs     open_source: the spec strings of every data flag
    fit       check_images_fit: does a source fit a model, and how to make it
"""
from .datasets import (DEMO_DATA, FASHION_MNIST_DIRS, SPLITS, TORCHVISION_SETS, load_demo, load_fashion_mnist, load_npz,
                       load_torchvision)
from .fit import check_images_fit
from .folder import MAX_SIDE, ImageFolderSource
from .images import IMAGE_SUFFIXES, MAX_IMAGE_PIXELS, ImageSizeError, load_image_bytes
from .sources import ArraySource, ImageSource, Subset, UnknownIdsError, as_ids, source_spec
from .specs import open_source

__all__ = ["ImageSource", "ArraySource", "Subset", "ImageFolderSource", "UnknownIdsError", "ImageSizeError", "as_ids",
           "source_spec", "open_source", "load_fashion_mnist", "load_torchvision", "load_npz", "load_demo",
           "load_image_bytes", "check_images_fit", "DEMO_DATA", "FASHION_MNIST_DIRS", "SPLITS", "TORCHVISION_SETS",
           "IMAGE_SUFFIXES", "MAX_IMAGE_PIXELS", "MAX_SIDE"]
