"""Membership inference attacks on MAE models, and how to run them on an experiment.

An attack turns (model, images) into one signal per image, higher meaning
"more member-like". `run_attack` scores the target's candidates, learns a
threshold on the shadow model's members and non-members, and evaluates.
A new attack is a small subclass of `Attack` that implements `signal`.
"""
from dataclasses import dataclass, field, replace

import numpy as np

from .metrics import DEFAULT_FPRS, best_accuracy_threshold, evaluate, threshold_at_fpr
from .masking import smallest_mask_ratio
from .data import check_images_fit as fit_images
from .distances import AGGREGATES, TARGET_SPACE_DISTANCES, aggregate_masks
from .scores import refuse_non_finite

PIXEL_DEFAULT = "pixel_mse_raw"  # what comparable_spec switches a target-space distance to


class Attack:
    """One membership signal. Subclasses set `name` and implement `signal(model, source, ...)`;
    `model` and `references` are LoadedModels, `scorer` a scorer.Scorer."""
    name = "attack"
    label = "attack"         # its name in the dashboard and reports
    help = ""                # one sentence on what it measures
    needs_references = False
    min_references = 0       # reference models the attack needs to run
    uses_mask_ratio = True   # False: the spec's mask ratio does not change the result
    uses_distance = True     # False: no reconstruction distance is compared (the spec's distance is unused)
    distance = None          # the distance it always scores with; None: the spec's

    def signals(self, model, members, nonmembers, references, spec, scorer, aggregate):
        """(member signals, non-member signals), higher = more member-like."""
        return (self.signal(model, members, references, spec, scorer, aggregate),
                self.signal(model, nonmembers, references, spec, scorer, aggregate))

    def signal(self, model, source, references, spec, scorer, aggregate) -> np.ndarray:
        raise NotImplementedError

    def _reference_scores(self, model, source, references, spec, scorer):
        """The target's and every reference's Scores on `source`, with the same (paired) masks."""
        if len(references) < self.min_references:
            raise ValueError(f"attack {self.name} needs at least {self.min_references} reference model(s) "
                             f"(trained without the candidates), got {len(references)}")
        target = scorer.scores(model, source, spec)
        refs = [scorer.scores(r, source, spec) for r in references]
        for r in refs:
            if not np.array_equal(r.ids, target.ids):
                raise ValueError(f"{self.name}: reference scores are not aligned with the target's image ids")
        return target, refs

    def __repr__(self):
        return f"{type(self).__name__}()"


class PaperAttack(Attack):
    """Li et al. 2024: the aggregated reconstruction distance itself (low distance = member)."""
    name = "paper"
    label = "paper (raw distance)"
    help = "Li et al. 2024: the reconstruction distance itself; a low distance means member."

    def signal(self, model, source, references, spec, scorer, aggregate):
        return scorer.scores(model, source, spec).signal(aggregate)


class CalibratedAttack(Attack):
    """Difficulty calibration (Watson et al. 2022) by reference models that never saw the candidates.

    mode "log_ratio" (default, the strongest measured): per mask k, log(mean_r d_rk) - log(d_tk), then
    aggregated over the K paired masks. mode "difference": Watson's plain form, mean_r d_rk - d_tk.
    """
    name = "calibrated"
    label = "calibrated (reference models)"
    help = ("The target's distance relative to reference models that never saw the image (log ratio per paired "
            "mask): removes per-image difficulty.")
    needs_references = True
    min_references = 1
    MODES = ("log_ratio", "difference")

    def __init__(self, mode: str = "log_ratio"):
        if mode not in self.MODES:
            raise ValueError(f"calibration mode must be one of {self.MODES}, got {mode!r}")
        self.mode = mode

    def signal(self, model, source, references, spec, scorer, aggregate):
        target, refs = self._reference_scores(model, source, references, spec, scorer)
        if self.mode == "log_ratio":
            ref = np.stack([r.log_distances() for r in refs])            # (R, K, N)
            ref_log_mean = np.logaddexp.reduce(ref, axis=0) - np.log(len(refs))
            calibrated = target.log_distances() - ref_log_mean
        else:
            calibrated = target.distances() - np.mean([r.distances() for r in refs], axis=0)
        return -aggregate_masks(calibrated, aggregate)

    def __repr__(self):
        return f"CalibratedAttack(mode={self.mode!r})"


