"""A JSON-ready description of a loaded checkpoint, for `inspect`, the Models page and reports."""
from .base import LoadedModel, decoder_keys

def assumed_settings(provenance: dict) -> dict:
    """Every setting assumed rather than read, also those of an attached model's encoder."""
    encoder = provenance.get("encoder", {}).get("settings_assumed", {}) if provenance.get("format") == "attached" \
        else {}
    return {**{f"encoder {k}": v for k, v in encoder.items()}, **provenance.get("settings_assumed", {})}


DEFENSE_SETTINGS = {"dp-sgd": ("epsilon", "delta", "noise_multiplier", "max_grad_norm"), "augmentation": ("augment",),
                    "weight-decay": ("weight_decay",), "early-stopping": ("epochs", "schedule_epochs")}


def defense_line(provenance: dict) -> str:
    """The training-time defenses a model had, in one line: "none", "not recorded" (a model from
    elsewhere) or e.g. "dp-sgd (epsilon=3.66, delta=0.003125, ...); augmentation (augment=crop-flip)"."""
    if "defenses" not in provenance:
        return "not recorded"
    parts = []
    for d in provenance["defenses"]:
        settings = ", ".join(f"{k}={d[k]:.4g}" if isinstance(d.get(k), float) else f"{k}={d.get(k)}"
                             for k in DEFENSE_SETTINGS.get(d.get("name"), ()))
        parts.append(f"{d.get('name')} ({settings})" if settings else str(d.get("name")))
    return "; ".join(parts) or "none"


def describe_checkpoint(loaded: LoadedModel) -> dict:
    """A JSON-ready summary for the Models page and `inspect`."""
    c = loaded.config
    dec = set(decoder_keys(name for name, _ in loaded.model.named_parameters()))
    counts = {"encoder": 0, "decoder": 0}
    for name, p in loaded.model.named_parameters():
        counts["decoder" if name in dec else "encoder"] += p.numel()
    if not loaded.has_decoder:
        counts["decoder"] = 0  # the placeholder decoder holds no trained weights
    return {
        "path": loaded.path,
        "source_format": loaded.source_format,
        "architecture": {k: v for k, v in c.to_dict().items() if k not in ("mean", "std", "norm_pix_loss")},
        "num_patches": c.num_patches,
        "preprocessing": {"mean": list(c.mean), "std": list(c.std)},
        "target_space": c.target_space,
        "norm_pix_loss": c.norm_pix_loss,
        "has_decoder": loaded.has_decoder,
        "missing_decoder_keys": list(loaded.missing_decoder_keys),
        "parameters": counts,
        "settings_assumed": assumed_settings(loaded.provenance),
        "defense": defense_line(loaded.provenance),  # each defense's details: provenance["defenses"]
        "provenance": loaded.provenance,
        "fingerprint": loaded.fingerprint,
    }
