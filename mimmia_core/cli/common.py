"""What the commands share: the device, scoring and experiment arguments, and the progress bar."""
import sys
from dataclasses import asdict
from pathlib import Path

import torch
from tqdm import tqdm

from ..attacks import ATTACKS, make_attack
from ..cache import ScoreCache
from ..distances import AGGREGATES, DISTANCES
from ..distributed import is_main_rank, rank_device
from ..experiment import load_demo_experiment, load_experiment, load_experiment_file
from ..runtime import PRECISIONS
from ..scorer import Scorer
from ..scores import ScoreSpec
from ..train import default_device

SETTINGS_HELP = ("settings a file cannot tell go after '?', as MAEConfig fields: "
                 "off.pth?decoder_num_heads=4&mean=0&std=1 (a list field takes mean=0.5,0.5,0.5)")
MODEL_FLAGS = ("target", "shadow", "reference", "decoder_from", "model", "path", "encoder")
EXPERIMENT_FLAGS = ("demo", "bundle", "experiment")  # each brings its own models and data


class ProgressBar:
    """A tqdm bar per scoring pass, fed by Scorer's progress(done, total) callback."""

    def __init__(self, desc: str = "scoring"):
        self.desc, self.bar = desc, None

    def __call__(self, done: int, total: int):
        if self.bar is None or done < self.bar.n or total != self.bar.total:
            self.close()
            self.bar = tqdm(total=total, desc=self.desc, unit="img", leave=False, dynamic_ncols=True)
        self.bar.update(done - self.bar.n)
        if done >= total:
            self.close()

    def close(self):
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def parse_device(name: str) -> torch.device:
    """--device: auto, cpu, cuda, cuda:N or mps, refused with a reason when this machine lacks it."""
    if name == "auto":
        return rank_device(default_device())
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        raise ValueError(f"--device {name!r} is not a device name; use auto, cpu, cuda, cuda:N or mps") from None
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise ValueError(f"--device {name}: this machine has no CUDA GPU; use --device cpu (or auto)")
        if (device.index or 0) >= count:
            raise ValueError(f"--device {name}: this machine has {count} CUDA GPU(s), cuda:0..cuda:{count - 1}")
    elif device.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"--device {name}: Apple MPS is not available here; use --device cpu (or auto)")
    elif device.type not in ("cpu", "cuda", "mps"):
        raise ValueError(f"--device {name}: mimmia runs on cpu, cuda or mps, not {device.type}")
    return rank_device(device)  # under torchrun: cuda:LOCAL_RANK


def add_run_args(p):
    p.add_argument("--device", default="auto", help="auto (cuda if available), cpu, cuda, cuda:1, ...")
    p.add_argument("--batch-size", type=int, default=256, help="images per forward pass (times K masks)")
    p.add_argument("--cache-dir", default=None, help="score cache (default $MIMMIA_CACHE or ~/.cache/mimmia)")
    p.add_argument("--no-cache", action="store_true", help="do not read or write the score cache")
    p.add_argument("--precision", choices=PRECISIONS, default="auto",
                   help="auto: bf16 autocast on CUDA, fp32 elsewhere (bf16 on CPU is faster, scores differ ~0.2%%)")
    p.add_argument("--compile", action="store_true", help="torch.compile the scoring forward (same scores)")
    p.add_argument("--cuda-graphs", action="store_true", help="replay the forward as a CUDA graph (CUDA only)")


def add_spec_args(p):
    p.add_argument("--mask-ratio", type=float, default=0.75)
    p.add_argument("--num-masks", type=int, default=8, help="K seeded masks per image")
    p.add_argument("--distance", choices=DISTANCES, default="masked_mse")
    p.add_argument("--aggregate", choices=AGGREGATES, default="mean", help="how the K masks' distances combine")
    p.add_argument("--seed", type=int, default=0, help="mask seed")


