"""A decoder fitted to a released encoder: the encoder-only setting, done the adversary's way.

Released MAE encoders come without their decoder, and another model's decoder does not
understand this encoder's latent space. The adversary freezes the encoder (patch_embed,
cls_token, pos_embed, blocks, norm), puts a freshly initialised MAE decoder on it and
trains only the decoder, with the MAE loss and mimmia's one training loop (train_mae),
on its own images. The result is an ordinary mimmia model that every attack can use;
its encoder weights are bit-identical to the released ones (checked).
"""
from dataclasses import asdict, replace
from pathlib import Path

import torch

from .checkpoint import LoadedModel, decoder_keys, save_checkpoint, weights_fingerprint
from .config import MAEConfig
from .data import ImageSource, check_images_fit
from .model import MaskedAutoencoderViT, build_model
from .train import TrainConfig, train_mae

DECODER_FIELDS = ("decoder_embed_dim", "decoder_depth", "decoder_num_heads", "norm_pix_loss")


def encoder_fingerprint(model: MaskedAutoencoderViT) -> str:
    """weights_fingerprint of the encoder's weights alone (every state-dict entry but the decoder's)."""
    return weights_fingerprint(model, skip=set(decoder_keys(model.state_dict())))


def decoder_config(config: MAEConfig, decoder: dict | None = None) -> MAEConfig:
    """The encoder's config, with the fresh decoder's shape and target space (DECODER_FIELDS) from `decoder`."""
    other = sorted(set(decoder or {}) - set(DECODER_FIELDS))
    if other:
        raise ValueError(f"--decoder-config sets the fresh decoder's {', '.join(DECODER_FIELDS)}, not {other} "
                         f"(the encoder's settings come with its weights)")
    try:
        return replace(config, **(decoder or {}))
    except (TypeError, ValueError) as e:
        raise ValueError(f"--decoder-config: {e}") from None


def frozen_encoder_fresh_decoder(encoder: LoadedModel, seed: int = 0, decoder: dict | None = None
                                 ) -> MaskedAutoencoderViT:
    """A new model: the encoder's weights, frozen (requires_grad False), under a decoder initialised as
    MAE does (seeded; shaped by `decoder`, see decoder_config); the encoder's own model is left untouched."""
    model = build_model(decoder_config(encoder.config, decoder), seed=seed)
    state = encoder.model.state_dict()
    model.load_state_dict({k: v for k, v in state.items() if k not in set(decoder_keys(state))}, strict=False)
    decoder = set(decoder_keys(name for name, _ in model.named_parameters()))
    for name, p in model.named_parameters():
        if name not in decoder:
            p.requires_grad_(False)
    return model


def _check_encoder(encoder: LoadedModel, source: ImageSource, replace_decoder: bool) -> None:
    if not isinstance(encoder, LoadedModel):
        raise ValueError(f"fit_decoder takes a LoadedModel (checkpoint.load_model), got {type(encoder).__name__}")
    if encoder.has_decoder and not replace_decoder:
        raise ValueError(f"{encoder.path} already has a decoder; pass replace_decoder=True (--replace-decoder) to "
                         f"fit a fresh one in its place (its encoder is kept, its decoder is discarded)")
    check_images_fit(source, encoder.config.img_size, encoder.config.in_chans, encoder.path)


def _provenance(encoder: LoadedModel, source: ImageSource, cfg: TrainConfig, losses: list, enc_fp: str,
                config: MAEConfig) -> dict:
    """What the fitted model is: whose encoder, a decoder fitted on which data, with what budget."""
    data = {"name": source.name, "spec": source.spec, "fingerprint": source.fingerprint(), "num_images": len(source)}
    steps = len(source) // cfg.batch_size
    carried = {k: encoder.provenance[k] for k in ("settings_given", "settings_assumed") if k in encoder.provenance}
    return {
        "trained_by": "mimmia_core.fit_decoder",
        "decoder_fitted": {
            "encoder": {"path": encoder.path, "source_format": encoder.source_format,
                        "fingerprint": encoder.fingerprint, "weights_fingerprint": enc_fp,
                        "had_decoder": encoder.has_decoder, "provenance": encoder.provenance},
            "decoder": {f: getattr(config, f) for f in DECODER_FIELDS},
            "data": data,
            "budget": {"epochs": cfg.epochs, "images": len(source), "steps": cfg.epochs * steps,
                       "image_passes": cfg.epochs * steps * cfg.batch_size},
            "train_config": {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(cfg).items()},
            "losses": losses,
        },
        "data": data,
        "epochs": cfg.epochs,
        "mask_ratio": cfg.mask_ratio,
        "seed": cfg.seed,
        "torch": torch.__version__,
        **carried,  # the encoder's settings (heads, mean/std) given or assumed still hold
    }


def fit_decoder(encoder: LoadedModel, source: ImageSource, *, epochs: int = 100, batch_size: int = 64,
                lr: float = 1e-3, warmup_epochs: float = 5.0, weight_decay: float = 0.05, mask_ratio: float = 0.75,
                seed: int = 0, device=None, progress=True, replace_decoder: bool = False, decoder: dict | None = None,
                out_dir=None, provenance: dict | None = None) -> LoadedModel:
    """Train a fresh MAE decoder under the frozen encoder of `encoder` on every image of `source`.

    The recipe is train_mae's (AdamW, linear warmup to `lr` then cosine, masked-patch MSE
    at `mask_ratio`); the decoder's shape and target space are the encoder config's, or
    those `decoder` sets (decoder_embed_dim, decoder_depth, decoder_num_heads, norm_pix_loss).
    `progress`: True for a tqdm bar, or callable(epochs_done, epochs). An encoder that
    already has a decoder is refused unless replace_decoder. With `out_dir` the result
    is saved there as a mimmia checkpoint; `provenance` adds to what it records. Returns the fitted model (eval mode, on
    `device`); provenance["decoder_fitted"] holds the data, budget and per-epoch losses.
    """
    _check_encoder(encoder, source, replace_decoder)
    if not lr > 0:
        raise ValueError(f"the learning rate (--lr) must be positive, got {lr}")
    cfg = TrainConfig(epochs=epochs, batch_size=batch_size, lr=lr, warmup_epochs=warmup_epochs,
                      weight_decay=weight_decay, mask_ratio=mask_ratio, seed=seed)
    enc_fp = encoder_fingerprint(encoder.model)
    model = frozen_encoder_fresh_decoder(encoder, seed, decoder)
    losses = train_mae(model, source, cfg, progress=progress, device=device)
    if encoder_fingerprint(model) != enc_fp:  # train_mae must train only what requires grad
        raise RuntimeError("the encoder's weights changed while fitting the decoder; this is a bug in mimmia")
    provenance = {**_provenance(encoder, source, cfg, losses, enc_fp, model.config), **(provenance or {})}
    path = f"{encoder.path} + decoder fitted on {source.name}"
    if out_dir is not None:
        path = str(save_checkpoint(model, Path(out_dir), provenance))
    return LoadedModel(model.eval(), path, "mimmia", provenance)


__all__ = ["fit_decoder", "frozen_encoder_fresh_decoder", "decoder_config", "encoder_fingerprint", "DECODER_FIELDS"]
