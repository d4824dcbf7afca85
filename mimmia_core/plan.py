"""What a run will cost before it runs: the scores an attack or a sweep still needs.

run_attack scores, per attack, the target on its candidates, the shadow on its own, and (for the
attacks that calibrate) every reference on both; under the spec it compares with (the attack's own
distance, made comparable between the models: attacks.comparable_spec). `missing_scores` lists what of
that is not yet in the Scorer's memory or disk cache, so a caller can say what a run costs, or that it
costs nothing. Embedding similarities (encodermi) are not reconstruction scores and are not planned.
"""
from dataclasses import dataclass, replace

from .attacks import comparable_spec, make_attack
from .masking import smallest_mask_ratio


@dataclass(frozen=True)
class Missing:
    """The scores still to compute: (model, source, spec) triples, and how many image-masks they are."""
    items: tuple

    @property
    def image_masks(self) -> int:
        return sum(len(source) * spec.num_masks for _, source, spec in self.items)

    def __bool__(self) -> bool:
        return bool(self.items)

    def __len__(self) -> int:
        return len(self.items)


def attack_scores(experiment, attack, spec) -> list[tuple]:
    """The (model, source, spec) triples run_attack(attack, experiment, spec, ...) scores."""
    attack = make_attack(attack)
    if not attack.uses_distance:
        return []
    refs = list(experiment.references) if attack.needs_references else []
    spec = replace(spec, distance=attack.distance or spec.distance)
    spec, _ = comparable_spec([m for m in (experiment.target, experiment.shadow, *refs) if m is not None], spec)
    pairs = [(experiment.target, experiment.members), (experiment.target, experiment.nonmembers)]
    if experiment.shadow is not None:
        pairs += [(experiment.shadow, s) for s in (experiment.shadow_members, experiment.shadow_nonmembers)
                  if s is not None]
    pairs += attack.population_pairs(experiment)  # RMIA: each side's population samples
    pairs += [(ref, source) for ref in refs for _, source in list(pairs)]
    if not attack.uses_mask_ratio:  # unmasked: one masked patch, whatever the spec's ratio
        return [(m, s, replace(spec, mask_ratio=smallest_mask_ratio(m.config.num_patches))) for m, s in pairs]
    return [(m, s, spec) for m, s in pairs]


def missing_scores(experiment, scorer, ratios, attacks, spec) -> Missing:
    """The scores a sweep of `attacks` over the mask `ratios` (or one run_attack: ratios=[spec.mask_ratio])
    needs and `scorer` has neither in memory nor on disk, each (model, source, spec) once."""
    needed = {}
    for ratio in ratios:
        for attack in attacks:
            for model, source, s in attack_scores(experiment, attack, replace(spec, mask_ratio=float(ratio))):
                needed.setdefault((id(model), id(source), s), (model, source, s))
    return Missing(tuple(t for t in needed.values() if not scorer.is_cached(*t)))


__all__ = ["Missing", "attack_scores", "missing_scores"]