def add_experiment_args(p):
    p.add_argument("--demo", action="store_true", help="the bundled demo experiment (assets/demo)")
    p.add_argument("--bundle", metavar="DIR", help="a bundle folder laid out like assets/demo: manifest.json, its "
                                                   "data and models/target, models/shadow, models/ref-<i> (what "
                                                   "the dashboard opens with MIMMIA_EXPERIMENT=DIR)")
    p.add_argument("--experiment", help="an experiment JSON file: load_experiment's arguments, each model a path "
                                        "or {\"path\": ..., \"config\": {...}} (what the dashboard reads)")
    p.add_argument("--target", help="target checkpoint: mimmia dir, Hugging Face ViTMAE dir or official .pth; "
                                    f"{SETTINGS_HELP}")
    p.add_argument("--shadow", help="shadow checkpoint (its threshold is applied to the target); PATH?key=value too")
    p.add_argument("--reference", action="append", default=[], help="reference checkpoint (repeat); PATH?key=value too")
    p.add_argument("--decoder-from", help="for an encoder-only target: 'shadow' or a checkpoint with a decoder")
    p.add_argument("--manifest", help="split manifest (JSON) naming every role's image ids")
    p.add_argument("--data", help="source spec the manifest's ids refer to (default: the manifest's own)")
    for role in ("members", "nonmembers", "shadow-members", "shadow-nonmembers"):
        p.add_argument(f"--{role}", help=f"source spec of the {role.replace('-', ' ')} (overrides the manifest)")
    p.add_argument("--attacks", default="auto",
                   help=f"comma-separated from {','.join(ATTACKS)}; auto = every attack the experiment can run "
                        f"(calibrated needs a reference model, lira two; sweep: those that depend on the mask "
                        f"ratio), as the dashboard offers them")
    p.add_argument("--threshold", default="accuracy", help="accuracy (best on the shadow) or fpr:0.01")
    p.add_argument("--out", required=True, help="output directory")
    add_spec_args(p)
    add_run_args(p)


def make_scorer(args) -> Scorer:
    cache = None if args.no_cache or not is_main_rank() else ScoreCache(args.cache_dir)  # rank 0's cache only
    return Scorer(parse_device(args.device), cache=cache, batch_size=args.batch_size, progress=ProgressBar(),
                  precision=args.precision, compile=args.compile, cuda_graphs=args.cuda_graphs)


def score_spec(args) -> ScoreSpec:
    return ScoreSpec(args.mask_ratio, args.num_masks, args.seed, args.distance)


def _refuse_paths_with(args, flag: str) -> None:
    """--demo, --bundle and --experiment bring their own models and data (and exclude each other)."""
    given = [f"--{k.replace('_', '-')}" for k in ("target", "shadow", "manifest", "data", "members", "nonmembers")
             if getattr(args, k)]
    given += [f"--{k}" for k in EXPERIMENT_FLAGS if getattr(args, k) and f"--{k}" != flag]
    if given or args.reference:
        raise ValueError(f"{flag} brings its own models and data; drop {', '.join(given or ['--reference'])}")


def open_experiment(args):
    device = parse_device(args.device)
    if args.demo:
        _refuse_paths_with(args, "--demo")
        experiment = load_demo_experiment(device)
    elif args.bundle:
        _refuse_paths_with(args, "--bundle")
        if not Path(args.bundle).is_dir():
            raise FileNotFoundError(f"--bundle {args.bundle}: no such folder")
        experiment = load_demo_experiment(device, demo_dir=Path(args.bundle))
    elif args.experiment:
        _refuse_paths_with(args, "--experiment")
        experiment = load_experiment_file(args.experiment, device)
    elif not args.target:
        raise ValueError("give --target (or --demo, --bundle DIR or --experiment FILE)")
    else:
        experiment = load_experiment(
            args.target, args.shadow, args.reference, manifest=args.manifest, data=args.data, members=args.members,
            nonmembers=args.nonmembers, shadow_members=args.shadow_members, shadow_nonmembers=args.shadow_nonmembers,
            device=device, decoder_from=args.decoder_from)
    for note in experiment.notes:
        print(f"note: {note}", file=sys.stderr)
    return experiment


def attack_names(text: str, experiment, varying_mask_ratio: bool = False) -> list[str]:
    """--attacks: auto asks the experiment (Experiment.available_attacks), as the dashboard does."""
    if text == "auto":
        return experiment.available_attacks(varying_mask_ratio)
    names = [t.strip() for t in text.split(",") if t.strip()]
    for name in names:
        make_attack(name)  # refuses unknown names
    if not names:
        raise ValueError("--attacks names no attack")
    return names


def run_settings(args, attacks) -> dict:
    inputs = {k: getattr(args, k) for k in ("demo", "bundle", "experiment", "target", "shadow", "reference", "decoder_from", "manifest", "data",
                                            "members", "nonmembers", "shadow_members", "shadow_nonmembers")}
    return dict(command=args.command, attacks=attacks, spec=asdict(score_spec(args)), aggregate=args.aggregate,
                threshold=args.threshold, inputs=inputs, device=str(parse_device(args.device)),
                batch_size=args.batch_size, cache=None if args.no_cache else (args.cache_dir or "default"))
