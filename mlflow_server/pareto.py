"""Pareto front of the objectives over finished trials: indices, plot, table, MLflow artifacts."""

from __future__ import annotations

import json
import math
import numbers
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import plotly.graph_objects as go
from mlflow import MlflowClient

from mlflow_server.tracking import TrialRecord, finished

DIRECTIONS = ("max", "min")


def pareto_front(rows: list[dict[str, float]], objectives: dict[str, str]) -> list[int]:
    """Indices of the rows no other row dominates; rows lacking a finite objective are out.

    Identical points do not dominate each other, so all copies of a front point are kept.
    """
    _check(objectives)
    keys = list(objectives)
    eligible = [
        i
        for i, row in enumerate(rows)
        if all(isinstance(row.get(k), numbers.Real) and math.isfinite(row[k]) for k in keys)
    ]
    if not eligible:
        return []
    sign = np.array([1.0 if objectives[k] == "max" else -1.0 for k in keys])
    points = np.array([[rows[i][k] for k in keys] for i in eligible]) * sign  # all maximised
    at_least = (points[None, :, :] >= points[:, None, :]).all(axis=2)  # [i, j]: j >= i
    better = (points[None, :, :] > points[:, None, :]).any(axis=2)  # [i, j]: j > i somewhere
    dominated = (at_least & better).any(axis=1)
    return [eligible[i] for i in np.flatnonzero(~dominated)]


def pareto_figure(
    records: list[TrialRecord], objectives: dict[str, str], front: list[int]
) -> go.Figure:
    """Scatter of the second objective (x) against the first (y), front highlighted.

    With one objective the primary one is plotted per trial, in record order. The hover text
    of each point lists its trial id, every objective and every config item.
    """
    _check(objectives)
    keys = list(objectives)
    y_key = keys[0]
    x_key = keys[1] if len(keys) > 1 else None
    xs = [r.metrics.get(x_key) if x_key else r.trial_id for r in records]
    ys = [r.metrics.get(y_key) for r in records]
    hover = [_hover(r, keys) for r in records]

    def trace(indices: list[int], name: str, color: str, size: int, mode: str) -> go.Scatter:
        return go.Scatter(
            x=[xs[i] for i in indices],
            y=[ys[i] for i in indices],
            hovertext=[hover[i] for i in indices],
            hoverinfo="text",
            name=name,
            mode=mode,
            marker={"color": color, "size": size},
            line={"color": color},
        )

    on_front = set(front)
    dominated = [i for i in range(len(records)) if i not in on_front]
    along_x = sorted(front, key=lambda i: xs[i]) if x_key else front
    figure = go.Figure(
        [
            trace(dominated, "dominated", "lightgrey", 8, "markers"),
            trace(along_x, "Pareto front", "crimson", 11, "lines+markers" if x_key else "markers"),
        ]
    )
    figure.update_layout(
        title=f"Pareto front: {len(front)} of {len(records)} trials",
        xaxis_title=f"{x_key} ({objectives[x_key]})" if x_key else "trial (start order)",
        yaxis_title=f"{y_key} ({objectives[y_key]})",
        template="plotly_white",
    )
    return figure


def pareto_table(records: list[TrialRecord], objectives: dict[str, str], front: list[int]) -> str:
    """Fixed-width table of the front, best primary objective first.

    Besides the trial id and objectives it shows only the config keys whose values differ
    between front members.
    """
    _check(objectives)
    keys = list(objectives)
    sign = -1.0 if objectives[keys[0]] == "max" else 1.0
    members = sorted((records[i] for i in front), key=lambda r: sign * r.metrics[keys[0]])
    varying = sorted(
        key
        for key in set().union(*(m.config for m in members))
        if len({json.dumps(m.config.get(key), sort_keys=True, default=str) for m in members}) > 1
    )
    header = ["trial_id", *keys, *varying]
    rows = [
        [m.trial_id, *(_cell(m.metrics.get(k)) for k in keys)]
        + [_cell(m.config.get(k)) for k in varying]
        for m in members
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
    """Log pareto.html and pareto.json on the parent run; return the front's FINISHED records."""
    eligible = finished(records)
    front = pareto_front([r.metrics for r in eligible], objectives)
    figure = pareto_figure(eligible, objectives, front)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp, "pareto.html")
        figure.write_html(path, include_plotlyjs=True)  # plotly.js embedded: works offline
        client.log_artifact(parent_run_id, str(path))
    members = [eligible[i] for i in front]
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


def _check(objectives: dict[str, str]) -> None:
    if not objectives:
        raise ValueError("No objectives were given; pass at least one {metric: 'max'|'min'}.")
    for key, direction in objectives.items():
        if direction not in DIRECTIONS:
            raise ValueError(
                f"Objective {key!r} has direction {direction!r}; use one of {DIRECTIONS}."
            )


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _hover(record: TrialRecord, keys: list[str]) -> str:
    lines = [f"<b>{record.trial_id}</b>"]
    lines += [f"{k} = {_cell(record.metrics.get(k))}" for k in keys]
    lines += [f"{k} = {_cell(v)}" for k, v in sorted(record.config.items())]
    return "<br>".join(lines)
