"""Reference-model farms: R reference MAEs trained on the sets a manifest gives them, offline or online.

Offline: each reference trains on `size` ids (default: as many as the target's members) drawn from the
source's ids outside every candidate set, so every reference excludes every candidate (target and shadow
members and non-members). Online: a pool holds every candidate plus `extra` other ids, and each pool id is
IN for exactly R // 2 of the R references (LiRA's balanced assignment), so each reference trains on about
half the pool and each candidate is IN for half the references. `reference_sets` draws them;
`train_references` writes the manifest with them (DIR/manifest.json) and trains DIR/ref-<i>.

Resumable: reference i is finished when DIR/ref-<i> is a complete checkpoint whose provenance names this
recipe ("farm_recipe"), the fingerprint of its training ids ("training_ids", manifest.ids_fingerprint) and
its own weights ("model_fingerprint", checked against the weights on disk); anything else is (re)trained,
an interrupted training continuing from its saved state. Work is spread over processes on CPU (`jobs`,
one thread each) and over torchrun ranks (distributed.init_from_env and share): rank r of W trains
references r, r + W, ..., each alone (train_mae's distributed=False, not DDP), on cuda:LOCAL_RANK where
there is a GPU.
"""
import json
import shutil
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from .atomic import atomic_write_text
from .checkpoint import CheckpointError, load_own_checkpoint, model_fingerprint, save_checkpoint
from .config import get_config
from .data import open_source
from .distributed import init_from_env, rank_device, share
from .manifest import CANDIDATE_SETS, SplitManifest, ids_fingerprint, reference_folder, reference_set
from .model import build_model
from .model_ref import check_settings
from .parallel import run_in_processes
from .train import TrainConfig, train_mae

MANIFEST_FILE = "manifest.json"
WORK_STAMP = "farm_work.json"  # in a reference's work folder: the recipe and ids its training state belongs to


@dataclass(frozen=True)
class FarmRecipe:
    """How each reference trains (the demo's recipe by default); `config`: preset fields to override."""
    preset: str = "mae_tiny_28"
    config: dict = field(default_factory=dict)
    epochs: int = 450
    batch_size: int = 32
    lr: float = 2e-3
    warmup_epochs: float = 22
    weight_decay: float = 0.0
    mask_ratio: float = 0.75
    seed: int = 0

    def to_dict(self) -> dict:
        return json.loads(json.dumps(asdict(self)))

    def train_config(self, index: int) -> TrainConfig:
        return TrainConfig(epochs=self.epochs, batch_size=self.batch_size, lr=self.lr,
                           warmup_epochs=self.warmup_epochs, weight_decay=self.weight_decay,
                           mask_ratio=self.mask_ratio, seed=reference_seed(self.seed, index))


def reference_seed(seed: int, index: int) -> int:
    """Reference i's initialisation and training seed, derived from the recipe's seed."""
    return int(np.random.SeedSequence((seed, index)).generate_state(1)[0] % (2 ** 31))


def reference_sets(manifest: SplitManifest, source_ids, count: int, online: bool = False, size: int | None = None,
                   extra: int = 0, seed: int = 0) -> list:
    """`count` sorted id lists, one per reference: offline, `size` ids each outside every candidate set
    (independent draws: references may share ids); online, a pool of every candidate plus `extra` other ids,
    each IN for exactly count // 2 references."""
    if isinstance(count, bool) or not isinstance(count, int) or count < (2 if online else 1):
        raise ValueError(f"--count must be a whole number >= {2 if online else 1}"
                         f"{' (online: each image IN for half the references)' if online else ''}, got {count!r}")
    candidates = np.concatenate([manifest.ids(name) for name in CANDIDATE_SETS])
    rest = np.setdiff1d(np.asarray(source_ids, np.int64), candidates)
    rng = np.random.default_rng([seed, count, int(online)])
    if online:
        if not 0 <= extra <= len(rest):
            raise ValueError(f"--extra must lie in [0, {len(rest)}] (the ids outside every candidate set), got {extra}")
        pool = np.concatenate([candidates, rng.permutation(rest)[:extra]])
        keep = rng.random((count, len(pool))).argsort(axis=0) < count // 2   # (R, P): exactly R // 2 IN per id
        return [np.sort(pool[k]).tolist() for k in keep]
    size = len(manifest.target_members) if size is None else size
    if not 1 <= size <= len(rest):
        raise ValueError(f"offline references train on ids outside every candidate set; {len(rest)} are left, so "
                         f"--size must lie in [1, {len(rest)}], got {size}")
    return [np.sort(rng.choice(rest, size=size, replace=False)).tolist() for _ in range(count)]


def farm_manifest(manifest: SplitManifest, sets: list, online: bool) -> SplitManifest:
    """The manifest with these reference sets (online_references set accordingly)."""
    return replace(manifest, reference_members=sets, online_references=online)


