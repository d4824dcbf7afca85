"""The audit commands: attack, sweep, score, inspect."""
import json
import sys
from dataclasses import replace

from ..attacks import run_attack, sweep
from ..checkpoint import attach_decoder, describe_checkpoint, load_model
from ..data import open_source
from ..distributed import is_main_rank
from ..report import attack_table, jsonable, sweep_table, write_attack_report, write_model_scores, write_sweep
from .common import (SETTINGS_HELP, add_experiment_args, add_run_args, add_spec_args, attack_names, make_scorer,
                     open_experiment, parse_device, run_settings, score_spec)

DEFAULT_RATIOS = "0.25,0.5,0.75,0.9"


def cmd_attack(args) -> int:
    experiment = open_experiment(args)
    names = attack_names(args.attacks, experiment)
    scorer, spec = make_scorer(args), score_spec(args)
    results = [run_attack(name, experiment, spec, scorer, args.threshold, args.aggregate) for name in names]
    if is_main_rank():  # under torchrun every rank has every result; rank 0 writes
        report, scores = write_attack_report(args.out, experiment, results, run_settings(args, names))
        print(attack_table(results))
        print(f"\nwrote {report} and {scores}")
    return 0


def cmd_sweep(args) -> int:
    experiment = open_experiment(args)
    names = attack_names(args.attacks, experiment, varying_mask_ratio=True)
    try:
        ratios = [float(r) for r in args.ratios.split(",") if r.strip()]
    except ValueError:
        raise ValueError(f"--ratios must be comma-separated numbers, got {args.ratios!r}") from None
    if not ratios:
        raise ValueError("--ratios names no mask ratio")
    spec = score_spec(args)
    for r in ratios:
        replace(spec, mask_ratio=r)  # refuses ratios outside (0, 1) before any scoring

    def progress(done, total, label):
        print(f"[{done}/{total}] {label}", file=sys.stderr)

    rows = sweep(experiment, ratios, names, spec, make_scorer(args), progress, args.threshold, args.aggregate)
    if is_main_rank():
        paths = write_sweep(args.out, rows, {**run_settings(args, names), "ratios": ratios}, experiment)
        print(sweep_table(rows))
        print(f"\nwrote {paths[0]} and {paths[1]}")
    return 0


def cmd_score(args) -> int:
    device = parse_device(args.device)
    loaded = load_model(args.model, device)
    if args.decoder_from:
        loaded = attach_decoder(loaded, load_model(args.decoder_from, device))
    source, spec = open_source(args.data), score_spec(args)
    scores = make_scorer(args).scores(loaded, source, spec).require_finite(loaded.path)
    if not is_main_rank():
        return 0
    path = write_model_scores(args.out, scores, args.aggregate)
    print(f"scored {len(scores.ids)} images of {source.name} with {spec.num_masks} masks at ratio "
          f"{spec.mask_ratio:g} ({spec.distance}); wrote {path}")
    return 0


def cmd_inspect(args) -> int:
    print(json.dumps(jsonable(describe_checkpoint(load_model(args.path, "cpu"))), indent=1))
    return 0


def register(sub) -> None:
    """attack, sweep, score and inspect, with their arguments."""
    p = sub.add_parser("attack", help="run attacks, write report.json + scores.csv")
    add_experiment_args(p)
    p.set_defaults(func=cmd_attack)

    p = sub.add_parser("sweep", help="attacks over several mask ratios, write sweep.json + sweep.csv")
    add_experiment_args(p)
    p.add_argument("--ratios", default=DEFAULT_RATIOS, help=f"comma-separated mask ratios (default {DEFAULT_RATIOS})")
    p.set_defaults(func=cmd_sweep)

    p = sub.add_parser("score", help="per-image, per-mask distances of one model on one source (CSV)")
    p.add_argument("--model", required=True, help=f"checkpoint; {SETTINGS_HELP}")
    p.add_argument("--decoder-from", help="attach this checkpoint's decoder to an encoder-only model")
    p.add_argument("--data", required=True, help="source spec, e.g. npz:images.npz or fashion-mnist:test")
    p.add_argument("--out", required=True, help="CSV file to write")
    add_spec_args(p)
    add_run_args(p)
    p.set_defaults(func=cmd_score)

    p = sub.add_parser("inspect", help="describe a checkpoint")
    p.add_argument("path", help=f"checkpoint; {SETTINGS_HELP}")
    p.set_defaults(func=cmd_inspect)
