import numpy as np
import pytest
from scipy.stats import binom

from mimmia_core.metrics import (OperatingPoints, best_accuracy_threshold, clopper_pearson, confusion_at, evaluate,
                                 roc, smallest_measurable_fpr, threshold_at_fpr, tpr_at_fpr)


def test_auc_of_a_tiny_example_counts_ties_as_half():
    # pairs: 0.9 and 0.8 beat all 4 non-members; 0.4 beats 0.3 and 0.2, ties 0.4, loses to 0.7 -> 10.5 / 12
    curve = roc([0.9, 0.8, 0.4], [0.7, 0.3, 0.2, 0.4])
    assert curve.auc == pytest.approx(10.5 / 12)
    assert curve.fpr[0] == 0 and curve.tpr[-1] == 1 and curve.fpr[-1] == 1
    assert np.trapezoid(curve.tpr, curve.fpr) == pytest.approx(curve.auc)


def test_tpr_at_fpr_with_ties():
    members, nonmembers = [5, 4, 4, 3, 1], [4, 2, 2, 1, 0]
    # FPR 0.2 allows one false positive: threshold 3 catches 5, 4, 4, 3 and only the non-member 4
    r = tpr_at_fpr(members, nonmembers, 0.2)
    assert r["tpr"] == pytest.approx(0.8) and r["threshold"] == 3 and r["achieved_fpr"] == pytest.approx(0.2)
    assert r["measurable"]
    assert (r["lo"], r["hi"]) == pytest.approx(clopper_pearson(4, 5))
    # no false positive allowed: the member 4s tie with the non-member 4 and cannot be taken
    r = tpr_at_fpr(members, nonmembers, 0.1)
    assert r["tpr"] == pytest.approx(0.2) and r["threshold"] == 5 and r["achieved_fpr"] == 0
    assert not r["measurable"]  # 0.1 < 1 / 5
    assert smallest_measurable_fpr(5) == pytest.approx(0.2)


def test_tpr_at_fpr_when_nothing_can_be_taken():
    r = tpr_at_fpr([1.0, 2.0], [3.0, 0.0], 0.0)
    assert r["tpr"] == 0 and r["threshold"] == np.inf and r["lo"] == 0


def test_clopper_pearson_known_values():
    lo, hi = clopper_pearson(0, 10)
    assert lo == 0 and hi == pytest.approx(1 - 0.025 ** (1 / 10))
    lo, hi = clopper_pearson(10, 10)
    assert lo == pytest.approx(0.025 ** (1 / 10)) and hi == 1
    # the exact interval's defining equations: P(X >= k | lo) = P(X <= k | hi) = alpha / 2
    lo, hi = clopper_pearson(3, 10)
    assert binom.sf(2, 10, lo) == pytest.approx(0.025) and binom.cdf(3, 10, hi) == pytest.approx(0.025)
    assert (lo, hi) == pytest.approx((0.0667, 0.6525), abs=1e-4)  # textbook table value
    with pytest.raises(ValueError):
        clopper_pearson(11, 10)


def test_confusion_at_by_hand():
    c = confusion_at([0.9, 0.6, 0.2], [0.7, 0.1], 0.6)
    assert (c["tp"], c["fn"], c["fp"], c["tn"]) == (2, 1, 1, 1)
    assert c["accuracy"] == pytest.approx(3 / 5)
    assert c["balanced_accuracy"] == pytest.approx((2 / 3 + 1 / 2) / 2)
    assert c["precision"] == pytest.approx(2 / 3) and c["recall"] == pytest.approx(2 / 3)
    assert c["fpr"] == pytest.approx(0.5)
    none = OperatingPoints([0.9], [0.1]).at(np.inf)
    assert none["tp"] == none["fp"] == 0 and none["precision"] == 0


def test_best_accuracy_threshold_beats_every_candidate():
    rng = np.random.default_rng(0)
    for _ in range(20):
        m = rng.integers(0, 12, size=rng.integers(1, 30)).astype(float)
        n = rng.integers(-3, 9, size=rng.integers(1, 30)).astype(float)
        t = best_accuracy_threshold(m, n)
        candidates = np.r_[np.unique(np.r_[m, n]), np.inf]
        brute = max(((m >= c).sum() + (n < c).sum()) / (len(m) + len(n)) for c in candidates)
        assert confusion_at(m, n, t)["accuracy"] == pytest.approx(brute)


def test_threshold_at_fpr():
    n = np.arange(1.0, 11.0)
    t = threshold_at_fpr(n, 0.2)
    assert 8 < t <= 9 and (n >= t).mean() == pytest.approx(0.2)
    # three tied 3s: allowing two false positives still excludes all of them
    t = threshold_at_fpr([1, 2, 3, 3, 3], 0.4)
    assert t > 3 and (np.array([1, 2, 3, 3, 3]) >= t).sum() == 0
    assert threshold_at_fpr(n, 1.0) == 1.0
    with pytest.raises(ValueError):
        threshold_at_fpr(n, 1.5)


def test_evaluate_collects_everything():
    out = evaluate([5, 4, 4, 3, 1], [4, 2, 2, 1, 0], threshold=3, fprs=(0.2, 0.1))
    assert out["n_members"] == 5 and out["min_measurable_fpr"] == pytest.approx(0.2)
    assert out["tpr_at"][0.2]["tpr"] == pytest.approx(0.8)
    assert out["confusion"]["tp"] == 4 and out["threshold"] == 3
    assert out["confusion"]["trivial_accuracy"] == 0.5  # 5 members, 5 non-members
    # by hand, over the 25 pairs: member 5 beats all 5; each 4 beats 4 and ties 1 (4.5, twice); 3 beats 4;
    # 1 beats 0 and ties 1 (1.5): (5 + 9 + 4 + 1.5) / 25
    assert out["auc"] == pytest.approx(19.5 / 25)


@pytest.mark.parametrize("m, n, match", [([], [1.0], "no member"), ([1.0], [], "no non-member"),
                                         ([1.0, np.nan], [0.0], "1 of 2 member scores are NaN")])
def test_bad_scores_are_refused(m, n, match):
    with pytest.raises(ValueError, match=match):
        evaluate(m, n)
