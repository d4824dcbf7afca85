"""RMIA (offline and online) and online LiRA: the pure math on hand-derived arrays, then the attack classes on
synthetic per-mask distances with a known IN/OUT structure, where they must beat the offline attacks."""
from types import SimpleNamespace

import numpy as np
import pytest

from mimmia_core.attacks import (ATTACKS, CalibratedAttack, LiRAAttack, OnlineLiRAAttack, OnlineRMIAAttack,
                                 PaperAttack, RMIAAttack, lira_online_scores, make_attack, masked_moments,
                                 reference_log_mean, rmia_log_ratio, rmia_scores)
from mimmia_core.data import ArraySource
from mimmia_core.metrics import evaluate
from mimmia_core.scores import Scores, ScoreSpec

SPEC = ScoreSpec(0.75, 2, 0)


# ---------------------------------------------------------------- the math, by hand
def test_rmia_log_ratio_by_hand():
    target = np.array([[-1.0]])                    # (K=1, N=1) log likelihoods
    refs = np.array([[[-2.0]], [[-0.5]]])          # (R=2, K=1, N=1)
    # a = 1: Pr(x) = mean(e^-2, e^-0.5) = (0.135335 + 0.606531) / 2 = 0.370933; log LR = -1 - log 0.370933
    assert rmia_log_ratio(target, refs, a=1.0)[0, 0] == pytest.approx(-0.0082661, abs=1e-6)
    # a = 0.5: Pr(x) = (1.5 * 0.370933 + 0.5) / 2 = 0.528200; log LR = -1 + 0.638281
    assert rmia_log_ratio(target, refs, a=0.5)[0, 0] == pytest.approx(-0.3617192, abs=1e-6)
    # a = 0: Pr(x) = (0.370933 + 1) / 2 = 0.685466, whatever the references say beyond their mean
    assert rmia_log_ratio(target, refs, a=0.0)[0, 0] == pytest.approx(-1 - np.log(0.6854665), abs=1e-6)
    # a mask keeps only the second reference: Pr(x) = e^-0.5, log LR = -0.5
    mask = np.array([[False], [True]])
    assert rmia_log_ratio(target, refs, a=1.0, mask=mask)[0, 0] == pytest.approx(-0.5)
    with pytest.raises(ValueError, match="a must lie in"):
        rmia_log_ratio(target, refs, a=1.5)


def test_rmia_scores_count_population_samples_strictly_below():
    z = np.array([0.5, 1.5, 2.0, -1.0])
    x = np.array([0.0, 0.5, 1.0, 2.5])
    # x = 0: only -1 is below -> 1/4; x = 0.5: 0.5 itself is a tie, not counted -> 1/4; x = 2.5: all four
    assert rmia_scores(x, z, tie_break=False).tolist() == [0.25, 0.25, 0.5, 1.0]
    # gamma = e: LR(x) / LR(z) > e  <=>  log LR(z) < log LR(x) - 1
    assert rmia_scores(x[[0, 2, 3]], z, gamma=np.e, tie_break=False).tolist() == [0.0, 0.25, 0.5]
    # the tie-break adds (1 + x / (1 + |x|)) / 16: 1/16, (4/3)/16, (3/2)/16, (12/7)/16, ordering the two at 1/4
    assert rmia_scores(x, z) == pytest.approx([0.3125, 0.25 + 1 / 12, 0.59375, 1 + 3 / 28])
    with pytest.raises(ValueError, match="gamma > 0"):
        rmia_scores(np.array([0.0]), z, gamma=0.0)


def test_masked_moments_and_log_mean_by_hand():
    x = np.array([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]])
    mask = np.array([[True, True], [True, False], [False, True]])
    mean, var, n = masked_moments(x, mask)
    assert mean.tolist() == [2.0, 4.0] and var.tolist() == [2.0, 8.0] and n.tolist() == [2, 2]
    # log mean of exp over the masked rows: log((e^1 + e^3) / 2) and log((e^2 + e^6) / 2)
    expected = [np.log((np.e + np.e ** 3) / 2), np.log((np.e ** 2 + np.e ** 6) / 2)]
    assert reference_log_mean(x, mask) == pytest.approx(expected)
    assert reference_log_mean(x) == pytest.approx(np.log(np.exp(x).mean(axis=0)))
    with pytest.raises(ValueError, match="no reference"):
        reference_log_mean(x, np.zeros_like(mask))


