"""The Scorer: scores and similarities memoised in process (memo.LRUMemo) and cached on disk (cache.ScoreCache).

Keys are explicit fingerprints (weights, source, spec, precision,
SCORING_VERSION). The memo's lock covers the memo only: a scoring pass runs
outside any lock, so one caller's pass never blocks another's cached reads (two
callers that miss the same key at once may both compute it; they get the same
values). Progress is per call: `scores(..., progress=...)`, else the Scorer's
default. A request for K masks is served from a cached entry with more masks
(up to PREFIX_MASKS), since masks are seeded per (seed, image id, mask index).

Under a process group of more than one rank (torchrun; distributed.py) every
rank makes the same calls in the same order: rank 0's memo or cache answers
for all ranks, else each rank scores its shard of the images and every rank
gets the whole source's result (so the code after scoring runs alike on every
rank); only rank 0 writes the disk cache, once, with the whole result.
"""
import copy
import threading
from dataclasses import asdict, replace
from weakref import WeakKeyDictionary

import numpy as np
import torch

from .cache import ScoreCache
from .checkpoint import LoadedModel, model_fingerprint, weights_fingerprint
from .data import ImageSource
from .distances import DISTANCES, SCORING_VERSION, check_distances
from .distributed import from_main_rank, is_main_rank, sharded
from .encodermi import embedding_similarity
from .memo import LRUMemo
from .runtime import resolve_precision
from .scores import Scores, ScoreSpec, score_distances


PREFIX_MASKS = 32  # a K-mask request is served by a cached entry of up to this many masks: masks are a prefix


