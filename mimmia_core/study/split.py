"""Which images a study point's models train and are attacked on, drawn from its data specs.

One seeded permutation of the target's pool is cut, in order, into target members, target non-members,
shadow members, shadow non-members and one member set per reference: the same sizes and seed give the
same images, whatever else a point changes. Online references (data.online_references) are drawn by the
reference farm (farm.reference_sets) from a pool of the target's candidates: each candidate IN for exactly
half of them; the point's manifest (online_manifest) records who was IN where. A shadow from another pool (data.shadow) draws its two sets
there instead, and the target's slots stay where they were, so the target and references are shared
with the points whose shadow matches.
"""
from dataclasses import dataclass

import numpy as np

from ..data import ImageSource, open_source
from ..farm import farm_manifest, reference_sets
from ..manifest import SplitManifest


@dataclass
class PointSplit:
    target_pool: ImageSource
    shadow_pool: ImageSource
    members: np.ndarray
    nonmembers: np.ndarray
    shadow_members: np.ndarray
    shadow_nonmembers: np.ndarray
    references: list            # one id array per reference model
    online_manifest: SplitManifest | None = None  # the target's candidates and the online references' sets

    def sources(self) -> dict:
        """The four candidate sets as sources: target_members, ... (manifest.CANDIDATE_SETS)."""
        t, s = self.target_pool, self.shadow_pool
        return {"target_members": t.subset(self.members, name="target_members"),
                "target_nonmembers": t.subset(self.nonmembers, name="target_nonmembers"),
                "shadow_members": s.subset(self.shadow_members, name="shadow_members"),
                "shadow_nonmembers": s.subset(self.shadow_nonmembers, name="shadow_nonmembers")}


def _cut(ids: np.ndarray, sizes: list, spec: str, what: str) -> list:
    if sum(sizes) > len(ids):
        raise ValueError(f"data {spec!r} has {len(ids)} images, but the point needs {sum(sizes)} ({what}); lower "
                         f"data.members, data.nonmembers or data.references")
    edges = np.cumsum([0, *sizes])
    return [np.sort(ids[a:b]) for a, b in zip(edges[:-1], edges[1:])]


def draw_split(data: dict, seed: int, pools: dict | None = None) -> PointSplit:
    """The point's images. `pools` (spec -> opened source) reuses sources already opened."""
    pools = {} if pools is None else pools
    for spec in {data["target"], data["shadow"] or data["target"]}:
        if spec not in pools:
            pools[spec] = open_source(spec)
    target = pools[data["target"]]
    m, n, r = data["members"], data["nonmembers"], data["references"]
    order = np.random.default_rng(seed).permutation(target.ids)
    sets = _cut(order, [m, n, m, n] + [m] * r, data["target"], f"{m} members and {n} non-members for the target and "
                f"the shadow, and {m} members for each of {r} references")
    split = PointSplit(target, target, sets[0], sets[1], sets[2], sets[3], sets[4:])
    if data["shadow"] and data["shadow"] != data["target"]:
        shadow = pools[data["shadow"]]
        own = np.random.default_rng(seed + 1).permutation(shadow.ids)
        split.shadow_pool = shadow
        split.shadow_members, split.shadow_nonmembers = _cut(own, [m, n], data["shadow"], "the shadow's sets")
    if data.get("online_references"):
        split.online_manifest = _online_manifest(split, data, seed)
    return split


def _online_manifest(split: PointSplit, data: dict, seed: int) -> SplitManifest:
    """The target's candidates, with the online references' sets: a random half of them each."""
    candidates = SplitManifest(data["target"], split.target_pool.fingerprint(), seed, split.members.tolist(),
                               split.nonmembers.tolist(), [], [])
    sets = reference_sets(candidates, split.target_pool.ids, data["online_references"], online=True, seed=seed)
    return farm_manifest(candidates, sets, online=True)
