"""Command line: `mimmia <command>` or `python -m mimmia_core <command>`.

  attack      run attacks on a target, write report.json + scores.csv, print a table
  sweep       the same over several mask ratios, write sweep.json + sweep.csv
  score       one model, one source -> per-image, per-mask distances (CSV)
  inspect     describe a checkpoint (any supported format)
  train       pre-train an MAE (target, shadow or reference) on a source or a manifest role
  build-demo  rebuild the bundled demo (assets/demo)
  fit-decoder fit a fresh decoder to a frozen encoder-only target on the adversary's data

Each module registers its commands; this one parses, dispatches, and turns a bad input into one line and exit 2.
"""
import argparse
import os
import sys
import warnings
from pathlib import Path

from ..checkpoint import MissingSettingsError
from ..paths import check_output_dir, check_output_file
from . import audit, decoder, training
from .common import MODEL_FLAGS, ProgressBar

COMMAND_MODULES = (audit, training, decoder)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mimmia", description="Membership inference against masked image "
                                     "modeling (MAE) models. `mimmia COMMAND --help` for each command.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="command")
    for module in COMMAND_MODULES:
        module.register(sub)
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
