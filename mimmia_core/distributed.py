"""Runs under torchrun: the process group, each rank's shard of a source, and the exchange of results.

torchrun (or any launcher that sets RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and
MASTER_PORT, on one node or many) starts one process per rank; `init_from_env`
opens the process group from that environment: gloo on CPU, and on a CUDA
machine NCCL for CUDA tensors (DDP training) with gloo for the CPU objects that
scoring exchanges. Each rank runs on cuda:LOCAL_RANK (`rank_device`).

Work is spread by `share`: rank r of W takes items r, r + W, r + 2W, ... (a reference farm's models,
each trained by its rank alone; a source's images, `shard`).

Scoring (`sharded`): rank r scores the images at positions r, r + W, r + 2W, ...
of a source (W ranks); the shards' arrays are gathered on every rank and merged
by image id into the arrays of the whole source. Masks are a function of (seed,
image id, mask index) only, so the merged scores are those of one process.

Failure: every collective of a scoring run is an `exchange` (all_gather_object
of (failure, payload) per rank). A rank that fails sends its failure instead
(`finish`, from the CLI's error boundary), matching whichever exchange the
others are in; every rank then raises RankFailed naming the failed rank, and no
rank exchanges again. A rank that dies outright is torchrun's to detect: it
stops the other ranks.
"""
import os

import numpy as np
import torch
import torch.distributed as dist

from .data import ImageSource, Subset


class RankFailed(Exception):
    """A rank of this job failed; raised on every rank. kind: 'error', 'internal error', ...; code: its exit code."""

    def __init__(self, rank: int, kind: str, text: str, code: int):
        super().__init__(f"rank {rank} failed" + (f": {text}" if text else ""))
        self.rank, self.kind, self.text, self.code = rank, kind, text, code


def env_world_size() -> int:
    """WORLD_SIZE as torchrun sets it (1 when not launched by torchrun)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def rank_and_world() -> tuple[int, int]:
    """(rank, world size) of the open process group, (0, 1) without one."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def init_from_env() -> tuple[int, int]:
    """(rank, world size): the process group opened from torchrun's environment when WORLD_SIZE > 1 (once)."""
    if env_world_size() > 1 and not dist.is_initialized():
        dist.init_process_group("cpu:gloo,cuda:nccl" if torch.cuda.is_available() else "gloo")
    return rank_and_world()


def shutdown() -> None:
    """Close the process group, if one is open."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def is_main_rank() -> bool:
    """Rank 0, or no process group: the process that prints, writes outputs and fills the cache."""
    return rank_and_world()[0] == 0


def rank_device(device: torch.device) -> torch.device:
    """The device this rank runs on: with more than one rank, CUDA means cuda:LOCAL_RANK (made current)."""
    device = torch.device(device)
    if device.type != "cuda" or env_world_size() == 1:
        return device
    local, count = int(os.environ.get("LOCAL_RANK", "0")), torch.cuda.device_count()
    if device.index is not None and device.index != local:
        raise ValueError(f"--device {device}: under torchrun each rank runs on cuda:LOCAL_RANK (this rank: "
                         f"cuda:{local}); give --device cuda or auto")
    if local >= count:
        raise ValueError(f"LOCAL_RANK {local} but this node has {count} CUDA GPU(s); launch at most "
                         f"--nproc-per-node {count}")
    torch.cuda.set_device(local)
    return torch.device("cuda", local)


def share(items, rank: int, world: int):
    """Rank's share of work spread over `world` ranks: the items at positions rank, rank + world, ..."""
    if not 0 <= rank < world:
        raise ValueError(f"rank must lie in 0..{world - 1}, got {rank}")
    return items[rank::world]


def shard(source: ImageSource, rank: int, world: int) -> ImageSource:
    """The images of `source` at positions rank, rank + world, rank + 2 * world, ... (in that order)."""
    return Subset(source, share(source.ids, rank, world), name=f"{source.name}[rank {rank} of {world}]")


def exchange(payload) -> list:
    """Every rank's payload, in rank order, on every rank (all_gather_object); RankFailed on
    every rank when a rank sent a failure instead (see `finish`)."""
    return _gather(None, payload)


def finish(failure: tuple | None) -> None:
    """The last exchange of a command: failure (kind, text, exit code) of this rank, or None. Raises
    RankFailed on every rank when any rank failed (the first by rank when several did)."""
    _gather(None if failure is None else (dist.get_rank(), *failure), None)


def _gather(failure: tuple | None, payload) -> list:
    """The one collective: (failure, payload) of every rank; the payloads, or RankFailed if any failed."""
    gathered = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, (failure, payload))
    failures = [f for f, _ in gathered if f is not None]
    if failures:
        raise RankFailed(*failures[0])
    return [p for _, p in gathered]


def barrier() -> None:
    """Wait for every rank (after a RankFailed, which every rank raised from the same exchange)."""
    dist.barrier()


def from_main_rank(fn):
    """fn() evaluated on rank 0, its result on every rank; without a process group, fn()."""
    rank, world = rank_and_world()
    if world == 1:
        return fn()
    return exchange(fn() if rank == 0 else None)[0]


def sharded(fn, source: ImageSource) -> dict:
    """fn(images) -> {"ids": (n,), name: array (..., n)}, run on this rank's shard and merged by image id:
    the arrays of the whole source, on every rank. Without a process group, fn(source)."""
    rank, world = rank_and_world()
    if world == 1:
        return fn(source)
    return merge_shards(exchange(fn(shard(source, rank, world))), source)


def merge_shards(parts: list, source: ImageSource) -> dict:
    """The shards' {"ids": (n_r,), name: (..., n_r)} placed at their ids' positions in `source`."""
    pos = [source.positions_of(p["ids"]) for p in parts]
    if sorted(np.concatenate(pos).tolist()) != list(range(len(source))):
        raise RuntimeError(f"the ranks' shards do not cover {source.name} once each")
    merged = {}
    for name, first in parts[0].items():
        merged[name] = np.empty(first.shape[:-1] + (len(source),), first.dtype)
        for p, where in zip(parts, pos):
            merged[name][..., where] = p[name]
    return merged


__all__ = ["RankFailed", "env_world_size", "rank_and_world", "init_from_env", "shutdown", "is_main_rank",
           "rank_device", "share", "shard", "exchange", "finish", "barrier", "from_main_rank", "sharded", "merge_shards"]
