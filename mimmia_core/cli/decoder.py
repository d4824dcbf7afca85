"""The decoder command: fit-decoder (a fresh decoder under a frozen released encoder, on the adversary's data)."""
import hashlib
import json
import sys
from pathlib import Path

import numpy as np

from ..checkpoint import load_model
from ..data import open_source
from ..fit_decoder import DECODER_FIELDS, fit_decoder
from ..manifest import CANDIDATE_SETS, SplitManifest
from .common import SETTINGS_HELP, parse_device

ADVERSARY_SETS = "shadow_members,shadow_nonmembers"


def adversary_data(data: str | None, manifest: str | None, sets: str | None):
    """(source, provenance): --data SPEC alone, or the --sets of a --manifest (on --data or its own source)."""
    if manifest is None:
        if sets is not None:
            raise ValueError("--sets picks image sets from a --manifest; give one")
        if data is None:
            raise ValueError("give --data SPEC (the adversary's images), or --manifest (with --sets)")
        source = open_source(data)
        return source, {"data_spec": source.spec}
    split = SplitManifest.load(manifest)
    source = open_source(data or split.source)
    split.check_source(source)
    names = [s.strip() for s in (sets or ADVERSARY_SETS).split(",") if s.strip()]
    unknown = [s for s in names if s not in CANDIDATE_SETS]
    if unknown or not names:
        raise ValueError(f"--sets takes image sets of the manifest from {', '.join(CANDIDATE_SETS)}, got {sets!r}")
    ids = np.concatenate([split.ids(s) for s in names])
    provenance = {"data_spec": source.spec, "sets": names, "manifest": {
        "path": str(manifest), "sha256": hashlib.sha256(Path(manifest).read_bytes()).hexdigest()[:16]}}
    return source.subset(ids, name=f"{source.name}/{'+'.join(names)}"), provenance


def decoder_settings(items) -> dict:
    """["decoder_depth=2", "norm_pix_loss=true"] -> dict, values parsed as JSON."""
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        try:
            if not (sep and key):
                raise ValueError(item)
            out[key] = json.loads(value)
        except ValueError:  # json.JSONDecodeError is one
            raise ValueError(f"--decoder-config takes KEY=VALUE with a number or true/false, got {item!r}") from None
    return out


def cmd_fit_decoder(args) -> int:
    device = parse_device(args.device)
    source, provenance = adversary_data(args.data, args.manifest, args.sets)
    encoder = load_model(args.encoder, device)
    if encoder.has_decoder and args.replace_decoder:
        print(f"note: {encoder.path} has a decoder; --replace-decoder discards it and fits a fresh one",
              file=sys.stderr)
    fitted = fit_decoder(encoder, source, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                         warmup_epochs=args.warmup_epochs, weight_decay=args.weight_decay,
                         mask_ratio=args.mask_ratio, seed=args.seed, device=device,
                         replace_decoder=args.replace_decoder, decoder=decoder_settings(args.decoder_config),
                         out_dir=args.out, provenance=provenance)
    losses = fitted.provenance["decoder_fitted"]["losses"]
    print(f"fitted a decoder to the encoder of {encoder.path} on {len(source)} images of {source.name}: loss "
          f"{losses[0]:.4f} after the first epoch, {losses[-1]:.4f} after {len(losses)}; saved to {args.out}")
    return 0


def register(sub) -> None:
    """fit-decoder, with its arguments."""
    p = sub.add_parser("fit-decoder", help="fit a fresh MAE decoder to a frozen (released) encoder on your data",
                       description="Freeze the encoder of --encoder, put a freshly initialised MAE decoder on it "
                                   "and train only the decoder with the MAE loss on the adversary's images. The "
                                   "result is a mimmia checkpoint that attack, sweep and score take as --target.")
    p.add_argument("--encoder", required=True, help=f"the target encoder (an encoder-only release, or any model "
                                                    f"with --replace-decoder); {SETTINGS_HELP}")
    p.add_argument("--data", help="source spec of the adversary's images (with --manifest: the data its ids refer "
                                  "to, default the manifest's own)")
    p.add_argument("--manifest", help="split manifest: fit on its --sets")
    p.add_argument("--sets", default=None, help=f"comma-separated image sets of --manifest (default {ADVERSARY_SETS}:"
                                                f" all the adversary holds)")
    p.add_argument("--replace-decoder", action="store_true",
                   help="the encoder's model has a decoder: discard it and fit a fresh one (else refused)")
    p.add_argument("--decoder-config", action="append", default=[], metavar="KEY=VALUE",
                   help=f"the fresh decoder's shape or target space, one of {', '.join(DECODER_FIELDS)} (repeat; "
                        f"default: the encoder config's)")
    p.add_argument("--epochs", type=int, default=100)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=1e-3, help="peak learning rate (after warmup, then cosine)")
    p.add_argument("--warmup-epochs", type=float, default=5.0)
    p.add_argument("--weight-decay", type=float, default=0.05)
    p.add_argument("--mask-ratio", type=float, default=0.75, help="mask ratio of the MAE loss while fitting")
    p.add_argument("--seed", type=int, default=0, help="decoder initialisation and training seed")
    p.add_argument("--out", required=True, help="checkpoint directory to write")
    p.add_argument("--device", default="auto")
    p.set_defaults(func=cmd_fit_decoder)
