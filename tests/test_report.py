"""tune-report on a finished search: a real Optuna study in a home's optuna.db whose first objective
depends on optim/lr alone and whose second on loss/weight alone, its parent run on the session's
MLflow server; the analysis it logs, the ranking both evaluators give, and bad input."""
import json
import math
import os
import random
import warnings

import optuna
import pytest
from mlflow import MlflowClient

from mlflow_server.tracker import get_or_create_parent_run
from search.analysis import AUTO_REPORT_MIN_COMPLETE, report_after_search
from search.cli import report_main
from search.experiment import Settings
from search.home import ExperimentState
from search.runner import search_experiment
from search.spacefile import load_space
from search.summary import summarize

OBJECTIVES = {"val/f1_macro": "max", "perf/train_images_per_s": "min"}
SPACE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "spaces", "classification.py")


def make_search(home: str, name: str, n_complete: int, client: MlflowClient | None = None) -> str:
    """A search study of n_complete COMPLETE trials plus one stopped early and one failed; its parent run."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # the test's own study is no news
    study = optuna.create_study(study_name=name, storage=ExperimentState(home, name).optuna_storage,
                                directions=["maximize", "minimize"], sampler=optuna.samplers.RandomSampler(seed=0))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        study.set_metric_names(list(OBJECTIVES))
    noise = random.Random(0)
    for number in range(n_complete + 2):
        trial = study.ask()
        lr = trial.suggest_float("optim/lr", 1e-5, 1e-1, log=True)
        weight = trial.suggest_float("loss/weight", 0.1, 0.9)
        trial.suggest_categorical("model/arch", ["unet", "fpn"])
        if number == n_complete:
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
        elif number == n_complete + 1:
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
        else:
            study.tell(trial, [1 - (math.log10(lr) + 3) ** 2 / 4 + 0.01 * noise.random(),
                               (weight - 0.5) ** 2 + 0.001 * noise.random()])
    if client is None:
        return ""
    parent = get_or_create_parent_run(client, name, {})
    client.log_param(parent, "objectives", json.dumps(OBJECTIVES))
    return parent


@pytest.fixture
def home(tmp_path, monkeypatch, tracking_uri) -> str:
    monkeypatch.setenv("MEDTUNE_HOME", str(tmp_path))
    return str(tmp_path)


def test_report_logs_importance_plots_and_ranks_the_important_parameter_first(home, tracking_uri, capsys):
    client = MlflowClient(tracking_uri)
    name = f"report-{os.path.basename(home)}"
    parent = make_search(home, name, 30, client)

    assert report_main([name]) == 0
    out, err = capsys.readouterr()
    assert not err, err  # no library chatter: the summary alone
    assert "30 completed" in out and "Importance over the 30 completed trials only" in out and parent in out
    files = {os.path.basename(f.path) for f in client.list_artifacts(parent, "analysis")}
    with open(client.download_artifacts(parent, "analysis/analysis.html")) as f:
        page = f.read()
    for stem in ["parallel_coordinate", "history_val_f1_macro", "history_perf_train_images_per_s", "pareto_front",
                 *(f"importance_{o}_{e}" for o in ["val_f1_macro", "perf_train_images_per_s"]
                   for e in ["ped_anova", "fanova"])]:
        assert f"{stem}.png" in files and f'<h2 id="{stem}">' in page, stem
    assert page.count("Plotly.newPlot") == 8  # the interactive charts, on one page
    with open(client.download_artifacts(parent, "analysis/importance.json")) as f:
        report = json.load(f)
    assert report["trials"] == "COMPLETE only (30)"
    for objective, important in [("val/f1_macro", "optim/lr"), ("perf/train_images_per_s", "loss/weight")]:
        for evaluator in ["ped_anova", "fanova"]:
            ranks = report["importance"][objective][evaluator]
            assert max(ranks, key=ranks.get) == important, (objective, evaluator, ranks)


def test_too_few_completed_trials_skip_importance_with_a_note(home, tracking_uri, capsys):
    client = MlflowClient(tracking_uri)
    name = f"report-few-{os.path.basename(home)}"
    parent = make_search(home, name, 3, client)

    assert report_main([name]) == 0
    assert "importance skipped: it needs at least 4 completed trials" in capsys.readouterr().out
    files = {os.path.basename(f.path) for f in client.list_artifacts(parent, "analysis")}
    assert "parallel_coordinate.png" in files and not any(f.startswith("importance") for f in files)


def one_error_line(capsys, argv: list[str]) -> str:
    assert report_main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error: "), err
    return err


def test_bad_input_is_one_line_and_exit_2(home, capsys):
    make_search(home, "a-search", 0)
    ExperimentState(home, "a-retrain").save_settings({})
    ExperimentState(home, "a-search").save_settings({})

    err = one_error_line(capsys, ["nope"])
    assert "no experiment named 'nope'" in err and "a-retrain, a-search" in err
    assert "is not a search" in one_error_line(capsys, ["a-retrain"])
    assert "has no completed trial" in one_error_line(capsys, ["a-search"])


def test_the_report_at_the_end_of_a_search_needs_enough_trials_and_never_fails_it(home, tracking_uri, capsys):
    client = MlflowClient(tracking_uri)
    storage = ExperimentState(home, "few").optuna_storage
    make_search(home, "few", AUTO_REPORT_MIN_COMPLETE - 1)
    report_after_search(client, "no-such-run", "few", list(OBJECTIVES), storage)
    assert f"fewer than {AUTO_REPORT_MIN_COMPLETE} completed trials" in capsys.readouterr().out

    report_after_search(client, "no-such-run", "missing", list(OBJECTIVES), storage)
    assert "note: the analysis of 'missing' failed" in capsys.readouterr().out


def test_a_search_with_enough_completed_trials_gets_its_analysis_at_its_end(home, tracking_uri, capsys):
    client = MlflowClient(tracking_uri)
    name = f"report-auto-{os.path.basename(home)}"
    parent = make_search(home, name, AUTO_REPORT_MIN_COMPLETE, client)
    space = load_space(SPACE)
    settings = Settings(name=name, space_path=space.path, num_samples=AUTO_REPORT_MIN_COMPLETE + 2)
    summarize(client, search_experiment(settings, space), ExperimentState(home, name), parent, {})
    assert "artifacts analysis/ of the parent run" in capsys.readouterr().out
    files = {os.path.basename(f.path) for f in client.list_artifacts(parent, "analysis")}
    assert {"analysis.html", "importance.json", "importance_val_f1_macro_fanova.png", "pareto_front.png"} <= files
