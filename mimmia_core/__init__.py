"""mimmia_core: membership inference against masked image modeling (MAE) encoders."""
from .checkpoint import CheckpointError, LoadedModel, load_model, save_checkpoint
from .data import ArraySource, ImageSource, load_demo, load_fashion_mnist, load_npz
from .manifest import SplitManifest, make_split
from .model import (MAEConfig, MaskedAutoencoderViT, PRESETS, Reconstruction, build_model, get_config, mask_noise,
                    num_masked, reconstruct)
from .train import TrainConfig, train_mae

__version__ = "0.1.0"
