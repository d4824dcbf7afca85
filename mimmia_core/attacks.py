"""Membership inference attacks on MAE models, and how to run them on an experiment.

An attack turns (model, images) into one signal per image, higher meaning
"more member-like". `run_attack` scores the target's candidates, learns a
threshold on the shadow model's members and non-members, and evaluates.
A new attack is a small subclass of `Attack` that implements `signal`; `run_attack` first binds it
to the experiment (`Attack.bind`: which candidates each online reference trained on, and the
population samples of each side). The reference attacks' math is in pure functions on arrays
(reference_log_mean, masked_moments, lira_online_scores, rmia_log_ratio, rmia_scores).
"""
import copy
from dataclasses import dataclass, field, replace

import numpy as np

from .metrics import DEFAULT_FPRS, best_accuracy_threshold, evaluate, threshold_at_fpr
from .masking import smallest_mask_ratio
from .data import check_images_fit as fit_images
from .distances import AGGREGATES, HIGHER_IS_CLOSER, TARGET_SPACE_DISTANCES, aggregate_masks
from .scores import refuse_non_finite

PIXEL_DEFAULT = "pixel_mse_raw"  # what comparable_spec switches a target-space distance to
LIRA_SIGMAS = ("auto", "per_image", "pooled")
MIN_PER_IMAGE = 8  # references per image (per side, online) below which LiRA pools the variance over images


