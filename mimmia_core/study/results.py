"""A study's outputs: per-point metrics, study.json and study.csv, and the one-line finding in words."""
import csv
import io
import json
from pathlib import Path

import numpy as np

from ..atomic import atomic_write_text
from ..attacks import make_attack
from ..paths import require_exists
from ..report import jsonable
from ..version import __version__
from .spec import METRICS

STUDY_FPRS = (0.1, 0.01, 0.001)
CSV_COLUMNS = ["point", "value", "attack", "mask_ratio", "auc", *[f"tpr_at_{f:g}{s}" for f in STUDY_FPRS
                                                                    for s in ("", "_lo", "_hi")],
               "min_measurable_fpr", "balanced_accuracy", "n_members", "n_nonmembers", "target_fingerprint",
               "probe_accuracy", "heldout_loss"]
HEADLINE = ("lira", "calibrated", "paper")  # the attack a finding speaks of: the strongest the study ran


def point_metrics(result) -> dict:
    """What a study keeps of one AttackResult: AUC, TPR at 10/1/0.1% FPR with Clopper-Pearson intervals
    (None where not measurable), the smallest measurable FPR and the balanced accuracy at the shadow's
    threshold."""
    m = result.metrics
    tpr = {f"{f:g}": (dict(tpr=t["tpr"], lo=t["lo"], hi=t["hi"]) if t["measurable"] else None)
           for f, t in ((f, m["tpr_at"][f]) for f in STUDY_FPRS)}
    confusion = m.get("confusion") or {}
    return dict(attack=result.attack, label=make_attack(result.attack).label, mask_ratio=result.spec.mask_ratio,
                distance=result.spec.distance, auc=m["auc"], tpr_at=tpr, min_measurable_fpr=m["min_measurable_fpr"],
                balanced_accuracy=confusion.get("balanced_accuracy"), threshold=result.threshold,
                n_members=m["n_members"], n_nonmembers=m["n_nonmembers"])


def _csv(records: list) -> str:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(CSV_COLUMNS)
    for rec in records:
        utility = rec.get("utility") or {}
        for r in rec["results"]:
            tprs = [(r["tpr_at"][f"{f:g}"] or {}).get(k) for f in STUDY_FPRS for k in ("tpr", "lo", "hi")]
            writer.writerow([rec["id"], rec["value"], r["attack"], r["mask_ratio"], r["auc"], *tprs,
                             r["min_measurable_fpr"], r["balanced_accuracy"], r["n_members"], r["n_nonmembers"],
                             rec["models"]["target"], utility.get("probe_accuracy"),
                             utility.get("reconstruction_loss")])
    return out.getvalue()


def headline(spec, records: list) -> tuple[str, float] | None:
    """(attack, mask ratio) the finding and the Studies page lead with: the study's own attack, or the
    strongest attack every point ran, at the first mask ratio of the first point."""
    ran = [{(r["attack"], r["mask_ratio"]) for r in rec["results"]} for rec in records]
    if not ran:
        return None
    for attack in [spec.attack] if spec.attack else HEADLINE:
        ratios = [ratio for a, ratio in sorted(ran[0]) if a == attack]
        if ratios and all(any(a == attack for a, _ in s) for s in ran):
            return attack, ratios[0]
    return None


def curve(records: list, attack: str, mask_ratio: float | None = None) -> list:
    """[(record, metrics)] for `attack`, at `mask_ratio` (or at each point's only ratio when None)."""
    out = []
    for rec in records:
        rows = [r for r in rec["results"] if r["attack"] == attack
                and (mask_ratio is None or abs(r["mask_ratio"] - mask_ratio) < 1e-9)]
        if rows:
            out.append((rec, rows[0]))
    return out


def curve_rows(records: list, attack: str, mask_ratio: float | None = None) -> list[dict]:
    """Per point, for a table or a chart: value, label, AUC, TPR at 1% FPR with its interval (None when not
    measurable), balanced accuracy at the shadow's threshold, and the point's record."""
    rows = []
    for rec, m in curve(records, attack, mask_ratio):
        tpr = m["tpr_at"].get("0.01")
        rows.append(dict(value=rec["value"], label=rec["label"], auc=m["auc"], tpr=tpr and tpr["tpr"],
                         tpr_lo=tpr and tpr["lo"], tpr_hi=tpr and tpr["hi"],
                         balanced_accuracy=m["balanced_accuracy"], mask_ratio=m["mask_ratio"], record=rec))
    return rows


def finding(spec, records: list) -> str:
    """One sentence: how the headline attack's metric (spec.metric) moves across the points."""
    lead = headline(spec, records)
    if len(records) == 1 and records[0]["results"]:
        return _attacks_compared(records[0])
    if lead is None or len(records) < 2:
        return "Not enough points to compare."
    attack, ratio = lead
    rows = curve(records, attack, None if spec.name == "attack-mask-ratio" else ratio)
    values = [m[spec.metric] for _, m in rows]
    what = f"{make_attack(attack).label}: {METRICS[spec.metric]}"
    if spec.scale == "category":
        parts = [f"{rec['label']} {v:.3f}" for (rec, _), v in zip(rows[1:], values[1:])]
        return f"{what} {values[0]:.3f} with {rows[0][0]['label']}; " + ", ".join(parts) + "."
    if max(values) - min(values) < 0.02:
        return f"{what} changes little with {spec.variable_label} ({min(values):.3f} to {max(values):.3f})."
    trend = np.corrcoef(np.arange(len(values)), values)[0, 1]
    word = "rises" if trend > 0.5 else "falls" if trend < -0.5 else "moves without a steady trend"
    best = rows[int(np.argmax(values))][0]["label"]
    return (f"{what} {word} with {spec.variable_label}: {values[0]:.3f} at {rows[0][0]['label']}, "
            f"{values[-1]:.3f} at {rows[-1][0]['label']} (highest at {best}).")


