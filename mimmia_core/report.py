"""Reports: report.json + scores.csv (its audit record in '#' lines on top) for an attack run, sweep.json +
sweep.csv for a mask-ratio sweep, and the small tables printed in the terminal (with the attacks' notes).
Written atomically; a report that cannot be written where asked is saved elsewhere, with a
WriteWarning naming the place (atomic.save_outputs)."""
import csv
import dataclasses
import io
import json
import math
import platform
import re
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import sklearn
import timm
import torch

from .atomic import save_outputs
from .attacks import make_attack
from .axes import score_axis, score_name
from .version import __version__
from .manifest import CANDIDATE_SETS, set_label

ROLES = tuple((name, set_label(name)) for name in CANDIDATE_SETS)  # (image set, label): target_members 1, ...


def versions() -> dict:
    return dict(mimmia=__version__, torch=torch.__version__, timm=timm.__version__, numpy=np.__version__,
                scikit_learn=sklearn.__version__, python=platform.python_version())


def jsonable(x):
    """Plain JSON values: numpy to Python, dataclasses to dicts, keys to str, NaN and +-inf to None."""
    if dataclasses.is_dataclass(x) and not isinstance(x, type):
        return jsonable(dataclasses.asdict(x))
    if isinstance(x, dict):
        return {(f"{k:g}" if isinstance(k, float) else str(k)): jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple, np.ndarray)):
        return [jsonable(v) for v in x]
    if isinstance(x, (np.integer, np.bool_)):
        return x.item()
    if isinstance(x, (float, np.floating)):
        return float(x) if math.isfinite(x) else None
    if isinstance(x, Path):
        return str(x)
    return x


def _json(obj) -> str:
    return json.dumps(jsonable(obj), indent=1, allow_nan=False)


def result_summary(result) -> dict:
    """An AttackResult without its per-image arrays."""
    return dict(attack=result.attack, spec=result.spec, aggregate=result.aggregate, threshold=result.threshold,
                threshold_rule=result.threshold_rule, metrics=result.metrics, notes=list(result.notes))


def attack_report(experiment, results, settings: dict) -> dict:
    return dict(kind="mimmia-attack-report", created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
                settings=settings, versions=versions(), experiment=experiment.describe(),
                results=[result_summary(r) for r in results])


def score_columns(experiment, results) -> dict:
    """One row per image and role (its image set, manifest.CANDIDATE_SETS: target_members, target_nonmembers,
    shadow_members, shadow_nonmembers): id, role, label (1 = member), and per attack its score (higher = member-like) and '<attack>_rank', the rank among the same model's
    candidates (1 = most member-like). Roles an attack did not score are left out."""
    if not results:
        raise ValueError("no attack results to tabulate")
    first = results[0]
    for r in results[1:]:
        if not (np.array_equal(r.member_ids, first.member_ids) and np.array_equal(r.nonmember_ids, first.nonmember_ids)):
            raise ValueError(f"attack {r.attack} scored other images than {first.attack}")
    sources = experiment.sources()
    per_set = [(r.member_scores, r.nonmember_scores, r.shadow_member_scores, r.shadow_nonmember_scores)
               for r in results]
    scores = {name: [s[i] for s in per_set] for i, name in enumerate(CANDIDATE_SETS)}
    roles = [(role, label) for role, label in ROLES
             if role in sources and all(s is not None for s in scores[role])]
    columns = {"id": np.concatenate([sources[role].ids for role, _ in roles]).astype(np.int64),
               "role": np.concatenate([np.full(len(sources[role]), role, dtype=object) for role, _ in roles]),
               "label": np.concatenate([np.full(len(sources[role]), label, dtype=np.int64) for role, label in roles])}
    model = np.array([role.split("_")[0] for role in columns["role"]])
    for i, r in enumerate(results):
        s = np.concatenate([np.asarray(scores[role][i], dtype=np.float64) for role, _ in roles])
        rank = np.zeros(len(s), dtype=np.int64)
        for name in np.unique(model):
            rows = np.flatnonzero(model == name)
            rank[rows] = np.argsort(np.argsort(-s[rows], kind="stable"), kind="stable") + 1
        columns[r.attack], columns[f"{r.attack}_rank"] = s, rank
    return columns