def finished(path: Path, recipe: FarmRecipe, ids) -> bool:
    """Whether `path` holds reference training finished under `recipe` on exactly `ids`, its weights intact."""
    try:
        loaded = load_own_checkpoint(path)
    except (CheckpointError, OSError, ValueError):
        return False
    p = loaded.provenance
    return (p.get("farm_recipe") == recipe.to_dict() and p.get("training_ids") == ids_fingerprint(ids)
            and p.get("model_fingerprint") == loaded.fingerprint)


def distributed_share(count: int) -> tuple[list, int, int]:
    """(the reference indices this process trains, rank, world size): under torchrun (distributed.init_from_env)
    rank r of W trains r, r + W, ... (distributed.share); otherwise all of them."""
    rank, world = init_from_env()
    return share(list(range(count)), rank, world), rank, world


def _work_dir(work: Path, recipe: FarmRecipe, ids) -> Path:
    """Where reference training runs and resumes from (train_mae's state); a state left by another recipe or
    other ids is removed, so it is never resumed."""
    stamp = json.dumps({"farm_recipe": recipe.to_dict(), "training_ids": ids_fingerprint(ids)}, sort_keys=True)
    if work.exists() and (not (work / WORK_STAMP).exists() or (work / WORK_STAMP).read_text() != stamp):
        shutil.rmtree(work)
    work.mkdir(parents=True, exist_ok=True)
    atomic_write_text(work / WORK_STAMP, stamp)
    return work


def train_reference(out_dir, data_spec: str, ids: list, recipe: FarmRecipe, index: int, device=None,
                    progress: bool = False) -> dict:
    """Train reference `index` on `ids` of the source `data_spec` into out_dir/ref-<index>, unless finished.
    {"index", "path", "status": "kept" or "trained", "fingerprint"}."""
    path = Path(out_dir) / reference_folder(index)
    if not finished(path, recipe, ids):
        role = reference_set(index)
        source = open_source(data_spec)
        members = source.subset(ids, name=f"{source.name}/{role}")
        config = get_config(recipe.preset, **check_settings(recipe.config, "farm recipe config"))
        cfg = recipe.train_config(index)
        work = _work_dir(Path(out_dir) / f".{path.name}.training", recipe, ids)
        train_mae(build_model(config, seed=cfg.seed), members, cfg, out_dir=work, resume=True, progress=progress,
                  device=device, distributed=False, provenance={"role": role, "manifest": MANIFEST_FILE,
                                                                "data_spec": data_spec,
                                                                "training_ids": ids_fingerprint(ids),
                                                                "farm_recipe": recipe.to_dict()})
        trained = load_own_checkpoint(work)
        fingerprint = model_fingerprint(trained.model)
        save_checkpoint(trained.model, path, {**trained.provenance, "model_fingerprint": fingerprint})
        shutil.rmtree(work)
        return dict(index=index, path=str(path), status="trained", fingerprint=fingerprint)
    return dict(index=index, path=str(path), status="kept",
                fingerprint=load_own_checkpoint(path).provenance["model_fingerprint"])


def train_references(manifest, count: int, out_dir, online: bool = False, recipe: FarmRecipe = FarmRecipe(),
                     jobs: int = 1, device=None, size: int | None = None, extra: int = 0, data=None,
                     progress: bool = True) -> list:
    """Draw the reference sets (reference_sets), write out_dir/manifest.json with them (rank 0), and train
    this process's share of out_dir/ref-<i> (distributed_share), `jobs` at a time. `manifest`: a path or a
    SplitManifest; `data`: the source spec its ids refer to (default: the manifest's). Returns
    train_reference's dict per reference trained or kept here, in index order."""
    manifest = manifest if isinstance(manifest, SplitManifest) else SplitManifest.load(manifest)
    if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1:
        raise ValueError(f"--jobs must be a whole number >= 1, got {jobs!r}")
    spec = data or manifest.source
    source = open_source(spec)
    manifest.check_source(source)
    sets = reference_sets(manifest, source.ids, count, online, size, extra, recipe.seed)
    new = farm_manifest(manifest, sets, online)
    mine, rank, world = distributed_share(count)
    out_dir = Path(out_dir)
    if rank == 0:
        new.save(out_dir / MANIFEST_FILE)
    if world > 1 and torch.cuda.is_available():
        device = rank_device(torch.device("cuda"))
    todo = [i for i in mine if not finished(out_dir / reference_folder(i), recipe, sets[i])]
    done = [train_reference(out_dir, spec, sets[i], recipe, i) for i in mine if i not in todo]  # kept as they are
    tasks = [(out_dir, spec, sets[i], recipe, i, device, progress and jobs == 1) for i in todo]
    done += run_in_processes(train_reference, tasks, jobs)
    return sorted(done, key=lambda r: r["index"])


__all__ = ["FarmRecipe", "reference_seed", "reference_sets", "farm_manifest", "finished", "distributed_share",
           "train_reference", "train_references", "MANIFEST_FILE"]
