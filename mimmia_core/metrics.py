"""Membership inference metrics: ROC, TPR at low FPR with Clopper-Pearson intervals, thresholds.

Every function takes member and non-member scores where higher means "more
member-like", and predicts "member" when score >= threshold.
"""
from dataclasses import dataclass

import numpy as np
from scipy.stats import beta
from sklearn.metrics import roc_auc_score, roc_curve

DEFAULT_FPRS = (0.1, 0.01, 0.001)


def _scores(scores, name: str) -> np.ndarray:
    s = np.asarray(scores, dtype=np.float64).ravel()
    if len(s) == 0:
        raise ValueError(f"no {name} scores: membership metrics need at least one member and one non-member")
    bad = int((~np.isfinite(s)).sum())
    if bad:
        raise ValueError(f"{bad} of {len(s)} {name} scores are NaN or infinite")
    return s


def _check(member_scores, nonmember_scores) -> tuple[np.ndarray, np.ndarray]:
    return _scores(member_scores, "member"), _scores(nonmember_scores, "non-member")


def _full_roc(m: np.ndarray, n: np.ndarray):
    """sklearn's ROC at every distinct score (thresholds descending, the first is +inf)."""
    y = np.r_[np.ones(len(m)), np.zeros(len(n))]
    return roc_curve(y, np.r_[m, n], drop_intermediate=False)


@dataclass
class RocCurve:
    fpr: np.ndarray
    tpr: np.ndarray
    thresholds: np.ndarray
    auc: float


def roc(member_scores, nonmember_scores) -> RocCurve:
    """The ROC curve (collinear points dropped; the shape is exact) and its AUC."""
    m, n = _check(member_scores, nonmember_scores)
    y, s = np.r_[np.ones(len(m)), np.zeros(len(n))], np.r_[m, n]
    fpr, tpr, thresholds = roc_curve(y, s)
    return RocCurve(fpr, tpr, thresholds, float(roc_auc_score(y, s)))


def clopper_pearson(k: int, n: int, alpha: float = 0.05) -> tuple[float, float]:
    """Exact two-sided (1 - alpha) confidence interval for a binomial proportion k / n."""
    if n < 1 or not 0 <= k <= n:
        raise ValueError(f"need 0 <= k <= n and n >= 1, got k={k}, n={n}")
    lo = 0.0 if k == 0 else float(beta.ppf(alpha / 2, k, n - k + 1))
    hi = 1.0 if k == n else float(beta.ppf(1 - alpha / 2, k + 1, n - k))
    return lo, hi


def smallest_measurable_fpr(n_nonmembers: int) -> float:
    """One false positive among n non-members: no smaller non-zero FPR can be observed."""
    if n_nonmembers < 1:
        raise ValueError(f"need at least one non-member, got {n_nonmembers}")
    return 1.0 / n_nonmembers


def tpr_at_fpr(member_scores, nonmember_scores, fpr: float, alpha: float = 0.05) -> dict:
    """The highest TPR whose FPR does not exceed `fpr`, with its Clopper-Pearson interval.

    Ties are honoured: a threshold predicts every score equal to it as member.
    `measurable` is False when `fpr` is below 1 / number of non-members, where
    the answer rests on zero false positives and says little.
    """
    m, n = _check(member_scores, nonmember_scores)
    fprs, tprs, thresholds = _full_roc(m, n)
    i = int(np.flatnonzero(fprs <= fpr + 1e-12)[-1])
    k = int(round(tprs[i] * len(m)))
    lo, hi = clopper_pearson(k, len(m), alpha)
    return dict(tpr=float(tprs[i]), lo=lo, hi=hi, threshold=float(thresholds[i]), achieved_fpr=float(fprs[i]),
                measurable=bool(fpr >= smallest_measurable_fpr(len(n)) - 1e-12))


