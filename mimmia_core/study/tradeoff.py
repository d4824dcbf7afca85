"""The privacy-utility trade-off of a defenses study: per point how much leaks (TPR at 1% FPR, AUC) and
what the encoder is still worth (linear-probe accuracy, held-out loss), the Pareto front, and a sentence."""
from .results import curve_rows


def tradeoff_rows(records: list, attack: str, mask_ratio: float | None = None) -> list[dict]:
    """curve_rows with each point's utility: probe_accuracy, heldout_loss (None when not measured), and
    `pareto`: True where no other point leaks less (TPR at 1% FPR, then AUC) and keeps more probe accuracy."""
    rows = []
    for row in curve_rows(records, attack, mask_ratio):
        utility = row["record"].get("utility") or {}
        rows.append({**row, "probe_accuracy": utility.get("probe_accuracy"),
                     "heldout_loss": utility.get("reconstruction_loss")})
    measured = [r for r in rows if r["probe_accuracy"] is not None]
    for r in rows:
        r["pareto"] = r in measured and not any(_dominates(o, r) for o in measured if o is not r)
    return rows


def _leak(row) -> tuple:
    return (row["tpr"] if row["tpr"] is not None else row["auc"], row["auc"])


def _dominates(a: dict, b: dict) -> bool:
    """a leaks no more and is no less useful than b, and is better in one of them."""
    no_worse = _leak(a) <= _leak(b) and a["probe_accuracy"] >= b["probe_accuracy"]
    return no_worse and (_leak(a) < _leak(b) or a["probe_accuracy"] > b["probe_accuracy"])


def tradeoff_sentence(rows: list, attack_label: str) -> str:
    """For a teacher: which defense cuts the leak most, and what it costs, against the undefended point
    (the first)."""
    measured = [r for r in rows if r["probe_accuracy"] is not None and r["tpr"] is not None]
    if len(measured) < 2:
        return "Not enough measured points to compare defenses."
    base, others = measured[0], measured[1:]
    best = min(others, key=_leak)
    cost = base["probe_accuracy"] - best["probe_accuracy"]
    cost_text = (f"costs {cost:.1%} of linear-probe accuracy ({base['probe_accuracy']:.1%} to "
                 f"{best['probe_accuracy']:.1%})" if cost > 0 else
                 f"costs no linear-probe accuracy ({base['probe_accuracy']:.1%} to {best['probe_accuracy']:.1%})")
    return (f"Undefended ({base['label']}), {attack_label} finds {base['tpr']:.1%} of the members at 1% FPR "
            f"(AUC {base['auc']:.3f}). The strongest defense here, {best['label']}, brings that to {best['tpr']:.1%} "
            f"(AUC {best['auc']:.3f}) and {cost_text}.")


__all__ = ["tradeoff_rows", "tradeoff_sentence"]