# --------------------------------------------------------------------------
# The reference attacks' math, on arrays: R references, K paired masks, N images
# --------------------------------------------------------------------------
def reference_log_mean(log_values: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    """log of the mean over references of exp(log_values): (R, ..., N) -> (..., N), over the references
    where mask (R, N) is True (all of them for None). Every image needs one reference in the mask."""
    if mask is None:
        return np.logaddexp.reduce(log_values, axis=0) - np.log(len(log_values))
    counts = mask.sum(axis=0)
    if (counts < 1).any():
        raise ValueError("reference_log_mean: an image has no reference in the mask")
    mask = mask.reshape(mask.shape[:1] + (1,) * (log_values.ndim - 2) + mask.shape[1:])
    return np.logaddexp.reduce(np.where(mask, log_values, -np.inf), axis=0) - np.log(counts)


def masked_moments(x: np.ndarray, mask: np.ndarray) -> tuple:
    """(mean, unbiased variance, count), each (N,), of x (R, N) over the rows where mask (R, N) is True;
    the variance is NaN where fewer than two rows count."""
    n = mask.sum(axis=0)
    mean = np.where(mask, x, 0.0).sum(axis=0) / np.maximum(n, 1)
    squares = np.where(mask, (x - mean) ** 2, 0.0).sum(axis=0)
    return mean, np.where(n > 1, squares / np.maximum(n - 1, 1), np.nan), n


def gaussian_log_pdf(x: np.ndarray, mean: np.ndarray, var: np.ndarray) -> np.ndarray:
    var = np.maximum(var, 1e-30)
    return -0.5 * (np.log(2 * np.pi * var) + (x - mean) ** 2 / var)


def lira_online_scores(x_target: np.ndarray, x_refs: np.ndarray, in_mask: np.ndarray, sigma: str = "auto",
                       min_per_image: int = MIN_PER_IMAGE) -> np.ndarray:
    """Online LiRA: log N(x; mu_in, var_in) - log N(x; mu_out, var_out) per image, (N,).

    x_target (N,), x_refs (R, N): log distances; in_mask (R, N): reference r trained on image n. The
    Gaussians are fitted per image to the IN and the OUT references' values. sigma "per_image" uses each
    image's own variances; "pooled" the mean over images of the per-image variances (per side); "auto"
    per-image when every image has min_per_image references on each side, else pooled."""
    mu_in, var_in, n_in = masked_moments(x_refs, in_mask)
    mu_out, var_out, n_out = masked_moments(x_refs, ~in_mask)
    fewest = int(min(n_in.min(), n_out.min()))
    if fewest < 1:
        raise ValueError("online LiRA needs every image IN at least one reference and OUT of at least one "
                         "(references from `mimmia train-references --online`)")
    if sigma not in LIRA_SIGMAS:
        raise ValueError(f"lira sigma must be one of {LIRA_SIGMAS}, got {sigma!r}")
    if sigma == "per_image" or (sigma == "auto" and fewest >= min_per_image):
        if fewest < 2:
            raise ValueError("online LiRA with per-image variance needs two IN and two OUT references per image")
    else:
        if np.isnan(var_in).all() or np.isnan(var_out).all():
            raise ValueError("online LiRA needs some image with two IN and two OUT references to pool a variance")
        var_in, var_out = np.full_like(mu_in, np.nanmean(var_in)), np.full_like(mu_out, np.nanmean(var_out))
    return gaussian_log_pdf(x_target, mu_in, var_in) - gaussian_log_pdf(x_target, mu_out, var_out)


def rmia_log_ratio(log_p_target: np.ndarray, log_p_refs: np.ndarray, a: float = 1.0,
                   mask: np.ndarray | None = None) -> np.ndarray:
    """log LR = log Pr(x|target) - log Pr(x) per mask and image, (K, N).

    log_p_target (K, N), log_p_refs (R, K, N): log likelihoods, each <= 0 (probabilities in (0, 1]).
    Pr(x) = ((1 + a) m + (1 - a)) / 2 with m the mean likelihood over the references in mask (R, N)
    (all for None): RMIA's offline correction of an OUT mean (a = 1: m itself, as online with IN and OUT)."""
    if not 0.0 <= a <= 1.0:
        raise ValueError(f"rmia a must lie in [0, 1], got {a}")
    log_m = reference_log_mean(log_p_refs, mask)
    log_pr = log_m if a == 1.0 else np.log(0.5) + np.logaddexp(np.log1p(a) + log_m, np.log1p(-a))
    return log_p_target - log_pr


def rmia_scores(log_lr_x: np.ndarray, log_lr_z: np.ndarray, gamma: float = 1.0, tie_break: bool = True) -> np.ndarray:
    """RMIA's score: per x (N,), the fraction of population samples z (M,) with LR(x) / LR(z) > gamma.

    The fraction is a step function of LR(x), so images above every z tie (at 1), and with a few hundred z
    such a tie can hold more than 1% of the non-members. tie_break adds (1 + t / (1 + |t|)) / (4 M), t = log LR(x):
    each score stays within half a step (1 / 2M) above its fraction and the ranking becomes that of LR(x)."""
    if gamma <= 0 or len(log_lr_z) == 0:
        raise ValueError(f"rmia needs gamma > 0 and population samples, got gamma {gamma} and {len(log_lr_z)} z")
    z, x = np.sort(np.asarray(log_lr_z, np.float64)), np.asarray(log_lr_x, np.float64)
    fraction = np.searchsorted(z, x - np.log(gamma), side="left") / len(z)
    return fraction + (1 + x / (1 + np.abs(x))) / (4 * len(z)) if tie_break else fraction


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
    online = False           # True: needs online references (each trained on a known half of the candidates)
    needs_population = False  # True: compares with population samples (Experiment.population)
    reference_ids = None     # bound (bind): per reference, the ids it trained on; None: offline references
    sides = ()               # bound (bind): (model, its population source or None) for the target and shadow

    def bind(self, experiment) -> "Attack":
        """A copy of this attack that knows what it needs of `experiment`: its reference_ids (set where
        the references are online) and each side's population samples (Experiment.population)."""
        bound = copy.copy(self)
        bound.reference_ids = getattr(experiment, "reference_ids", None)
        bound.sides = tuple((m, experiment.population(role)) for role, m in
                            (("target", experiment.target), ("shadow", experiment.shadow)) if m is not None)
        return bound

    def population_pairs(self, experiment) -> list:
        """(model, source) pairs this attack scores beyond each side's candidates (plan.attack_scores)."""
        return []

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

    def _in_mask(self, source, n_refs: int) -> np.ndarray | None:
        """(R, N) bool, reference r trained on image n of `source`; None for offline references."""
        if self.reference_ids is None:
            return None
        if len(self.reference_ids) != n_refs:
            raise ValueError(f"{self.name}: {n_refs} reference models but training ids for {len(self.reference_ids)}")
        return np.stack([np.isin(source.ids, ids) for ids in self.reference_ids])

    def _out_mask(self, source, n_refs: int) -> np.ndarray | None:
        """(R, N) bool, reference r did NOT train on image n; None when every reference is OUT (offline)."""
        inside = self._in_mask(source, n_refs)
        if inside is None:
            return None
        out = ~inside
        if not out.any(axis=0).all():
            bad = source.ids[~out.any(axis=0)][:5].tolist()
            raise ValueError(f"{self.name}: images {bad} of {source.name} are IN every reference model; an offline "
                             f"attack needs at least one reference per image that did not train on it")
        return out

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
    With online references, the means run per image over the references that did not train on it.
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
        out = self._out_mask(source, len(refs))
        if self.mode == "log_ratio":
            ref = np.stack([r.log_distances() for r in refs])            # (R, K, N)
            calibrated = target.log_distances() - reference_log_mean(ref, out)
        elif out is None:
            calibrated = target.distances() - np.mean([r.distances() for r in refs], axis=0)
        else:
            ref = np.stack([r.distances() for r in refs])                # (R, K, N)
            calibrated = target.distances() - (ref * out[:, None]).sum(axis=0) / out.sum(axis=0)
        return -aggregate_masks(calibrated, aggregate)

    def __repr__(self):
        return f"CalibratedAttack(mode={self.mode!r})"


class LiRAAttack(Attack):
    """Offline LiRA (Carlini et al. 2022): how far below the references' log distances the target's lies.

    Per image, x = log distances aggregated over the paired masks; a Gaussian N(mu, sigma) is fitted
    to the references' x (all trained without the image), and the signal is (mu - x_target) / sigma.
    One-sided: only a lower distance than the references expect points to membership. The per-image
    sigma needs many references; sigma="auto" pools the variance over all images when there are
    fewer than 8 references (Carlini et al. also use a global variance with few models). With online
    references, each image's Gaussian is fitted to the references that did not train on it (auto: pooled
    unless every image has 8 of them).
    """
    name = "lira"
    label = "offline LiRA"
    help = "Offline LiRA: how far below the references' distances the target's lies, in reference standard deviations."
    needs_references = True
    min_references = 2
    SIGMAS = LIRA_SIGMAS
    MIN_PER_IMAGE = MIN_PER_IMAGE

    def __init__(self, sigma: str = "auto"):
        if sigma not in self.SIGMAS:
            raise ValueError(f"lira sigma must be one of {self.SIGMAS}, got {sigma!r}")
        self.sigma = sigma

    def signal(self, model, source, references, spec, scorer, aggregate):
        target, refs = self._reference_scores(model, source, references, spec, scorer)
        x_t = aggregate_masks(target.log_distances(), aggregate)
        x_r = np.stack([aggregate_masks(r.log_distances(), aggregate) for r in refs])  # (R, N)
        out = self._out_mask(source, len(refs))
        if out is None:
            mean, var, fewest = x_r.mean(axis=0), x_r.var(axis=0, ddof=1), len(refs)
        else:
            mean, var, counts = masked_moments(x_r, out)
            fewest = int(counts.min())
        pooled = self.sigma == "pooled" or (self.sigma == "auto" and fewest < self.MIN_PER_IMAGE)
        if np.isnan(var).all() or (not pooled and np.isnan(var).any()):
            raise ValueError(f"lira: too few references without the image to fit a variance ({fewest} for some "
                             f"image); use sigma='pooled' or more references")
        sigma = np.sqrt(np.nanmean(var)) if pooled else np.sqrt(var)
        return (mean - x_t) / (sigma + 1e-30)

    def __repr__(self):
        return f"LiRAAttack(sigma={self.sigma!r})"


class OnlineLiRAAttack(Attack):
    """Online LiRA (Carlini et al. 2022): per image, one Gaussian for the IN references, one for the OUT.

    x = log distances aggregated over the K paired masks, as offline LiRA. With online references (each
    trained on a random half of a pool holding the candidates; Attack.bind gives their training ids), a
    Gaussian is fitted per image to the references that trained on it and one to those that did not;
    the signal is log N(x_t; mu_in, sigma_in) - log N(x_t; mu_out, sigma_out) (lira_online_scores).
    sigma "auto": per-image variances when every image has 8 references on each side, else pooled.
    """
    name = "lira_online"
    label = "online LiRA"
    help = ("Online LiRA: how much likelier the target's distance is under references that trained on the image "
            "than under those that did not.")
    needs_references = True
    online = True
    min_references = 4

    def __init__(self, sigma: str = "auto"):
        if sigma not in LIRA_SIGMAS:
            raise ValueError(f"lira sigma must be one of {LIRA_SIGMAS}, got {sigma!r}")
        self.sigma = sigma

    def signal(self, model, source, references, spec, scorer, aggregate):
        target, refs = self._reference_scores(model, source, references, spec, scorer)
        inside = _require_online(self, self._in_mask(source, len(refs)))
        x_t = aggregate_masks(target.log_distances(), aggregate)
        x_r = np.stack([aggregate_masks(r.log_distances(), aggregate) for r in refs])  # (R, N)
        return lira_online_scores(x_t, x_r, inside, self.sigma)

    def __repr__(self):
        return f"OnlineLiRAAttack(sigma={self.sigma!r})"


def _require_online(attack: Attack, in_mask):
    if in_mask is None:
        raise ValueError(f"attack {attack.name} needs online references (each trained on a random half of a pool "
                         f"holding the candidates: `mimmia train-references --online`) and their manifest; "
                         f"these references are offline")
    return in_mask


class RMIAAttack(Attack):
    """RMIA (Zarifzadeh et al., ICML 2024), offline, adapted to reconstruction distances.

    Likelihood (the adaptation): Pr(x|model) = exp(-d / tau) per mask, d >= 0 the model's reconstruction
    distance: a Gaussian decoder's likelihood of the masked pixels up to its normalisation, 1 for a perfect
    reconstruction, in (0, 1] like the paper's class probabilities. tau "auto": the median of the
    references' per-mask distances on the population samples, so the scale follows the distance's units.
    Pr(x) averages the OUT references' likelihoods with the paper's offline correction for the missing IN
    ones, Pr(x) = ((1 + a) mean_OUT + (1 - a)) / 2 (a = 1: none). LR(x) = Pr(x|target) / Pr(x) per paired
    mask, combined over the K masks as the mean of log LR (aggregate min: the best mask; median).
    Population z: images neither the model nor the references trained on, Experiment.population (the
    shadow's non-members for the target, the target's non-members for the shadow), scored the same way.
    Score: the fraction of z with LR(x) / LR(z) > gamma (rmia_scores), ties broken by LR(x) (tie_break, within
    half a step of 1 / |z|): images above every z would otherwise tie at 1, which costs all resolution at FPRs
    below the share of non-members in that tie (measured on the demo: TPR at 1% FPR 0.188 without, 0.305 with).
    """
    name = "rmia"
    label = "RMIA (offline)"
    help = ("RMIA: the target's likelihood of the image relative to the references', compared with population "
            "images that no model trained on.")
    needs_references = True
    needs_population = True
    min_references = 1

    def __init__(self, a: float = 1.0, gamma: float = 1.0, tau="auto", tie_break: bool = True):
        if not 0.0 <= a <= 1.0 or gamma <= 0 or not (tau == "auto" or (isinstance(tau, (int, float)) and tau > 0)):
            raise ValueError(f"rmia needs a in [0, 1], gamma > 0 and tau 'auto' or > 0; got a={a}, gamma={gamma}, "
                             f"tau={tau!r}")
        self.a, self.gamma, self.tau, self.tie_break = float(a), float(gamma), tau, bool(tie_break)

    def population_pairs(self, experiment) -> list:
        sides = (("target", experiment.target), ("shadow", experiment.shadow))
        return [(m, pop) for role, m in sides if m is not None and (pop := experiment.population(role)) is not None]

    def signal(self, model, source, references, spec, scorer, aggregate):
        if spec.distance in HIGHER_IS_CLOSER:
            raise ValueError(f"{self.name} turns a distance d >= 0 into a likelihood exp(-d / tau); {spec.distance} "
                             f"is not one: use --distance pixel_mse (or another MSE)")
        population = self._population(model)
        target, refs = self._reference_scores(model, source, references, spec, scorer)
        z_target, z_refs = self._reference_scores(model, population, references, spec, scorer)
        tau = float(np.median([r.distances() for r in z_refs])) if self.tau == "auto" else float(self.tau)
        if not tau > 0:
            raise ValueError(f"{self.name}: the references reconstruct the population perfectly (median distance "
                             f"0), so tau='auto' has no scale; give tau > 0")
        log_lr_x = self._log_lr(target, refs, source, tau, aggregate)
        log_lr_z = self._log_lr(z_target, z_refs, population, tau, aggregate)
        return rmia_scores(log_lr_x, log_lr_z, self.gamma, self.tie_break)

    def _mask(self, source, n_refs: int):
        """The references Pr(x) averages: offline, those that did not train on the image."""
        return self._out_mask(source, n_refs)

    def _log_lr(self, target, refs, source, tau: float, aggregate: str) -> np.ndarray:
        log_p_refs = np.stack([-r.distances() / tau for r in refs])  # (R, K, N)
        per_mask = rmia_log_ratio(-target.distances() / tau, log_p_refs, self.a, self._mask(source, len(refs)))
        return -aggregate_masks(-per_mask, aggregate)

    def _population(self, model):
        for m, population in self.sides:
            if m is model and population is not None:
                return population
        raise ValueError(f"{self.name} needs population samples that neither {model.path} nor the references "
                         f"trained on: the experiment's other side's non-members (give shadow non-members, "
                         f"--shadow-nonmembers, for the target)")

    def __repr__(self):
        return f"{type(self).__name__}(a={self.a:g}, gamma={self.gamma:g}, tau={self.tau!r}, tie_break={self.tie_break})"


class OnlineRMIAAttack(RMIAAttack):
    """Online RMIA: RMIA with Pr(x) the mean likelihood over every reference, IN and OUT (each image is IN
    about half of the online references), so without the offline correction (a = 1). The population z
    need not be OUT of the references, whose mean is taken the same way for z, only of the model."""
    name = "rmia_online"
    label = "online RMIA"
    help = "Online RMIA: RMIA with references of which about half trained on each image."
    online = True
    min_references = 2

    def __init__(self, gamma: float = 1.0, tau="auto", tie_break: bool = True):
        super().__init__(a=1.0, gamma=gamma, tau=tau, tie_break=tie_break)

    def _mask(self, source, n_refs: int):
        _require_online(self, self._in_mask(source, n_refs))
        return None


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
                                    (PaperAttack, CalibratedAttack, LiRAAttack, RMIAAttack, OnlineLiRAAttack,
                                     OnlineRMIAAttack, EncoderMIAttack, UnmaskedAttack)}


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
    attack = make_attack(attack).bind(experiment)
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
    with and carries run_attack's note (None if none); a TPR at an FPR below 1/non-members is None. progress(done, total, label) if given."""
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
            for fpr, t in r.metrics["tpr_at"].items():  # no number where the FPR cannot be measured
                shown = t if t["measurable"] else dict(tpr=None, lo=None, hi=None)
                row.update({f"tpr@{fpr:g}": shown["tpr"], f"tpr@{fpr:g}_lo": shown["lo"],
                            f"tpr@{fpr:g}_hi": shown["hi"]})
            confusion = r.metrics["confusion"] if r.threshold is not None else {}
            row["accuracy"], row["balanced_accuracy"] = confusion.get("accuracy"), confusion.get("balanced_accuracy")
            row["note"] = "; ".join(r.notes) or None
            rows.append(row)
    if progress:
        progress(total, total, "done")
    lowest = f"tpr@{min(DEFAULT_FPRS):g}"
    for attack in attacks:
        mine = [row for row in rows if row["attack"] == attack.name]
        max(mine, key=lambda row: (row["auc"], -1.0 if row[lowest] is None else row[lowest]))["best"] = True
    return rows


__all__ = ["Attack", "PaperAttack", "CalibratedAttack", "LiRAAttack", "RMIAAttack", "OnlineLiRAAttack",
           "OnlineRMIAAttack", "EncoderMIAttack", "UnmaskedAttack", "ATTACKS", "reference_log_mean", "masked_moments",
           "gaussian_log_pdf", "lira_online_scores", "rmia_log_ratio", "rmia_scores",
           "AGGREGATES", "AttackResult", "make_attack", "parse_threshold_rule", "check_images_fit", "comparable_spec",
           "PIXEL_DEFAULT", "run_attack", "sweep"]