def _column_note(result) -> str:
    """What an attack's score column holds, in the words of axes.score_axis: a distance's column is its
    negative (every score is higher = more member-like), and which of the settings it depends on."""
    attack, spec = make_attack(result.attack), result.spec
    sign, _ = score_axis(attack, spec)
    if not attack.uses_distance:
        over = f"seed {spec.seed}; no mask, so mask ratio, K and distance do not apply"
    elif not attack.uses_mask_ratio:
        over = (f"{result.aggregate} over K = {spec.num_masks} masks of one patch each (not the mask ratio), "
                f"seed {spec.seed}")
    else:
        over = f"{result.aggregate} over K = {spec.num_masks} masks at mask ratio {spec.mask_ratio:g}, seed {spec.seed}"
    if attack.name not in ("paper", "unmasked"):
        what = f"the {score_name(attack)}"
    elif sign < 0:
        what = f"minus the {score_name(attack)} ({spec.distance}), a negative distance"
    else:
        what = f"the {score_name(attack)} as PSNR in dB ({spec.distance})"
    if result.threshold is None:
        threshold = "none (no shadow model)"
    else:
        threshold = f"{result.threshold!r} (learned on the shadow, rule {result.threshold_rule})" + \
            ("; inf: no image is called a member" if result.threshold == np.inf else "")
    return f"{what}, {over}; higher = more member-like; threshold {threshold}"


def scores_header(experiment, results) -> list[str]:
    """The audit record written above scores.csv as '# key: value' lines (pandas.read_csv(path, comment="#")
    skips them): the mimmia version, the settings (those of results[0]; each column's line names its own),
    every model's and image set's fingerprint, and what each column holds. No date, so the same scores give
    the same file."""
    spec, aggregate = results[0].spec, results[0].aggregate
    lines = ["mimmia scores: one row per image and role; read with pandas.read_csv(path, comment=\"#\")",
             f"mimmia_version: {__version__}", f"experiment: {' '.join(str(experiment.name).split())}",
             f"mask_ratio: {spec.mask_ratio:g}", f"num_masks: {spec.num_masks}", f"seed: {spec.seed}",
             f"distance: {spec.distance}", f"aggregate: {aggregate}"]
    lines += [f"model_{role}: {loaded.fingerprint}" for role, loaded in experiment.models().items()]
    lines += [f"data_{role}: {len(s)} images, {s.fingerprint()}" for role, s in experiment.sources().items()]
    lines += ["column role: the image set (target/shadow members/nonmembers); label: 1 = member"]
    for r in results:
        lines += [f"column {r.attack}: {_column_note(r)}",
                  f"column {r.attack}_rank: rank among the same model's images, 1 = most member-like"]
    return [f"# {line}\n" for line in lines]


def scores_filename(experiment_name: str, spec, aggregate: str) -> str:
    """A download name that carries the settings: mimmia_scores_<name>_mr0.75_K8_seed0_masked_mse_mean.csv."""
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", experiment_name).strip("-") or "experiment"
    settings = f"mr{spec.mask_ratio:g}_K{spec.num_masks}_seed{spec.seed}_{spec.distance}_{aggregate}"
    return f"mimmia_scores_{name}_{settings}.csv"


def scores_csv(experiment, results) -> str:
    """score_columns as CSV (scores written exactly, as repr of the float) under scores_header's '#' lines."""
    columns = score_columns(experiment, results)
    text = io.StringIO()
    text.writelines(scores_header(experiment, results))
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(list(columns))
    for row in zip(*columns.values()):
        writer.writerow([repr(float(v)) if isinstance(v, np.floating) else v for v in row])
    return text.getvalue()


def write_attack_report(out_dir, experiment, results, settings: dict) -> tuple[Path, Path]:
    """DIR/report.json (settings, versions, fingerprints, metrics, thresholds) and DIR/scores.csv."""
    if not results:
        raise ValueError("no attack results to report")
    out_dir = Path(out_dir)
    report, scores = save_outputs({out_dir / "report.json": _json(attack_report(experiment, results, settings)),
                                   out_dir / "scores.csv": scores_csv(experiment, results)}, "the attack report")
    return report, scores


def model_scores_csv(scores, aggregate: str) -> str:
    """One model's Scores on one source as CSV: id, the aggregate over the K masks ('<aggregate>_<distance>'),
    then each mask's value (mask_0 ...), written exactly (repr of the float). What `mimmia score` writes."""
    spec = scores.spec
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(["id", f"{aggregate}_{spec.distance}"] + [f"mask_{k}" for k in range(spec.num_masks)])
    for i, (image_id, agg) in enumerate(zip(scores.ids, scores.aggregate(aggregate))):
        writer.writerow([int(image_id), repr(float(agg))] + [repr(float(v)) for v in scores.per_mask[:, i]])
    return text.getvalue()


