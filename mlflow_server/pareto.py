"""Pareto front of the objectives over eligible trials (mlflow_server.selection): plot, table,
MLflow artifacts."""

from __future__ import annotations

import json
import math
import tempfile
from pathlib import Path
from typing import Any

import plotly.graph_objects as go
from mlflow import MlflowClient

from mlflow_server.selection import check_objectives, eligible, pareto_front
from mlflow_server.records import TrialRecord


def pareto_figure(
    records: list[TrialRecord], objectives: dict[str, str], front: list[TrialRecord]
) -> go.Figure:
    """Scatter of the second objective (x) against the first (y), the front (some of `records`)
    highlighted.

    With one objective the primary one is plotted per trial, in record order. The hover text
    of each point lists its trial id, every objective and every config item.
    """
    check_objectives(objectives)
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

    position = {id(r): i for i, r in enumerate(records)}
    on_front = [position[id(m)] for m in front]
    dominated = [i for i in range(len(records)) if i not in on_front]
    along_x = sorted(on_front, key=lambda i: xs[i]) if x_key else on_front
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


def pareto_table(front: list[TrialRecord], objectives: dict[str, str]) -> str:
    """Fixed-width table of the front in its order (pareto_front ranks it best first).

    Besides the trial id and objectives it shows only the config keys whose values differ
    between front members.
    """
    check_objectives(objectives)
    keys = list(objectives)
    varying = sorted(
        key
        for key in set().union(*(m.config for m in front))
        if len({json.dumps(m.config.get(key), sort_keys=True, default=str) for m in front}) > 1
    )
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
    """Log pareto.html (the eligible trials, front highlighted) and pareto.json on the parent run;
    return the front, best first."""
    candidates = eligible(records, objectives)
    members = pareto_front(candidates, objectives)
    figure = pareto_figure(candidates, objectives, members)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp, "pareto.html")
        figure.write_html(path, include_plotlyjs=True)  # plotly.js embedded: works offline
        client.log_artifact(parent_run_id, str(path))
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


def _hover(record: TrialRecord, keys: list[str]) -> str:
    lines = [f"<b>{record.trial_id}</b>"]
    lines += [f"{k} = {_cell(record.metrics.get(k))}" for k in keys]
    lines += [f"{k} = {_cell(v)}" for k, v in sorted(record.config.items())]
    return "<br>".join(lines)
