"""Command line: `mimmia <command>` or `python -m mimmia_core <command>`.

  attack      run attacks on a target, write report.json + scores.csv, print a table
  sweep       the same over several mask ratios, write sweep.json + sweep.csv
  score       one model, one source -> per-image, per-mask distances (CSV)
  inspect     describe a checkpoint (any supported format)
  train       pre-train an MAE (target, shadow or reference) on a source or a manifest role
  build-demo  rebuild the bundled demo (assets/demo)
"""
import argparse
import hashlib
import json
import os
import sys
import warnings
from dataclasses import asdict, replace
from pathlib import Path

import torch
from tqdm import tqdm

from .attacks import ATTACKS, make_attack, run_attack, sweep
from .cache import ScoreCache
from .checkpoint import MissingSettingsError, attach_decoder, describe_checkpoint, load_model
from .config import get_config
from .data import open_source
from .demo import DemoRecipe, build_demo
from .experiment import DEMO_DIR, load_demo_experiment, load_experiment, load_experiment_file
from .manifest import MODEL_ROLES, SplitManifest, training_set
from .model import build_model
from .model_ref import check_settings
from .paths import check_output_dir, check_output_file
from .report import attack_table, jsonable, sweep_table, write_attack_report, write_model_scores, write_sweep
from .distances import AGGREGATES, DISTANCES
from .runtime import PRECISIONS
from .scorer import Scorer
from .scores import ScoreSpec
from .train import TrainConfig, default_device, train_mae

DEFAULT_RATIOS = "0.25,0.5,0.75,0.9"
SETTINGS_HELP = ("settings a file cannot tell go after '?', as MAEConfig fields: "
                 "off.pth?decoder_num_heads=4&mean=0&std=1 (a list field takes mean=0.5,0.5,0.5)")
MODEL_FLAGS = ("target", "shadow", "reference", "decoder_from", "model", "path")
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


# --------------------------------------------------------------------------
# Shared arguments
# --------------------------------------------------------------------------
def _device(name: str) -> torch.device:
    """--device: auto, cpu, cuda, cuda:N or mps, refused with a reason when this machine lacks it."""
    if name == "auto":
        return default_device()
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
    return device


def _add_run_args(p):
    p.add_argument("--device", default="auto", help="auto (cuda if available), cpu, cuda, cuda:1, ...")
    p.add_argument("--batch-size", type=int, default=256, help="images per forward pass (times K masks)")
    p.add_argument("--cache-dir", default=None, help="score cache (default $MIMMIA_CACHE or ~/.cache/mimmia)")
    p.add_argument("--no-cache", action="store_true", help="do not read or write the score cache")
    p.add_argument("--precision", choices=PRECISIONS, default="auto",
                   help="auto: bf16 autocast on CUDA, fp32 elsewhere (bf16 on CPU is faster, scores differ ~0.2%%)")
    p.add_argument("--compile", action="store_true", help="torch.compile the scoring forward (same scores)")
    p.add_argument("--cuda-graphs", action="store_true", help="replay the forward as a CUDA graph (CUDA only)")


def _add_spec_args(p):
    p.add_argument("--mask-ratio", type=float, default=0.75)
    p.add_argument("--num-masks", type=int, default=8, help="K seeded masks per image")
    p.add_argument("--distance", choices=DISTANCES, default="masked_mse")
    p.add_argument("--aggregate", choices=AGGREGATES, default="mean", help="how the K masks' distances combine")
    p.add_argument("--seed", type=int, default=0, help="mask seed")


def _add_experiment_args(p):
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
    _add_spec_args(p)
    _add_run_args(p)


def _scorer(args) -> Scorer:
    cache = None if args.no_cache else ScoreCache(args.cache_dir)
    return Scorer(_device(args.device), cache=cache, batch_size=args.batch_size, progress=ProgressBar(),
                  precision=args.precision, compile=args.compile, cuda_graphs=args.cuda_graphs)