def write_model_scores(path, scores, aggregate: str) -> Path:
    """model_scores_csv written to `path` (atomically; elsewhere with a WriteWarning if it cannot be)."""
    written, = save_outputs({Path(path): model_scores_csv(scores, aggregate)}, "the scores")
    return written


def _pct(fpr: float) -> str:
    return f"{fpr * 100:g}%"


def attack_table(results) -> str:
    """attack | AUC | TPR at each FPR (with the interval at 1%; "—" where not measurable) | balanced accuracy
    at the shadow threshold."""
    fprs = list(results[0].metrics["tpr_at"])
    header = ["attack", "AUC"] + [f"TPR@{_pct(f)}" + (" [95% CI]" if f == 0.01 else "") for f in fprs] + \
        ["bal.acc@thr"]
    rows, unmeasurable = [], False
    for r in results:
        row = [r.attack, f"{r.metrics['auc']:.3f}"]
        for f in fprs:
            t = r.metrics["tpr_at"][f]
            cell = f"{t['tpr']:.3f}" + (f" [{t['lo']:.3f}, {t['hi']:.3f}]" if f == 0.01 else "")
            unmeasurable |= not t["measurable"]
            row.append(cell if t["measurable"] else "—*")
        row.append(f"{r.metrics['confusion']['balanced_accuracy']:.3f}" if r.threshold is not None else "-")
        rows.append(row)
    lines = _columns([header] + rows)
    if unmeasurable:
        lines.append(f"* not measurable: below the smallest measurable FPR, 1/{results[0].metrics['n_nonmembers']} "
                     f"non-members")
    lines += _note_lines((r.attack, note) for r in results for note in r.notes)
    return "\n".join(lines)


def _note_lines(notes) -> list[str]:
    """'note: <attack>: <text>' once per distinct (attack, text)."""
    return [f"note: {attack}: {text}" for attack, text in dict.fromkeys(notes)]


def _columns(rows) -> list[str]:
    widths = [max(len(str(row[i])) for row in rows) for i in range(len(rows[0]))]
    return ["  ".join(str(c).ljust(w) for c, w in zip(row, widths)).rstrip() for row in rows]


def write_sweep(out_dir, rows: list[dict], settings: dict, experiment=None) -> tuple[Path, Path]:
    """DIR/sweep.json (settings, versions, rows, best ratio per attack) and DIR/sweep.csv."""
    out_dir = Path(out_dir)
    best = {row["attack"]: row["mask_ratio"] for row in rows if row["best"]}
    notes = [f"{attack}: {text}" for attack, text in dict.fromkeys(_sweep_notes(rows))]
    doc = dict(kind="mimmia-sweep", created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
               settings=settings, versions=versions(),
               experiment=None if experiment is None else experiment.describe(), best=best, notes=notes, rows=rows)
    text = io.StringIO()  # the CSV has the distance of each row; the notes are in sweep.json
    writer = csv.DictWriter(text, fieldnames=[k for k in rows[0] if k != "note"], extrasaction="ignore",
                            lineterminator="\n")
    writer.writeheader()
    writer.writerows(jsonable(rows))
    json_path, csv_path = save_outputs({out_dir / "sweep.json": _json(doc), out_dir / "sweep.csv": text.getvalue()},
                                       "the sweep")
    return json_path, csv_path


def _sweep_notes(rows):
    return ((row["attack"], row["note"]) for row in rows if row.get("note"))


def sweep_table(rows: list[dict]) -> str:
    fprs = [k for k in rows[0] if k.startswith("tpr@") and not k.endswith(("_lo", "_hi"))]
    header = ["mask ratio", "attack", "AUC"] + [f"TPR@{_pct(float(k[4:]))}" for k in fprs] + ["bal.acc@thr", ""]
    table = [header] + [
        [f"{row['mask_ratio']:g}", row["attack"], f"{row['auc']:.3f}"]
        + ["—" if row[k] is None else f"{row[k]:.3f}" for k in fprs]  # —: below 1/non-members
        + ["-" if row["balanced_accuracy"] is None else f"{row['balanced_accuracy']:.3f}",
           "<- best" if row["best"] else ""]
        for row in rows]
    return "\n".join(_columns(table) + _note_lines(_sweep_notes(rows)))


__all__ = ["versions", "jsonable", "result_summary", "attack_report", "score_columns", "scores_header",
           "scores_filename", "scores_csv", "write_attack_report", "attack_table", "write_sweep", "sweep_table",
           "model_scores_csv", "write_model_scores", "ROLES"]
