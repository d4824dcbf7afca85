"""The MAE's configuration: architecture, preprocessing and target space, and the presets."""
from dataclasses import asdict, dataclass

import numpy as np

IMAGENET_MEAN = (0.485, 0.456, 0.406)


IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class MAEConfig:
    img_size: int = 224
    patch_size: int = 16
    in_chans: int = 3
    embed_dim: int = 1024
    depth: int = 24
    num_heads: int = 16
    decoder_embed_dim: int = 512
    decoder_depth: int = 8
    decoder_num_heads: int = 16
    mlp_ratio: float = 4.0
    layer_norm_eps: float = 1e-6  # official MAE; transformers' ViTMAE files say 1e-12
    norm_pix_loss: bool = False
    mean: tuple = IMAGENET_MEAN
    std: tuple = IMAGENET_STD

    def __post_init__(self):
        for name in ("img_size", "patch_size", "in_chans", "embed_dim", "depth", "num_heads", "decoder_embed_dim",
                     "decoder_depth", "decoder_num_heads"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
            object.__setattr__(self, name, int(value))
        for name in ("mlp_ratio", "layer_norm_eps"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < float("inf"):
                raise ValueError(f"{name} must be a positive finite number, got {value!r}")
            object.__setattr__(self, name, float(value))
        if not isinstance(self.norm_pix_loss, bool):
            raise ValueError(f"norm_pix_loss must be true or false, got {self.norm_pix_loss!r}")
        if self.img_size % self.patch_size:
            raise ValueError(f"img_size {self.img_size} is not a multiple of patch_size {self.patch_size}")
        for dim, heads, name in ((self.embed_dim, self.num_heads, "encoder"),
                                 (self.decoder_embed_dim, self.decoder_num_heads, "decoder")):
            if dim % heads:
                raise ValueError(f"{name} width {dim} is not divisible by its {heads} heads")
            if dim % 4:
                raise ValueError(f"{name} width {dim} must be divisible by 4 (sin-cos position embedding)")
        object.__setattr__(self, "mean", _channel_values(self.mean, "mean", self.in_chans))
        object.__setattr__(self, "std", _channel_values(self.std, "std", self.in_chans))
        if min(self.std) <= 0:
            raise ValueError(f"std must be positive, got {self.std}")

    @property
    def grid_size(self) -> int:
        return self.img_size // self.patch_size

    @property
    def num_patches(self) -> int:
        return self.grid_size ** 2

    @property
    def target_space(self) -> str:
        return "normalized_patches" if self.norm_pix_loss else "pixels"

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "MAEConfig":
        known = {f for f in cls.__dataclass_fields__}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown MAEConfig fields: {sorted(unknown)}")
        return cls(**d)


def _channel_values(values, name: str, in_chans: int) -> tuple:
    """mean or std as a tuple of in_chans finite floats (a JSON round trip gives lists)."""
    if isinstance(values, (str, bytes)) or not hasattr(values, "__len__"):
        raise ValueError(f"{name} must be a list of {in_chans} numbers, got {values!r}")
    if len(values) != in_chans:
        raise ValueError(f"{name} needs {in_chans} value(s), one per channel, got {list(values)}")
    if not all(isinstance(v, (int, float, np.floating)) and not isinstance(v, bool) and np.isfinite(v)
               for v in values):
        raise ValueError(f"{name} must hold finite numbers, got {list(values)}")
    return tuple(float(v) for v in values)


_GRAY = dict(in_chans=1, mean=(0.5,), std=(0.5,))


_CIFAR = dict(in_chans=3, mean=(0.4914, 0.4822, 0.4465), std=(0.2470, 0.2435, 0.2616))


PRESETS = {
    "mae_vit_base_patch16": MAEConfig(embed_dim=768, depth=12, num_heads=12),
    "mae_vit_large_patch16": MAEConfig(embed_dim=1024, depth=24, num_heads=16),
    "mae_vit_huge_patch14": MAEConfig(patch_size=14, embed_dim=1280, depth=32, num_heads=16),
    "mae_tiny_28": MAEConfig(img_size=28, patch_size=4, embed_dim=128, depth=4, num_heads=4,
                             decoder_embed_dim=96, decoder_depth=2, decoder_num_heads=4, **_GRAY),
    "mae_small_28": MAEConfig(img_size=28, patch_size=4, embed_dim=192, depth=6, num_heads=3,
                              decoder_embed_dim=128, decoder_depth=4, decoder_num_heads=4, **_GRAY),
    "mae_small_32": MAEConfig(img_size=32, patch_size=4, embed_dim=192, depth=6, num_heads=3,
                              decoder_embed_dim=128, decoder_depth=4, decoder_num_heads=4, **_CIFAR),
}


def get_config(name: str, **overrides) -> MAEConfig:
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}")
    return MAEConfig(**{**PRESETS[name].to_dict(), **overrides})


__all__ = ["MAEConfig", "PRESETS", "get_config", "IMAGENET_MEAN", "IMAGENET_STD"]
