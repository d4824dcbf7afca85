"""mimmia_core: membership inference against masked image modeling (MAE) encoders.

model       the MAE (official layout, timm layers), seeded masking, reconstruct()
checkpoint  load_model() for every format: own safetensors folders, official .pth, HF ViTMAE, timm
model_ref   a model as a user names it: PATH?key=value settings
hub         published MAEs by name (hf:ORG/NAME, timm:NAME) in the Hugging Face cache
data        image sources (Fashion-MNIST, CIFAR, folders, .npz, the demo)
manifest    split manifests: who trained on which image ids
train       MAE pre-training (AdamW, warmup + cosine, DDP)
distances   the reconstruction distances' definitions; sign, floor and aggregation over the K masks
runtime     how a scoring pass runs on a device (prefetch, pinned memory, bf16, compile, CUDA graphs)
scores      ScoreSpec, Scores, and score_images: (K, N) distances per image and mask
encodermi   the EncoderMI baseline's augmented views and their embedding similarity
scorer      Scorer: scores and similarities memoised and cached on disk (cache.ScoreCache)
attacks     the paper's attack, calibrated attacks, baselines
metrics     AUC, TPR at low FPR with Clopper-Pearson intervals, operating points
experiment  target + shadow + references + data, loaded together
report      JSON / CSV reports and terminal tables
demo        the bundled demo and how to rebuild it
"""
from .attacks import ATTACKS, AttackResult, make_attack, run_attack, sweep
from .checkpoint import CheckpointError, LoadedModel, load_model, save_checkpoint
from .data import (ArraySource, ImageFolderSource, ImageSource, load_demo, load_fashion_mnist, load_image_bytes,
                   load_npz, load_torchvision, open_source)
from .experiment import Experiment, load_demo_experiment, load_experiment
from .checkpoint import attach_decoder, describe_checkpoint, load_hf_vitmae, load_official_mae
from .manifest import SplitManifest, make_split
from .metrics import evaluate, roc, tpr_at_fpr
from .config import PRESETS, MAEConfig, get_config
from .masking import mask_noise, num_masked
from .model import MaskedAutoencoderViT, build_model
from .reconstruction import Reconstruction, reconstruct
from .scorer import Scorer
from .scores import Scores, ScoreSpec, score_images
from .train import TrainConfig, train_mae
from .version import __version__


__all__ = ['__version__', 'ATTACKS', 'AttackResult', 'make_attack', 'run_attack', 'sweep', 'CheckpointError', 'LoadedModel', 'load_model', 'save_checkpoint', 'ArraySource', 'ImageFolderSource', 'ImageSource', 'load_demo', 'load_fashion_mnist', 'load_image_bytes', 'load_npz', 'load_torchvision', 'open_source', 'Experiment', 'load_demo_experiment', 'load_experiment', 'attach_decoder', 'describe_checkpoint', 'load_hf_vitmae', 'load_official_mae', 'SplitManifest', 'make_split', 'evaluate', 'roc', 'tpr_at_fpr', 'MAEConfig', 'MaskedAutoencoderViT', 'PRESETS', 'Reconstruction', 'build_model', 'get_config', 'mask_noise', 'num_masked', 'reconstruct', 'Scorer', 'Scores', 'ScoreSpec', 'score_images', 'TrainConfig', 'train_mae']
