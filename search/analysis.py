"""The analysis of a search's Optuna study (tune-report, and by itself at the end of a search):
hyperparameter importance, parallel coordinates, optimisation history and the Pareto front,
each a PNG (matplotlib) and on one interactive HTML page (plotly), logged under analysis/ of the
parent run.

Importance is computed over the COMPLETE trials only (those that reached train/epochs; a
pruned trial's last value is not comparable), per objective, with two of Optuna's evaluators:
PED-ANOVA (what the top 10% of trials share) and fANOVA (variance explained, a random forest),
in search.importance, imported only by an analysis that computes it (it imports scikit-learn).
"""
from __future__ import annotations

import html
import json
import os
import re
import tempfile
import warnings

import optuna
from optuna.trial import FrozenTrial, TrialState, create_trial

from search.errors import UsageError
from search.home import ExperimentState, experiment_names

IMPORTANCE_MIN_COMPLETE = 4  # fewer COMPLETE trials: importance is skipped with a note, not computed
AUTO_REPORT_MIN_COMPLETE = 8  # a search with at least this many COMPLETE trials gets its report by itself
TOP_PARAMS = 5  # parameters printed per objective
STEADY_COMPLETE = 50  # from here PED-ANOVA's top 10% holds the 5 trials Optuna advises; fewer: a caution
FOLDER = "analysis"  # the parent run's artifact folder
PAGE = "analysis.html"  # every chart, interactive, in FOLDER
STATE_WORDS = {TrialState.COMPLETE: "completed", TrialState.PRUNED: "stopped early", TrialState.FAIL: "failed"}


def load_search(name: str, home: str) -> optuna.Study:
    """The Optuna study of search `name` in the home; a UsageError when there is none (an unknown
    experiment, or a re-train or ablation, which run fixed configs) or it has no COMPLETE trial."""
    state = ExperimentState(home, name)
    studies = optuna.get_all_study_names(state.optuna_storage) if os.path.isfile(state.optuna_file) else []
    if name not in studies:
        if os.path.isfile(state.settings_file):
            raise UsageError(f"Experiment {name!r} is not a search (a re-train or an ablation: it has no Optuna "
                             f"study); tune-report analyses searches: {', '.join(sorted(studies)) or 'none'}.")
        raise UsageError(f"There is no experiment named {name!r} in {home!r}; experiments there: "
                         f"{', '.join(experiment_names(home)) or 'none'} (searches: "
                         f"{', '.join(sorted(studies)) or 'none'}).")
    study = optuna.load_study(study_name=name, storage=state.optuna_storage)
    if not complete(study):
        raise UsageError(f"Search {name!r} has no completed trial yet (of {len(study.trials)}); its report needs "
                         f"trials that reached train/epochs.")
    return study


def complete(study: optuna.Study) -> list[FrozenTrial]:
    return study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))


def per_objective(study: optuna.Study, index: int) -> optuna.Study:
    """An in-memory single-objective copy of the study for objective `index` (its direction, the
    trials' states and params), so Optuna's plots and evaluators see which way is better."""
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # not "A new study created in memory" per objective
    try:
        single = optuna.create_study(direction=study.directions[index])
    finally:
        optuna.logging.set_verbosity(verbosity)
    single.add_trials([create_trial(state=t.state, params=t.params, distributions=t.distributions,
                                    value=t.values[index] if t.state == TrialState.COMPLETE else None)
                       for t in study.get_trials(deepcopy=False, states=tuple(STATE_WORDS))])
    return single


def varied_params(trials: list[FrozenTrial]) -> list[str]:
    """Parameters every trial has, with at least two distinct values among them: what importance can rank."""
    common = set.intersection(*(set(t.params) for t in trials)) if trials else set()
    return sorted(p for p in common if len({repr(t.params[p]) for t in trials}) > 1)


def write_analysis(study: optuna.Study, objectives: list[str], folder: str) -> list[str]:
    """Write the charts (PNGs and the page) and importance.json into folder; return the summary lines."""
    done = complete(study)
    varied = varied_params(done)
    counts = ", ".join(f"{sum(t.state == state for t in study.trials)} {word}" for state, word in STATE_WORDS.items())
    lines = [f"Search {study.study_name!r}: {len(study.trials)} trials ({counts})"]
    copies = [per_objective(study, i) for i in range(len(objectives))]
    charts = Charts(folder)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Optuna's ExperimentalWarning on every matplotlib plot
        if len(done) < IMPORTANCE_MIN_COMPLETE or not varied:
            lines.append(f"  importance skipped: it needs at least {IMPORTANCE_MIN_COMPLETE} completed trials and a "
                         f"parameter they vary ({len(done)} completed, {len(varied)} varied)")
        else:
            from search.importance import importance  # scikit-learn's import: only for an analysis that has one

            lines += importance(copies, objectives, len(done), charts)
        charts.add("parallel_coordinate", "plot_parallel_coordinate", copies[0], target_name=objectives[0])
        for name, single in zip(objectives, copies):
            charts.add(f"history_{slug(name)}", "plot_optimization_history", single, target_name=name)
        if 2 <= len(objectives) <= 3:
            charts.add("pareto_front", "plot_pareto_front", study, target_names=objectives)
    charts.write_page(f"Analysis of search {study.study_name}")
    return lines


