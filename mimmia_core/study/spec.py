"""A study: one factor varied over points, everything else fixed by a base recipe.

A point is a plain dict (BASE_POINT's layout): the data it draws, how the target, shadow and reference
models train, and how they are attacked. A study spec names its base (BASE_POINT with overrides) and per
point the dotted settings it changes, e.g. {"target.epochs": 100}. The shadow and the references train
like the target unless a point sets their own fields ("shadow.mask_ratio": 0.5): the adversary is
assumed to know the target's recipe, as in the paper. `--quick` applies the spec's "quick" settings
before each point's, so every point shrinks the same way and still differs by its own setting.
"""
import copy
import json
from dataclasses import dataclass, field
from pathlib import Path

from ..attacks import ATTACKS
from ..paths import require_exists

MODEL_FIELDS = ("preset", "config", "epochs", "take_epoch", "save_epochs", "batch_size", "lr", "warmup_epochs",
                "weight_decay", "mask_ratio", "augment", "dp")
BASE_POINT = {
    "seed": 0,
    "data": {"target": "fashion-mnist:train", "shadow": None, "members": 128, "nonmembers": 512, "references": 4,
             "online_references": 0},  # online: each trains on a random half of the target's candidates
    "target": {"preset": "mae_tiny_28", "config": {}, "epochs": 450, "take_epoch": None, "save_epochs": [],
               "batch_size": 32, "lr": 2e-3, "warmup_epochs": 22, "weight_decay": 0.0, "mask_ratio": 0.75,
               "augment": "none", "dp": None},
    "shadow": {},       # fields that differ from the target's
    "reference": {},    # fields that differ from the target's
    "decoder": None,    # encoder-only target: None (its own), "shadow" (swapped in) or {"fit_epochs": N}
    "attack": {"mask_ratios": [0.75], "num_masks": 8, "attacks": ["paper", "calibrated", "lira"]},
    "utility": False,   # also measure the target's linear-probe accuracy and held-out loss
}
SPEC_KEYS = {"name", "title", "variable", "variable_label", "scale", "base", "points", "quick", "question", "paper",
             "metric", "attack"}
METRICS = {"auc": "AUC", "balanced_accuracy": "balanced accuracy at the shadow's threshold"}


@dataclass
class StudySpec:
    name: str
    title: str
    variable: str                   # what varies, for the x axis
    variable_label: str
    points: list                    # [{"value": v, "label": str, "set": {dotted: value}}]
    base: dict = field(default_factory=dict)
    quick: dict = field(default_factory=dict)   # {"set": {...}, "points": [...] (optional replacement)}
    scale: str = "linear"           # "linear", "log" or "category"
    question: str = ""              # what the study asks
    paper: str = ""                 # what the paper reports, in words
    metric: str = "auc"             # what the finding compares (METRICS): a shadow study moves only the threshold
    attack: str | None = None       # the attack the finding speaks of; None: the strongest every point ran

    def __post_init__(self):
        if not self.points:
            raise ValueError(f"study {self.name!r} has no points")
        if self.scale not in ("linear", "log", "category"):
            raise ValueError(f"study {self.name!r}: scale must be linear, log or category, got {self.scale!r}")
        if self.metric not in METRICS:
            raise ValueError(f"study {self.name!r}: metric must be one of {list(METRICS)}, got {self.metric!r}")
        if self.attack is not None and self.attack not in ATTACKS:
            raise ValueError(f"study {self.name!r}: unknown attack {self.attack!r}; choose from {list(ATTACKS)}")
        for p in self.points:
            if "value" not in p:
                raise ValueError(f"study {self.name!r}: every point needs a 'value', got {p}")

    def resolved_points(self, quick: bool = False) -> list:
        """[(value, label, point dict)]: BASE_POINT, then the study's base, then --quick's settings, then the
        point's own (with --quick, the quick points where the spec has them)."""
        base = apply_settings(BASE_POINT, self.base)
        if quick:
            base = apply_settings(base, self.quick.get("set", {}))
        points = self.quick.get("points", self.points) if quick else self.points
        out = []
        for p in points:
            point = apply_settings(base, p.get("set", {}))
            check_point(point, f"study {self.name!r}, point {p['value']!r}")
            out.append((p["value"], str(p.get("label", p["value"])), point))
        return out

    def to_dict(self) -> dict:
        return dict(name=self.name, title=self.title, variable=self.variable, variable_label=self.variable_label,
                    scale=self.scale, question=self.question, paper=self.paper, base=self.base, points=self.points,
                    quick=self.quick, metric=self.metric, attack=self.attack)