class Scorer:
    """Memoised (in-process) + disk-cached scoring for several models and sources.

    One pass computes every distance of a spec, so switching distance costs
    nothing. A model's fingerprint is recomputed only when its weights change in
    place. Returned arrays are read-only (they are shared). Thread-safe.
    progress: the default progress(done_images, total_images) of a call that
    names none; `with_progress` gives a Scorer sharing this one's memo and cache
    with another default.
    """

    def __init__(self, device=None, cache: ScoreCache | None = None, batch_size: int = 256, progress=None,
                 precision: str = "auto", compile: bool = False, cuda_graphs: bool = False, memo_size: int = 256,
                 store_distances=DISTANCES):
        self.device = None if device is None else torch.device(device)
        self.cache = cache
        self.batch_size = batch_size
        self.progress = progress
        self.precision = precision
        self.compile = compile
        self.cuda_graphs = cuda_graphs
        # which distances go to the disk cache (all are memoised)
        self.store_distances = check_distances(store_distances, "store_distances: unknown distances")
        self._memo = LRUMemo(memo_size)
        self._fingerprints = WeakKeyDictionary()
        self._fingerprints_lock = threading.Lock()  # covers the dictionary only, never a hash or a pass

    def with_progress(self, progress) -> "Scorer":
        """This Scorer (the same memo, fingerprints and cache) with another default progress."""
        view = copy.copy(self)
        view.progress = progress
        return view

    def scores(self, loaded: LoadedModel, source: ImageSource, spec: ScoreSpec, progress=None) -> Scores:
        """Every image's (K, N) distances under spec; progress(done, total) if a pass runs (default: the Scorer's)."""
        model = loaded.require_decoder()
        base = self._request(model, source, kind="scores")
        arrays = from_main_rank(lambda: self._cached_prefix(base, source, spec))
        if arrays is None:
            requests = {d: {**base, "spec": asdict(replace(spec, distance=d))} for d in DISTANCES}
            merged = sharded(lambda part: self._score_pass(model, part, spec, progress), source)
            stored = {d: self._store(requests[d], {"ids": merged["ids"], "per_mask": merged[d]},
                                     d in self.store_distances) for d in DISTANCES}
            arrays = stored[spec.distance]
        return Scores(arrays["ids"], arrays["per_mask"], spec)

    def _score_pass(self, model, source: ImageSource, spec: ScoreSpec, progress) -> dict:
        """{"ids": (N,), distance: (K, N)} for every distance, from one pass over source."""
        ids, per = score_distances(model, source, spec, DISTANCES, batch_size=self.batch_size,
                                   device=self.device, progress=self._progress(progress),
                                   precision=self.precision, compile=self.compile, cuda_graphs=self.cuda_graphs)
        return {"ids": ids, **per}

    def similarity(self, loaded: LoadedModel, source: ImageSource, num_views: int = 8, seed: int = 0,
                   progress=None) -> np.ndarray:
        """encodermi.embedding_similarity, memoised and cached; needs no decoder."""
        model = loaded.model
        request = self._request(model, source, kind="similarity", num_views=num_views, seed=seed,
                                skip=loaded.missing_decoder_keys)  # the encoder-only placeholder decoder is unused
        arrays = from_main_rank(lambda: self._lookup(
            request, lambda a: _ids_fit(a, source) and a.get("similarity", np.empty(0)).shape == (len(source),)))
        if arrays is None:
            arrays = self._store(request, sharded(lambda part: {"ids": part.ids, "similarity": embedding_similarity(
                model, part, num_views=num_views, seed=seed, batch_size=self.batch_size, device=self.device,
                progress=self._progress(progress), precision=self.precision)}, source), True)
        return arrays["similarity"]

    def is_cached(self, loaded: LoadedModel, source: ImageSource, spec: ScoreSpec) -> bool:
        """Whether scores(loaded, source, spec) would be served without scoring (the entry is read and checked)."""
        return self._cached_prefix(self._request(loaded.model, source, kind="scores"), source, spec) is not None

    def _cached_prefix(self, base: dict, source: ImageSource, spec: ScoreSpec) -> dict | None:
        """The memoised or cached entry for spec, or the first K masks of one with more masks (mask k is a
        function of (seed, image id, k) only, so the first K of K' > K masks are the K-mask scores).
        base: the request without its spec (the model and source fingerprints, computed once)."""
        for k in range(spec.num_masks, max(PREFIX_MASKS, spec.num_masks) + 1):
            wider = replace(spec, num_masks=k)
            arrays = self._lookup({**base, "spec": asdict(wider)}, _scores_fit(source, wider))
            if arrays is not None:
                return {"ids": arrays["ids"], "per_mask": arrays["per_mask"][:spec.num_masks]}
        return None

    def fingerprint(self, model: torch.nn.Module, skip=()) -> str:
        """model_fingerprint (weights and config; `skip`: weights not in the checkpoint); the weights'
        hash is memoised until a parameter or buffer is modified in place or moved."""
        versions = (tuple((t.data_ptr(), t._version) for t in model.state_dict().values()), tuple(sorted(skip)))
        with self._fingerprints_lock:
            known = self._fingerprints.get(model)
        if known is None or known[0] != versions:
            known = (versions, weights_fingerprint(model, set(skip)))
            with self._fingerprints_lock:
                self._fingerprints[model] = known
        return model_fingerprint(model, weights=known[1])

    def _progress(self, progress):
        return self.progress if progress is None else progress

    def _request(self, model, source: ImageSource, skip=(), **parts) -> dict:
        """What a result is computed from: the cache key and the check of every entry read."""
        device = self.device or model.pos_embed.device
        return dict(model=self.fingerprint(model, skip), source=source.fingerprint(),
                    precision=resolve_precision(self.precision, device), version=SCORING_VERSION, **parts)

    def _lookup(self, request: dict, fits) -> dict | None:
        """The memo's or the disk cache's entry for the request, if it fits (ids, shape); else None."""
        key = ScoreCache.key(request)
        arrays = self._memo.get(key)
        if arrays is not None:
            return arrays
        arrays = self.cache.get(request) if self.cache is not None else None
        if arrays is None or not fits(arrays):
            return None  # an entry that does not answer this request is recomputed and replaced
        return self._remember(key, arrays)

    def _store(self, request: dict, arrays: dict, persist: bool) -> dict:
        if persist and self.cache is not None and is_main_rank():
            self.cache.put(request, arrays)
        return self._remember(ScoreCache.key(request), arrays)

    def _remember(self, key: str, arrays: dict) -> dict:
        arrays = {name: np.array(a) for name, a in arrays.items()}  # own copies, shared read-only
        for a in arrays.values():
            a.flags.writeable = False
        return self._memo.put(key, arrays)


def _ids_fit(arrays: dict, source: ImageSource) -> bool:
    ids = arrays.get("ids")
    return ids is not None and ids.shape == source.ids.shape and np.array_equal(ids, source.ids)


def _scores_fit(source: ImageSource, spec: ScoreSpec):
    """A check that a cache entry holds this source's ids and (K, N) per-mask scores."""
    def fits(arrays: dict) -> bool:
        per_mask = arrays.get("per_mask")
        return _ids_fit(arrays, source) and per_mask is not None and per_mask.shape == (spec.num_masks, len(source))
    return fits


__all__ = ["Scorer", "PREFIX_MASKS"]
