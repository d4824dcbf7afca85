"""The bundled demo: a real Fashion-MNIST subset and MAEs that really leak.

`build_demo` rebuilds assets/demo from the Fashion-MNIST training files with
the project's own training loop; every number it uses is a parameter here.
"""
import io
import json
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from .attacks import run_attack
from .cache import ScoreCache
from .checkpoint import load_own_checkpoint, save_checkpoint
from .data import DEMO_DATA, FASHION_MNIST_DIRS, load_fashion_mnist, load_npz
from .experiment import DEMO_DIR, load_demo_experiment
from .atomic import atomic_write_bytes, atomic_write_text
from .manifest import SplitManifest, make_split
from .config import get_config
from .model import build_model
from .parallel import run_in_processes
from .pack_check import grid_settings, pack_exactly
from .score_pack import PACK_SUFFIX
from .scorer import Scorer
from .scores import ScoreSpec
from .train import TrainConfig, train_mae

SWEEP_RATIOS = (0.15, 0.3, 0.45, 0.6, 0.75, 0.9)  # the mask ratios the Mask ratio page opens on
GRID_RATIOS = tuple(round(0.05 * i, 2) for i in range(1, 20))  # the sidebar slider's steps, all bundled
GRID_ATTACKS = ("paper", "calibrated", "lira", "rmia")  # the attacks that score (rmia: population samples too)
GRID_MASKS = 8  # bundled K: any K up to it is served from the cache (masks are a prefix)
PACK_CHECK = "scores.pack.check.json"  # beside the pack: how its metrics compare with the exact scores'


@dataclass(frozen=True)
class DemoRecipe:
    preset: str = "mae_tiny_28"
    patch_size: int = 4
    n_members: int = 128
    n_nonmembers: int = 512
    n_references: int = 4
    epochs: int = 450
    batch_size: int = 32
    lr: float = 2e-3
    warmup_epochs: float = 22
    weight_decay: float = 0.0
    mask_ratio: float = 0.75
    seed: int = 0
    save_epochs: tuple = ()  # also keep these epochs' models, under epochs/<name>/ (an epochs ablation)


def build_demo(out_dir=DEMO_DIR, recipe: DemoRecipe = DemoRecipe(), fashion_mnist_root=None, device=None,
               jobs: int = 1, progress: bool = True, precompute_ratios=GRID_RATIOS) -> Path:
    """Draw the subset and split, then train target, shadow and reference MAEs on it.

    Training resumes where an interrupted build stopped. With jobs > 1 the
    models train in parallel processes, one CPU thread each. Last, the scores
    the dashboard opens on are precomputed at `precompute_ratios`.
    """
    out_dir = Path(out_dir)
    (out_dir / "models").mkdir(parents=True, exist_ok=True)
    full = load_fashion_mnist(fashion_mnist_root, split="train")
    size = 2 * (recipe.n_members + recipe.n_nonmembers) + recipe.n_references * recipe.n_members
    picked = np.sort(np.random.default_rng(recipe.seed).choice(full.ids, size=size, replace=False))
    pos = full.positions_of(picked)
    atomic_write_bytes(out_dir / DEMO_DATA.name, _npz_bytes(images=full.images(pos), ids=picked,
                                                           labels=full.labels[pos]))
    _copy_licence(fashion_mnist_root, out_dir)
    demo = load_npz(out_dir / DEMO_DATA.name, name="demo-fashion-mnist")
    make_split(demo, "demo", recipe.n_members, recipe.n_nonmembers, recipe.n_references,
               seed=recipe.seed).save(out_dir / "manifest.json")

    roles = [("target", "target_members"), ("shadow", "shadow_members")] + \
        [(f"ref-{i}", f"reference_{i}") for i in range(recipe.n_references)]
    jobs_args = [(out_dir, recipe, name, role, i, device, progress and jobs == 1) for i, (name, role) in
                 enumerate(roles)]
    run_in_processes(_train_role, jobs_args, jobs)
    atomic_write_text(out_dir / "recipe.json", json.dumps(asdict(recipe), indent=1))
    precompute_scores(out_dir, precompute_ratios)
    return out_dir