class OperatingPoints:
    """Confusion counts at any threshold, from scores sorted once (each query is a binary search)."""

    def __init__(self, member_scores, nonmember_scores):
        m, n = _check(member_scores, nonmember_scores)
        self.members, self.nonmembers = np.sort(m), np.sort(n)

    def at(self, threshold: float) -> dict:
        """Predict member when score >= threshold. Precision is 0 when nothing is predicted member."""
        n_m, n_n = len(self.members), len(self.nonmembers)
        tp = n_m - int(np.searchsorted(self.members, threshold, side="left"))
        fp = n_n - int(np.searchsorted(self.nonmembers, threshold, side="left"))
        tn, fn = n_n - fp, n_m - tp
        tpr, fpr = tp / n_m, fp / n_n
        return dict(tp=tp, fp=fp, tn=tn, fn=fn, accuracy=(tp + tn) / (n_m + n_n),
                    balanced_accuracy=(tpr + 1 - fpr) / 2, precision=tp / (tp + fp) if tp + fp else 0.0,
                    recall=tpr, tpr=tpr, fpr=fpr,
                    trivial_accuracy=max(n_m, n_n) / (n_m + n_n),  # all called the larger class, for reference
                    trivial_call="non-member" if n_n >= n_m else "member")


def confusion_at(member_scores, nonmember_scores, threshold: float) -> dict:
    return OperatingPoints(member_scores, nonmember_scores).at(threshold)


def operating_point(member_values, nonmember_values, threshold: float, *, lower_is_member: bool) -> dict:
    """The confusion at a threshold drawn on values in their own units (a line on a histogram).

    Predicts member when value <= threshold where lower_is_member (a distance), else when
    value >= threshold (a score, PSNR): a value on the line is a member. Returns OperatingPoints.at's keys;
    tp and fp count the members and non-members on the member side of the line.
    """
    sign = -1.0 if lower_is_member else 1.0
    m, n = _check(member_values, nonmember_values)
    return OperatingPoints(sign * m, sign * n).at(sign * float(threshold))


def best_accuracy_threshold(member_scores, nonmember_scores) -> float:
    """The threshold that maximises accuracy on these (shadow) scores.

    Candidates are every distinct score and +inf (predict no member); among
    equally accurate thresholds the highest wins.
    """
    m, n = _check(member_scores, nonmember_scores)
    fpr, tpr, thresholds = _full_roc(m, n)
    accuracy = (tpr * len(m) + (1 - fpr) * len(n)) / (len(m) + len(n))
    return float(thresholds[int(np.argmax(accuracy))])


def threshold_at_fpr(nonmember_scores, fpr: float) -> float:
    """The lowest threshold at which at most a fraction `fpr` of these non-members score >= it."""
    n = np.sort(_scores(nonmember_scores, "non-member"))[::-1]
    if not 0.0 <= fpr <= 1.0:
        raise ValueError(f"fpr must lie in [0, 1], got {fpr}")
    allowed = int(np.floor(fpr * len(n) + 1e-9))
    if allowed >= len(n):
        return float(n[-1])
    return float(np.nextafter(n[allowed], np.inf))


def evaluate(member_scores, nonmember_scores, threshold: float | None = None, fprs=DEFAULT_FPRS) -> dict:
    """AUC, TPR at each FPR in `fprs` (with intervals), and the confusion at `threshold` if given."""
    m, n = _check(member_scores, nonmember_scores)
    out = dict(auc=roc(m, n).auc, n_members=len(m), n_nonmembers=len(n),
               min_measurable_fpr=smallest_measurable_fpr(len(n)),
               tpr_at={float(f): tpr_at_fpr(m, n, f) for f in fprs})
    if threshold is not None:
        out["threshold"] = float(threshold)
        out["confusion"] = confusion_at(m, n, threshold)
    return out


__all__ = ["RocCurve", "roc", "clopper_pearson", "smallest_measurable_fpr", "tpr_at_fpr", "OperatingPoints",
           "confusion_at", "operating_point", "best_accuracy_threshold", "threshold_at_fpr", "evaluate", "DEFAULT_FPRS"]
