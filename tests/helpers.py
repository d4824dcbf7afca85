"""What several test modules build: tiny models and images, a tiny experiment on disk, a free port.
Test modules import from here, never from each other."""
import socket

import numpy as np

from mimmia_core.checkpoint import save_checkpoint
from mimmia_core.config import MAEConfig
from mimmia_core.data import ArraySource
from mimmia_core.manifest import make_split
from mimmia_core.model import build_model

# 8 px grey, patch 4 (4 patches): the tiny experiment's models
TINY = MAEConfig(img_size=8, patch_size=4, in_chans=1, embed_dim=16, depth=1, num_heads=2, decoder_embed_dim=16,
                 decoder_depth=1, decoder_num_heads=2, mean=(0.5,), std=(0.5,))
# 16 px, patch 4 (16 patches): the scoring tests' models
SCORING = dict(img_size=16, patch_size=4, in_chans=1, embed_dim=32, depth=1, num_heads=2, decoder_embed_dim=32,
               decoder_depth=1, decoder_num_heads=2, mean=(0.5,), std=(0.25,))


def write_tiny_experiment(root, n_images=40, n_refs=2):
    """An experiment on disk: random 8x8 images (npz), a split manifest, and tiny random MAEs
    (target, shadow, ref-<i>) as mimmia checkpoints. Returns a dict of the paths."""
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(n_images, 8, 8, 1), dtype=np.uint8)
    data = root / "data.npz"
    np.savez(data, images=images, ids=np.arange(100, 100 + n_images), labels=np.arange(n_images) % 3)
    source = ArraySource(images, np.arange(100, 100 + n_images), name="data")
    manifest = make_split(source, f"npz:{data}", n_members=6, n_nonmembers=6, n_references=n_refs,
                          n_reference_members=4)
    manifest.save(root / "manifest.json")
    paths = dict(data=data, manifest=root / "manifest.json", refs=[])
    for i, name in enumerate(["target", "shadow"] + [f"ref-{r}" for r in range(n_refs)]):
        save_checkpoint(build_model(TINY, seed=i), root / "models" / name, {"epochs": i})
        if name.startswith("ref"):
            paths["refs"].append(root / "models" / name)
        else:
            paths[name] = root / "models" / name
    return paths


def tiny_model(norm_pix_loss=False, in_chans=1, seed=0):
    extra = dict(in_chans=3, mean=(0.4, 0.5, 0.6), std=(0.2, 0.3, 0.25)) if in_chans == 3 else {}
    return build_model(MAEConfig(**{**SCORING, **extra}, norm_pix_loss=norm_pix_loss), seed=seed).eval()


def tiny_source(n=11, channels=1, seed=0):
    images = np.random.default_rng(seed).integers(0, 256, (n, 16, 16, channels), dtype=np.uint8)
    return ArraySource(images, ids=np.arange(100, 100 + n) * 7, name=f"rand{seed}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
