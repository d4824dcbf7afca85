"""The training commands: train, build-demo."""
import hashlib
import json
from dataclasses import replace
from pathlib import Path

from ..augment import AUGMENTS
from ..config import get_config
from ..demo import DemoRecipe, build_demo, precompute_scores
from ..experiment import DEMO_DIR
from ..manifest import MODEL_ROLES, SplitManifest, training_set
from ..model import build_model
from ..model_ref import check_settings
from ..data import open_source
from ..dp import DPConfig
from ..train import TrainConfig, train_mae
from .common import parse_device


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
                      clip_grad=args.clip_grad, seed=args.seed, compile=args.compile, augment=args.augment,
                      dp=_dp_config(args),
                      save_epochs=tuple(int(e) for e in args.save_epochs.split(",") if e.strip()))
    model = build_model(config, seed=args.seed)
    losses = train_mae(model, source, cfg, out_dir=args.out, resume=args.resume, provenance=provenance,
                       device=parse_device(args.device))
    print(f"trained on {len(source)} images of {source.name}; final loss {losses[-1]:.4f}; saved to {args.out}")
    return 0


def _dp_config(args) -> DPConfig | None:
    """DP-SGD from --dp-noise or --dp-epsilon (with --dp-clip, --dp-delta); None without either."""
    if args.dp_noise is None and args.dp_epsilon is None:
        if args.dp_clip is not None or args.dp_delta is not None:
            raise ValueError("--dp-clip and --dp-delta need --dp-noise or --dp-epsilon")
        return None
    return DPConfig(max_grad_norm=1.0 if args.dp_clip is None else args.dp_clip, noise_multiplier=args.dp_noise,
                    epsilon=args.dp_epsilon, delta=args.dp_delta)


def cmd_build_demo(args) -> int:
    if args.scores_only:
        check = precompute_scores(args.out, progress=lambda done, total: print(f"mask ratios scored: {done}/{total}",
                                                                              flush=True))
        print(f"score pack written to {Path(args.out) / 'cache'} and checked: {check['settings']:,} grid settings, "
              f"{check['metrics']:,} metrics, {check['patched_images']} images' and {check['exact_entries']} entries' "
              f"values kept exact; the largest change of a metric: " + ", ".join(f"{k} {v:.2g}" for k, v in check["worst"].items()))
        return 0
    recipe = DemoRecipe() if args.epochs is None else replace(DemoRecipe(), epochs=args.epochs)
    out = build_demo(args.out, recipe, fashion_mnist_root=args.fashion_mnist_root, device=parse_device(args.device),
                     jobs=args.jobs)
    print(f"demo written to {out}")
    return 0


def register(sub) -> None:
    """train and build-demo, with their arguments."""
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
    p.add_argument("--augment", choices=AUGMENTS, default="none",
                   help="crop-flip: MAE's random resized crop (area 0.2 to 1) and horizontal flip")
    p.add_argument("--dp-noise", type=float, default=None, help="DP-SGD with this noise multiplier")
    p.add_argument("--dp-epsilon", type=float, default=None,
                   help="DP-SGD reaching this epsilon at the last epoch (Opacus's RDP accountant picks the noise)")
    p.add_argument("--dp-delta", type=float, default=None, help="DP-SGD's delta (default 1 / (10 N))")
    p.add_argument("--dp-clip", type=float, default=None, help="DP-SGD's per-sample clipping norm (default 1)")
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
    p.add_argument("--scores-only", action="store_true",
                   help="keep the models; recompute only the bundled score cache (every mask ratio of the grid)")
    p.set_defaults(func=cmd_build_demo)