def test_online_lira_by_hand():
    # image 0: IN references 1, 3 (mean 2, var 2), OUT 5, 9 (mean 7, var 8); image 1: IN 0, 2 (1, 2), OUT 4, 4 (4, 0)
    x_refs = np.array([[1.0, 0.0], [3.0, 2.0], [5.0, 4.0], [9.0, 4.0]])
    inside = np.array([[True, True], [True, True], [False, False], [False, False]])
    x_t = np.array([2.0, 1.0])
    # per image, image 0: log N(2; 2, 2) - log N(2; 7, 8) = -0.5 log(4 pi) + 0.5 (log(16 pi) + 25 / 8) = 2.255647
    per_image = lira_online_scores(x_t[:1], x_refs[:, :1], inside[:, :1], sigma="per_image")
    assert per_image[0] == pytest.approx(2.2556472, abs=1e-6)
    # pooled: var_in = mean(2, 2) = 2, var_out = mean(8, 0) = 4; image 0: 0.5 log 2 + 25 / 8, image 1: 0.5 log 2 + 9 / 8
    pooled = lira_online_scores(x_t, x_refs, inside, sigma="pooled")
    assert pooled == pytest.approx([0.5 * np.log(2) + 25 / 8, 0.5 * np.log(2) + 9 / 8])
    # auto with 2 per side (< 8) pools; with min_per_image 2 it takes the per-image variances
    assert lira_online_scores(x_t, x_refs, inside) == pytest.approx(pooled)
    assert lira_online_scores(x_t[:1], x_refs[:, :1], inside[:, :1], min_per_image=2)[0] == pytest.approx(per_image[0])
    with pytest.raises(ValueError, match="IN at least one reference and OUT of at least one"):
        lira_online_scores(x_t, x_refs, np.ones_like(inside))


# ---------------------------------------------------------------- the attack classes on synthetic distances
class FakeScorer:
    """Scores from a table {model name: (K, N) distances over ids 0..N-1}, as Scorer.scores returns them."""

    def __init__(self, table):
        self.table = table

    def scores(self, model, source, spec):
        return Scores(source.ids, self.table[model.path][:, source.ids], spec)


def _source(ids, name):
    return ArraySource(np.zeros((len(ids), 1, 1, 1), np.uint8), ids, name=name)


def _run(attack, table, member_ids, nonmember_ids, population_ids, reference_ids=None):
    """(AUC, TPR at 10% FPR) of `attack` on the table's target against references ref0..ref<R-1>."""
    target = SimpleNamespace(path="target")
    refs = [SimpleNamespace(path=f"ref{r}") for r in range(len(table) - 1)]
    experiment = SimpleNamespace(target=target, shadow=None, reference_ids=reference_ids,
                                 population=lambda role: _source(population_ids, "population"))
    m, n = attack.bind(experiment).signals(target, _source(member_ids, "members"), _source(nonmember_ids, "non"),
                                           refs, SPEC, FakeScorer(table), "mean")
    ev = evaluate(np.asarray(m, float), np.asarray(n, float), None, (0.1,))
    return ev["auc"], ev["tpr_at"][0.1]["tpr"]


