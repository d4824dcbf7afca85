"""The paper's questions as built-in studies on Fashion-MNIST, and how a study is named on the command line.

Every built-in study shares one base recipe, STUDY_BASE: the demo's model (mae_tiny_28) and optimiser,
scaled down so that the whole set runs on a few CPU cores (64 members, 256 non-members, 2 references,
200 epochs, with snapshots for the epochs study). Points that change nothing about a model reuse it: the
base target serves the mask-ratio, epochs, shadow, encoder-only and online studies alike. The online study
adds 16 offline references (OUT of every candidate) and 16 online ones (each on a random half of the
target's 64 members and 2,048 non-members), for offline and online LiRA and RMIA.
"""
from .spec import StudySpec, read_study_json

STUDY_BASE = {"data.members": 64, "data.nonmembers": 256, "data.references": 2, "target.epochs": 200,
              "target.warmup_epochs": 10, "target.save_epochs": [25, 50, 100]}
TINY = {"embed_dim": 32, "depth": 1, "num_heads": 2, "decoder_embed_dim": 32, "decoder_depth": 1,
        "decoder_num_heads": 2}
QUICK = {"data.members": 8, "data.nonmembers": 8, "data.references": 2, "target.epochs": 2, "target.warmup_epochs": 0,
         "target.batch_size": 8, "target.save_epochs": [1], "target.config": TINY, "attack.num_masks": 2}
SIZES = {"small (64 x 2)": {"embed_dim": 64, "depth": 2, "num_heads": 2},
         "demo (128 x 4)": {"embed_dim": 128, "depth": 4, "num_heads": 4},
         "large (192 x 6)": {"embed_dim": 192, "depth": 6, "num_heads": 4}}
QUICK_SIZES = [{"value": w, "set": {"target.config.embed_dim": w}} for w in (16, 32)]
CLOTHING, FOOTWEAR_BAGS = "0,1,2,3,4,6", "5,7,8,9"  # Fashion-MNIST labels: tops, trousers, ... / sandals, bags, ...
ATTACKED_RATIOS = [0.5, 0.75, 0.9]


def _study(name, title, variable_label, points, question, paper, scale="linear", base=None, quick_points=None,
           shadow_study=False):
    """A built-in study. A shadow study changes only the shadow, hence only the threshold the attacks learn
    on it: its finding compares the paper attack's balanced accuracy at that threshold, not an AUC, and
    its sets are balanced (as many non-members as members), as in the paper, so that the most accurate
    threshold on the shadow is not "nobody is a member"."""
    quick = {"set": QUICK, **({"points": quick_points} if quick_points else {})}
    balanced = {"data.nonmembers": STUDY_BASE["data.members"]} if shadow_study else {}
    return StudySpec(name=name, title=title, variable=name, variable_label=variable_label, points=points,
                     base={**STUDY_BASE, **balanced, **(base or {})}, quick=quick, scale=scale, question=question, paper=paper,
                     metric="balanced_accuracy" if shadow_study else "auc", attack="paper" if shadow_study else None)


def _points(key, values, labels=None):
    return [{"value": v, "label": (labels or {}).get(v, str(v)), "set": {key: v}} for v in values]


BUILTIN_STUDIES = {s.name: s for s in [
    _study("attack-mask-ratio", "Mask ratio at attack time", "mask ratio of the attack",
           [{"value": r, "set": {"attack.mask_ratios": [r]}} for r in (0.15, 0.3, 0.45, 0.6, 0.75, 0.9)],
           "Which mask ratio should the adversary use?",
           "Leakage peaks near the target's training mask ratio (0.75) and drops for small ratios."),
    _study("epochs", "Pre-training epochs", "pre-training epochs",
           _points("target.take_epoch", [25, 50, 100, 200]),
           "Does leakage grow with pre-training?", "More epochs leak more.", scale="log",
           quick_points=_points("target.take_epoch", [1, 2])),
    _study("model-size", "Model size", "encoder (width x depth)",
           [{"value": k, "label": k, "set": {"target.config": v}} for k, v in SIZES.items()],
           "Do larger MAEs leak more?", "Larger models leak more.", scale="category",
           quick_points=QUICK_SIZES),
    _study("members", "Pre-training set size", "pre-training images (members)",
           _points("data.members", [32, 64, 128]),
           "Does a larger pre-training set protect its images?",
           "Leakage falls as the pre-training set grows (at the same epochs).", scale="log"),
    _study("train-mask-ratio", "Mask ratio at training time", "training mask ratio of the target",
           _points("target.mask_ratio", [0.5, 0.75, 0.9]),
           "Does the training mask ratio change how much leaks, attacked at several ratios?",
           "Not studied directly; the paper attacks at the training ratio.",
           base={"attack.mask_ratios": ATTACKED_RATIOS}),
    _study("shadow-distribution", "Shadow data from another distribution", "shadow's training data",
           [{"value": "clothing", "label": "same (clothing)", "set": {}},
            {"value": "footwear+bags", "label": "footwear and bags",
             "set": {"data.shadow": f"fashion-mnist:train?classes={FOOTWEAR_BAGS}"}},
            {"value": "digits", "label": "handwritten digits", "set": {"data.shadow": "digits"}}],
           "Must the adversary's data match the target's?",
           "The attack weakens when the shadow's distribution differs from the target's.", scale="category",
           shadow_study=True,
           base={"data.target": f"fashion-mnist:train?classes={CLOTHING}"}),
    _study("shadow-mask-ratio", "Shadow trained at another mask ratio", "shadow's training mask ratio",
           _points("shadow.mask_ratio", [0.5, 0.75, 0.9]),
           "Must the shadow be trained like the target?",
           "The attack weakens when the shadow's mask ratio differs from the target's.", shadow_study=True),
    _study("shadow-architecture", "Shadow of another size", "shadow encoder (width x depth)",
           [{"value": k, "label": k, "set": {"shadow.config": v}} for k, v in SIZES.items()],
           "Must the shadow have the target's architecture?",
           "Not reported; the paper's shadow matches the target.", scale="category", shadow_study=True,
           quick_points=[{"value": w, "set": {"shadow.config": {**TINY, "embed_dim": w}}} for w in (16, 32)]),
    _study("encoder-only", "Released encoder without its decoder", "decoder used by the attack",
           [{"value": "original", "label": "original decoder", "set": {}},
            {"value": "fit-20", "label": "fitted, 20 epochs", "set": {"decoder": {"fit_epochs": 20}}},
            {"value": "fit-100", "label": "fitted, 100 epochs", "set": {"decoder": {"fit_epochs": 100}}},
            {"value": "shadow", "label": "shadow's decoder swapped in", "set": {"decoder": "shadow"}}],
           "Does a released encoder leak when the adversary must supply the decoder?",
           "Encoders leak too: a decoder fitted on the adversary's data recovers most of the attack.",
           scale="category",
           quick_points=[{"value": "original", "set": {}}, {"value": "fit-1", "set": {"decoder": {"fit_epochs": 1}}},
                         {"value": "shadow", "set": {"decoder": "shadow"}}]),
]}


