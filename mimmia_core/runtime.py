"""How a scoring pass runs on a device: the same numbers, as fast as the device allows.

`stream` runs fn(normalised images, noise) over a source's batches: the next
batch (uint8 images and noise, pinned on CUDA) is made in a prefetch thread
while the current one runs; the forward runs in bf16 autocast on CUDA and fp32
on CPU (`resolve_precision`); the previous batch's result is copied to the host
while the next one is queued. A forward holds at most `rows_per_forward`
image-masks (on CPU `images_per_forward` keeps its widest activation
cache-sized), and `in_mask_chunks` splits a large K into chunks of masks with
the same scores. On CPU whole forwards run side by side, one per core on one
thread each (`cpu_workers`): a small model's ops are too small to split. `compile`
(torch.compile) and `cuda_graphs` are opt-in fast paths on static shapes (`make_step`).
"""
import threading
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

import numpy as np
import torch

from .data import ImageSource
from .model import MaskedAutoencoderViT

PRECISIONS = ("auto", "fp32", "bf16")
CPU_ACTIVATION_BYTES = 16 << 20  # on CPU a forward is cut so its widest activation stays cache-sized
CPU_CACHE_BYTES, CPU_CACHE_ROWS = 6 << 20, 32  # tighter, for a model of which 32 image-masks fit in it
MASKS_PER_IMAGE = 8  # off the CPU a forward holds at most batch_size * MASKS_PER_IMAGE image-masks
_CPU_PASS = threading.RLock()  # held by a CPU pass while it runs one thread per op


def on_device(model: MaskedAutoencoderViT, device) -> torch.device:
    """The device to run on: `device` (the model is moved there), else the model's own."""
    if device is not None:
        model.to(device)
    model.eval()
    return model.pos_embed.device


def images_per_forward(model: MaskedAutoencoderViT, rows_per_image: int) -> int:
    """Images per forward on CPU: the widest activation (an MLP's hidden layer over all
    patches) of rows_per_image rows each stays within CPU_ACTIVATION_BYTES, and within
    CPU_CACHE_BYTES for a model small enough that CPU_CACHE_ROWS image-masks fit there.
    Larger forwards are slower there (caches; page faults on fresh allocations), smaller
    ones waste the products."""
    c = model.config
    widest = (c.num_patches + 1) * max(c.embed_dim, c.decoder_embed_dim) * c.mlp_ratio * 4
    budget = min(CPU_ACTIVATION_BYTES, CPU_CACHE_BYTES if CPU_CACHE_ROWS * widest <= CPU_CACHE_BYTES else np.inf)
    return max(1, int(budget // (widest * rows_per_image)))


def rows_per_forward(model: MaskedAutoencoderViT, device: torch.device, batch_size: int) -> int:
    """The most image-masks one forward holds, whatever K: on CPU images_per_forward(model, 1),
    elsewhere batch_size * MASKS_PER_IMAGE. More masks per image are split across forwards."""
    return images_per_forward(model, 1) if device.type == "cpu" else max(1, batch_size) * MASKS_PER_IMAGE


def in_mask_chunks(fn, masks: int):
    """fn(imgs, noise (K, n, L)) -> (D, K, n) computed `masks` masks at a time, concatenated."""
    def run(imgs, noise):
        if noise.shape[0] <= masks:
            return fn(imgs, noise)
        return torch.cat([fn(imgs, noise[k:k + masks]) for k in range(0, noise.shape[0], masks)], dim=1)
    return run


def resolve_precision(precision: str, device: torch.device) -> str:
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


def make_step(fn, static_batch: int, compile: bool, cuda_graphs: bool, device: torch.device):
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


def _in_order(run, items, workers: int):
    """Yield run(item) for each item in order, computed by `workers` threads (1: lazily in this one),
    at most workers + 1 items ahead of the consumer."""
    if workers == 1:
        yield from map(run, items)
        return
    with ThreadPoolExecutor(workers) as pool:
        window = deque()
        for item in items:
            window.append(pool.submit(run, item))
            if len(window) > workers:
                yield window.popleft().result()
        while window:
            yield window.popleft().result()


@contextmanager
def cpu_workers(device: torch.device, enabled: bool = True):
    """The worker threads of a pass: on CPU one per intra-op thread, each running whole forwards on
    one thread; else 1. A small model's ops are too small to split across cores (and one descheduled
    thread of a split op stalls the other), whole forwards side by side are not. Meanwhile the
    process runs one thread per op; CPU passes in one process take turns."""
    if device.type != "cpu" or not enabled:
        yield 1
        return
    with _CPU_PASS:
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            yield threads
        finally:
            torch.set_num_threads(threads)


def stream(model, source: ImageSource, batch_size: int, device, progress, precision: str, noise_fn, fn,
            rows_per_image: int, compile: bool = False, cuda_graphs: bool = False):
    """Run fn(normalised images, noise) over the source's batches -> (ids, [per-batch numpy results])."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    if len(source) == 0:
        raise ValueError(f"{source.name} holds no images to score")
    device = on_device(model, device)
    cuda = device.type == "cuda"
    batch_size = min(batch_size, max(1, rows_per_forward(model, device, batch_size) // rows_per_image))
    step = make_step(fn, min(batch_size, len(source)), compile, cuda_graphs, device)
    bf16 = resolve_precision(precision, device) == "bf16"
    ids_out, results, done, pending = [], [], 0, None

    def forward(batch):  # inference mode and autocast are per thread
        ids, images, noise = batch
        with torch.inference_mode(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16,
                                                    cache_enabled=not cuda_graphs):
            return ids, step(model.normalize(images), noise.to(device, non_blocking=True))

    def collect(ids, out):  # the previous batch: its copy to the host waits while the next one is queued
        nonlocal done
        ids_out.append(ids)
        results.append(out.cpu().numpy().astype(np.float64))
        done += len(ids)
        if progress is not None:
            progress(done, len(source))

    with cpu_workers(device, enabled=not compile) as workers:
        for item in _in_order(forward, _prefetch(_loader(source, batch_size, noise_fn, cuda), cuda), workers):
            if pending is not None:
                collect(*pending)
            pending = item
        collect(*pending)
    return np.concatenate(ids_out), results


__all__ = ["PRECISIONS", "CPU_ACTIVATION_BYTES", "CPU_CACHE_BYTES", "CPU_CACHE_ROWS", "MASKS_PER_IMAGE", "on_device", "images_per_forward",
           "rows_per_forward", "in_mask_chunks", "resolve_precision", "make_step", "cpu_workers", "stream"]
