"""Membership scores: reconstruction distances (Li et al., 2024) and EncoderMI similarity.

`score_images` masks every image K times with masks seeded by its id
(`mask_noise`), reconstructs its image-masks in one forward per batch (the
patch embedding and the targets are computed once per image and shared by its
masks) and keeps only the (K, N) distances, streaming the source batch by
batch. A forward holds at most `rows_per_forward` image-masks: a large K is
split into chunks of masks, with the same scores. bf16 autocast on CUDA, fp32
on CPU. `Scorer` adds an in-process memo and the on-disk `ScoreCache`.

Distances, per image and mask, over the MASKED patches unless said otherwise:
  masked_mse     MSE in the model's target space (what MAE's loss uses);
  all_mse        MSE in the target space over all patches;
  pixel_mse      MSE in pixel space: the reconstruction is mapped back to pixels
                 (norm_pix_loss predictions are un-normalised with each original
                 patch's mean and deviation, then the model's mean/std undone) and
                 CLAMPED to [0, 1], as `reconstruct` displays it, then compared
                 with the original pixels in [0, 1];
  pixel_mse_raw  the same WITHOUT the clamp: a prediction beyond [0, 1] counts its
                 full error. Comparable between models that normalise
                 differently (the pixel default of attacks.comparable_spec);
  pixel_l1       pixel_mse's clamped reconstruction, mean absolute error;
  psnr           10 log10(1 / pixel_mse) in dB (capped at 100 dB).
Target-space distances (TARGET_SPACE_DISTANCES) are in each model's own units.
"""
import threading
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, replace
from weakref import WeakKeyDictionary

import numpy as np
import torch
import torch.nn.functional as F

from .cache import ScoreCache
from .checkpoint import LoadedModel, model_fingerprint, weights_fingerprint
from .data import ImageSource
from .masking import check_mask_ratio, check_seed, check_visible, mask_noise, num_masked
from .model import MaskedAutoencoderViT

SCORING_VERSION = 2  # bump when a score's definition changes: old cache entries then miss
DISTANCES = ("masked_mse", "all_mse", "pixel_mse", "pixel_mse_raw", "pixel_l1", "psnr")
TARGET_SPACE_DISTANCES = ("masked_mse", "all_mse")  # in each model's own normalisation
PIXEL_DISTANCES = ("pixel_mse", "pixel_mse_raw", "pixel_l1", "psnr")
AGGREGATES = ("mean", "min", "median")
PRECISIONS = ("auto", "fp32", "bf16")
PSNR_MIN_MSE = 1e-10  # a perfect reconstruction scores 100 dB, not infinity
CPU_ACTIVATION_BYTES = 16 << 20  # on CPU a forward is cut so its widest activation stays cache-sized
MASKS_PER_IMAGE = 8  # off the CPU a forward holds at most batch_size * MASKS_PER_IMAGE image-masks
CROP_SCALE = (0.2, 1.0)  # random resized crop as in MAE pre-training
CROP_RATIO = (3 / 4, 4 / 3)


@dataclass(frozen=True)
class ScoreSpec:
    """How images are scored: mask ratio, K masks per image, their seed, the distance."""
    mask_ratio: float = 0.75
    num_masks: int = 8
    seed: int = 0
    distance: str = "masked_mse"

    def __post_init__(self):
        object.__setattr__(self, "mask_ratio", check_mask_ratio(self.mask_ratio))
        if isinstance(self.num_masks, bool) or not isinstance(self.num_masks, (int, np.integer)):
            raise ValueError(f"num_masks must be an integer, got {self.num_masks!r}")
        object.__setattr__(self, "num_masks", int(self.num_masks))
        object.__setattr__(self, "seed", check_seed(self.seed))
        if self.num_masks < 1:
            raise ValueError(f"num_masks must be at least 1, got {self.num_masks}")
        if self.distance not in DISTANCES:
            raise ValueError(f"unknown distance {self.distance!r}; choose one of {DISTANCES}")