class LiRAAttack(Attack):
    """Offline LiRA (Carlini et al. 2022): how far below the references' log distances the target's lies.

    Per image, x = log distances aggregated over the paired masks; a Gaussian N(mu, sigma) is fitted
    to the references' x (all trained without the image), and the signal is (mu - x_target) / sigma.
    One-sided: only a lower distance than the references expect points to membership. The per-image
    sigma needs many references; sigma="auto" pools the variance over all images when there are
    fewer than 8 references (Carlini et al. also use a global variance with few models).
    """
    name = "lira"
    label = "offline LiRA"
    help = "Offline LiRA: how far below the references' distances the target's lies, in reference standard deviations."
    needs_references = True
    min_references = 2
    SIGMAS = ("auto", "per_image", "pooled")
    MIN_PER_IMAGE = 8

    def __init__(self, sigma: str = "auto"):
        if sigma not in self.SIGMAS:
            raise ValueError(f"lira sigma must be one of {self.SIGMAS}, got {sigma!r}")
        self.sigma = sigma

    def signal(self, model, source, references, spec, scorer, aggregate):
        target, refs = self._reference_scores(model, source, references, spec, scorer)
        x_t = aggregate_masks(target.log_distances(), aggregate)
        x_r = np.stack([aggregate_masks(r.log_distances(), aggregate) for r in refs])  # (R, N)
        var = x_r.var(axis=0, ddof=1)
        pooled = self.sigma == "pooled" or (self.sigma == "auto" and len(refs) < self.MIN_PER_IMAGE)
        sigma = np.sqrt(var.mean()) if pooled else np.sqrt(var)
        return (x_r.mean(axis=0) - x_t) / (sigma + 1e-30)

    def __repr__(self):
        return f"LiRAAttack(sigma={self.sigma!r})"


class EncoderMIAttack(Attack):
    """EncoderMI-style baseline (Liu et al. 2021): members' augmented views embed more alike.
    Uses the encoder only; the spec's seed fixes the views."""
    name = "encodermi"
    label = "EncoderMI (embeddings)"
    help = "Baseline: how alike the encoder embeds augmented views of the image (no decoder)."
    uses_mask_ratio = False
    uses_distance = False

    def __init__(self, num_views: int = 8):
        self.num_views = num_views

    def signal(self, model, source, references, spec, scorer, aggregate):
        return np.asarray(scorer.similarity(model, source, num_views=self.num_views, seed=spec.seed), np.float64)


class UnmaskedAttack(Attack):
    """Plain reconstruction error: the smallest mask ratio (one masked patch), MSE over all patches
    (run_attack passes distance all_mse, or a pixel distance where the models normalise differently)."""
    name = "unmasked"
    label = "unmasked reconstruction"
    help = "Baseline: plain reconstruction error with a single masked patch, over all patches."
    uses_mask_ratio = False
    distance = "all_mse"

    def signal(self, model, source, references, spec, scorer, aggregate):
        spec = replace(spec, mask_ratio=smallest_mask_ratio(model.config.num_patches))
        return scorer.scores(model, source, spec).signal(aggregate)


ATTACKS: dict[str, type[Attack]] = {cls.name: cls for cls in
                                    (PaperAttack, CalibratedAttack, LiRAAttack, EncoderMIAttack, UnmaskedAttack)}


def make_attack(attack) -> Attack:
    if isinstance(attack, Attack):
        return attack
    if attack not in ATTACKS:
        raise ValueError(f"unknown attack {attack!r}; choose from {sorted(ATTACKS)}")
    return ATTACKS[attack]()