def _online_world(seed=0, n=400, n_population=200, n_refs=16):
    """Half the images are memorisable: a member's log distance drops by 1 and becomes nearly certain (sd 0.1);
    the others do not change when trained on (sd 1). Online references: each image IN for exactly half."""
    rng = np.random.default_rng(seed)
    total = n + n_population
    mu, memorisable = rng.normal(0, 1, total), rng.random(total) < 0.5
    member = np.arange(total) < n // 2                  # ids 0..199 members, 200..399 non-members, then population
    inside = rng.random((n_refs, total)).argsort(axis=0) < n_refs // 2

    def draw(is_in):
        sd = np.where(is_in & memorisable, 0.1, 1.0)
        return np.exp(mu - 1.0 * (is_in & memorisable) + sd * rng.normal(0, 1, (SPEC.num_masks, total)))
    table = {"target": draw(member), **{f"ref{r}": draw(inside[r]) for r in range(n_refs)}}
    ids = np.arange(total)
    return table, ids[:n // 2], ids[n // 2:n], ids[n:], [ids[inside[r]] for r in range(n_refs)]


def test_online_lira_beats_the_offline_attacks_where_training_changes_images_unequally():
    """Only the IN references show which images training changes, and that a member's distance becomes certain."""
    table, members, nonmembers, population, reference_ids = _online_world()
    results = {a.name: _run(a, table, members, nonmembers, population, reference_ids)
               for a in (LiRAAttack(), CalibratedAttack(), RMIAAttack(), OnlineLiRAAttack())}
    for offline in ("lira", "calibrated", "rmia"):  # offline with online references: the OUT ones per image
        assert results["lira_online"][0] > results[offline][0] + 0.1, (offline, results)
        assert results["lira_online"][1] > results[offline][1] + 0.09, (offline, results)


def test_online_attacks_beat_difficulty_calibration_on_additive_differences():
    """16 online references, each image IN for 8: the additive world below, with online references."""
    table, members, nonmembers, population, reference_ids = _additive_world(n_refs=16, online=True)
    results = {a.name: _run(a, table, members, nonmembers, population, reference_ids)
               for a in (CalibratedAttack(), OnlineLiRAAttack(), OnlineRMIAAttack())}
    for online in ("lira_online", "rmia_online"):
        assert results[online][0] > results["calibrated"][0] + 0.05, (online, results)
        assert results[online][1] > results["calibrated"][1] + 0.3, (online, results)


def _additive_world(seed=0, n=400, n_population=400, n_refs=4, online=False):
    """Per-image difficulty spread over 0.05..2 (distance units); training lowers a member's distance by 0.1 and
    every model adds the same noise (sd 0.05): an additive structure RMIA's exp(-d / tau) likelihood matches and
    LiRA's log distances with a pooled variance (4 references) do not. References offline (all OUT), or online
    (each image IN for exactly half; the last item then lists each reference's training ids)."""
    rng = np.random.default_rng(seed)
    total = n + n_population
    base, member = rng.uniform(0.05, 2.0, total), np.arange(total) < n // 2
    inside = (rng.random((n_refs, total)).argsort(axis=0) < n_refs // 2) if online else np.zeros((n_refs, total), bool)

    def draw(is_in):
        return np.abs(base - 0.1 * is_in + 0.05 * rng.normal(0, 1, (SPEC.num_masks, total)))
    table = {"target": draw(member), **{f"ref{r}": draw(inside[r]) for r in range(n_refs)}}
    ids = np.arange(total)
    sets = ([ids[inside[r]] for r in range(n_refs)],) if online else ()
    return (table, ids[:n // 2], ids[n // 2:n], ids[n:], *sets)


def test_offline_rmia_beats_the_paper_attack_and_offline_lira_on_additive_differences():
    table, members, nonmembers, population = _additive_world()
    results = {a.name: _run(a, table, members, nonmembers, population)
               for a in (PaperAttack(), LiRAAttack(), CalibratedAttack(), RMIAAttack())}
    for other in ("paper", "lira", "calibrated"):
        assert results["rmia"][0] > results[other][0] + 0.05, (other, results)
        assert results["rmia"][1] > results[other][1] + 0.2, (other, results)


def test_online_attacks_refuse_offline_references_and_rmia_refuses_a_missing_population():
    table, members, nonmembers, population = _additive_world(n=8, n_population=4)
    for attack in (OnlineLiRAAttack(), OnlineRMIAAttack()):
        with pytest.raises(ValueError, match="needs online references"):
            _run(attack, table, members, nonmembers, population)
    target = SimpleNamespace(path="target")
    bound = RMIAAttack().bind(SimpleNamespace(target=target, shadow=None, population=lambda role: None))
    with pytest.raises(ValueError, match="needs population samples"):
        bound.signal(target, _source(members, "m"), [SimpleNamespace(path="ref0")], SPEC, FakeScorer(table), "mean")
    with pytest.raises(ValueError, match="psnr"):
        bound.signal(target, _source(members, "m"), [SimpleNamespace(path="ref0")],
                     ScoreSpec(0.75, 2, 0, "psnr"), FakeScorer(table), "mean")


def test_registry_and_settings():
    for name in ("rmia", "lira_online", "rmia_online"):
        assert make_attack(name).name == name and ATTACKS[name].label and ATTACKS[name].help
    assert ATTACKS["rmia"].needs_population and not ATTACKS["rmia"].online
    assert ATTACKS["lira_online"].online and ATTACKS["rmia_online"].online
    for bad in (dict(a=-0.1), dict(gamma=0), dict(tau=0), dict(tau="median")):
        with pytest.raises(ValueError, match="rmia needs"):
            RMIAAttack(**bad)
