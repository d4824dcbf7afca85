"""Plotly figures for the dashboard. Histograms are numpy bins drawn as bars, so
a figure carries a few dozen numbers, never every score."""
import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from app_pages.views import histogram, shares

LAYOUT = dict(margin=dict(l=10, r=10, t=40, b=10), template="plotly_white")
LEGEND_BELOW = dict(orientation="h", yanchor="top", y=-0.22, x=0)
PALETTE = ("#d81b60", "#1e88e5", "#43a047", "#fb8c00", "#8e24aa", "#6d4c41")


def _wrap(title: str, width: int = 40) -> str:
    """A long axis title on two lines, broken before its parenthesis, so a narrow column does not cut it."""
    head, sep, tail = title.rpartition(" (")
    return f"{head}<br>({tail}" if sep and len(title) > width else title


def hist_figure(groups: dict, x_title: str, lines=(), markers=(), bins: int = 40, height: int = 380,
                title: str | None = None) -> go.Figure:
    """Overlaid histograms, each group as its share of images per bin.

    groups: name -> (values, colour); lines: (x, label, colour[, dash]) vertical lines, dashed by default;
    markers: (x, label, colour) triangles on the axis (one image's score).
    """
    edges, counts = histogram({name: v for name, (v, _) in groups.items()}, bins,
                              extra=[x for x, *_ in (*lines, *markers)])
    centers, widths = (edges[:-1] + edges[1:]) / 2, np.diff(edges)
    fig = go.Figure()
    for name, (values, color) in groups.items():
        c = counts[name]
        fig.add_bar(x=centers, y=shares(c), width=widths, name=f"{name} (n={int(c.sum())})", marker_color=color,
                    opacity=0.55, customdata=c,
                    hovertemplate="%{x:.4g}: %{customdata} images (%{y:.1%})<extra>" + name + "</extra>")
    top = max(shares(c).max() for c in counts.values()) * 1.08
    for x, label, color, *dash in lines:  # as traces, so they are named in the legend
        if not np.isfinite(x):
            continue
        fig.add_scatter(x=[x, x], y=[0, top], mode="lines", line=dict(color=color, width=2, dash=(*dash, "dash")[0]),
                        name=f"{label} ({x:.4g})", hoverinfo="name")
    for x, label, color in markers:
        fig.add_scatter(x=[x], y=[0], mode="markers", marker=dict(symbol="triangle-up", size=18, color=color,
                                                                 line=dict(color="black", width=1)),
                        name=f"{label} ({x:.4g})", cliponaxis=False)
    wrapped = _wrap(x_title)
    legend = {**LEGEND_BELOW, "y": LEGEND_BELOW["y"] - 0.12} if wrapped != x_title else LEGEND_BELOW
    fig.update_layout(barmode="overlay", height=height, bargap=0, xaxis_title=wrapped, legend=legend,
                      yaxis=dict(title="share of the group", tickformat=".0%", range=[0, top]),
                      **({"title": dict(text=title, x=0, xanchor="left")} if title else {}), **LAYOUT)
    return fig


def _fpr_marks(fig: go.Figure, floor: float, n_nonmembers: int) -> None:
    """On the log-log panel (col 2): 1% and 0.1% FPR and the smallest measurable FPR as labelled vertical
    lines, the FPRs below that shaded (a TPR there rests on zero false positives)."""
    smallest = 1.0 / max(n_nonmembers, 1)
    fig.add_scatter(x=[floor, smallest, smallest, floor], y=[floor, floor, 1, 1], fill="toself", mode="none",
                    fillcolor="rgba(158,158,158,0.18)", showlegend=False, hoverinfo="text",
                    text=f"FPR below 1/{n_nonmembers}: not measurable", row=1, col=2)
    for x, text, color in ((0.01, "1% FPR", "#616161"), (0.001, "0.1% FPR", "#616161"),
                           (smallest, f"smallest measurable: 1/{n_nonmembers}", "#000000")):
        if floor <= x <= 1:
            fig.add_scatter(x=[x, x], y=[floor, 1], mode="lines", line=dict(color=color, width=1, dash="dot"),
                            showlegend=False, hoverinfo="text", hovertext=f"{text} ({x:.3g})", row=1, col=2)
            fig.add_annotation(x=np.log10(x), y=0.5, xref="x2", yref="y2 domain", text=text, textangle=-90,
                               showarrow=False, xshift=8 if x < 1.5 * floor else -8,  # not over the axis
                               font=dict(size=11, color=color))


