"""Masked autoencoder with a ViT backbone (He et al., 2022).

Follows facebookresearch/mae models_mae.py name for name, built from timm's
PatchEmbed and Block. The paper's steps are the methods: patchify, mask at
random (by the noise given), encode the visible patches, decode all patches
with mask tokens, and score the masked ones. Masking takes its noise as an
argument, on the model's device: nothing here draws from a global RNG.

Shapes: N images, K masks each, L patches, D width, p patch size, C channels.
The K masks of a batch run as one forward of K*N rows, k-major (row k*N + n is
image n under mask k); the patch embedding is computed once per image and each
row's visible patches are gathered from it, never from K copies.
"""
from functools import partial

import torch
import torch.nn as nn
from timm.layers import PatchEmbed
from timm.models.vision_transformer import Block

from .config import MAEConfig
from .distances import masked_patch_mse
from .masking import num_visible
from .pos_embed import get_2d_sincos_pos_embed


class MaskedAutoencoderViT(nn.Module):
    """Masked autoencoder with a Vision Transformer backbone.

    init=False skips MAE's initialisation, for a model whose weights are loaded next."""

    def __init__(self, config: MAEConfig, init: bool = True):
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
        if init:
            self.initialize_weights()

    def initialize_weights(self, generator: torch.Generator | None = None):
        """MAE's initialisation: fixed sin-cos position embeddings, xavier-uniform linear layers."""
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
        """imgs [N,C,H,W] -> patches [N,L,p*p*C] (channels vary fastest)"""
        p, c = self.config.patch_size, self.config.in_chans
        h = w = imgs.shape[2] // p
        x = imgs.reshape(imgs.shape[0], c, h, p, w, p)
        x = torch.einsum("nchpwq->nhwpqc", x)
        return x.reshape(imgs.shape[0], h * w, p * p * c)

    def unpatchify(self, x):
        """patches [N,L,p*p*C] -> imgs [N,C,H,W]"""
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
        """imgs [N,C,H,W] -> targets [N,L,p*p*C] in the target space: pixels, or per-patch standardised."""
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
    @staticmethod
    def mask_indices(noise, len_keep: int):
        """noise [B,L] -> ids_keep [B,keep] (the lowest noise first), mask [B,L] (1 = removed) and
        ids_restore [B,L] (each patch's rank: the inverse permutation, scattered rather than sorted)."""
        ids_shuffle = torch.argsort(noise, dim=1)
        ranks = torch.arange(noise.shape[1], device=noise.device).expand_as(ids_shuffle)
        ids_restore = torch.empty_like(ids_shuffle).scatter_(1, ids_shuffle, ranks)
        return ids_shuffle[:, :len_keep], (ids_restore >= len_keep).float(), ids_restore

    def random_masking(self, x, mask_ratio, noise):
        """Step 2, mask: keep the patches of lowest noise. x [N,L,D], noise [K*N,L] (k-major: row k*N + n
        masks image n) -> x_masked [K*N,keep,D], mask [K*N,L] (1 = removed), ids_restore [K*N,L].
        The visible patches are gathered straight from the N images, never repeated K times."""
        N, L, D = x.shape
        if noise.shape[0] % N:
            raise ValueError(f"noise has {noise.shape[0]} rows for {N} images")
        ids_keep, mask, ids_restore = self.mask_indices(noise, num_visible(L, mask_ratio))
        image = torch.arange(noise.shape[0], device=x.device) % N
        rows = (image[:, None] * L + ids_keep).flatten()
        return x.reshape(N * L, D).index_select(0, rows).view(noise.shape[0], -1, D), mask, ids_restore

    def forward_encoder(self, imgs, mask_ratio, noise):
        """Steps 1-3: embed the patches (once per image), mask them, encode the visible ones.
        imgs [N,C,H,W], noise [K*N,L] (k-major; K = 1 for one mask each)
        -> latent [K*N,1+keep,D], mask [K*N,L], ids_restore [K*N,L]"""
        x = self.patch_embed(imgs) + self.pos_embed[:, 1:, :]
        x, mask, ids_restore = self.random_masking(x, mask_ratio, noise.reshape(-1, x.shape[1]))
        return self._encode(x), mask, ids_restore

    def forward_features(self, imgs):
        """The encoder on every patch, no masking: imgs [N,C,H,W] -> [N,1+L,D], cls token first."""
        return self._encode(self.patch_embed(imgs) + self.pos_embed[:, 1:, :])

    def _encode(self, x):
        """Prepend the cls token, run the blocks and the final norm: [B,T,D] -> [B,1+T,D]."""
        cls_token = self.cls_token + self.pos_embed[:, :1, :]
        x = torch.cat((cls_token.expand(x.shape[0], -1, -1), x), dim=1)
        for blk in self.blocks:
            x = blk(x)
        return self.norm(x)

    def forward_decoder(self, x, ids_restore):
        """Step 4: mask tokens fill the removed patches, the decoder predicts every patch.
        latent [B,1+keep,D], ids_restore [B,L] -> pred [B,L,p*p*C] in the target space"""
        x = self.decoder_embed(x)
        x = self._unshuffle(x[:, :1], x[:, 1:], ids_restore)
        for blk in self.decoder_blocks:
            x = blk(x)
        x = self.decoder_norm(x)
        x = self.decoder_pred(x)
        return x[:, 1:, :]

    def _unshuffle(self, cls, visible, ids_restore):
        """The decoder's input [B,1+L,D] with its position embedding: the cls token, each visible
        token at its patch, the mask token everywhere else. The mask tokens written once and a
        scatter of the visible ones (the same sums as MAE's repeat, cat, gather, cat and add)."""
        B, L = ids_restore.shape
        pos = self.decoder_pos_embed
        ids_keep = torch.empty_like(ids_restore).scatter_(
            1, ids_restore, torch.arange(L, device=ids_restore.device).expand(B, L))[:, :visible.shape[1]] + 1
        x = torch.cat([cls + pos[:, :1], (self.mask_token + pos[:, 1:]).expand(B, -1, -1)], dim=1)
        index = ids_keep.unsqueeze(-1).expand(-1, -1, x.shape[2])
        return x.scatter(1, index, visible + pos[0][ids_keep])  # out of place: per-sample grads (DP) vmap it

    def forward_loss(self, imgs, pred, mask):
        """Step 5: mean squared error over the masked patches, in the target space.
        imgs [N,C,H,W], pred [K*N,L,p*p*C], mask [K*N,L] -> scalar"""
        target = self.patch_targets(imgs)
        if target.shape[0] != pred.shape[0]:
            target = target.repeat(pred.shape[0] // target.shape[0], 1, 1)
        return masked_patch_mse(pred, target, mask, dim=None)

    def forward(self, imgs, mask_ratio, noise):
        """imgs [N,C,H,W], noise [K*N,L] on the model's device -> (loss, pred [K*N,L,p*p*C], mask [K*N,L])"""
        latent, mask, ids_restore = self.forward_encoder(imgs, mask_ratio, noise)
        pred = self.forward_decoder(latent, ids_restore)
        loss = self.forward_loss(imgs, pred, mask)
        return loss, pred, mask

    # ---- input -----------------------------------------------------------
    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 images [N,H,W,C] -> normalised float [N,C,H,W] on the model's device."""
        c = self.config
        if images.ndim != 4 or tuple(images.shape[1:]) != (c.img_size, c.img_size, c.in_chans):
            raise ValueError(f"model expects images of shape (N, {c.img_size}, {c.img_size}, {c.in_chans}) "
                             f"(height, width, channels), got {tuple(images.shape)}")
        if images.dtype != torch.uint8:
            raise ValueError(f"model expects uint8 images, got {images.dtype}")
        x = images.to(self.pixel_mean.device, non_blocking=True).permute(0, 3, 1, 2).float().div_(255)
        return (x - self.pixel_mean.view(1, -1, 1, 1)) / self.pixel_std.view(1, -1, 1, 1)

    def denormalize(self, x: torch.Tensor) -> torch.Tensor:
        """normalised [N,C,H,W] -> pixel values in [0, 1]"""
        return (x * self.pixel_std.view(1, -1, 1, 1) + self.pixel_mean.view(1, -1, 1, 1)).clamp(0, 1)


def build_model(config: MAEConfig, seed: int = 0) -> MaskedAutoencoderViT:
    """A freshly initialised model; the seed makes initialisation reproducible."""
    model = MaskedAutoencoderViT(config)
    model.initialize_weights(torch.Generator().manual_seed(seed))
    return model


__all__ = ["MaskedAutoencoderViT", "build_model"]
