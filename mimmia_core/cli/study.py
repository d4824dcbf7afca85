"""The study command: one of the paper's questions as a grid of trained and attacked points."""
import shlex
import sys

from ..study import BUILTIN_STUDIES, finding, load_study, load_study_spec, run_study
from ..study.results import attacks_table, study_table
from .common import parse_device


def cmd_study(args) -> int:
    spec = load_study_spec(args.spec)
    if args.jobs < 1:
        raise ValueError(f"--jobs must be at least 1, got {args.jobs}")
    command = "mimmia " + " ".join(shlex.quote(a) for a in sys.argv[1:]) if sys.argv[1:] else ""
    path = run_study(spec, args.out, quick=args.quick, workers=args.jobs, device=parse_device(args.device),
                     log=lambda line: print(line, file=sys.stderr), command=command, work_dir=args.work)
    doc = load_study(path)
    print(study_table(doc["points"]))
    if len(doc["points"]) == 1:  # one point (the online study): its attacks side by side, down to 0.1% FPR
        print("\n" + attacks_table(doc["points"][0]))
    print(f"\n{spec.title}: {finding(spec, doc['points'])}")
    print(f"wrote {path} and {path.with_suffix('.csv')}")
    return 0


def register(sub) -> None:
    """study, with its arguments."""
    p = sub.add_parser("study", help="run a study (a built-in or a JSON spec), write study.json + study.csv")
    p.add_argument("spec", help=f"a built-in study ({', '.join(BUILTIN_STUDIES)}) or a JSON file of StudySpec fields")
    p.add_argument("--out", required=True, help="study folder (models, cache, points, study.json); rerun to resume")
    p.add_argument("--work", help="folder for the trained models and the score cache (default: --out); studies "
                                  "that share one reuse each other's models")
    p.add_argument("--quick", action="store_true", help="shrink every point (tiny models, a few images and epochs)")
    p.add_argument("--jobs", type=int, default=1, help="models trained in parallel processes (CPU); one per GPU")
    p.add_argument("--device", default="auto", help="auto (cuda if available), cpu, cuda, ...")
    p.set_defaults(func=cmd_study)