def roc_figure(curves: dict, n_nonmembers: int, point=None, shadow_point=None, height: int = 560) -> go.Figure:
    """ROC curves (name -> RocCurve) on linear axes and on log-log axes side by side, one legend for both
    (clicking an entry hides it in both); point / shadow_point: (fpr, tpr, label) markers."""
    fig = make_subplots(rows=1, cols=2, horizontal_spacing=0.1,
                        subplot_titles=("linear axes", "log-log axes: the low-FPR regime"))
    floor = 0.5 / max(n_nonmembers, 1)
    for col, log in ((1, False), (2, True)):
        diag = np.logspace(np.log10(floor), 0, 50) if log else np.array([0.0, 1.0])
        fig.add_scatter(x=diag, y=diag, mode="lines", line=dict(color="#9e9e9e", dash="dot"), name="chance",
                        legendgroup="chance", showlegend=not log, row=1, col=col)
        for i, (name, c) in enumerate(curves.items()):
            fpr, tpr = np.asarray(c.fpr), np.asarray(c.tpr)
            if log:  # zero rates cannot be drawn on log axes
                keep = (fpr > 0) & (tpr > 0)
                fpr, tpr = fpr[keep], tpr[keep]
            fig.add_scatter(x=fpr, y=tpr, mode="lines", name=f"{name} (AUC {c.auc:.3f})", legendgroup=name,
                            line=dict(color=PALETTE[i % len(PALETTE)], width=2, shape="hv"), showlegend=not log,
                            row=1, col=col)
        for pt, symbol, color in ((shadow_point, "diamond", "#424242"), (point, "circle", "#000000")):
            if pt is not None:
                x, y = (max(pt[0], floor), max(pt[1], floor)) if log else pt[:2]
                fig.add_scatter(x=[x], y=[y], mode="markers", name=pt[2], legendgroup=pt[2], showlegend=not log,
                                marker=dict(symbol=symbol, size=13, color=color, line=dict(color="white", width=1)),
                                row=1, col=col)
    _fpr_marks(fig, floor, n_nonmembers)
    decades = 10.0 ** np.arange(np.floor(np.log10(floor)), 1)
    log_axis = dict(type="log", range=[np.log10(floor), 0], tickvals=decades, ticktext=[f"{d:g}" for d in decades])
    fig.update_xaxes(title="false positive rate", range=[0, 1], row=1, col=1)
    fig.update_yaxes(title="true positive rate", range=[0, 1], row=1, col=1)
    fig.update_xaxes(title="false positive rate", **log_axis, row=1, col=2)
    fig.update_yaxes(title="true positive rate", **log_axis, row=1, col=2)
    fig.update_layout(height=height, legend=LEGEND_BELOW, **LAYOUT)
    return fig


def sweep_figure(rows: list, metric: str, label: str, current: float | None = None, names: dict | None = None,
                 height: int = 360) -> go.Figure:
    """One line per attack of `metric` against mask ratio (rows of attacks.sweep); each attack's best
    ratio (the sweep's `best`) starred, `current` marked. Lines are nudged apart so intervals stay visible."""
    fig = go.Figure()
    attacks = list(dict.fromkeys(r["attack"] for r in rows))
    for i, attack in enumerate(attacks):
        mine = sorted((r for r in rows if r["attack"] == attack and r[metric] is not None),  # None: not measurable
                      key=lambda r: r["mask_ratio"])
        if not mine:
            continue
        color, nudge = PALETTE[i % len(PALETTE)], 0.006 * (i - (len(attacks) - 1) / 2)
        x = [r["mask_ratio"] + nudge for r in mine]
        lo, hi = f"{metric}_lo", f"{metric}_hi"
        error = dict(type="data", symmetric=False, array=[r[hi] - r[metric] for r in mine],
                     arrayminus=[r[metric] - r[lo] for r in mine], thickness=1) if lo in mine[0] else None
        fig.add_scatter(x=x, y=[r[metric] for r in mine], mode="lines+markers", name=(names or {}).get(attack, attack),
                        line=dict(color=color), error_y=error)
        best = [(xi, r) for xi, r in zip(x, mine) if r["best"]]
        fig.add_scatter(x=[xi for xi, _ in best], y=[r[metric] for _, r in best], mode="markers", showlegend=False,
                        marker=dict(symbol="star", size=16, color=color, line=dict(color="black", width=1)),
                        hovertext=[f"best ratio for {attack}: {r['mask_ratio']:g}" for _, r in best], hoverinfo="text")
    if current is not None:
        fig.add_vline(x=current, line=dict(color="#424242", dash="dash"))
    fig.update_layout(height=height, xaxis_title="mask ratio at attack time", yaxis_title=label, title=label,
                      legend=LEGEND_BELOW, **LAYOUT)
    return fig