def parse_threshold_rule(rule) -> str | float:
    """"accuracy", a target FPR as a float, or "fpr:0.01" -> "accuracy" or the FPR."""
    if isinstance(rule, str) and rule.startswith("fpr:"):
        rule = rule[4:]
    if rule == "accuracy":
        return rule
    try:
        fpr = float(rule)
    except (TypeError, ValueError):
        raise ValueError(f"threshold rule must be 'accuracy' or 'fpr:<value>', got {rule!r}") from None
    if not 0.0 <= fpr <= 1.0:
        raise ValueError(f"threshold FPR must lie in [0, 1], got {fpr}")
    return fpr


@dataclass
class AttackResult:
    attack: str
    spec: object                    # the ScoreSpec the target was scored with
    aggregate: str
    member_ids: np.ndarray
    nonmember_ids: np.ndarray
    member_scores: np.ndarray       # higher = more member-like
    nonmember_scores: np.ndarray
    shadow_member_scores: np.ndarray | None
    shadow_nonmember_scores: np.ndarray | None
    threshold: float | None         # learned on the shadow's scores, applied to the target's
    threshold_rule: str             # "accuracy" or "fpr:<value>"
    metrics: dict                   # metrics.evaluate on the target's scores
    notes: list = field(default_factory=list)  # what run_attack changed and why (e.g. comparable_spec)


def check_images_fit(loaded, source) -> None:
    """Refuse a source whose images do not have the model's input size, saying how to fix it."""
    fit_images(source, loaded.config.img_size, loaded.config.in_chans, str(loaded.path))


def _checked_signals(attack: Attack, loaded, members, nonmembers, references, spec, scorer, aggregate):
    for source in (members, nonmembers):
        if len(source) == 0:
            raise ValueError(f"{source.name} is empty: an attack needs members and non-members")
        for m in (loaded, *references):
            check_images_fit(m, source)
    m, n = attack.signals(loaded, members, nonmembers, references, spec, scorer, aggregate)
    m, n = np.asarray(m, np.float64), np.asarray(n, np.float64)
    for source, s in ((members, m), (nonmembers, n)):
        if s.shape != (len(source),):
            raise ValueError(f"attack {attack.name} gave {s.shape} scores for the {len(source)} images of "
                             f"{source.name}")
        refuse_non_finite(s, f"attack {attack.name}", f" for model {loaded.path}"
                          f"{' or its references' if references else ''} on {source.name}")
    return m, n


def _normalisation(model) -> tuple:
    c = model.config
    return tuple(c.mean), tuple(c.std), bool(c.norm_pix_loss)


def comparable_spec(experiment_or_models, spec):
    """(spec, note or None): the spec under which the models' distances compare like with like.

    masked_mse and all_mse are measured in each model's own normalisation (mean/std, and per-patch
    standardised targets with norm_pix_loss). Where the models (an Experiment's target, shadow and
    references, or a list of models) normalise differently, a shadow threshold or a calibration
    would compare other units, so the distance becomes PIXEL_DEFAULT and the note says why.
    """
    e = experiment_or_models
    models = [m for m in (e.target, e.shadow, *e.references) if m is not None] if hasattr(e, "target") else list(e)
    if spec.distance not in TARGET_SPACE_DISTANCES or len({_normalisation(m) for m in models}) < 2:
        return spec, None
    seen = "; ".join(f"{m.path}: mean {list(m.config.mean)}, std {list(m.config.std)}"
                     f"{', norm_pix_loss' if m.config.norm_pix_loss else ''}" for m in models)
    return replace(spec, distance=PIXEL_DEFAULT), (
        f"the models normalise differently ({seen}), so {spec.distance}, measured in each model's own "
        f"normalisation, is not comparable between them; scored with {PIXEL_DEFAULT} (MSE in pixel space over "
        f"the masked patches, unclamped) instead")


