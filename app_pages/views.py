"""Arrays the dashboard draws: histogram bars, display images, patch heatmaps, tables.

Plain numpy/torch, no streamlit: every number a page shows is computed here or
in the rest of mimmia_core, so it can be tested without a browser.
"""
import hashlib

import numpy as np
import torch


def image_id(image: np.ndarray) -> int:
    """A stable non-negative id for an image outside any data set (an upload), from its pixels.

    Masks are a function of (seed, image id), so the same upload always gets the same masks.
    """
    digest = hashlib.sha256(np.ascontiguousarray(image).tobytes()).digest()
    return int.from_bytes(digest[:7], "little")


def histogram(groups: dict, bins: int = 40, extra=()) -> tuple[np.ndarray, dict]:
    """Counts of each group over one shared set of bin edges.

    groups: name -> 1-D values (non-finite values are left out). `extra` values
    (e.g. a threshold or one image's score) widen the range so they fall on the
    drawn axis. Returns (edges of shape (bins + 1,), name -> counts (bins,)).
    """
    finite = {name: np.asarray(v, np.float64).ravel() for name, v in groups.items()}
    finite = {name: v[np.isfinite(v)] for name, v in finite.items()}
    pooled = np.concatenate([*finite.values(), np.asarray([e for e in extra if e is not None and np.isfinite(e)],
                                                           np.float64)])
    if pooled.size == 0:
        raise ValueError("histogram: no finite values to count")
    lo, hi = float(pooled.min()), float(pooled.max())
    if hi <= lo:
        lo, hi = lo - 0.5, hi + 0.5
    edges = np.linspace(lo, hi, bins + 1)
    return edges, {name: np.histogram(v, edges)[0] for name, v in finite.items()}


def shares(counts: np.ndarray) -> np.ndarray:
    """Counts -> each bin's share of the group, so groups of different sizes compare on one axis."""
    total = counts.sum()
    return counts / total if total else counts.astype(np.float64)


def fraction_at_or_above(values, x: float) -> float:
    """Fraction of `values` that are >= x (how many of a group score at least as member-like)."""
    values = np.asarray(values, np.float64)
    return float((values >= x).mean()) if values.size else float("nan")