def precompute_scores(demo_dir=DEMO_DIR, mask_ratios=GRID_RATIOS, num_masks: int = GRID_MASKS, seed: int = 0,
                      progress=None) -> dict:
    """Score the demo at every mask ratio of the dashboard's slider, into demo_dir/cache (replacing it).

    One pass per model, source and ratio gives every distance; the attacks that score (paper,
    calibrated, LiRA, RMIA with its population samples) and the two baselines are run, so any ratio
    of the grid, K <= num_masks, any distance and aggregate open without scoring. CPU, fp32, stored
    as one pack (score_pack.py, log-quantised), checked by pack_check.pack_exactly: at every grid
    setting each metric the pages show is that of the exact scores to 3 decimals (the values that
    would move one are kept exact). Entries are keyed by fingerprints, so they serve only
    these models and data. Resumable: the exact entries collect in demo_dir/.precompute until the pack
    is written and checked. progress: callable(done_ratios, total_ratios).
    Returns the check's summary, also written beside the pack (PACK_CHECK).
    """
    root, work = Path(demo_dir) / "cache", Path(demo_dir) / ".precompute"
    exact = Scorer("cpu", cache=ScoreCache(work, read_only_roots=()), memo_size=64)
    exp = load_demo_experiment("cpu", demo_dir)
    for done, ratio in enumerate(mask_ratios):
        for attack in GRID_ATTACKS:
            run_attack(attack, exp, ScoreSpec(ratio, num_masks, seed), exact)
        if progress is not None:
            progress(done + 1, len(mask_ratios))
    for attack in ("encodermi", "unmasked"):
        run_attack(attack, exp, ScoreSpec(0.75, num_masks, seed), exact)
    root.mkdir(parents=True, exist_ok=True)
    for old in [*root.glob("*.npz")]:
        old.unlink()
    settings = grid_settings(GRID_ATTACKS, mask_ratios, num_masks)
    check, kept = pack_exactly(exact.cache.entries(), root / f"scores{PACK_SUFFIX}", exp, exact, settings, seed)
    summary = {**check.summary(), **kept}
    atomic_write_text(root / PACK_CHECK, json.dumps(summary, indent=1))
    shutil.rmtree(work)
    return summary


def _train_role(out_dir: Path, recipe: DemoRecipe, name: str, role: str, index: int, device, progress: bool):
    done = out_dir / "models" / name / "mimmia.json"
    if done.exists() and json.loads(done.read_text())["provenance"].get("recipe") == _jsonable(recipe):
        return
    demo = load_npz(out_dir / DEMO_DATA.name, name="demo-fashion-mnist")
    members = demo.subset(SplitManifest.load(out_dir / "manifest.json").ids(role), name=f"demo/{role}")
    cfg = TrainConfig(epochs=recipe.epochs, batch_size=recipe.batch_size, lr=recipe.lr,
                      warmup_epochs=recipe.warmup_epochs, weight_decay=recipe.weight_decay,
                      mask_ratio=recipe.mask_ratio, seed=recipe.seed + index, save_epochs=recipe.save_epochs)
    model = build_model(get_config(recipe.preset, patch_size=recipe.patch_size), seed=recipe.seed + index)
    work = out_dir / "models" / f".{name}.training"
    train_mae(model, members, cfg, out_dir=work, resume=True, progress=progress, device=device,
              provenance={"manifest": "manifest.json", "role": role, "recipe": _jsonable(recipe)})
    trained = load_own_checkpoint(work)
    save_checkpoint(trained.model, out_dir / "models" / name, trained.provenance, dtype=torch.float16)
    for epoch_dir in sorted((work / "epochs").glob("epoch-*")):
        snapshot = load_own_checkpoint(epoch_dir)
        save_checkpoint(snapshot.model, out_dir / "epochs" / name / epoch_dir.name, snapshot.provenance,
                        dtype=torch.float16)
    shutil.rmtree(work)


def _jsonable(recipe: DemoRecipe) -> dict:
    return json.loads(json.dumps(asdict(recipe)))


def _npz_bytes(**arrays) -> bytes:
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    return buf.getvalue()


def _copy_licence(root, out_dir: Path) -> None:
    for d in ([Path(root)] if root else list(FASHION_MNIST_DIRS)):
        if (d / "LICENSE").exists():
            text = (d / "LICENSE").read_text()
            break
    else:
        text = "Fashion-MNIST, Copyright (c) 2017 Zalando SE, MIT licence: https://github.com/zalandoresearch/fashion-mnist\n"
    atomic_write_text(out_dir / "LICENSE-fashion-mnist.txt",
                      "The images in fashion_mnist_subset.npz are a subset of Fashion-MNIST's training set.\n\n" + text)