def _attacks_compared(record: dict) -> str:
    """One point's attacks side by side: AUC, and TPR at the lowest FPR of STUDY_FPRS its non-members measure."""
    tprs = record["results"][0]["tpr_at"]
    fpr = next((f"{f:g}" for f in sorted(STUDY_FPRS) if tprs[f"{f:g}"] is not None), None)
    parts = [f"{r['label']} {r['auc']:.3f}" + (f" / {r['tpr_at'][fpr]['tpr']:.3f}" if fpr else "")
             for r in record["results"]]
    return f"{record['label']}: AUC{f' / TPR at {float(fpr):.1%} FPR' if fpr else ''} " + ", ".join(parts) + "."


def _tpr_text(m: dict, fpr: str = "0.01") -> str:
    t = m["tpr_at"].get(fpr)
    return "—" if t is None else f"{t['tpr']:.3f} [{t['lo']:.3f}, {t['hi']:.3f}]"


def attacks_table(record: dict) -> str:
    """A Markdown table of one point's attacks, a row per attack and mask ratio: AUC, TPR at 1% and at 0.1%
    FPR [95% Clopper-Pearson interval] ("—": not measurable) and the balanced accuracy at the shadow's
    threshold ("—": no threshold, as for the online attacks, whose references leave the shadow's images out)."""
    lines = ["| attack | mask ratio | AUC | TPR @ 1% FPR | TPR @ 0.1% FPR | balanced accuracy |",
             "| --- | --- | --- | --- | --- | --- |"]
    for r in record["results"]:
        accuracy = "—" if r["balanced_accuracy"] is None else f"{r['balanced_accuracy']:.3f}"
        lines.append(f"| {r['label']} | {r['mask_ratio']:g} | {r['auc']:.3f} | {_tpr_text(r)} | "
                     f"{_tpr_text(r, '0.001')} | {accuracy} |")
    return "\n".join(lines)


def study_table(records: list) -> str:
    """A Markdown table, a row per point and mask ratio: each attack's AUC and TPR at 1% FPR [95% CI], the
    paper attack's balanced accuracy at the shadow's threshold, and the utility where it was measured."""
    attacks = list(dict.fromkeys(r["attack"] for rec in records for r in rec["results"]))
    utility = any(rec.get("utility") for rec in records)
    head = ["point", "mask ratio", *[f"{a} AUC | {a} TPR @ 1% FPR" for a in attacks], "paper balanced accuracy"]
    head += ["linear probe | held-out loss"] if utility else []
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * sum(h.count("|") + 1 for h in head)]
    for rec in records:
        for ratio in sorted({r["mask_ratio"] for r in rec["results"]}):
            by = {r["attack"]: r for r in rec["results"] if r["mask_ratio"] == ratio}
            cells = [rec["label"], f"{ratio:g}"]
            for a in attacks:
                cells += [f"{by[a]['auc']:.3f}", _tpr_text(by[a])] if a in by else ["", ""]
            paper = by.get("paper", {}).get("balanced_accuracy")
            cells.append("" if paper is None else f"{paper:.3f}")
            if utility:
                u = rec.get("utility") or {}
                cells += [f"{u['probe_accuracy']:.3f}", f"{u['reconstruction_loss']:.4f}"] if u else ["", ""]
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_study(root: Path, spec, records: list, *, quick: bool, command: str) -> list[Path]:
    """study.json (the spec, every finished point, the finding) and study.csv, atomically."""
    doc = dict(study=spec.to_dict(), quick=quick, command=command, mimmia_version=__version__,
               finding=finding(spec, records), headline=headline(spec, records), points=records)
    root = Path(root)
    return [atomic_write_text(root / "study.json", json.dumps(jsonable(doc), indent=1)),
            atomic_write_text(root / "study.csv", _csv(records))]


def list_studies(folder) -> dict:
    """name -> study.json path, for every study folder directly under `folder` (sorted by name)."""
    folder = Path(folder)
    return {p.parent.name: p for p in sorted(folder.glob("*/study.json"))} if folder.is_dir() else {}


def load_study(path) -> dict:
    """A study.json (or the folder holding it), checked to hold points with results."""
    path = Path(path)
    path = path / "study.json" if path.is_dir() else path
    require_exists(path, "study results")
    try:
        doc = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{path}: not a study.json ({e})") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("points"), list) or "study" not in doc:
        raise ValueError(f"{path}: not a study.json written by `mimmia study` (no study or points)")
    doc["root"] = str(path.parent)
    return doc


def point_scores(doc: dict, record: dict, attack: str, mask_ratio: float) -> tuple[np.ndarray, np.ndarray]:
    """A point's (member scores, non-member scores) for `attack` at `mask_ratio`, from its .npz."""
    with np.load(Path(doc["root"]) / record["scores_file"]) as arrays:
        key = f"{attack}@{mask_ratio:g}"
        if f"{key}/members" not in arrays:
            raise ValueError(f"point {record['label']} has no scores for {attack} at mask ratio {mask_ratio:g}")
        return arrays[f"{key}/members"], arrays[f"{key}/nonmembers"]
