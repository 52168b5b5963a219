"""search.tpe: TPE learns from stopped trials' last epochs while the study keeps them PRUNED."""
import pickle

import optuna
import pytest
from optuna.trial import TrialState

from search.sampling import TPE_DEFAULTS, make_sampler
from search.tpe import INTERMEDIATE_ATTR, StoppedTrialsTPE, _StoppedSeenComplete, last_values

METRICS = ["val/f1", "perf/speed"]
pytestmark = pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")  # set_metric_names


def stopped(study: optuna.Study, curves: dict[str, dict[int, float]]) -> None:
    """A PRUNED trial holding `curves` as the searcher records them with several objectives."""
    trial = study.ask()
    for metric, curve in curves.items():
        trial.set_user_attr(INTERMEDIATE_ATTR + metric, {str(e): v for e, v in curve.items()})
    study.tell(trial, state=TrialState.PRUNED)


def two_objective_study(sampler=None) -> optuna.Study:
    study = optuna.create_study(directions=["maximize", "maximize"], sampler=sampler)
    study.set_metric_names(METRICS)
    return study


def test_last_values_take_the_last_epoch_every_objective_reached():
    study = two_objective_study()
    stopped(study, {"val/f1": {1: 0.5, 2: 0.6, 3: 0.7}, "perf/speed": {1: 10.0, 2: 11.0}})
    stopped(study, {"val/f1": {1: 0.5}})
    first, second = study.get_trials()
    assert last_values(first, METRICS) == [0.6, 11.0]
    assert last_values(second, METRICS) is None
    one = optuna.create_study(direction="maximize")
    trial = one.ask()
    trial.report(0.4, 1)
    trial.report(0.7, 2)
    one.tell(trial, state=TrialState.PRUNED)
    assert last_values(one.trials[0], ["val/f1"]) == [0.7]


def test_the_sampler_sees_stopped_trials_as_complete_and_the_study_keeps_them_pruned():
    study = two_objective_study()
    stopped(study, {"val/f1": {1: 0.8}, "perf/speed": {1: 20.0}})
    stopped(study, {})
    trial = study.ask()
    study.tell(trial, [0.5, 5.0])
    view = _StoppedSeenComplete(study)
    complete = view._get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    assert [(t.number, t.values) for t in complete] == [(0, [0.8, 20.0]), (2, [0.5, 5.0])]
    assert [t.number for t in view.get_trials(states=(TrialState.PRUNED,))] == [1]  # it has no values
    assert [t.state for t in study.trials] == [TrialState.PRUNED, TrialState.PRUNED, TrialState.COMPLETE]
    assert study.trials[0].values is None


@pytest.mark.parametrize("sampler, near", [(StoppedTrialsTPE, True), (optuna.samplers.TPESampler, False)])
def test_tpe_searches_near_the_stopped_trials_front(sampler, near):
    """Ten stopped trials near x = 0.9 whose last epochs dominate ten completed trials near x = 0.1:
    search.tpe's TPE draws nearer 0.9 (a mean of 0.70-0.72 over seeds 0-9), Optuna's plain TPE (which
    ranks every stopped trial among the bad ones) nearer 0.1 (0.33-0.34)."""
    study = two_objective_study(sampler(seed=0, n_startup_trials=5, **TPE_DEFAULTS))
    space = {"x": optuna.distributions.FloatDistribution(0, 1)}
    for i in range(10):
        x = 0.85 + 0.01 * i
        study.enqueue_trial({"x": x})
        trial = study.ask(space)
        trial.set_user_attr(INTERMEDIATE_ATTR + "val/f1", {"1": 0.8 + 0.01 * i})
        trial.set_user_attr(INTERMEDIATE_ATTR + "perf/speed", {"1": 20.0 - i})
        study.tell(trial, state=TrialState.PRUNED)
        study.enqueue_trial({"x": 0.1 + 0.01 * i})
        trial = study.ask(space)
        study.tell(trial, [0.3 + 0.01 * i, 5.0 - 0.1 * i])
    drawn = []
    for _ in range(10):
        trial = study.ask(space)
        drawn.append(trial.params["x"])
        study.tell(trial, state=TrialState.FAIL)
    assert (sum(drawn) / len(drawn) > 0.5) is near, drawn


def test_make_sampler_tpe_is_picklable_and_samples_beside_running_trials():
    """Ray saves the searcher with its sampler; constant_liar writes to the real study's storage."""
    sampler = pickle.loads(pickle.dumps(make_sampler("tpe", 0)))
    assert isinstance(sampler, StoppedTrialsTPE)
    study = two_objective_study(sampler)
    space = {"x": optuna.distributions.FloatDistribution(0, 1), "y": optuna.distributions.IntDistribution(0, 3)}
    for i in range(21):  # TPE's own draws from the 11th stopped trial on
        trial = study.ask(space)
        if i % 3 == 0:
            continue  # left RUNNING
        trial.set_user_attr(INTERMEDIATE_ATTR + "val/f1", {"1": trial.params["x"]})
        trial.set_user_attr(INTERMEDIATE_ATTR + "perf/speed", {"1": float(trial.params["y"])})
        study.tell(trial, state=TrialState.PRUNED)
    states = [t.state for t in study.trials]
    assert states.count(TrialState.RUNNING) == 7 and states.count(TrialState.PRUNED) == 14
    assert all(0 <= t.params["x"] <= 1 for t in study.trials)
