"""Pareto front of the objectives over eligible trials (mlflow_server.selection): plot (HTML and PNG),
table, learning curves of the best trials, MLflow artifacts of the parent run."""

from __future__ import annotations

import math
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import plotly.graph_objects as go
from matplotlib.figure import Figure
from mlflow import MlflowClient

from mlflow_server.selection import check_objectives, eligible, pareto_front
from mlflow_server.records import TrialRecord, varying_keys
from trainables.registry import metric_words

PNG_DPI = 100
TOP_CURVES = 5  # trials in learning_curves.png


def axis_title(key: str, direction: str) -> str:
    """'val/f1_macro', 'max' -> 'Validation macro F1 (0-1), higher is better' (trainables.registry.metric_words)."""
    words = metric_words(key)
    return f"{words[:1].upper()}{words[1:]}, {'higher' if direction == 'max' else 'lower'} is better"


def trial_label(record: TrialRecord) -> str:
    """A trial's short label on the plots: its number in Ray's id ('6b7e5_00003' -> '3'), else the id."""
    number = record.trial_id.rpartition("_")[2]
    return str(int(number)) if number.isdigit() else record.trial_id


@dataclass
class ParetoPoints:
    """What both drawings of the Pareto plot show: each record's position and label, the front along x."""

    x_title: str
    y_title: str
    xs: list
    ys: list
    labels: list[str]
    front: list[int]  # positions in records, along x
    dominated: list[int]
    title: str


def pareto_points(records: list[TrialRecord], objectives: dict[str, str], front: list[TrialRecord]) -> ParetoPoints:
    """The second objective (x) against the first (y); with one objective the first per trial number."""
    check_objectives(objectives)
    keys = list(objectives)
    y_key, x_key = keys[0], keys[1] if len(keys) > 1 else None
    labels = [trial_label(r) for r in records]
    xs = [r.metrics.get(x_key) for r in records] if x_key else list(range(len(records)))
    ys = [r.metrics.get(y_key) for r in records]
    position = {id(r): i for i, r in enumerate(records)}
    on_front = [position[id(m)] for m in front]
    return ParetoPoints(
        x_title=axis_title(x_key, objectives[x_key]) if x_key else "Trial (start order)",
        y_title=axis_title(y_key, objectives[y_key]),
        xs=xs, ys=ys, labels=labels,
        front=sorted(on_front, key=lambda i: xs[i]),
        dominated=[i for i in range(len(records)) if i not in on_front],
        title=f"Pareto front: {len(front)} of {len(records)} finished trials (labels: trial numbers)",
    )


def pareto_figure(
    records: list[TrialRecord], objectives: dict[str, str], front: list[TrialRecord]
) -> go.Figure:
    """Interactive scatter of pareto_points, the front (some of `records`) highlighted and every point
    labelled; the hover text of a point lists its trial id, the objectives and the searched config keys."""
    points = pareto_points(records, objectives, front)
    searched = varying_keys(records)
    hover = [_hover(r, list(objectives), searched) for r in records]

    def trace(indices: list[int], name: str, color: str, size: int, line: bool) -> go.Scatter:
        return go.Scatter(
            x=[points.xs[i] for i in indices],
            y=[points.ys[i] for i in indices],
            text=[points.labels[i] for i in indices],
            textposition="top center",
            hovertext=[hover[i] for i in indices],
            hoverinfo="text",
            name=name,
            mode="lines+markers+text" if line else "markers+text",
            marker={"color": color, "size": size},
            line={"color": color},
        )

    figure = go.Figure(
        [
            trace(points.dominated, "Dominated trials", "darkgrey", 8, False),
            trace(points.front, "Pareto front", "crimson", 11, len(objectives) > 1),
        ]
    )
    figure.update_layout(
        title=points.title,
        xaxis_title=points.x_title,
        yaxis_title=points.y_title,
        template="plotly_white",
        hoverlabel={"font_size": 11},
    )
    return figure