class Charts:
    """The analysis's charts: each one a PNG (matplotlib) in the folder, and all of them on one interactive
    page, analysis.html (plotly, plotly.js embedded once: it opens offline, and weighs ~5 MB in all
    rather than ~5 MB per chart)."""

    def __init__(self, folder: str):
        self.folder = folder
        self.figures = {}  # stem -> plotly figure

    def add(self, stem: str, function: str, study: optuna.Study, **kwargs) -> None:
        """Optuna's plot `function` of the study: <stem>.png now, its interactive twin on the page."""
        import matplotlib

        matplotlib.use("Agg")  # files only, whatever display there is
        import matplotlib.pyplot as plt
        import optuna.visualization.matplotlib

        self.figures[stem] = getattr(optuna.visualization, function)(study, **kwargs)
        axes = getattr(optuna.visualization.matplotlib, function)(study, **kwargs)
        figure = getattr(axes, "figure", None) or axes.flat[0].figure
        figure.savefig(os.path.join(self.folder, f"{stem}.png"), dpi=120, bbox_inches="tight")
        plt.close(figure)

    def write_page(self, title: str) -> None:
        title = html.escape(title)
        sections = [f'<h2 id="{stem}">{stem}</h2>' + figure.to_html(full_html=False, include_plotlyjs=not i)
                    for i, (stem, figure) in enumerate(self.figures.items())]
        with open(os.path.join(self.folder, PAGE), "w") as f:
            f.write(f'<!DOCTYPE html><html><head><meta charset="utf-8"><title>{title}</title></head><body>'
                    f'<h1>{title}</h1>{"".join(sections)}</body></html>')


def slug(metric: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", metric)


def log_analysis(client, parent: str, study: optuna.Study, objectives: list[str]) -> list[str]:
    """Write the analysis and log it under analysis/ of the parent run; the summary lines."""
    with tempfile.TemporaryDirectory() as folder:
        lines = write_analysis(study, objectives, folder)
        client.log_artifacts(parent, folder, FOLDER)
    return lines


def report_experiment(name: str, home: str) -> list[str]:
    """tune-report: analyse search `name` of the home, log it on its parent run; the lines to print."""
    from mlflow import MlflowClient

    from mlflow_server.server import configure_client, ensure_server
    from search.export import _parent_run

    study = load_search(name, home)
    configure_client()
    client = MlflowClient(ensure_server(home))
    parent = _parent_run(client, name)
    objectives = list(json.loads(parent.data.params["objectives"]))
    lines = log_analysis(client, parent.info.run_id, study, objectives)
    return lines + [f"Logged to {FOLDER}/ of the parent run: {client.tracking_uri}/#/experiments/"
                    f"{parent.info.experiment_id}/runs/{parent.info.run_id}"]


def report_after_search(client, parent: str, name: str, objectives: list[str], optuna_storage: str) -> None:
    """The end of a search: its analysis when it has AUTO_REPORT_MIN_COMPLETE COMPLETE trials, and
    one line saying where it went; a failure here is a note, never the experiment's failure."""
    try:
        study = optuna.load_study(study_name=name, storage=optuna_storage)
        if len(complete(study)) < AUTO_REPORT_MIN_COMPLETE:
            print(f"Analysis: not made by itself with fewer than {AUTO_REPORT_MIN_COMPLETE} completed trials; "
                  f"tune-report {name} makes it")
            return
        log_analysis(client, parent, study, objectives)
        print(f"Analysis (importance, parallel coordinates, history): artifacts {FOLDER}/ of the parent run; "
              f"tune-report {name} prints the importances")
    except Exception as exc:  # the experiment has ended and is tracked: its analysis must not fail it
        from search.summary import failure_reason

        print(f"note: the analysis of {name!r} failed ({failure_reason(f'{exc.__class__.__name__}: {exc}')}); the "
              f"experiment is unaffected; try tune-report {name}")