def _spec(args) -> ScoreSpec:
    return ScoreSpec(args.mask_ratio, args.num_masks, args.seed, args.distance)


def _refuse_paths_with(args, flag: str) -> None:
    """--demo, --bundle and --experiment bring their own models and data (and exclude each other)."""
    given = [f"--{k.replace('_', '-')}" for k in ("target", "shadow", "manifest", "data", "members", "nonmembers")
             if getattr(args, k)]
    given += [f"--{k}" for k in EXPERIMENT_FLAGS if getattr(args, k) and f"--{k}" != flag]
    if given or args.reference:
        raise ValueError(f"{flag} brings its own models and data; drop {', '.join(given or ['--reference'])}")


def _experiment(args):
    device = _device(args.device)
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


def _attack_names(text: str, experiment, varying_mask_ratio: bool = False) -> list[str]:
    """--attacks: auto asks the experiment (Experiment.available_attacks), as the dashboard does."""
    if text == "auto":
        return experiment.available_attacks(varying_mask_ratio)
    names = [t.strip() for t in text.split(",") if t.strip()]
    for name in names:
        make_attack(name)  # refuses unknown names
    if not names:
        raise ValueError("--attacks names no attack")
    return names


def _settings(args, attacks) -> dict:
    inputs = {k: getattr(args, k) for k in ("demo", "bundle", "experiment", "target", "shadow", "reference", "decoder_from", "manifest", "data",
                                            "members", "nonmembers", "shadow_members", "shadow_nonmembers")}
    return dict(command=args.command, attacks=attacks, spec=asdict(_spec(args)), aggregate=args.aggregate,
                threshold=args.threshold, inputs=inputs, device=str(_device(args.device)),
                batch_size=args.batch_size, cache=None if args.no_cache else (args.cache_dir or "default"))


# --------------------------------------------------------------------------
# Commands
# --------------------------------------------------------------------------
def cmd_attack(args) -> int:
    experiment = _experiment(args)
    names = _attack_names(args.attacks, experiment)
    scorer, spec = _scorer(args), _spec(args)
    results = [run_attack(name, experiment, spec, scorer, args.threshold, args.aggregate) for name in names]
    report, scores = write_attack_report(args.out, experiment, results, _settings(args, names))
    print(attack_table(results))
    print(f"\nwrote {report} and {scores}")
    return 0


def cmd_sweep(args) -> int:
    experiment = _experiment(args)
    names = _attack_names(args.attacks, experiment, varying_mask_ratio=True)
    try:
        ratios = [float(r) for r in args.ratios.split(",") if r.strip()]
    except ValueError:
        raise ValueError(f"--ratios must be comma-separated numbers, got {args.ratios!r}") from None
    if not ratios:
        raise ValueError("--ratios names no mask ratio")
    spec = _spec(args)
    for r in ratios:
        replace(spec, mask_ratio=r)  # refuses ratios outside (0, 1) before any scoring

    def progress(done, total, label):
        print(f"[{done}/{total}] {label}", file=sys.stderr)

    rows = sweep(experiment, ratios, names, spec, _scorer(args), progress, args.threshold, args.aggregate)
    settings = {**_settings(args, names), "ratios": ratios}
    paths = write_sweep(args.out, rows, settings, experiment)
    print(sweep_table(rows))
    print(f"\nwrote {paths[0]} and {paths[1]}")
    return 0


def cmd_score(args) -> int:
    device = _device(args.device)
    loaded = load_model(args.model, device)
    if args.decoder_from:
        loaded = attach_decoder(loaded, load_model(args.decoder_from, device))
    source, spec = open_source(args.data), _spec(args)
    scores = _scorer(args).scores(loaded, source, spec).require_finite(loaded.path)
    path = write_model_scores(args.out, scores, args.aggregate)
    print(f"scored {len(scores.ids)} images of {source.name} with {spec.num_masks} masks at ratio "
          f"{spec.mask_ratio:g} ({spec.distance}); wrote {path}")
    return 0