@dataclass
class Scores:
    ids: np.ndarray       # (N,) int64
    per_mask: np.ndarray  # (K, N) float64: the distance per mask and image (PSNR in dB)
    spec: ScoreSpec

    def __post_init__(self):
        self.ids = np.asarray(self.ids, dtype=np.int64)
        self.per_mask = np.asarray(self.per_mask, dtype=np.float64)
        if self.per_mask.shape != (self.spec.num_masks, len(self.ids)):
            raise ValueError(f"per_mask has shape {self.per_mask.shape}, expected "
                             f"({self.spec.num_masks}, {len(self.ids)}) for {self.spec.num_masks} masks")

    def aggregate(self, how: str = "mean") -> np.ndarray:
        """The per-mask values reduced over the K masks: (N,)."""
        if how == "mean":
            return self.per_mask.mean(axis=0)
        if how == "min":
            return self.per_mask.min(axis=0)
        if how == "median":
            return np.median(self.per_mask, axis=0)
        raise ValueError(f"unknown aggregate {how!r}; choose one of {AGGREGATES}")

    def signal(self, how: str = "mean") -> np.ndarray:
        """Membership signal, higher = more member-like: -distance, or +PSNR."""
        agg = self.aggregate(how)
        return agg if self.spec.distance == "psnr" else -agg

    def require_finite(self, model) -> "Scores":
        """These scores, or a ValueError naming the model and how many per-mask scores are NaN or infinite."""
        refuse_non_finite(self.per_mask, f"model {model}",
                          f" ({self.spec.distance} at mask ratio {self.spec.mask_ratio:g}, per image and mask): "
                          f"its reconstructions overflow or are undefined; check the weights (a diverged "
                          f"training run?) and its mean/std settings")
        return self


def refuse_non_finite(values, what: str, context: str = "") -> None:
    """The one finiteness check of scores: a ValueError '<what>: B of N scores are NaN or infinite<context>'."""
    values = np.asarray(values)
    bad = int((~np.isfinite(values)).sum())
    if bad:
        raise ValueError(f"{what}: {bad} of {values.size} scores are NaN or infinite{context}")


# --------------------------------------------------------------------------
# One batch
# --------------------------------------------------------------------------
def batch_distances(model: MaskedAutoencoderViT, imgs: torch.Tensor, noise: torch.Tensor, mask_ratio: float,
                    distances=DISTANCES) -> torch.Tensor:
    """(len(distances), K, N) float32 distances of N normalised images under K masks.

    noise: (K, N, L), e.g. mask_noise(seed, ids, K, L). One encoder and decoder
    forward over the K*N rows (k-major); patch embedding and targets once per image.
    """
    K, N, L = noise.shape
    latent, mask, ids_restore = model.forward_encoder(imgs, mask_ratio, noise.reshape(K * N, L))
    pred = model.forward_decoder(latent, ids_restore)
    pred, mask = pred.view(K, N, L, -1), mask.view(K, N, L)
    masked = num_masked(L, mask_ratio)
    rows = {}
    if "masked_mse" in distances or "all_mse" in distances:
        err = ((pred - model.patch_targets(imgs)) ** 2).mean(dim=-1)  # (K, N, L) in fp32
        rows["masked_mse"] = (err * mask).sum(dim=-1) / masked
        rows["all_mse"] = err.mean(dim=-1)
    if set(PIXEL_DISTANCES) & set(distances):
        patches = model.patchify(imgs)
        recon = model.target_to_input(pred, patches)
        diff = model.patch_pixels(recon) - model.patch_pixels(patches)
        rows["pixel_mse"] = ((diff ** 2).mean(dim=-1) * mask).sum(dim=-1) / masked
        rows["pixel_l1"] = (diff.abs().mean(dim=-1) * mask).sum(dim=-1) / masked
        rows["psnr"] = -10 * torch.log10(rows["pixel_mse"].clamp(min=PSNR_MIN_MSE))
        raw = (recon - patches) * model.pixel_std.repeat(model.config.patch_size ** 2)  # pixels, unclamped
        rows["pixel_mse_raw"] = ((raw ** 2).mean(dim=-1) * mask).sum(dim=-1) / masked
    return torch.stack([rows[d] for d in distances])


# --------------------------------------------------------------------------
# Streaming
# --------------------------------------------------------------------------
def _on_device(model: MaskedAutoencoderViT, device) -> torch.device:
    """The device to run on: `device` (the model is moved there), else the model's own."""
    if device is not None:
        model.to(device)
    model.eval()
    return model.pos_embed.device


