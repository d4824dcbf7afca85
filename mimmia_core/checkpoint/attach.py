"""The paper's encoder-only setting: a released encoder with another MAE's decoder."""
from dataclasses import replace

from .base import CheckpointError, LoadedModel, decoder_keys, model_from_weights

def attach_decoder(encoder: LoadedModel, decoder_from: LoadedModel) -> LoadedModel:
    """The target's encoder with another MAE's decoder (the paper's encoder-only
    setting: the adversary puts its shadow decoder on the released encoder).

    Preprocessing comes from the encoder; the target space (norm_pix_loss) from
    the decoder, which was trained for it.
    """
    decoder_from.require_decoder()
    e, d = encoder.config, decoder_from.config
    wrong = [f"{f}: encoder {getattr(e, f)} vs decoder's model {getattr(d, f)}"
             for f in ("img_size", "patch_size", "in_chans", "embed_dim", "mlp_ratio")
             if getattr(e, f) != getattr(d, f)]
    if wrong:
        raise CheckpointError(f"cannot put the decoder of {decoder_from.path} on the encoder of {encoder.path}; "
                              f"they differ in {'; '.join(wrong)}")
    config = replace(e, decoder_embed_dim=d.decoder_embed_dim, decoder_depth=d.decoder_depth,
                     decoder_num_heads=d.decoder_num_heads, norm_pix_loss=d.norm_pix_loss)
    warnings = []
    if (e.mean, e.std) != (d.mean, d.std):
        warnings.append(f"the decoder was trained with mean/std {d.mean} / {d.std}, the encoder uses "
                        f"{e.mean} / {e.std}")
    if e.layer_norm_eps != d.layer_norm_eps:
        warnings.append(f"decoder LayerNorm eps changed from {d.layer_norm_eps} to the encoder's {e.layer_norm_eps}")
    enc_sd, dec_sd = encoder.model.state_dict(), decoder_from.model.state_dict()
    old_decoder = set(decoder_keys(enc_sd))
    state = {k: v for k, v in enc_sd.items() if k not in old_decoder}
    state.update({k: dec_sd[k] for k in decoder_keys(dec_sd)})
    path = f"{encoder.path} + decoder of {decoder_from.path}"
    model, _ = model_from_weights(config, state, path, allow_missing_decoder=False)
    provenance = {"format": "attached", "encoder": {"path": encoder.path, "source_format": encoder.source_format,
                                                    "fingerprint": encoder.fingerprint, **encoder.provenance},
                  "decoder": {"path": decoder_from.path, "source_format": decoder_from.source_format,
                              "fingerprint": decoder_from.fingerprint}, "warnings": warnings}
    device = next(encoder.model.parameters()).device
    return LoadedModel(model.to(device).eval(), path, "attached", provenance)