def apply_settings(point: dict, settings: dict) -> dict:
    """A copy of `point` with dotted settings applied: {"target.epochs": 100, "data": {...}}."""
    out = copy.deepcopy(point)
    for key, value in settings.items():
        *parents, leaf = key.split(".")
        node = out
        for name in parents:
            if not isinstance(node.get(name), dict):
                raise ValueError(f"study setting {key!r}: {name!r} is not a group of settings")
            node = node[name]
        model_field = parents[-1:] in (["target"], ["shadow"], ["reference"]) and leaf in MODEL_FIELDS
        if leaf not in node and not model_field and parents[-1:] != ["config"]:  # config: MAEConfig checks it
            raise ValueError(f"unknown study setting {key!r}")
        node[leaf] = copy.deepcopy(value)
    return out


def model_recipe(point: dict, role: str) -> dict:
    """How the model of `role` (target, shadow, reference) trains: the target's recipe with its own fields."""
    return {**point["target"], **(point[role] if role != "target" else {})}


def check_point(point: dict, where: str) -> None:
    unknown = [f"{role}.{k}" for role in ("target", "shadow", "reference") for k in point[role]
               if k not in MODEL_FIELDS]
    if unknown:
        raise ValueError(f"{where}: unknown model setting(s) {unknown}; a model takes {list(MODEL_FIELDS)}")
    bad = [a for a in point["attack"]["attacks"] if a not in ATTACKS]
    if bad:
        raise ValueError(f"{where}: unknown attack(s) {bad}; choose from {list(ATTACKS)}")
    data = point["data"]
    for key in ("members", "nonmembers"):
        if not isinstance(data[key], int) or data[key] < 2:
            raise ValueError(f"{where}: data.{key} must be a whole number of at least 2, got {data[key]!r}")
    if not isinstance(data["references"], int) or data["references"] < 0:
        raise ValueError(f"{where}: data.references must be a whole number >= 0, got {data['references']!r}")
    online = data["online_references"]
    if isinstance(online, bool) or not isinstance(online, int) or online < 0 or online == 1:
        raise ValueError(f"{where}: data.online_references must be 0 or a whole number >= 2 (each candidate IN for "
                         f"half of them), got {online!r}")
    take = point["target"]["take_epoch"]
    if take is not None and take not in point["target"]["save_epochs"] and take != point["target"]["epochs"]:
        raise ValueError(f"{where}: target.take_epoch {take} is neither a saved epoch "
                         f"{point['target']['save_epochs']} nor the last ({point['target']['epochs']})")


def read_study_json(path) -> StudySpec:
    """A study spec from a JSON file of StudySpec fields (name and points at least)."""
    path = Path(path)
    require_exists(path, "study spec")
    try:
        raw = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"study spec {path}: not valid JSON ({e})") from None
    if not isinstance(raw, dict) or set(raw) - SPEC_KEYS or not {"name", "points"} <= set(raw):
        raise ValueError(f"study spec {path}: a JSON object with name and points, and optionally "
                         f"{sorted(SPEC_KEYS - {'name', 'points'})}")
    raw.setdefault("title", raw["name"])
    raw.setdefault("variable", "value")
    raw.setdefault("variable_label", raw["variable"])
    return StudySpec(**raw)
