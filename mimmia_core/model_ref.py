"""A model as a user names it: a path plus the MAEConfig settings that the file cannot tell.

    off.pth?decoder_num_heads=4&mean=0&std=1
    hf_folder?mean=0.5,0.5,0.5&std=0.5,0.5,0.5
    hf:facebook/vit-mae-base@main?norm_pix_loss=true     a published MAE by name (hub.py)
    timm:vit_base_patch16_224.mae

Every model flag of the CLI, an experiment JSON ("config" objects) and the
dashboard give settings in this one vocabulary: MAEConfig field names.
"""
from dataclasses import dataclass, field, fields
from pathlib import Path

from .config import MAEConfig

INT_FIELDS = ("img_size", "patch_size", "in_chans", "embed_dim", "depth", "num_heads", "decoder_embed_dim",
              "decoder_depth", "decoder_num_heads")
FLOAT_FIELDS = ("mlp_ratio", "layer_norm_eps")
LIST_FIELDS = ("mean", "std")
BOOLS = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}


def settings_howto(name: str, fields) -> str:
    """How to supply settings, in each place a model is named; `name` is the file's name."""
    example = "&".join(f"{f}={PLACEHOLDERS.get(f, 'N')}" for f in fields)
    return (f"supply {'it' if len(fields) == 1 else 'them'} as {name}?{example} with any model flag "
            f"(--target, --shadow, --reference, --decoder-from, --model) or `inspect`, as a \"config\" object "
            f"next to the model's \"path\" in an experiment JSON, or under Architecture hints on the dashboard")


PLACEHOLDERS = {"norm_pix_loss": "true|false", "mean": "M (one per channel, comma-separated)",
                "std": "S (one per channel)", "layer_norm_eps": "EPS", "mlp_ratio": "R"}


@dataclass(frozen=True)
class ModelRef:
    path: str
    config: dict = field(default_factory=dict)  # MAEConfig fields the user gave


def _parse_value(name: str, text: str):
    text = text.strip()
    try:
        if name in INT_FIELDS:
            return int(text)
        if name in FLOAT_FIELDS:
            return float(text)
        if name in LIST_FIELDS:
            return tuple(float(v) for v in text.split(","))
    except ValueError:
        kind = "an integer" if name in INT_FIELDS else "a number" if name in FLOAT_FIELDS else \
            "comma-separated numbers, e.g. 0.5,0.5,0.5"
        raise ValueError(f"setting {name}={text!r}: {name} takes {kind}") from None
    if text.lower() not in BOOLS:
        raise ValueError(f"setting {name}={text!r}: {name} takes true or false")
    return BOOLS[text.lower()]


def check_settings(settings, what: str = "config") -> dict:
    """A dict of MAEConfig fields from JSON or a form, names checked and lists made tuples."""
    if settings is None:
        return {}
    if isinstance(settings, MAEConfig):
        return settings.to_dict()
    if not isinstance(settings, dict):
        raise ValueError(f"{what} must be an object of MAEConfig fields, got {type(settings).__name__}")
    known = {f.name for f in fields(MAEConfig)}
    unknown = sorted(set(settings) - known)
    if unknown:
        raise ValueError(f"{what}: unknown setting(s) {unknown}; the settings are MAEConfig fields: {sorted(known)}")
    return {k: tuple(v) if isinstance(v, list) else v for k, v in settings.items()}


def parse_model_ref(text) -> ModelRef:
    """'PATH?key=value&key=value' -> ModelRef. A path that exists as written is never split. PATH may
    be a hub name (hf:ORG/NAME[@REVISION], timm:MODEL_NAME): load_model resolves it, and the settings
    after '?' apply to its files as to a local folder's."""
    if isinstance(text, ModelRef):
        return text
    text = str(text)
    path, sep, query = text.partition("?")
    if not sep or Path(text).exists():
        return ModelRef(text)
    settings = {}
    for item in query.split("&"):
        name, eq, value = item.partition("=")
        if not eq or not name.strip():
            raise ValueError(f"{text}: settings after '?' are key=value pairs joined by '&', got {item!r}")
        settings[name.strip()] = value
    check_settings(settings, f"{path} settings")
    return ModelRef(path, {name: _parse_value(name, value) for name, value in settings.items()})


def model_ref(value, config=None) -> ModelRef:
    """A ModelRef from a path string, 'PATH?settings', a ModelRef, or a JSON object {"path", "config"};
    `config` adds settings (a conflicting value is refused)."""
    if isinstance(value, dict):
        extra = set(value) - {"path", "config"}
        if "path" not in value or extra:
            raise ValueError(f"a model entry is a path or an object with \"path\" and \"config\", got {value}")
        ref = parse_model_ref(value["path"])
        ref = ModelRef(ref.path, {**ref.config, **check_settings(value.get("config"), f"{ref.path} config")})
    else:
        ref = parse_model_ref(value)
    given = check_settings(config, f"{ref.path} config")
    clash = sorted(k for k in set(given) & set(ref.config) if given[k] != ref.config[k])
    if clash:
        raise ValueError(f"{ref.path}: {clash} given twice with different values")
    return ModelRef(ref.path, {**ref.config, **given})


__all__ = ["ModelRef", "parse_model_ref", "model_ref", "check_settings", "settings_howto"]