def pareto_png(points: ParetoPoints, path: Path) -> None:
    """The same plot as a PNG (matplotlib)."""
    figure = Figure(figsize=(7.5, 5), layout="constrained")
    ax = figure.subplots()
    for indices, name, color, size in ((points.dominated, "Dominated trials", "darkgrey", 30),
                                       (points.front, "Pareto front", "crimson", 50)):
        xs, ys = [points.xs[i] for i in indices], [points.ys[i] for i in indices]
        ax.scatter(xs, ys, s=size, color=color, label=name, zorder=2)
        if name == "Pareto front" and len(indices) > 1:
            ax.plot(xs, ys, color=color, linewidth=1, zorder=1)
        for i in indices:
            ax.annotate(points.labels[i], (points.xs[i], points.ys[i]), textcoords="offset points", xytext=(4, 4),
                        fontsize="small")
    ax.set(xlabel=points.x_title, ylabel=points.y_title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    figure.suptitle(points.title)
    figure.savefig(path, dpi=PNG_DPI, metadata={"Title": points.title})


def learning_curves_png(client: MlflowClient, records: list[TrialRecord], objectives: dict[str, str],
                        path: Path) -> None:
    """The primary objective per epoch (MLflow metric history) of the TOP_CURVES trials best on it."""
    key, direction = next(iter(objectives.items()))
    top = sorted(records, key=lambda r: r.metrics[key], reverse=direction == "max")[:TOP_CURVES]
    title = f"Learning curves of the {len(top)} best trials by {metric_words(key)}"
    figure = Figure(figsize=(7.5, 4.5), layout="constrained")
    ax = figure.subplots()
    for r in top:
        if history := sorted((m.step, m.value) for m in client.get_metric_history(r.run_id, key)):
            ax.plot(*zip(*history), marker="o", markersize=3, label=f"trial {trial_label(r)} (last {_cell(r.metrics[key])})")
    ax.set(xlabel="Epoch", ylabel=axis_title(key, direction))
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.grid(alpha=0.3)
    if ax.lines:
        ax.legend(fontsize="small")
    figure.suptitle(title)
    figure.savefig(path, dpi=PNG_DPI, metadata={"Title": title})


def pareto_table(front: list[TrialRecord], objectives: dict[str, str]) -> str:
    """Fixed-width table of the front in its order (pareto_front ranks it best first).

    Besides the trial id and objectives it shows only the config keys whose values differ
    between front members.
    """
    check_objectives(objectives)
    keys = list(objectives)
    varying = varying_keys(front)
    header = ["trial_id", *keys, *varying]
    rows = [
        [m.trial_id, *(_cell(m.metrics.get(k)) for k in keys)]
        + [_cell(m.config.get(k)) for k in varying]
        for m in front
    ]
    widths = [max(len(row[c]) for row in [header, *rows]) for c in range(len(header))]
    lines = [header, ["-" * w for w in widths], *rows]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(line, widths)).rstrip() for line in lines)


def log_pareto(
    client: MlflowClient,
    parent_run_id: str,
    records: list[TrialRecord],
    objectives: dict[str, str],
) -> list[TrialRecord]:
    """Log pareto.html and pareto.png (the eligible trials, front highlighted), learning_curves.png (the
    best eligible trials) and pareto.json on the parent run; return the front, best first."""
    candidates = eligible(records, objectives)
    members = pareto_front(candidates, objectives)
    with tempfile.TemporaryDirectory() as tmp:
        pareto_figure(candidates, objectives, members).write_html(Path(tmp, "pareto.html"), include_plotlyjs=True)
        pareto_png(pareto_points(candidates, objectives, members), Path(tmp, "pareto.png"))
        if candidates:
            learning_curves_png(client, candidates, objectives, Path(tmp, "learning_curves.png"))
        client.log_artifacts(parent_run_id, tmp)  # plotly.js embedded in the HTML: it works offline
    summary = {
        "objectives": objectives,
        "front": [
            {
                "trial_id": m.trial_id,
                "run_id": m.run_id,
                "metrics": {k: v if math.isfinite(v) else None for k, v in m.metrics.items()},
                "config": m.config,
            }
            for m in members
        ],
    }
    client.log_dict(parent_run_id, summary, "pareto.json")
    return members


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _hover(record: TrialRecord, keys: list[str], searched: list[str]) -> str:
    lines = [f"<b>{record.trial_id}</b>"]
    lines += [f"{k} = {_cell(record.metrics.get(k))}" for k in keys]
    lines += [f"{k} = {_cell(record.config.get(k))}" for k in searched]
    return "<br>".join(lines)
