"""Does a score pack give the dashboard's numbers? Every metric it shows, at every setting, against the exact scores.

A pack stores scores quantised (score_pack.py), so a metric could move where a member's score sits next to
the threshold: one member of 128 is 0.0078 of TPR. `check_pack` runs each attack at each setting on the exact
scores and on the pack's and names every metric that moved by METRIC_ATOL or more; `patch_ids` names the
images next to the thresholds it moved at, whose values the pack then keeps exact, and `exact_entries` the
whole entries such a setting reads, where that does not suffice. `pack_exactly` writes, checks and patches
until no metric moves: the demo's pack gives its metrics to 3 decimals by construction, and its check says so.
"""
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from .attacks import run_attack
from .cache import ScoreCache
from .cache_request import request_key
from .distances import AGGREGATES, DISTANCES
from .score_pack import write_pack
from .scorer import Scorer
from .scores import ScoreSpec

METRIC_ATOL = 5e-4  # "unchanged to 3 decimals": every shown metric within half a unit of the third decimal


@dataclass(frozen=True)
class GridSetting:
    attack: str
    mask_ratio: float
    num_masks: int
    distance: str
    aggregate: str


@dataclass
class PackCheck:
    changes: dict = field(default_factory=dict)   # GridSetting -> ((ratio, scored distance), {metric: |change|})
    failures: list = field(default_factory=list)  # (GridSetting, metric, exact result, packed result)

    @property
    def settings(self) -> int:
        return len(self.changes)

    @property
    def metrics(self) -> int:
        return sum(len(c) for _, c in self.changes.values())

    @property
    def worst(self) -> dict:
        worst = {}
        for _, c in self.changes.values():
            for name, change in c.items():
                worst[name] = max(worst.get(name, 0.0), change)
        return worst

    def groups(self, settings) -> set:
        return {self.changes[s][0] for s in settings if s in self.changes}

    def updated(self, newer: "PackCheck") -> "PackCheck":
        """This check with the settings `newer` checked again replaced by newer's answers."""
        return PackCheck({**self.changes, **newer.changes},
                         [f for f in self.failures if f[0] not in newer.changes] + newer.failures)

    def summary(self) -> dict:
        return dict(settings=self.settings, metrics=self.metrics, atol=METRIC_ATOL,
                    worst={k: round(v, 6) for k, v in sorted(self.worst.items())},
                    failures=[dict(asdict(s), metric=m, exact=shown_metrics(a.metrics)[m],
                                   packed=shown_metrics(b.metrics)[m]) for s, m, a, b in self.failures])


def grid_settings(attacks, mask_ratios, max_masks: int, distances=DISTANCES, aggregates=AGGREGATES) -> list:
    """Every (attack, ratio, K <= max_masks, distance, aggregate) the dashboard can show from the grid."""
    return [GridSetting(a, r, k, d, g) for r in mask_ratios for d in distances for k in range(1, max_masks + 1)
            for g in aggregates for a in attacks]


def shown_metrics(metrics: dict) -> dict:
    """The numbers the pages show of metrics.evaluate's answer: AUC, TPR at each FPR, and the accuracy,
    balanced accuracy, TPR and FPR at the shadow's threshold."""
    shown = {"auc": metrics["auc"], **{f"tpr@{f:g}": t["tpr"] for f, t in metrics["tpr_at"].items()}}
    if "confusion" in metrics:
        shown.update({f"threshold {name}": metrics["confusion"][name]
                      for name in ("accuracy", "balanced_accuracy", "tpr", "fpr")})
    return shown


def check_pack(experiment, exact, packed, settings, seed: int = 0) -> PackCheck:
    """Compare each setting's shown metrics on the `exact` and the `packed` Scorer. A setting an attack
    refuses (RMIA on PSNR) is skipped on both."""
    check = PackCheck()
    for s in settings:
        spec = ScoreSpec(s.mask_ratio, s.num_masks, seed, s.distance)
        try:
            want = run_attack(s.attack, experiment, spec, exact, aggregate=s.aggregate)
        except ValueError:
            continue
        got = run_attack(s.attack, experiment, spec, packed, aggregate=s.aggregate)
        shown = shown_metrics(got.metrics)
        changes = {name: abs(a - shown[name]) for name, a in shown_metrics(want.metrics).items()}
        check.changes[s] = (_group(want), changes)
        check.failures += [(s, name, want, got) for name, change in changes.items() if change >= METRIC_ATOL]
    return check


def _group(result) -> tuple:
    return result.spec.mask_ratio, result.spec.distance


