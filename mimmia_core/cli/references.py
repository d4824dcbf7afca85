"""The reference-farm command: train-references (mimmia_core.farm)."""
from ..distributed import shutdown
from ..farm import FarmRecipe, distributed_share, train_references
from .common import parse_device
from .training import _config_overrides


def cmd_train_references(args) -> int:
    if args.size is not None and args.online:
        raise ValueError("--size sets an offline reference's training set; online references train on half the "
                         "pool (candidates plus --extra)")
    if args.extra and not args.online:
        raise ValueError("--extra adds ids to the online pool; give --online, or --size for offline references")
    recipe = FarmRecipe(preset=args.preset, config=_config_overrides(args.config), epochs=args.epochs,
                        batch_size=args.batch_size, lr=args.lr, warmup_epochs=args.warmup_epochs,
                        weight_decay=args.weight_decay, mask_ratio=args.mask_ratio, seed=args.seed)
    recipe.train_config(0)  # refuses a bad epochs, batch size, mask ratio or seed before any work
    try:  # under torchrun each rank trains its share (distributed_share) in the process group it opens
        done = train_references(args.manifest, args.count, args.out, online=args.online, recipe=recipe,
                                jobs=args.jobs, device=parse_device(args.device), size=args.size, extra=args.extra,
                                data=args.data)
        _, rank, world = distributed_share(args.count)
    finally:
        shutdown()
    for r in done:
        print(f"{r['path']}: {r['status']}, fingerprint {r['fingerprint']}")
    where = f" (rank {rank} of {world})" if world > 1 else ""
    print(f"{len(done)} of {args.count} {'online' if args.online else 'offline'} references{where} in {args.out}; "
          f"manifest {args.out}/manifest.json")
    return 0


def register(sub) -> None:
    """train-references, with its arguments."""
    p = sub.add_parser("train-references", help="train R reference MAEs (offline or online) on a manifest's data")
    p.add_argument("--manifest", required=True, help="split manifest with the candidates (target and shadow sets)")
    p.add_argument("--count", type=int, required=True, help="how many reference models (online: at least 2)")
    p.add_argument("--online", action="store_true", help="each reference trains on a random half of a pool holding "
                                                         "the candidates (default: offline, none of them)")
    p.add_argument("--out", required=True, help="folder: ref-<i> checkpoints and manifest.json with their sets")
    p.add_argument("--jobs", type=int, default=1, help="references trained in parallel processes (CPU)")
    p.add_argument("--size", type=int, default=None, help="offline: ids per reference (default: the target's "
                                                          "member count)")
    p.add_argument("--extra", type=int, default=0, help="online: non-candidate ids added to the pool")
    p.add_argument("--data", help="source spec the manifest's ids refer to (default: the manifest's own)")
    defaults = FarmRecipe()
    p.add_argument("--preset", default=defaults.preset, help="architecture preset (see mimmia_core.config.PRESETS)")
    p.add_argument("--config", action="append", default=[], metavar="KEY=VALUE", help="override a preset field")
    p.add_argument("--epochs", type=int, default=defaults.epochs)
    p.add_argument("--batch-size", type=int, default=defaults.batch_size)
    p.add_argument("--lr", type=float, default=defaults.lr)
    p.add_argument("--warmup-epochs", type=float, default=defaults.warmup_epochs)
    p.add_argument("--weight-decay", type=float, default=defaults.weight_decay)
    p.add_argument("--mask-ratio", type=float, default=defaults.mask_ratio)
    p.add_argument("--seed", type=int, default=defaults.seed, help="seeds the sets and every reference's training")
    p.add_argument("--device", default="auto")
    p.set_defaults(func=cmd_train_references)