DEFENSES = [  # (value, label, settings); each model of a point (target, shadow, references) trains the same way
    ("none", "no defense", {}),
    ("wd-0.05", "weight decay 0.05", {"target.weight_decay": 0.05}),
    ("wd-0.3", "weight decay 0.3", {"target.weight_decay": 0.3}),
    ("crop-flip", "crop and flip", {"target.augment": "crop-flip"}),
    ("stop-50", "early stop, epoch 50", {"target.take_epoch": 50}),
    ("stop-100", "early stop, epoch 100", {"target.take_epoch": 100}),
    ("data-x2", "2x data, same steps", {"data.members": 128, "target.epochs": 100, "target.warmup_epochs": 5}),
    ("dp-eps-50", "DP-SGD, epsilon 50", {"target.dp": {"epsilon": 50.0, "max_grad_norm": 1.0}}),
    ("dp-eps-8", "DP-SGD, epsilon 8", {"target.dp": {"epsilon": 8.0, "max_grad_norm": 1.0}}),
]
QUICK_DEFENSES = [("none", {}), ("wd-0.3", {"target.weight_decay": 0.3}), ("crop-flip", {"target.augment": "crop-flip"}),
                  ("stop-1", {"target.take_epoch": 1}), ("dp-eps-8", {"target.dp": {"epsilon": 8.0}})]
BUILTIN_STUDIES["defenses"] = StudySpec(
    name="defenses", title="Defenses and what they cost", variable="defense", variable_label="defense",
    points=[{"value": v, "label": label, "set": settings} for v, label, settings in DEFENSES],
    base={**STUDY_BASE, "utility": True}, quick={"set": QUICK, "points": [{"value": v, "set": s}
                                                                          for v, s in QUICK_DEFENSES]},
    scale="category", question="What closes the leak, and what does it cost in representation quality?",
    paper="Regularisation and early stopping reduce leakage only partly; the paper does not measure utility.")

ONLINE_ATTACKS = ["paper", "lira", "rmia", "lira_online", "rmia_online"]
BUILTIN_STUDIES["online"] = StudySpec(  # the base recipe, 2,048 non-members: TPR at 0.1% FPR is measurable
    name="online", title="Online against offline attacks", variable="references", variable_label="reference models",
    points=[{"value": "16+16", "label": "offline and online references", "set": {}}],
    base={**STUDY_BASE, "data.nonmembers": 2048, "data.references": 16, "data.online_references": 16,
          "attack.attacks": ONLINE_ATTACKS},
    quick={"set": {**QUICK, "data.nonmembers": 24, "data.references": 4, "data.online_references": 4}},
    scale="category",
    question="How much stronger are the attacks that train references on the candidates (online)?",
    paper="Not studied by the paper; for classifiers, online LiRA and RMIA beat offline ones at low FPR "
          "(Carlini et al. 2022, Zarifzadeh et al. 2024).")


def load_study_spec(name_or_path: str) -> StudySpec:
    """A built-in study by name (BUILTIN_STUDIES) or a JSON file of StudySpec fields."""
    if name_or_path in BUILTIN_STUDIES:
        return BUILTIN_STUDIES[name_or_path]
    if not str(name_or_path).endswith(".json"):
        raise ValueError(f"unknown study {name_or_path!r}: give a built-in name ({', '.join(BUILTIN_STUDIES)}) "
                         f"or a JSON file")
    return read_study_json(name_or_path)