def _critical(metric: str, result) -> list:
    """The thresholds (in signal units) a metric's value turns on: its ROC point's, or the shadow's."""
    if metric.startswith("tpr@"):
        return [t["threshold"] for f, t in result.metrics["tpr_at"].items() if f"tpr@{f:g}" == metric]
    return [result.threshold] if metric.startswith("threshold") else []


def patch_ids(experiment, failures) -> dict:
    """{(mask ratio, scored distance): image ids} to keep exact for each failing setting: the images
    whose exact signal lies within 4x the setting's largest quantisation change of a threshold the metric
    turns on (the exact one and the packed one); no image can cross it from further away. AUC turns on
    every pair: it names none (exact_entries then keeps whole entries)."""
    patches = {}
    for _, metric, want, got in failures:
        sides = [(want.member_ids, want.member_scores, got.member_scores),
                 (want.nonmember_ids, want.nonmember_scores, got.nonmember_scores)]
        if metric.startswith("threshold") and want.shadow_member_scores is not None:
            sides += [(experiment.shadow_members.ids, want.shadow_member_scores, got.shadow_member_scores),
                      (experiment.shadow_nonmembers.ids, want.shadow_nonmember_scores, got.shadow_nonmember_scores)]
        margin = 4 * max(float(np.max(np.abs(a - b))) for _, a, b in sides) + 1e-12
        ids = patches.setdefault(_group(want), set())
        for t in _critical(metric, want) + _critical(metric, got):
            for side_ids, a, _ in sides:
                ids.update(int(i) for i in np.asarray(side_ids)[np.abs(a - t) <= margin])
    return patches


def _request_group(request: dict) -> tuple | None:
    """A score entry's (mask ratio, distance), as _group names a result's; None for other entries."""
    return (request["spec"]["mask_ratio"], request["spec"]["distance"]) if request.get("kind") == "scores" else None


def exact_entries(entries, failures) -> set:
    """The request keys of the score entries a failing setting reads: every model's and source's, at
    its mask ratio, seed and scored distance."""
    wanted = {_group(want) for _, _, want, _ in failures}
    return {request_key(r) for r, _ in entries if _request_group(r) in wanted}


def entry_patches(entries, patches: dict) -> dict:
    """patch_ids' answer as write_pack's `patches`: {request key: ids} for every entry of each group."""
    return {request_key(r): patches[_request_group(r)] for r, _ in entries if patches.get(_request_group(r))}


def pack_exactly(entries, path, experiment, exact, settings, seed: int = 0, rounds: int = 4) -> tuple:
    """Write the (request, arrays) entries as a pack at `path` and check it (check_pack against the `exact`
    Scorer); after a failing check keep the values of the images next to the failing settings' thresholds
    exact (patch_ids), after a second one the whole entries of the settings still failing (exact_entries),
    and write it again, until a whole check passes. Returns (the passing PackCheck, {"patched_images": n,
    "exact_entries": n}); raises if `rounds` do not suffice."""
    entries, keep, patches, check = list(entries), set(), {}, PackCheck()
    for attempt in range(rounds):
        write_pack(entries, path, exact=keep, patches=entry_patches(entries, patches))
        check = check.updated(_check_written(path, experiment, exact, settings, seed))
        if not check.failures:
            return check, {"patched_images": sum(map(len, patches.values())), "exact_entries": len(keep)}
        changed = check.groups(f[0] for f in check.failures)
        if attempt == 0:
            patches = patch_ids(experiment, check.failures)
        else:
            keep |= exact_entries(entries, check.failures)
        changed |= {(r, "psnr") for r, d in changed if d == "pixel_mse"}  # PSNR is derived from pixel_mse
        settings = [s for s in settings if check.changes.get(s, (None,))[0] in changed]
    raise RuntimeError(f"the pack still changes {len(check.failures)} metrics after {rounds} rounds")


def _check_written(path, experiment, exact, settings, seed: int) -> PackCheck:
    """check_pack of the pack at `path`, read by a Scorer whose own cache must stay empty."""
    with tempfile.TemporaryDirectory() as own:
        packed = Scorer(exact.device, cache=ScoreCache(own, read_only_roots=(Path(path).parent,)), memo_size=64)
        check = check_pack(experiment, exact, packed, settings, seed)
        if any(Path(own).iterdir()):
            raise RuntimeError(f"{path} lacks entries the settings read: they were scored, not read from it")
    return check


__all__ = ["pack_exactly", "METRIC_ATOL", "GridSetting", "PackCheck", "grid_settings", "shown_metrics", "check_pack",
           "patch_ids", "exact_entries", "entry_patches"]