def upscale(image: np.ndarray, min_size: int = 168) -> np.ndarray:
    """Nearest-neighbour upscaling by the integer factor that makes the short side >= min_size.

    image: (H, W, C) or (H, W). Single-channel images come back as (H, W), which
    st.image shows as grey.
    """
    image = np.asarray(image)
    if image.ndim == 3 and image.shape[-1] == 1:
        image = image[..., 0]
    factor = max(1, -(-min_size // min(image.shape[:2])))
    return image.repeat(factor, axis=0).repeat(factor, axis=1)


def display_image(image, min_size: int = 168) -> np.ndarray:
    """Any one image (uint8 HWC, or float CHW/HWC in [0, 1]) -> upscaled float32 HW(C) in [0, 1]."""
    x = image.detach().float().cpu().numpy() if isinstance(image, torch.Tensor) else np.asarray(image)
    if x.dtype == np.uint8:
        x = x.astype(np.float32) / 255.0
    elif x.ndim == 3 and x.shape[0] in (1, 3) and x.shape[-1] not in (1, 3):
        x = np.moveaxis(x, 0, -1)
    return upscale(np.clip(x.astype(np.float32), 0.0, 1.0), min_size)


def reconstruction_panels(rec, index: int = 0, min_size: int = 168) -> dict:
    """The four panels of MAE's demo for image `index` of a Reconstruction, ready for st.image."""
    return {
        "original": display_image(rec.original[index], min_size),
        "masked": display_image(rec.masked[index], min_size),
        "reconstruction": display_image(rec.reconstruction[index], min_size),
        "reconstruction + visible": display_image(rec.pasted[index], min_size),
    }


def patch_grid(patch_values, mask=None) -> np.ndarray:
    """Per-patch values (L,) -> a (g, g) grid in patch order (row-major, as patchify).

    With `mask` (L,), 1 = masked, visible patches become NaN: MAE is scored on
    the masked patches only, and a heatmap leaves the others blank.
    """
    v = patch_values.detach().float().cpu().numpy() if isinstance(patch_values, torch.Tensor) \
        else np.asarray(patch_values, np.float64)
    v = v.astype(np.float64).ravel()
    g = int(round(len(v) ** 0.5))
    if g * g != len(v):
        raise ValueError(f"patch_grid: {len(v)} patches do not form a square grid")
    if mask is not None:
        m = mask.detach().cpu().numpy() if isinstance(mask, torch.Tensor) else np.asarray(mask)
        v = np.where(m.ravel() > 0.5, v, np.nan)
    return v.reshape(g, g)


# Plotly's "Viridis" colour scale at 10 evenly spaced stops (what charts.heatmap_figure draws with)
VIRIDIS = np.array([[int(h[i:i + 2], 16) / 255.0 for i in (1, 3, 5)] for h in (
    "#440154", "#482878", "#3e4989", "#31688e", "#26828e", "#1f9e89", "#35b779", "#6ece58", "#b5de2b", "#fde725")])


def viridis(values, zmax: float) -> np.ndarray:
    """Values in [0, zmax] -> RGB in [0, 1] on VIRIDIS (linear between stops; values outside are clipped)."""
    values = np.asarray(values, np.float64)
    t = np.clip(values / zmax, 0.0, 1.0) if zmax > 0 else np.zeros_like(values)  # zmax 0: all errors are 0
    x = np.linspace(0.0, 1.0, len(VIRIDIS))
    return np.stack([np.interp(t, x, VIRIDIS[:, c]) for c in range(3)], axis=-1)


def error_overlay(image: np.ndarray, grid: np.ndarray, zmax: float, alpha: float = 0.6) -> np.ndarray:
    """A display image (H, W) or (H, W, 3) in [0, 1] with each masked patch tinted by its error on VIRIDIS
    over [0, zmax], blended at `alpha`; visible patches (NaN in the patch_grid `grid`) are left as they are.
    H and W must be multiples of the grid's side. Returns RGB (H, W, 3)."""
    rgb = np.repeat(image[..., None], 3, axis=-1) if image.ndim == 2 else np.asarray(image)
    g = grid.shape[0]
    if rgb.shape[0] % g or rgb.shape[1] % g:
        raise ValueError(f"error_overlay: a {rgb.shape[0]}x{rgb.shape[1]} image does not split into {g}x{g} patches")
    cells = np.kron(grid, np.ones((rgb.shape[0] // g, rgb.shape[1] // g)))
    masked = np.isfinite(cells)[..., None]
    tint = viridis(np.nan_to_num(cells), zmax)
    return np.where(masked, (1 - alpha) * rgb + alpha * tint, rgb).astype(np.float32)


def framed(image: np.ndarray, rgb=(0.85, 0.11, 0.38), width: int = 4) -> np.ndarray:
    """A display image (H, W) or (H, W, 3) in [0, 1] as RGB with a `width`-pixel frame of colour `rgb`
    (the selected thumbnail of a gallery)."""
    out = np.repeat(image[..., None], 3, axis=-1) if image.ndim == 2 else np.array(image)
    out[:width], out[-width:], out[:, :width], out[:, -width:] = rgb, rgb, rgb, rgb
    return out


def strip(images, gap: int = 4) -> np.ndarray:
    """Display images of one height side by side, `gap` white pixels apart; grey ones become RGB if any is."""
    rgb = any(x.ndim == 3 for x in images)
    images = [np.repeat(x[..., None], 3, axis=-1) if rgb and x.ndim == 2 else x for x in images]
    white = np.ones((images[0].shape[0], gap, *images[0].shape[2:]), np.float32)
    return np.concatenate([part for x in images for part in (white, x)][1:], axis=1)


def gallery_page(n: int, page: int, per_page: int = 16) -> tuple[range, int]:
    """Positions shown on gallery page `page` (1-indexed, clipped to the pages there are) of `n` images, and
    the number of pages."""
    pages = max(1, -(-n // per_page))
    page = min(max(int(page), 1), pages)
    return range((page - 1) * per_page, min(page * per_page, n)), pages


def slider_range(*score_arrays, steps: int = 500) -> tuple[float, float, float]:
    """(min, max, step) covering every finite score, for a threshold slider of about `steps` steps."""
    pooled = np.concatenate([np.asarray(s, np.float64).ravel() for s in score_arrays if s is not None])
    pooled = pooled[np.isfinite(pooled)]
    if pooled.size == 0:
        raise ValueError("slider_range: no finite scores")
    lo, hi = float(pooled.min()), float(pooled.max())
    if hi <= lo:
        lo, hi = lo - 1.0, hi + 1.0
    step = 10.0 ** np.floor(np.log10((hi - lo) / steps))
    return float(np.floor(lo / step) * step), float(np.ceil(hi / step) * step), float(step)


def slider_start(value, lo: float, hi: float) -> float:
    """A threshold as a slider's first value: clipped to [lo, hi] (an infinite threshold, "predict no
    member", goes to the end), the middle when there is none."""
    if value is None or np.isnan(value):
        return (lo + hi) / 2
    return min(max(float(value), lo), hi)


def top_n(ids, scores, n: int) -> tuple[np.ndarray, np.ndarray]:
    """The n highest scores (most member-like first) and their ids; ties keep the input order."""
    scores = np.asarray(scores, np.float64)
    order = np.argsort(-scores, kind="stable")[:n]
    return np.asarray(ids)[order], scores[order]


__all__ = ["image_id", "histogram", "shares", "fraction_at_or_above", "upscale", "display_image",
           "reconstruction_panels", "patch_grid", "VIRIDIS", "viridis", "error_overlay", "framed", "strip",
           "gallery_page", "slider_range",
           "slider_start", "top_n"]
