"""Charts described once as data and drawn twice: interactive HTML (plotly) and PNG for papers (matplotlib)."""
from __future__ import annotations

import os
from dataclasses import dataclass, field

FACTOR_WORDS = {
    "data/fraction": "fraction of the training split used", "data/shots_per_class": "labelled images per class",
    "model/frozen_layers": "frozen layer groups (count)", "loss/cls_weight": "classification loss weight (0-1)",
    "loss/seg": "segmentation loss", "model/backbone": "backbone", "model/encoder": "encoder", "optim/lr": "learning rate",
}


def factor_words(key: str) -> str:
    return FACTOR_WORDS.get(key, key)


@dataclass
class Trace:
    """Points (or a line) with optional asymmetric error bars on the value axis. With `horizontal`, the values
    are on x and the positions on y (a forest plot)."""

    name: str
    positions: list[float]
    values: list[float]
    minus: list[float] | None = None
    plus: list[float] | None = None
    line: bool = False
    horizontal: bool = False


@dataclass
class Panel:
    title: str
    x_title: str
    y_title: str
    traces: list[Trace]
    ticks: list[str] | None = None  # names of the positions 0, 1, ... (categorical axis)
    zero: bool = False              # a reference line at value 0 (no difference)
    log_positions: bool = False


@dataclass
class Chart:
    name: str                       # file stem
    title: str
    panels: list[Panel] = field(default_factory=list)


COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b"]


def write_chart(chart: Chart, folder: str) -> list[str]:
    """Write <name>.html and <name>.png into folder; return their paths."""
    paths = [os.path.join(folder, f"{chart.name}.html"), os.path.join(folder, f"{chart.name}.png")]
    _plotly(chart).write_html(paths[0], include_plotlyjs=True)  # plotly.js embedded: works offline
    _matplotlib(chart).savefig(paths[1], dpi=150)  # constrained layout: no second "tight" draw
    return paths


def _plotly(chart: Chart):
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    figure = make_subplots(rows=len(chart.panels), cols=1, subplot_titles=[p.title for p in chart.panels])
    for row, panel in enumerate(chart.panels, start=1):
        for i, trace in enumerate(panel.traces):
            errors = None if trace.minus is None else {"type": "data", "symmetric": False, "array": trace.plus,
                                                       "arrayminus": trace.minus}
            xy = (trace.values, trace.positions) if trace.horizontal else (trace.positions, trace.values)
            figure.add_trace(go.Scatter(
                x=xy[0], y=xy[1], name=trace.name, mode="lines" if trace.line else "markers",
                marker={"color": COLORS[i % len(COLORS)], "size": 8}, legendgroup=trace.name, showlegend=row == 1,
                **{"error_x" if trace.horizontal else "error_y": errors}), row=row, col=1)
        horizontal = any(t.horizontal for t in panel.traces)
        positions = figure.update_yaxes if horizontal else figure.update_xaxes
        if panel.ticks:
            positions(tickmode="array", tickvals=list(range(len(panel.ticks))), ticktext=panel.ticks, row=row, col=1)
        if panel.log_positions:
            positions(type="log", row=row, col=1)
        if panel.zero:
            (figure.add_vline if horizontal else figure.add_hline)(0, line_dash="dash", line_color="grey", row=row, col=1)
        figure.update_xaxes(title_text=panel.x_title, row=row, col=1)
        figure.update_yaxes(title_text=panel.y_title, row=row, col=1)
    figure.update_layout(title=chart.title, template="plotly_white", height=360 * len(chart.panels))
    return figure


def _matplotlib(chart: Chart):
    from matplotlib.figure import Figure
    from matplotlib.ticker import FuncFormatter

    figure = Figure(figsize=(7.5, 3.6 * len(chart.panels)), layout="constrained")
    axes = figure.subplots(len(chart.panels), 1, squeeze=False)[:, 0]
    for ax, panel in zip(axes, chart.panels):
        horizontal = any(t.horizontal for t in panel.traces)
        for i, trace in enumerate(panel.traces):
            errors = None if trace.minus is None else [trace.minus, trace.plus]
            xy = (trace.values, trace.positions) if trace.horizontal else (trace.positions, trace.values)
            ax.errorbar(*xy, **{"xerr" if trace.horizontal else "yerr": errors}, fmt="-" if trace.line else "o",
                        color=COLORS[i % len(COLORS)], label=trace.name, capsize=3, markersize=5, alpha=0.85)
        if panel.ticks:
            (ax.set_yticks if horizontal else ax.set_xticks)(range(len(panel.ticks)), panel.ticks)
        if panel.log_positions:
            (ax.set_yscale if horizontal else ax.set_xscale)("log")
            axis = ax.yaxis if horizontal else ax.xaxis
            for set_formatter in (axis.set_major_formatter, axis.set_minor_formatter):
                set_formatter(FuncFormatter(lambda value, _: f"{value:g}"))  # 0.5, 1, 2 rather than 5x10^-1
        if panel.zero:
            (ax.axvline if horizontal else ax.axhline)(0, linestyle="--", color="grey", linewidth=1)
        ax.set(title=panel.title, xlabel=panel.x_title, ylabel=panel.y_title)
        ax.legend(fontsize="small")
    figure.suptitle(chart.title)
    return figure
