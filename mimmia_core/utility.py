"""What a pre-trained MAE is worth: linear-probe accuracy of its frozen encoder, and its reconstruction
loss on held-out images.

Linear probe, MAE's measure of representation quality: the encoder sees every patch (no masking),
its features are the mean of the patch tokens ("mean") or the cls token ("cls"); they are
standardised on the probe's training split (MAE's probe puts a BatchNorm without affine before the
head) and a scikit-learn LogisticRegression is fitted on that split's labels. The accuracy is on a
disjoint test split. Reconstruction loss: MAE's training loss (MSE over the masked patches, in the
model's target space) at the given mask ratio, with seeded masks (mimmia_core.masking), averaged
over images and masks.
"""
from dataclasses import asdict, dataclass

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from .data import ImageSource
from .masking import check_seed, check_visible, mask_noise

FEATURES = ("mean", "cls")
LABELLED_SOURCES = ("fashion-mnist[:train|:test]", "mnist:ROOT", "cifar10:ROOT", "npz:PATH with labels",
                    "folder:PATH with one sub-folder per class")


@dataclass(frozen=True)
class UtilityResult:
    """A model's utility: linear-probe accuracy and held-out reconstruction loss, with how they were measured."""
    probe_accuracy: float
    probe_features: str
    probe_train_images: int
    probe_test_images: int
    num_classes: int
    reconstruction_loss: float
    reconstruction_images: int
    mask_ratio: float
    num_masks: int
    mask_seed: int

    def to_dict(self) -> dict:
        return asdict(self)


def source_labels(source: ImageSource) -> np.ndarray:
    """The integer class labels of `source`; a ValueError naming labelled sources when it has none."""
    if source.labels is None:
        raise ValueError(f"{source.name} has no labels, and a linear probe needs them; use a labelled source: "
                         f"{', '.join(LABELLED_SOURCES)}")
    return np.asarray(source.labels)


def encoder_features(model, source: ImageSource, features: str = "mean", batch_size: int = 256) -> np.ndarray:
    """Frozen encoder features [N, D] of every image of `source`, unmasked: mean patch token or cls token."""
    if features not in FEATURES:
        raise ValueError(f"--features must be one of {', '.join(FEATURES)}, got {features!r}")
    model.eval()
    out = []
    with torch.inference_mode():
        for _, images in source.batches(batch_size):
            tokens = model.forward_features(model.normalize(torch.from_numpy(images)))  # [B, 1+L, D]
            out.append((tokens[:, 1:].mean(dim=1) if features == "mean" else tokens[:, 0]).float().cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, model.config.embed_dim), np.float32)


def probe_split(source: ImageSource, test_fraction: float = 0.5, seed: int = 0) -> tuple:
    """(train, test): disjoint subsets of `source` by a seeded permutation, test_fraction of it for testing."""
    if not 0 < test_fraction < 1:
        raise ValueError(f"--probe-split must lie strictly between 0 and 1, got {test_fraction!r}")
    perm = np.random.default_rng(check_seed(seed)).permutation(len(source))
    n_test = int(round(len(source) * test_fraction))
    if n_test < 1 or n_test >= len(source):
        raise ValueError(f"--probe-split {test_fraction:g} of {len(source)} images leaves a split empty")
    ids = source.ids[perm]
    return source.subset(np.sort(ids[n_test:]), f"{source.name}/probe-train"), \
        source.subset(np.sort(ids[:n_test]), f"{source.name}/probe-test")


def _origin(source: ImageSource):
    """The source a subset was taken from: its spec, or the object itself."""
    while isinstance(getattr(source, "source", None), ImageSource):
        source = source.source
    return source.spec or id(source)


def check_disjoint(train: ImageSource, test: ImageSource) -> None:
    """Refuse a probe test split that shares images (ids of one source) with its training split."""
    shared = np.intersect1d(train.ids, test.ids) if _origin(train) == _origin(test) else []
    if len(shared):
        raise ValueError(f"the probe's test split {test.name} shares {len(shared)} images with its training split "
                         f"{train.name} (ids such as {shared[:3].tolist()}); give disjoint --probe-train and "
                         f"--probe-test, or --probe-split")


def linear_probe(model, train: ImageSource, test: ImageSource, features: str = "mean", C: float = 1.0,
                 max_iter: int = 2000, batch_size: int = 256) -> tuple[float, int]:
    """(test accuracy, number of classes) of a logistic regression on the frozen encoder's features."""
    y_train, y_test = source_labels(train), source_labels(test)
    if len(np.unique(y_train)) < 2:
        raise ValueError(f"{train.name} holds {len(np.unique(y_train))} class; a probe needs two or more")
    if len(test) == 0:
        raise ValueError(f"{test.name} holds no images to test the probe on")
    check_disjoint(train, test)
    probe = make_pipeline(StandardScaler(), LogisticRegression(C=C, max_iter=max_iter))
    probe.fit(encoder_features(model, train, features, batch_size), y_train)
    accuracy = float((probe.predict(encoder_features(model, test, features, batch_size)) == y_test).mean())
    return accuracy, int(len(np.unique(np.concatenate([y_train, y_test]))))


def reconstruction_loss(model, source: ImageSource, mask_ratio: float, num_masks: int = 1, seed: int = 0,
                        batch_size: int = 256) -> float:
    """MAE's loss (masked-patch MSE in the target space) on every image of `source` under num_masks seeded
    masks each, averaged; masks per (seed, image id, mask index), so the number is reproducible."""
    check_visible(model.config.num_patches, mask_ratio)
    if num_masks < 1 or len(source) == 0:
        raise ValueError(f"reconstruction loss needs images and --num-masks >= 1 ({len(source)} images, "
                         f"{num_masks} masks)")
    model.eval()
    total = 0.0
    with torch.inference_mode():
        for ids, images in source.batches(max(1, batch_size // num_masks)):
            imgs = model.normalize(torch.from_numpy(images))
            noise = mask_noise(seed, ids, num_masks, model.config.num_patches)  # (K, N, L), k-major rows
            loss, _, _ = model(imgs, mask_ratio, noise.reshape(-1, noise.shape[-1]).to(imgs.device))
            total += loss.item() * len(ids)  # every row masks the same number of patches
    return total / len(source)


def measure_utility(model, heldout: ImageSource, probe_train: ImageSource, probe_test: ImageSource,
                    mask_ratio: float, features: str = "mean", num_masks: int = 1, seed: int = 0,
                    batch_size: int = 256) -> UtilityResult:
    """Linear-probe accuracy and held-out reconstruction loss of one model."""
    accuracy, classes = linear_probe(model, probe_train, probe_test, features, batch_size=batch_size)
    loss = reconstruction_loss(model, heldout, mask_ratio, num_masks, seed, batch_size)
    return UtilityResult(accuracy, features, len(probe_train), len(probe_test), classes, loss, len(heldout),
                         float(mask_ratio), num_masks, seed)


__all__ = ["FEATURES", "UtilityResult", "source_labels", "encoder_features", "probe_split", "check_disjoint",
           "linear_probe", "reconstruction_loss", "measure_utility"]
