"""Command line: `mimmia <command>` or `python -m mimmia_core <command>`.

  attack      run attacks on a target, write report.json + scores.csv, print a table
  sweep       the same over several mask ratios, write sweep.json + sweep.csv
  score       one model, one source -> per-image, per-mask distances (CSV)
  inspect     describe a checkpoint (any supported format)
  train       pre-train an MAE (target, shadow or reference) on a source or a manifest role
  build-demo  rebuild the bundled demo (assets/demo)
  train-references  train R reference MAEs, offline or online, for a manifest's candidates (mimmia_core.farm)
  fit-decoder fit a fresh decoder to a frozen encoder-only target on the adversary's data
  utility     a model's linear-probe accuracy and held-out reconstruction loss (mimmia_core.utility)
  study       one of the paper's questions as a grid: train, attack, write study.json + study.csv

Each module registers its commands; this one parses, dispatches, and turns a bad input into one line and exit 2.
Under torchrun (WORLD_SIZE > 1) attack, sweep and score run on every rank with the images sharded across
the ranks (mimmia_core/distributed.py); only rank 0 prints and writes, and a rank's failure fails every rank.
"""
import argparse
import contextlib
import os
import sys
import warnings
from pathlib import Path

from ..checkpoint import MissingSettingsError
from ..distributed import RankFailed, barrier, env_world_size, finish, init_from_env, shutdown
from ..paths import check_output_dir, check_output_file
from . import audit, decoder, references, study, training, utility
from .common import MODEL_FLAGS, ProgressBar

COMMAND_MODULES = (audit, training, decoder, references, utility, study)
SHARDED_COMMANDS = ("attack", "sweep", "score")  # under torchrun: the images sharded across the ranks


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


def _run(args, check_out: bool = True) -> tuple[int, tuple | None]:
    """(exit code, None or the failure (kind, text, exit code)); RankFailed passes through."""
    try:
        if check_out:
            _check_out(args)
        return args.func(args), None
    except RankFailed:
        raise
    except (ValueError, OSError, KeyError) as e:  # CheckpointError is a ValueError
        return 2, ("error", _error_text(args, e), 2)
    except KeyboardInterrupt:
        return 130, ("interrupted", "", 130)
    except Exception as e:  # noqa: BLE001 -- a bug, still no traceback unless asked for
        if os.environ.get("MIMMIA_DEBUG"):
            raise
        return 1, ("internal error", f"{type(e).__name__}: {e} (this is a bug in mimmia; MIMMIA_DEBUG=1 shows "
                                     f"the traceback)", 1)


def _run_on_ranks(args) -> int:
    """This rank's part of a torchrun job: ranks other than 0 are silent and write nothing (they check no
    --out); any rank's failure is every rank's exit code, and rank 0 prints 'rank R failed: ...'."""
    rank, _ = init_from_env()
    try:
        with open(os.devnull, "w") as quiet, contextlib.ExitStack() as silence:
            if rank != 0:
                silence.enter_context(contextlib.redirect_stdout(quiet))
                silence.enter_context(contextlib.redirect_stderr(quiet))
            code, failure = _run(args, check_out=rank == 0)
        try:
            finish(failure)
        except RuntimeError as e:  # the group broke (a rank died; torchrun stops the job): this rank says why
            print(f"mimmia {args.command}: error: rank {rank} lost the other ranks ({e})"
                  + (f"; its own failure: {failure[1]}" if failure else ""), file=sys.stderr)
            return failure[2] if failure else 1
        return code
    except RankFailed as e:
        if rank == 0:
            print(f"mimmia {args.command}: {e.kind}: {e}", file=sys.stderr, flush=True)
        barrier()  # every rank is here: none exits (and has torchrun stop the others) before rank 0 has said why
        return e.code
    finally:
        shutdown()


def main(argv=None) -> int:
    """Run a command; a bad input is one line on stderr and exit code 2, never a traceback."""
    args = build_parser().parse_args(argv)
    warnings.showwarning = _show_warning
    if args.command in SHARDED_COMMANDS and env_world_size() > 1:
        return _run_on_ranks(args)
    code, failure = _run(args)
    if failure:
        print(f"mimmia {args.command}: {failure[0]}" + (f": {failure[1]}" if failure[1] else ""), file=sys.stderr)
    return code


__all__ = ["main", "build_parser", "ProgressBar"]