def heatmap_figure(grid: np.ndarray, title: str, zmax: float | None = None, height: int = 260) -> go.Figure:
    """A patch grid (g, g); NaN cells (visible patches) stay blank."""
    fig = go.Figure(go.Heatmap(z=grid, colorscale="Viridis", zmin=0, zmax=zmax, hoverongaps=False,
                               colorbar=dict(thickness=10),
                               hovertemplate="patch row %{y}, col %{x}: %{z:.4g}<extra></extra>"))
    fig.update_layout(height=height, title=title, margin=dict(l=10, r=10, t=40, b=10), template="plotly_white",
                      yaxis=dict(autorange="reversed", scaleanchor="x", showticklabels=False),
                      xaxis=dict(showticklabels=False))
    return fig


def study_figure(rows: list, metric: str, y_title: str, x_title: str, scale: str, selected=None,
                 height: int = 360) -> go.Figure:
    """One study's curve: `metric` per point against its variable, with 95% intervals where the rows have
    them (`<metric>_lo`, `_hi`); log x when the variable spans decades, categories when it is no number.
    The selected point (a label) is ringed."""
    xs = [r["label"] if scale == "category" else r["value"] for r in rows]
    ys = [r[metric] for r in rows]
    shown = [r for r in rows if r[metric] is not None]  # None: the point has no such number (no threshold ...)
    has_ci = bool(shown) and all(r.get(f"{metric}_lo") is not None for r in shown)
    error = dict(type="data", symmetric=False, array=[(r[f"{metric}_hi"] or 0) - (r[metric] or 0) for r in rows],
                 arrayminus=[(r[metric] or 0) - (r[f"{metric}_lo"] or 0) for r in rows]) if has_ci else None
    fig = go.Figure()
    fig.add_scatter(x=xs, y=ys, mode="lines+markers", error_y=error, marker=dict(size=9, color=PALETTE[0]),
                    line=dict(color=PALETTE[0]), name=y_title, text=[r["label"] for r in rows],
                    hovertemplate="%{text}: %{y:.3f}<extra></extra>")
    for x, y, r in zip(xs, ys, rows):
        if r["label"] == selected and y is not None:
            fig.add_scatter(x=[x], y=[y], mode="markers", marker=dict(size=18, color="rgba(0,0,0,0)",
                                                                     line=dict(color="black", width=2)),
                            name="selected point", hoverinfo="skip")
    xaxis = dict(title=_wrap(x_title), type={"log": "log", "category": "category"}.get(scale, "linear"))
    fig.update_layout(height=height, xaxis=xaxis, yaxis=dict(title=_wrap(y_title), rangemode="tozero"),
                      showlegend=False, **LAYOUT)
    return fig


def tradeoff_figure(rows: list, x_title: str, selected=None, height: int = 440) -> go.Figure:
    """Privacy against utility: TPR at 1% FPR (log x; AUC where not measurable is left out) against
    linear-probe accuracy, a marker per point, the Pareto front as a line, the selected point ringed."""
    shown = [r for r in rows if r["tpr"] is not None and r["probe_accuracy"] is not None]
    fig = go.Figure()
    front = sorted((r for r in shown if r["pareto"]), key=lambda r: r["tpr"])
    if front:
        fig.add_scatter(x=[max(r["tpr"], 1e-3) for r in front], y=[r["probe_accuracy"] for r in front],
                        mode="lines", line=dict(color="#9e9e9e", dash="dot"), name="Pareto front", hoverinfo="skip")
    fig.add_scatter(x=[max(r["tpr"], 1e-3) for r in shown], y=[r["probe_accuracy"] for r in shown],
                    mode="markers+text", text=[r["label"] for r in shown], textposition="top center",
                    marker=dict(size=11, color=[PALETTE[0] if r["pareto"] else PALETTE[1] for r in shown]),
                    name="defense", customdata=[[r["tpr"], r["auc"]] for r in shown],
                    hovertemplate="%{text}: TPR %{customdata[0]:.3f}, AUC %{customdata[1]:.3f}, "
                                  "probe %{y:.1%}<extra></extra>")
    for r in shown:
        if r["label"] == selected:
            fig.add_scatter(x=[max(r["tpr"], 1e-3)], y=[r["probe_accuracy"]], mode="markers", hoverinfo="skip",
                            marker=dict(size=22, color="rgba(0,0,0,0)", line=dict(color="black", width=2)),
                            name="selected")
    fig.update_layout(height=height, showlegend=False,
                      xaxis=dict(title=_wrap(x_title), type="log"),
                      yaxis=dict(title="linear-probe accuracy (higher = more useful)", tickformat=".0%"), **LAYOUT)
    return fig