def cmd_inspect(args) -> int:
    print(json.dumps(jsonable(describe_checkpoint(load_model(args.path, "cpu"))), indent=1))
    return 0


def _config_overrides(items) -> dict:
    """["embed_dim=64", "norm_pix_loss=true", "mean=[0.5]"] -> dict, values parsed as JSON when they parse."""
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--config takes KEY=VALUE, got {item!r}")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


def cmd_train(args) -> int:
    overrides = check_settings(_config_overrides(args.config), "--config")
    config = get_config(args.preset, **overrides)
    provenance = dict(preset=args.preset, config_overrides=overrides)
    if args.manifest:
        if not args.role:
            raise ValueError(f"--manifest needs --role {', '.join(MODEL_ROLES[:2])} or {MODEL_ROLES[2]}_<i>")
        manifest = SplitManifest.load(args.manifest)
        source = open_source(args.data or manifest.source)
        manifest.check_source(source)
        role = training_set(args.role)
        provenance.update(data_spec=source.spec, role=role, manifest=dict(
            path=str(args.manifest), sha256=hashlib.sha256(Path(args.manifest).read_bytes()).hexdigest()[:16]))
        source = source.subset(manifest.ids(role), name=f"{source.name}/{role}")
    elif args.data:
        if args.role:
            raise ValueError("--role picks training ids from a --manifest; give one")
        source = open_source(args.data)
        provenance["data_spec"] = source.spec
    else:
        raise ValueError("give --data SPEC, or --manifest (with --role)")
    cfg = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, blr=args.blr,
                      warmup_epochs=args.warmup_epochs, weight_decay=args.weight_decay, mask_ratio=args.mask_ratio,
                      clip_grad=args.clip_grad, seed=args.seed, compile=args.compile,
                      save_epochs=tuple(int(e) for e in args.save_epochs.split(",") if e.strip()))
    model = build_model(config, seed=args.seed)
    losses = train_mae(model, source, cfg, out_dir=args.out, resume=args.resume, provenance=provenance,
                       device=_device(args.device))
    print(f"trained on {len(source)} images of {source.name}; final loss {losses[-1]:.4f}; saved to {args.out}")
    return 0