def run_attack(attack, experiment, spec, scorer, threshold_rule="accuracy", aggregate: str = "mean",
               fprs=DEFAULT_FPRS) -> AttackResult:
    """Score the target's candidates, learn a threshold on the shadow (if any), evaluate.

    threshold_rule: "accuracy" maximises accuracy on the shadow's members vs non-members; a float
    (or "fpr:0.01") takes the lowest threshold with at most that FPR on the shadow's non-members.
    Calibrated attacks use the same references on the shadow side. The result's spec is the one
    scored with: the attack's own distance (unmasked: all_mse), made comparable (comparable_spec)
    between the models whose scores meet; its notes say what changed.
    """
    attack = make_attack(attack)
    rule = parse_threshold_rule(threshold_rule)
    if aggregate not in AGGREGATES:
        raise ValueError(f"aggregate must be one of {AGGREGATES}, got {aggregate!r}")
    refs = list(experiment.references) if attack.needs_references else []
    spec, note = replace(spec, distance=attack.distance or spec.distance), None
    if attack.uses_distance:
        compared = [m for m in (experiment.target, experiment.shadow, *refs) if m is not None]
        spec, note = comparable_spec(compared, spec)
    m, n = _checked_signals(attack, experiment.target, experiment.members, experiment.nonmembers, refs, spec,
                            scorer, aggregate)
    sm = sn = threshold = None
    if experiment.shadow is not None:
        if experiment.shadow_members is None or experiment.shadow_nonmembers is None:
            raise ValueError("a shadow model needs its members and non-members to learn a threshold")
        sm, sn = _checked_signals(attack, experiment.shadow, experiment.shadow_members,
                                  experiment.shadow_nonmembers, refs, spec, scorer, aggregate)
        threshold = best_accuracy_threshold(sm, sn) if rule == "accuracy" else threshold_at_fpr(sn, rule)
    return AttackResult(attack.name, spec, aggregate, experiment.members.ids, experiment.nonmembers.ids, m, n,
                        sm, sn, threshold, rule if rule == "accuracy" else f"fpr:{rule:g}",
                        evaluate(m, n, threshold, fprs), [note] if note else [])


def sweep(experiment, mask_ratios, attacks, spec, scorer, progress=None, threshold_rule="accuracy",
          aggregate: str = "mean") -> list[dict]:
    """Run each attack at each mask ratio; one row per (ratio, attack), the best ratio of each attack
    (highest AUC, then TPR at the lowest FPR) marked best=True. Each row names the distance scored
    with and carries run_attack's note (None if none). progress(done, total, label) if given."""
    attacks = [make_attack(a) for a in attacks]
    fixed = [a.name for a in attacks if not a.uses_mask_ratio]
    if fixed:
        raise ValueError(f"{', '.join(fixed)} do(es) not depend on the mask ratio; run it with 'attack' instead")
    rows, total = [], len(mask_ratios) * len(attacks)
    for ratio in mask_ratios:
        for attack in attacks:
            if progress:
                progress(len(rows), total, f"{attack.name} @ mask ratio {ratio:g}")
            r = run_attack(attack, experiment, replace(spec, mask_ratio=float(ratio)), scorer, threshold_rule,
                           aggregate)
            row = dict(mask_ratio=float(ratio), attack=attack.name, distance=r.spec.distance, auc=r.metrics["auc"],
                       best=False)
            for fpr, t in r.metrics["tpr_at"].items():
                row.update({f"tpr@{fpr:g}": t["tpr"], f"tpr@{fpr:g}_lo": t["lo"], f"tpr@{fpr:g}_hi": t["hi"]})
            row["accuracy"] = r.metrics["confusion"]["accuracy"] if r.threshold is not None else None
            row["note"] = "; ".join(r.notes) or None
            rows.append(row)
    if progress:
        progress(total, total, "done")
    lowest = f"tpr@{min(DEFAULT_FPRS):g}"
    for attack in attacks:
        mine = [row for row in rows if row["attack"] == attack.name]
        max(mine, key=lambda row: (row["auc"], row[lowest]))["best"] = True
    return rows


__all__ = ["Attack", "PaperAttack", "CalibratedAttack", "LiRAAttack", "EncoderMIAttack", "UnmaskedAttack", "ATTACKS",
           "AGGREGATES", "AttackResult", "make_attack", "parse_threshold_rule", "check_images_fit", "comparable_spec",
           "PIXEL_DEFAULT", "run_attack", "sweep"]
