"""The utility command: a model's linear-probe accuracy and held-out reconstruction loss (mimmia_core.utility)."""
import json

import numpy as np

from ..atomic import atomic_write_text
from ..checkpoint import load_model
from ..data import open_source
from ..masking import check_seed
from ..paths import check_output_file
from ..report import jsonable
from ..utility import FEATURES, measure_utility, probe_split
from .common import SETTINGS_HELP, parse_device
from .decoder import adversary_data

HELDOUT_SETS = "target_nonmembers"


def _limited(source, limit: int | None, seed: int):
    """At most `limit` images of `source`, a seeded sample (all of them without a limit)."""
    if limit is None or limit >= len(source):
        return source
    if limit < 2:
        raise ValueError(f"--probe-limit must be at least 2, got {limit}")
    ids = np.sort(np.random.default_rng(seed).choice(source.ids, size=limit, replace=False))
    return source.subset(ids, f"{source.name}[{limit}]")


def _probe_sources(args, heldout):
    """(train, test) of the probe: --probe-train and --probe-test, or --probe-split of them or of --data."""
    if (args.probe_train is None) != (args.probe_test is None):
        raise ValueError("give --probe-train and --probe-test together, or --probe-split FRACTION of --data")
    if args.probe_train is not None and args.probe_split is not None:
        raise ValueError("--probe-split divides --data; drop it when giving --probe-train and --probe-test")
    if args.probe_train is not None:
        train, test = open_source(args.probe_train), open_source(args.probe_test)
    else:
        train, test = probe_split(heldout, 0.5 if args.probe_split is None else args.probe_split, args.seed)
    return _limited(train, args.probe_limit, args.seed), _limited(test, args.probe_limit, args.seed + 1)


def _mask_ratio(args, loaded) -> float:
    """--mask-ratio, or the ratio the model was trained at (a mimmia checkpoint records it)."""
    if args.mask_ratio is not None:
        return args.mask_ratio
    ratio = loaded.provenance.get("mask_ratio")
    if ratio is None:
        raise ValueError(f"{loaded.path} does not record its training mask ratio; give --mask-ratio")
    return float(ratio)


def cmd_utility(args) -> int:
    check_seed(args.seed)
    out = check_output_file(args.out, "--out")
    sets = args.sets if args.manifest is None else (args.sets or HELDOUT_SETS)
    heldout, data_provenance = adversary_data(args.data, args.manifest, sets)
    train, test = _probe_sources(args, heldout)
    loaded = load_model(args.model, parse_device(args.device))
    result = measure_utility(loaded.model, heldout, train, test, _mask_ratio(args, loaded), args.features,
                             args.num_masks, args.seed, args.batch_size)
    print(f"linear-probe accuracy {result.probe_accuracy:.4f} ({result.probe_features} features, "
          f"{result.probe_train_images} train / {result.probe_test_images} test images, {result.num_classes} classes)")
    print(f"held-out reconstruction loss {result.reconstruction_loss:.5f} (masked-patch MSE in the target space, "
          f"mask ratio {result.mask_ratio:g}, {result.num_masks} mask(s) on {result.reconstruction_images} images)")
    report = {**result.to_dict(), "model": str(args.model), "model_fingerprint": loaded.fingerprint,
              "defenses": loaded.provenance.get("defenses"), "heldout": {"name": heldout.name, **data_provenance},
              "probe_train": train.name, "probe_test": test.name}
    atomic_write_text(out, json.dumps(jsonable(report), indent=1) + "\n")
    print(f"written to {out}")
    return 0


def register(sub) -> None:
    p = sub.add_parser("utility", help="a model's linear-probe accuracy and held-out reconstruction loss")
    p.add_argument("model", help=f"checkpoint (any supported format); {SETTINGS_HELP}")
    p.add_argument("--data", help="held-out images for the reconstruction loss (default with --manifest: its "
                                  "source); without --probe-train, also the labelled images the probe splits")
    p.add_argument("--manifest", help="split manifest: take the held-out images from its --sets")
    p.add_argument("--sets", default=None, help=f"with --manifest, comma-separated image sets (default {HELDOUT_SETS})")
    p.add_argument("--probe-train", help="labelled source the probe is fitted on")
    p.add_argument("--probe-test", help="labelled source, disjoint from --probe-train, the probe is scored on")
    p.add_argument("--probe-split", type=float, default=None,
                   help="without --probe-train/--probe-test: the fraction of --data held out to test the probe "
                        "(default 0.5)")
    p.add_argument("--probe-limit", type=int, default=None, help="at most this many images per probe split "
                                                                 "(a seeded sample)")
    p.add_argument("--features", choices=FEATURES, default="mean", help="mean patch token, or the cls token")
    p.add_argument("--mask-ratio", type=float, default=None, help="default: the model's training mask ratio")
    p.add_argument("--num-masks", type=int, default=1, help="seeded masks per held-out image")
    p.add_argument("--seed", type=int, default=0, help="mask and probe-split seed")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--device", default="auto")
    p.add_argument("--out", required=True, help="JSON file to write")
    p.set_defaults(func=cmd_utility)
