"""Masked autoencoder with a ViT backbone (He et al., 2022).

Follows facebookresearch/mae models_mae.py name for name, built from timm's
PatchEmbed and Block. Masking takes its noise as an argument: nothing here
draws from a global RNG, so a score is reproducible whatever the batch.
"""
import math
from dataclasses import asdict, dataclass, field
from functools import partial

import numpy as np
import torch
import torch.nn as nn
from timm.layers import PatchEmbed
from timm.models.vision_transformer import Block

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


# --------------------------------------------------------------------------
# 2-D sin-cos position embedding, in MAE's layout [sin_w | cos_w | sin_h | cos_h]
# --------------------------------------------------------------------------
def get_1d_sincos_pos_embed_from_grid(embed_dim, pos):
    omega = np.arange(embed_dim // 2, dtype=np.float64) / (embed_dim / 2.0)
    omega = 1.0 / 10000 ** omega
    out = np.einsum("m,d->md", pos.reshape(-1), omega)
    return np.concatenate([np.sin(out), np.cos(out)], axis=1)


def get_2d_sincos_pos_embed(embed_dim, grid_size, cls_token=False):
    if embed_dim % 4:
        raise ValueError(f"sin-cos position embedding needs a width divisible by 4, got {embed_dim}")
    grid_h = np.arange(grid_size, dtype=np.float32)
    grid_w = np.arange(grid_size, dtype=np.float32)
    grid = np.stack(np.meshgrid(grid_w, grid_h), axis=0)  # w goes first, as in MAE
    emb_h = get_1d_sincos_pos_embed_from_grid(embed_dim // 2, grid[0])
    emb_w = get_1d_sincos_pos_embed_from_grid(embed_dim // 2, grid[1])
    pos_embed = np.concatenate([emb_h, emb_w], axis=1)
    if cls_token:
        pos_embed = np.concatenate([np.zeros([1, embed_dim]), pos_embed], axis=0)
    return pos_embed


# --------------------------------------------------------------------------
# Masking
# --------------------------------------------------------------------------
def check_mask_ratio(mask_ratio: float) -> float:
    r = float(mask_ratio)
    if not (0.0 < r < 1.0):  # also refuses NaN
        raise ValueError(f"mask_ratio must lie strictly between 0 and 1, got {mask_ratio!r}")
    return r


def num_visible(num_patches: int, mask_ratio: float) -> int:
    """Patches kept visible; int() floors, exactly as the official code."""
    return int(num_patches * (1 - check_mask_ratio(mask_ratio)))


def num_masked(num_patches: int, mask_ratio: float) -> int:
    """The real number of masked patches at this ratio."""
    return num_patches - num_visible(num_patches, mask_ratio)


def smallest_mask_ratio(num_patches: int) -> float:
    """The smallest ratio that still masks a patch (one of them)."""
    return 0.5 / num_patches


def largest_mask_ratio(num_patches: int) -> float:
    """The largest ratio that still leaves a patch visible, rounded down to 4 decimals."""
    ratio = math.floor((1 - 1 / num_patches) * 1e4) / 1e4
    while num_visible(num_patches, ratio) < 1:  # float rounding at the boundary
        ratio -= 1e-4
    return ratio


def check_visible(num_patches: int, mask_ratio: float) -> float:
    """The mask ratio, if it leaves at least one of num_patches patches visible; else a ValueError."""
    if num_visible(num_patches, mask_ratio) < 1:
        largest = (f"the largest ratio that keeps one patch visible is {largest_mask_ratio(num_patches):g}"
                   if num_patches > 1 else "an image of one patch cannot be masked")
        raise ValueError(f"mask_ratio {mask_ratio:g} leaves none of the {num_patches} patches visible "
                         f"(int({num_patches} * (1 - {mask_ratio:g})) = 0), so the encoder would see nothing; "
                         f"{largest}")
    return float(mask_ratio)


def check_seed(seed) -> int:
    """A mask seed as an int: an integer in 0..2**63-1 (it seeds 64-bit hashing)."""
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or not 0 <= int(seed) < 1 << 63:
        raise ValueError(f"seed must lie in 0..2**63-1, got {seed!r}")
    return int(seed)


_U64 = 1 << 64


def _i64(c: int) -> int:
    return c - _U64 if c >= 1 << 63 else c


_GOLDEN, _MIX1, _MIX2 = _i64(0x9E3779B97F4A7C15), _i64(0xBF58476D1CE4E5B9), _i64(0x94D049BB133111EB)


def _splitmix64(x: torch.Tensor) -> torch.Tensor:
    """SplitMix64 finaliser on int64 tensors (wrapping arithmetic, logical shifts)."""
    x = x + _GOLDEN
    x = (x ^ ((x >> 30) & ((1 << 34) - 1))) * _MIX1
    x = (x ^ ((x >> 27) & ((1 << 37) - 1))) * _MIX2
    return x ^ ((x >> 31) & ((1 << 33) - 1))


def mask_noise(seed: int, image_ids, num_masks: int, num_patches: int) -> torch.Tensor:
    """Noise of shape (num_masks, N, L) for masking, a pure function of (seed, image id, mask index).

    An image's K masks are therefore the same whatever batch, order or device it
    is scored in. Values are float64 in [0, 1) with 53 random bits, so argsort
    ties never occur in practice.
    """
    seed = check_seed(seed)
    ids = torch.as_tensor(np.asarray(image_ids, dtype=np.int64))
    if ids.ndim != 1:
        raise ValueError(f"image_ids must be one-dimensional, got shape {tuple(ids.shape)}")
    k = torch.arange(num_masks, dtype=torch.int64)
    patch = torch.arange(num_patches, dtype=torch.int64)
    key = _splitmix64(_splitmix64(torch.tensor(seed, dtype=torch.int64)) ^ ids)  # (N,)
    key = _splitmix64(key[None, :] ^ _splitmix64(k)[:, None])  # (K, N)
    bits = _splitmix64(key[..., None] + patch * _GOLDEN)  # (K, N, L)
    return ((bits >> 11) & ((1 << 53) - 1)).double() / float(1 << 53)


# --------------------------------------------------------------------------
# The model
# --------------------------------------------------------------------------
class MaskedAutoencoderViT(nn.Module):
    """Masked autoencoder with a Vision Transformer backbone."""

    def __init__(self, config: MAEConfig):
        super().__init__()
        self.config = c = config
        norm_layer = partial(nn.LayerNorm, eps=c.layer_norm_eps)

        # encoder
        self.patch_embed = PatchEmbed(c.img_size, c.patch_size, c.in_chans, c.embed_dim)
        num_patches = self.patch_embed.num_patches
        self.cls_token = nn.Parameter(torch.zeros(1, 1, c.embed_dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, num_patches + 1, c.embed_dim), requires_grad=False)
        self.blocks = nn.ModuleList([
            Block(c.embed_dim, c.num_heads, c.mlp_ratio, qkv_bias=True, norm_layer=norm_layer)
            for _ in range(c.depth)])
        self.norm = norm_layer(c.embed_dim)

        # decoder
        self.decoder_embed = nn.Linear(c.embed_dim, c.decoder_embed_dim, bias=True)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, c.decoder_embed_dim))
        self.decoder_pos_embed = nn.Parameter(
            torch.zeros(1, num_patches + 1, c.decoder_embed_dim), requires_grad=False)
        self.decoder_blocks = nn.ModuleList([
            Block(c.decoder_embed_dim, c.decoder_num_heads, c.mlp_ratio, qkv_bias=True, norm_layer=norm_layer)
            for _ in range(c.decoder_depth)])
        self.decoder_norm = norm_layer(c.decoder_embed_dim)
        self.decoder_pred = nn.Linear(c.decoder_embed_dim, c.patch_size ** 2 * c.in_chans, bias=True)

        # preprocessing constants on the model's device, outside the state dict (no per-batch host copies)
        self.register_buffer("pixel_mean", torch.tensor(c.mean), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(c.std), persistent=False)
        self.initialize_weights()

    def initialize_weights(self, generator: torch.Generator | None = None):
        c = self.config
        pos = get_2d_sincos_pos_embed(c.embed_dim, c.grid_size, cls_token=True)
        self.pos_embed.data.copy_(torch.from_numpy(pos).float().unsqueeze(0))
        dpos = get_2d_sincos_pos_embed(c.decoder_embed_dim, c.grid_size, cls_token=True)
        self.decoder_pos_embed.data.copy_(torch.from_numpy(dpos).float().unsqueeze(0))

        w = self.patch_embed.proj.weight.data
        nn.init.xavier_uniform_(w.view([w.shape[0], -1]), generator=generator)
        bound = (w[0].numel()) ** -0.5  # PyTorch's default conv bias init, as MAE keeps, but seeded
        nn.init.uniform_(self.patch_embed.proj.bias, -bound, bound, generator=generator)
        nn.init.normal_(self.cls_token, std=0.02, generator=generator)
        nn.init.normal_(self.mask_token, std=0.02, generator=generator)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight, generator=generator)
                if m.bias is not None:
                    nn.init.constant_(m.bias, 0)
            elif isinstance(m, nn.LayerNorm):
                nn.init.constant_(m.bias, 0)
                nn.init.constant_(m.weight, 1.0)

    # ---- patches ---------------------------------------------------------
    def patchify(self, imgs):
        """(N, C, H, W) -> (N, L, p*p*C)"""
        p, c = self.config.patch_size, self.config.in_chans
        h = w = imgs.shape[2] // p
        x = imgs.reshape(imgs.shape[0], c, h, p, w, p)
        x = torch.einsum("nchpwq->nhwpqc", x)
        return x.reshape(imgs.shape[0], h * w, p * p * c)

    def unpatchify(self, x):
        """(N, L, p*p*C) -> (N, C, H, W)"""
        p, c = self.config.patch_size, self.config.in_chans
        h = w = int(x.shape[1] ** 0.5)
        x = x.reshape(x.shape[0], h, w, p, p, c)
        x = torch.einsum("nhwpqc->nchpwq", x)
        return x.reshape(x.shape[0], c, h * p, h * p)

    @staticmethod
    def patch_stats(patches):
        """Per-patch mean and standard deviation (+1e-6 on the variance), as norm_pix_loss uses."""
        return patches.mean(dim=-1, keepdim=True), (patches.var(dim=-1, keepdim=True) + 1.0e-6) ** 0.5

    def patch_targets(self, imgs):
        """Targets in the model's target space: pixels, or per-patch standardised pixels."""
        target = self.patchify(imgs)
        if self.config.norm_pix_loss:
            mean, std = self.patch_stats(target)
            target = (target - mean) / std
        return target

    def target_to_input(self, pred, patches):
        """Predictions in the target space -> the normalised input space of `patches` (patchified
        images). norm_pix_loss models borrow each original patch's mean and deviation."""
        if not self.config.norm_pix_loss:
            return pred
        mean, std = self.patch_stats(patches)
        return pred * std + mean

    def patch_pixels(self, patches):
        """Patches (..., p*p*C) in the normalised input space -> pixel values in [0, 1]."""
        pp = self.config.patch_size ** 2  # channels vary fastest in a patch
        return (patches * self.pixel_std.repeat(pp) + self.pixel_mean.repeat(pp)).clamp(0, 1)

    # ---- encoder / decoder -----------------------------------------------
    def random_masking(self, x, mask_ratio, noise):
        """Per-sample shuffling by argsort of the given noise (N, L); mask is 1 where removed."""
        N, L, D = x.shape
        len_keep = num_visible(L, mask_ratio)
        ids_shuffle = torch.argsort(noise.to(x.device), dim=1)
        ids_restore = torch.argsort(ids_shuffle, dim=1)
        ids_keep = ids_shuffle[:, :len_keep]
        x_masked = torch.gather(x, dim=1, index=ids_keep.unsqueeze(-1).expand(-1, -1, D))
        mask = torch.ones([N, L], device=x.device)
        mask[:, :len_keep] = 0
        mask = torch.gather(mask, dim=1, index=ids_restore)
        return x_masked, mask, ids_restore

    def forward_encoder(self, imgs, mask_ratio, noise):
        """noise: (B, L) with B a multiple of N. With B = K*N (k-major) the patch
        embedding is computed once per image and shared by its K masks."""
        x = self.patch_embed(imgs) + self.pos_embed[:, 1:, :]
        noise = noise.reshape(-1, x.shape[1])
        if noise.shape[0] != x.shape[0]:
            if noise.shape[0] % x.shape[0]:
                raise ValueError(f"noise has {noise.shape[0]} rows for {x.shape[0]} images")
            x = x.repeat(noise.shape[0] // x.shape[0], 1, 1)
        x, mask, ids_restore = self.random_masking(x, mask_ratio, noise)
        return self._encode(x), mask, ids_restore

    def forward_features(self, imgs):
        """The encoder on every patch, no masking: (N, 1 + L, D), cls token first."""
        return self._encode(self.patch_embed(imgs) + self.pos_embed[:, 1:, :])

    def _encode(self, x):
        cls_token = self.cls_token + self.pos_embed[:, :1, :]
        x = torch.cat((cls_token.expand(x.shape[0], -1, -1), x), dim=1)
        for blk in self.blocks:
            x = blk(x)
        return self.norm(x)

    def forward_decoder(self, x, ids_restore):
        x = self.decoder_embed(x)
        mask_tokens = self.mask_token.repeat(x.shape[0], ids_restore.shape[1] + 1 - x.shape[1], 1)
        x_ = torch.cat([x[:, 1:, :], mask_tokens], dim=1)  # no cls token
        x_ = torch.gather(x_, dim=1, index=ids_restore.unsqueeze(-1).expand(-1, -1, x.shape[2]))
        x = torch.cat([x[:, :1, :], x_], dim=1)
        x = x + self.decoder_pos_embed
        for blk in self.decoder_blocks:
            x = blk(x)
        x = self.decoder_norm(x)
        x = self.decoder_pred(x)
        return x[:, 1:, :]

    def forward_loss(self, imgs, pred, mask):
        """Mean squared error over the masked patches, in the target space."""
        target = self.patch_targets(imgs)
        if target.shape[0] != pred.shape[0]:
            target = target.repeat(pred.shape[0] // target.shape[0], 1, 1)
        loss = ((pred.float() - target) ** 2).mean(dim=-1)
        return (loss * mask).sum() / mask.sum()

    def forward(self, imgs, mask_ratio, noise):
        latent, mask, ids_restore = self.forward_encoder(imgs, mask_ratio, noise)
        pred = self.forward_decoder(latent, ids_restore)
        loss = self.forward_loss(imgs, pred, mask)
        return loss, pred, mask

    # ---- input -----------------------------------------------------------
    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 (N, H, W, C) -> normalised float (N, C, H, W) on the model's device."""
        c = self.config
        if images.ndim != 4 or tuple(images.shape[1:]) != (c.img_size, c.img_size, c.in_chans):
            raise ValueError(f"model expects images of shape (N, {c.img_size}, {c.img_size}, {c.in_chans}) "
                             f"(height, width, channels), got {tuple(images.shape)}")
        if images.dtype != torch.uint8:
            raise ValueError(f"model expects uint8 images, got {images.dtype}")
        x = images.to(self.pixel_mean.device, non_blocking=True).permute(0, 3, 1, 2).float().div_(255)
        return (x - self.pixel_mean.view(1, -1, 1, 1)) / self.pixel_std.view(1, -1, 1, 1)

    def denormalize(self, x: torch.Tensor) -> torch.Tensor:
        """normalised (N, C, H, W) -> pixel values in [0, 1]"""
        return (x * self.pixel_std.view(1, -1, 1, 1) + self.pixel_mean.view(1, -1, 1, 1)).clamp(0, 1)


@dataclass
class Reconstruction:
    """Everything a viewer needs for one batch of images and one mask each."""
    pred: torch.Tensor            # (N, L, p*p*C), in the target space
    target: torch.Tensor          # (N, L, p*p*C), in the target space
    mask: torch.Tensor            # (N, L), 1 = masked
    patch_error: torch.Tensor     # (N, L), MSE per patch in the target space
    original: torch.Tensor        # (N, C, H, W), pixels in [0, 1]
    masked: torch.Tensor          # original with masked patches greyed out
    reconstruction: torch.Tensor  # (N, C, H, W), pixels in [0, 1]
    pasted: torch.Tensor          # reconstruction + visible patches
    num_masked: int
    target_space: str             # "pixels" or "normalized_patches"
    display_uses_original_patch_stats: bool = field(default=False)


@torch.no_grad()
def reconstruct(model: MaskedAutoencoderViT, images: torch.Tensor, mask_ratio: float,
                noise: torch.Tensor) -> Reconstruction:
    """Mask, reconstruct and compare, as MAE's visualisation demo does.

    images: uint8 (N, H, W, C); noise: (N, L), e.g. mask_noise(seed, ids, 1, L)[0].
    For norm_pix_loss models the prediction lives in per-patch standardised space;
    the pixel display then borrows each original patch's mean and variance, and
    `display_uses_original_patch_stats` says so.
    """
    check_mask_ratio(mask_ratio)
    model.eval()
    imgs = model.normalize(images)
    loss, pred, mask = model(imgs, mask_ratio, noise)
    pred = pred.float()
    target = model.patch_targets(imgs)
    patch_error = ((pred - target) ** 2).mean(dim=-1)

    recon = model.unpatchify(model.target_to_input(pred, model.patchify(imgs)))
    p, C = model.config.patch_size, model.config.in_chans
    mask_img = model.unpatchify(mask.unsqueeze(-1).repeat(1, 1, p * p * C))
    original = model.denormalize(imgs)
    reconstruction = model.denormalize(recon)
    return Reconstruction(
        pred=pred, target=target, mask=mask, patch_error=patch_error,
        original=original,
        masked=original * (1 - mask_img) + 0.5 * mask_img,
        reconstruction=reconstruction,
        pasted=original * (1 - mask_img) + reconstruction * mask_img,
        num_masked=num_masked(model.config.num_patches, mask_ratio),
        target_space=model.config.target_space,
        display_uses_original_patch_stats=model.config.norm_pix_loss,
    )


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def build_model(config: MAEConfig, seed: int = 0) -> MaskedAutoencoderViT:
    """A freshly initialised model; the seed makes initialisation reproducible."""
    model = MaskedAutoencoderViT(config)
    model.initialize_weights(torch.Generator().manual_seed(seed))
    return model


__all__ = ["MAEConfig", "PRESETS", "get_config", "MaskedAutoencoderViT", "Reconstruction", "reconstruct",
           "mask_noise", "check_mask_ratio", "check_visible", "check_seed", "num_masked", "num_visible",
           "smallest_mask_ratio", "largest_mask_ratio",
           "get_2d_sincos_pos_embed", "build_model", "count_parameters", "IMAGENET_MEAN", "IMAGENET_STD"]