def images_per_forward(model: MaskedAutoencoderViT, rows_per_image: int) -> int:
    """Images per forward on CPU: the widest activation (an MLP's hidden layer over all
    patches) of rows_per_image rows each stays within CPU_ACTIVATION_BYTES. Larger
    forwards are slower there (caches; page faults on fresh allocations)."""
    c = model.config
    widest = (c.num_patches + 1) * max(c.embed_dim, c.decoder_embed_dim) * c.mlp_ratio * 4
    return max(1, int(CPU_ACTIVATION_BYTES // (widest * rows_per_image)))


def rows_per_forward(model: MaskedAutoencoderViT, device: torch.device, batch_size: int) -> int:
    """The most image-masks one forward holds, whatever K: on CPU images_per_forward(model, 1),
    elsewhere batch_size * MASKS_PER_IMAGE. More masks per image are split across forwards."""
    return images_per_forward(model, 1) if device.type == "cpu" else max(1, batch_size) * MASKS_PER_IMAGE


def _in_mask_chunks(fn, masks: int):
    """fn(imgs, noise (K, n, L)) -> (D, K, n) computed `masks` masks at a time, concatenated."""
    def run(imgs, noise):
        if noise.shape[0] <= masks:
            return fn(imgs, noise)
        return torch.cat([fn(imgs, noise[k:k + masks]) for k in range(0, noise.shape[0], masks)], dim=1)
    return run


def _precision(precision: str, device: torch.device) -> str:
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; choose one of {PRECISIONS}")
    if precision == "auto":
        return "bf16" if device.type == "cuda" else "fp32"
    return precision


def _prefetch(items, enabled: bool):
    """Yield from the iterator `items`, preparing the next item in a background thread."""
    if not enabled:
        yield from items
        return
    with ThreadPoolExecutor(1) as pool:
        future = pool.submit(next, items, None)
        while (item := future.result()) is not None:
            future = pool.submit(next, items, None)
            yield item


def _loader(source: ImageSource, batch_size: int, noise_fn, pin: bool):
    """(ids, uint8 images, noise) per batch, in pinned memory on CUDA, made in the prefetch thread."""
    for ids, images in source.batches(batch_size):
        images = torch.from_numpy(np.ascontiguousarray(images))
        noise = noise_fn(ids)
        if pin:
            images, noise = images.pin_memory(), noise.pin_memory()
        yield ids, images, noise


def _cuda_graphed(fn):
    """Capture fn(imgs, noise) as a CUDA graph at its first call; later calls copy in and replay."""
    state = {}

    def run(imgs, noise):
        if not state:
            inputs = (imgs.clone(), noise.clone())
            side = torch.cuda.Stream(imgs.device)
            side.wait_stream(torch.cuda.current_stream(imgs.device))
            with torch.cuda.stream(side):
                for _ in range(2):  # warm up kernels and workspaces outside the graph
                    fn(*inputs)
            torch.cuda.current_stream(imgs.device).wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph, capture_error_mode="thread_local"):  # the prefetch thread pins memory
                out = fn(*inputs)
            state.update(graph=graph, inputs=inputs, out=out)
        for buf, x in zip(state["inputs"], (imgs, noise)):
            buf.copy_(x)
        state["graph"].replay()
        return state["out"]
    return run


def _make_step(fn, static_batch: int, compile: bool, cuda_graphs: bool, device: torch.device):
    """fn(imgs, noise) -> (D, K, n), optionally compiled and/or CUDA-graphed on static shapes
    (the last batch is padded to static_batch with copies of its first image)."""
    if not (compile or cuda_graphs):
        return fn
    if cuda_graphs and device.type != "cuda":
        raise ValueError(f"cuda_graphs needs a CUDA device, got {device}")
    if compile:
        fn = torch.compile(fn, dynamic=False, mode="reduce-overhead" if cuda_graphs else None)
    else:
        fn = _cuda_graphed(fn)

    def step(imgs, noise):
        n = imgs.shape[0]
        if n < static_batch:
            imgs = torch.cat([imgs, imgs[:1].expand(static_batch - n, -1, -1, -1)])
            noise = torch.cat([noise, noise[:, :1].expand(-1, static_batch - n, -1)], dim=1)
        return fn(imgs, noise)[..., :n].clone()  # graphed outputs are overwritten by the next call
    return step


def _stream(model, source: ImageSource, batch_size: int, device, progress, precision: str, noise_fn, fn,
            rows_per_image: int, compile: bool = False, cuda_graphs: bool = False):
    """Run fn(normalised images, noise) over the source's batches -> (ids, [per-batch numpy results])."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    if len(source) == 0:
        raise ValueError(f"{source.name} holds no images to score")
    device = _on_device(model, device)
    cuda = device.type == "cuda"
    batch_size = min(batch_size, max(1, rows_per_forward(model, device, batch_size) // rows_per_image))
    step = _make_step(fn, min(batch_size, len(source)), compile, cuda_graphs, device)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=_precision(precision, device) == "bf16",
                              cache_enabled=not cuda_graphs)
    ids_out, results, done, pending = [], [], 0, None

    def collect(ids, out):  # the previous batch: its copy to the host waits while the next one is queued
        nonlocal done
        ids_out.append(ids)
        results.append(out.cpu().numpy().astype(np.float64))
        done += len(ids)
        if progress is not None:
            progress(done, len(source))

    with torch.inference_mode(), autocast:
        for ids, images, noise in _prefetch(_loader(source, batch_size, noise_fn, cuda), cuda):
            out = step(model.normalize(images), noise.to(device, non_blocking=True))
            if pending is not None:
                collect(*pending)
            pending = (ids, out)
        collect(*pending)
    return np.concatenate(ids_out), results


def score_distances(model: MaskedAutoencoderViT, source: ImageSource, spec: ScoreSpec, distances=DISTANCES, *,
                    batch_size: int = 256, device=None, progress=None, precision: str = "auto",
                    compile: bool = False, cuda_graphs: bool = False) -> tuple[np.ndarray, dict]:
    """Several distances from one pass: (ids, {distance: (K, N) float64}). See score_images."""
    unknown = [d for d in distances if d not in DISTANCES]
    if unknown:
        raise ValueError(f"unknown distances {unknown}; choose from {DISTANCES}")
    distances = tuple(distances)
    L = model.config.num_patches
    check_visible(L, spec.mask_ratio)
    masks = min(spec.num_masks, rows_per_forward(model, _on_device(model, device), batch_size))
    ids, results = _stream(
        model, source, batch_size, device, progress, precision,
        noise_fn=lambda ids: mask_noise(spec.seed, ids, spec.num_masks, L),
        fn=_in_mask_chunks(lambda imgs, noise: batch_distances(model, imgs, noise, spec.mask_ratio, distances),
                           masks),
        rows_per_image=masks, compile=compile, cuda_graphs=cuda_graphs)
    per_mask = np.concatenate(results, axis=2)  # (D, K, N)
    return ids, dict(zip(distances, per_mask))


def score_images(model: MaskedAutoencoderViT, source: ImageSource, spec: ScoreSpec, *, batch_size: int = 256,
                 device=None, progress=None, precision: str = "auto", compile: bool = False,
                 cuda_graphs: bool = False) -> Scores:
    """Score every image of `source` under spec.num_masks seeded masks.

    model: an MAE with its decoder; device: run there (the model is moved), else
    where the model is; batch_size: images per forward (on CPU at most
    images_per_forward); progress: callable(done_images, total_images);
    precision: "auto" (bf16 autocast on CUDA, fp32 elsewhere), "fp32" or "bf16";
    compile / cuda_graphs: opt-in fast paths (torch.compile; CUDA graphs, CUDA
    only; both = compile with mode "reduce-overhead"), same scores within float
    tolerance. A score depends only on the image, its id, the spec and the
    weights, not on batch size or order.
    """
    ids, per = score_distances(model, source, spec, (spec.distance,), batch_size=batch_size, device=device,
                               progress=progress, precision=precision, compile=compile, cuda_graphs=cuda_graphs)
    return Scores(ids, per[spec.distance], spec)


# --------------------------------------------------------------------------
# EncoderMI: agreement of the embeddings of augmented views
# --------------------------------------------------------------------------
def view_noise(seed: int, ids, num_views: int) -> torch.Tensor:
    """(V, N, 5) uniforms drawing each view's crop and flip: a pure function of (seed, image id, view)."""
    return mask_noise(seed, ids, num_views, 5)


def augment_views(imgs: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """Random resized crops (scale CROP_SCALE, aspect CROP_RATIO) with random horizontal flips,
    drawn by noise (V, N, 5) from view_noise: (V*N, C, H, W), view-major."""
    u = noise.to(imgs.device, torch.float32)
    num_views = u.shape[0]
    area = CROP_SCALE[0] + (CROP_SCALE[1] - CROP_SCALE[0]) * u[..., 0]
    lo, hi = np.log(CROP_RATIO[0]), np.log(CROP_RATIO[1])
    ratio = torch.exp(lo + (hi - lo) * u[..., 1])
    w, h = (area * ratio).sqrt().clamp(max=1), (area / ratio).sqrt().clamp(max=1)  # fractions of the side
    flip = torch.where(u[..., 4] < 0.5, -1.0, 1.0)
    theta = torch.zeros(*u.shape[:2], 2, 3, device=imgs.device)
    theta[..., 0, 0], theta[..., 0, 2] = w * flip, (1 - w) * (2 * u[..., 2] - 1)
    theta[..., 1, 1], theta[..., 1, 2] = h, (1 - h) * (2 * u[..., 3] - 1)
    views = imgs.repeat(num_views, 1, 1, 1)
    grid = F.affine_grid(theta.flatten(0, 1), list(views.shape), align_corners=False)
    return F.grid_sample(views, grid, mode="bilinear", padding_mode="border", align_corners=False)


def view_similarity(model: MaskedAutoencoderViT, imgs: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """(1, N): mean pairwise cosine similarity of the encoder embeddings of each image's views
    (noise (V, N, 5) from view_noise).

    The embedding is the mean of the encoder's patch tokens after its final norm,
    on all patches (no masking): MAE's loss never trains the cls output.
    """
    num_views = noise.shape[0]
    feats = model.forward_features(augment_views(imgs, noise))[:, 1:].mean(dim=1)
    feats = F.normalize(feats.float(), dim=-1).view(num_views, imgs.shape[0], -1)
    pair_sum = (feats.sum(dim=0) ** 2).sum(dim=-1) - (feats ** 2).sum(dim=(0, 2))  # sum over v != w
    return (pair_sum / (num_views * (num_views - 1)))[None]


def embedding_similarity(model: MaskedAutoencoderViT, source: ImageSource, *, num_views: int = 8, seed: int = 0,
                         batch_size: int = 256, device=None, progress=None, precision: str = "auto") -> np.ndarray:
    """EncoderMI-style signal (Liu et al., 2021), (N,): how alike the encoder sees num_views augmented
    views of each image; higher = more member-like. Needs no decoder."""
    if isinstance(num_views, bool) or not isinstance(num_views, (int, np.integer)) or num_views < 2:
        raise ValueError(f"num_views must be an integer of at least 2, got {num_views!r}")
    _, results = _stream(model, source, batch_size, device, progress, precision,
                         noise_fn=lambda ids: view_noise(seed, ids, num_views),
                         fn=lambda imgs, noise: view_similarity(model, imgs, noise), rows_per_image=num_views)
    return np.concatenate(results, axis=1)[0]


# --------------------------------------------------------------------------
# Memoised + disk-cached scoring
# --------------------------------------------------------------------------
class Scorer:
    """Memoised (in-process) + disk-cached scoring for several models and sources.

    One pass computes every distance of a spec, so switching distance costs
    nothing. Keys are explicit fingerprints (weights, source, spec, precision,
    SCORING_VERSION); a model's fingerprint is recomputed only when its weights
    change in place. Returned arrays are read-only (they are shared). Thread-safe.
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
        self.memo_size = memo_size
        unknown = [d for d in store_distances if d not in DISTANCES]
        if unknown:
            raise ValueError(f"store_distances: unknown distances {unknown}; choose from {DISTANCES}")
        self.store_distances = tuple(store_distances)  # which distances go to the disk cache (all are memoised)
        self._memo = OrderedDict()
        self._fingerprints = WeakKeyDictionary()
        self._lock = threading.RLock()

    def scores(self, loaded: LoadedModel, source: ImageSource, spec: ScoreSpec) -> Scores:
        model = loaded.require_decoder()
        requests = {d: self._request(model, source, kind="scores", spec=asdict(replace(spec, distance=d)))
                    for d in DISTANCES}
        with self._lock:
            arrays = self._lookup(requests[spec.distance], _scores_fit(source, spec))
            if arrays is None:
                ids, per = score_distances(model, source, spec, DISTANCES, batch_size=self.batch_size,
                                           device=self.device, progress=self.progress, precision=self.precision,
                                           compile=self.compile, cuda_graphs=self.cuda_graphs)
                stored = {d: self._store(requests[d], {"ids": ids, "per_mask": per[d]}, d in self.store_distances)
                          for d in DISTANCES}
                arrays = stored[spec.distance]
        return Scores(arrays["ids"], arrays["per_mask"], spec)

    def similarity(self, loaded: LoadedModel, source: ImageSource, num_views: int = 8, seed: int = 0) -> np.ndarray:
        model = loaded.model
        request = self._request(model, source, kind="similarity", num_views=num_views, seed=seed,
                                skip=loaded.missing_decoder_keys)  # the encoder-only placeholder decoder is unused
        with self._lock:
            arrays = self._lookup(request, lambda a: _ids_fit(a, source) and a.get("similarity", np.empty(0)).shape
                                  == (len(source),))
            if arrays is None:
                sim = embedding_similarity(model, source, num_views=num_views, seed=seed, batch_size=self.batch_size,
                                           device=self.device, progress=self.progress, precision=self.precision)
                arrays = self._store(request, {"ids": source.ids, "similarity": sim}, True)
        return arrays["similarity"]

    def fingerprint(self, model: torch.nn.Module, skip=()) -> str:
        """model_fingerprint (weights and config; `skip`: weights not in the checkpoint); the weights'
        hash is memoised until a parameter or buffer is modified in place or moved."""
        versions = (tuple((t.data_ptr(), t._version) for t in model.state_dict().values()), tuple(sorted(skip)))
        with self._lock:
            known = self._fingerprints.get(model)
            if known is None or known[0] != versions:
                known = self._fingerprints[model] = (versions, weights_fingerprint(model, set(skip)))
        return model_fingerprint(model, weights=known[1])

    def _request(self, model, source: ImageSource, skip=(), **parts) -> dict:
        """What a result is computed from: the cache key and the check of every entry read."""
        device = self.device or model.pos_embed.device
        return dict(model=self.fingerprint(model, skip), source=source.fingerprint(),
                    precision=_precision(self.precision, device), version=SCORING_VERSION, **parts)

    def _lookup(self, request: dict, fits) -> dict | None:
        """The memo's or the disk cache's entry for the request, if it fits (ids, shape); else None."""
        key = ScoreCache.key(request)
        if key in self._memo:
            self._memo.move_to_end(key)
            return self._memo[key]
        arrays = self.cache.get(request) if self.cache is not None else None
        if arrays is not None and not fits(arrays):
            arrays = None  # an entry that does not answer this request is recomputed and replaced
        if arrays is not None:
            self._remember(key, arrays)
        return arrays

    def is_cached(self, loaded: LoadedModel, source: ImageSource, spec: ScoreSpec) -> bool:
        """Whether scores(loaded, source, spec) would be served without scoring (the entry is read and checked)."""
        request = self._request(loaded.model, source, kind="scores", spec=asdict(spec))
        with self._lock:
            if ScoreCache.key(request) in self._memo:
                return True
            arrays = self.cache.get(request) if self.cache is not None else None
            return arrays is not None and _scores_fit(source, spec)(arrays)

    def _store(self, request: dict, arrays: dict, persist: bool) -> dict:
        if persist and self.cache is not None:
            self.cache.put(request, arrays)
        return self._remember(ScoreCache.key(request), arrays)

    def _remember(self, key: str, arrays: dict) -> dict:
        arrays = {name: np.array(a) for name, a in arrays.items()}  # own copies, shared read-only
        for a in arrays.values():
            a.flags.writeable = False
        self._memo[key] = arrays
        while len(self._memo) > self.memo_size:
            self._memo.popitem(last=False)
        return arrays


def _ids_fit(arrays: dict, source: ImageSource) -> bool:
    ids = arrays.get("ids")
    return ids is not None and ids.shape == source.ids.shape and np.array_equal(ids, source.ids)


def _scores_fit(source: ImageSource, spec: ScoreSpec):
    """A check that a cache entry holds this source's ids and (K, N) per-mask scores."""
    def fits(arrays: dict) -> bool:
        per_mask = arrays.get("per_mask")
        return _ids_fit(arrays, source) and per_mask is not None and per_mask.shape == (spec.num_masks, len(source))
    return fits


__all__ = ["DISTANCES", "TARGET_SPACE_DISTANCES", "PIXEL_DISTANCES", "AGGREGATES", "SCORING_VERSION", "ScoreSpec",
           "Scores", "refuse_non_finite", "batch_distances", "score_distances", "score_images", "images_per_forward",
           "rows_per_forward", "view_noise", "augment_views",
           "view_similarity", "embedding_similarity", "Scorer"]