def cmd_build_demo(args) -> int:
    recipe = DemoRecipe() if args.epochs is None else replace(DemoRecipe(), epochs=args.epochs)
    out = build_demo(args.out, recipe, fashion_mnist_root=args.fashion_mnist_root, device=_device(args.device),
                     jobs=args.jobs)
    print(f"demo written to {out}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mimmia", description="Membership inference against masked image "
                                     "modeling (MAE) models. `mimmia COMMAND --help` for each command.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="command")

    p = sub.add_parser("attack", help="run attacks, write report.json + scores.csv")
    _add_experiment_args(p)
    p.set_defaults(func=cmd_attack)

    p = sub.add_parser("sweep", help="attacks over several mask ratios, write sweep.json + sweep.csv")
    _add_experiment_args(p)
    p.add_argument("--ratios", default=DEFAULT_RATIOS, help=f"comma-separated mask ratios (default {DEFAULT_RATIOS})")
    p.set_defaults(func=cmd_sweep)

    p = sub.add_parser("score", help="per-image, per-mask distances of one model on one source (CSV)")
    p.add_argument("--model", required=True, help=f"checkpoint; {SETTINGS_HELP}")
    p.add_argument("--decoder-from", help="attach this checkpoint's decoder to an encoder-only model")
    p.add_argument("--data", required=True, help="source spec, e.g. npz:images.npz or fashion-mnist:test")
    p.add_argument("--out", required=True, help="CSV file to write")
    _add_spec_args(p)
    _add_run_args(p)
    p.set_defaults(func=cmd_score)

    p = sub.add_parser("inspect", help="describe a checkpoint")
    p.add_argument("path", help=f"checkpoint; {SETTINGS_HELP}")
    p.set_defaults(func=cmd_inspect)

    p = sub.add_parser("train", help="pre-train an MAE")
    p.add_argument("--preset", default="mae_tiny_28", help="architecture preset (see mimmia_core.model.PRESETS)")
    p.add_argument("--config", action="append", default=[], metavar="KEY=VALUE",
                   help="override a preset field, e.g. embed_dim=64 or norm_pix_loss=true (repeat)")
    p.add_argument("--data", help="source spec (default with --manifest: the manifest's source)")
    p.add_argument("--manifest", help="split manifest to take the training ids from")
    p.add_argument("--role", default=None, help="target, shadow or reference_<i> (with --manifest): trains on "
                                                "target_members, shadow_members or reference set i")
    p.add_argument("--epochs", type=int, default=100)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=None, help="absolute learning rate (default: blr * batch / 256)")
    p.add_argument("--blr", type=float, default=1.5e-4)
    p.add_argument("--warmup-epochs", type=float, default=5.0)
    p.add_argument("--weight-decay", type=float, default=0.05)
    p.add_argument("--mask-ratio", type=float, default=0.75)
    p.add_argument("--clip-grad", type=float, default=None)
    p.add_argument("--seed", type=int, default=0, help="initialisation and training seed")
    p.add_argument("--save-epochs", default="", help="also keep the model after these epochs, e.g. 100,200")
    p.add_argument("--resume", action="store_true", help="continue from OUT/train_state.pt")
    p.add_argument("--compile", action="store_true", help="torch.compile the forward and backward")
    p.add_argument("--out", required=True, help="checkpoint directory")
    p.add_argument("--device", default="auto")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("build-demo", help="rebuild the demo bundle from Fashion-MNIST")
    p.add_argument("--out", default=str(DEMO_DIR))
    p.add_argument("--device", default="auto")
    p.add_argument("--jobs", type=int, default=1, help="models trained in parallel processes")
    p.add_argument("--epochs", type=int, default=None, help="override the recipe's epochs")
    p.add_argument("--fashion-mnist-root", default=None)
    p.set_defaults(func=cmd_build_demo)
    return parser


def _flag_given(args, path: str) -> str | None:
    """The model flag whose value names `path`, as the user typed it."""
    for name in MODEL_FLAGS:
        values = getattr(args, name, None)
        for value in values if isinstance(values, list) else [values]:
            if isinstance(value, str) and Path(value.partition("?")[0]) == Path(path):
                return f"--{name.replace('_', '-')}" if name != "path" else "inspect PATH"
    return None


def _error_text(args, e: BaseException) -> str:
    text = e.args[0] if isinstance(e, KeyError) and e.args else str(e)
    if isinstance(e, MissingSettingsError) and (flag := _flag_given(args, e.path)):
        text += f". In this command: {flag} '{Path(e.path).as_posix()}?{e.query}'"
    return text


def _check_out(args) -> None:
    """--out must be writable before any work starts: a folder (attack, sweep, train, build-demo) or a file (score)."""
    if getattr(args, "out", None):
        (check_output_file if args.command == "score" else check_output_dir)(args.out, "--out")


def _show_warning(message, category, filename, lineno, file=None, line=None):
    print(f"mimmia: warning: {message}", file=sys.stderr)


def main(argv=None) -> int:
    """Run a command; a bad input is one line on stderr and exit code 2, never a traceback."""
    args = build_parser().parse_args(argv)
    warnings.showwarning = _show_warning
    try:
        _check_out(args)
        return args.func(args)
    except (ValueError, OSError, KeyError) as e:  # CheckpointError is a ValueError
        print(f"mimmia {args.command}: error: {_error_text(args, e)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"mimmia {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # noqa: BLE001 -- a bug, still no traceback unless asked for
        if os.environ.get("MIMMIA_DEBUG"):
            raise
        print(f"mimmia {args.command}: internal error: {type(e).__name__}: {e} (this is a bug in mimmia; "
              f"MIMMIA_DEBUG=1 shows the traceback)", file=sys.stderr)
        return 1


__all__ = ["main", "build_parser", "ProgressBar"]
