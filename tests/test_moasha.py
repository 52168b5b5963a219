"""MO-ASHA (search/moasha.py): its rung decisions against Ray's ASHA on the same results, its ranking
(non-dominated fronts, then crowding distance), its choice by --scheduler, and one real Ray Tune run."""
import numpy as np
import pytest
from ray import tune
from ray.tune.experiment import Trial
from ray.tune.schedulers import AsyncHyperBandScheduler, TrialScheduler

from search.errors import UsageError
from search.moasha import MultiObjectiveASHA, crowding_distance, nondominated_fronts, rank_position
from search.trials import make_scheduler

OBJECTIVES = {"val/f1_macro": "max", "perf/train_images_per_s": "max"}
CONTINUE, STOP = TrialScheduler.CONTINUE, TrialScheduler.STOP


def trials(n: int) -> list[Trial]:
    return [Trial("__fake", stub=True) for _ in range(n)]


def results(scheduler, points: list[tuple], epoch: int = 1) -> list[str]:
    """The scheduler's decision on each (f1, images/s) result, reported in order by a trial of its own."""
    decisions = []
    for trial, (f1, speed) in zip(trials(len(points)), points):
        scheduler.on_trial_add(None, trial)
        decisions.append(scheduler.on_trial_result(None, trial, {"training_iteration": epoch, "val/f1_macro": f1,
                                                                 "perf/train_images_per_s": speed}))
    return decisions


def moasha(max_t: int = 4) -> MultiObjectiveASHA:
    return MultiObjectiveASHA(list(OBJECTIVES), list(OBJECTIVES.values()), max_t, grace_period=1, reduction_factor=2)


def test_a_fast_slightly_less_accurate_trial_goes_on_where_asha_stops_it():
    points = [(0.80, 10.0), (0.78, 30.0)]
    asha = AsyncHyperBandScheduler(metric="val/f1_macro", mode="max", max_t=4, grace_period=1, reduction_factor=2)
    assert results(asha, points) == [CONTINUE, STOP]
    assert results(moasha(), points) == [CONTINUE, CONTINUE]


def test_a_dominated_trial_is_stopped_and_the_first_at_a_rung_goes_on():
    assert results(moasha(), [(0.5, 1.0), (0.8, 10.0), (0.78, 30.0), (0.6, 5.0)]) == [CONTINUE, CONTINUE, CONTINUE, STOP]


def test_within_a_front_the_less_crowded_trial_goes_on():
    # the extremes of the front rank first; (0.1, 3.9) is next to (0.0, 4.0) and ranks after (0.3, 1.0), which,
    # 5th at the rung, is in its top 2.5 while the crowded one, 4th, was not in its top 2
    decisions = results(moasha(), [(0.0, 4.0), (0.4, 0.0), (-0.1, -1.0), (0.1, 3.9), (0.3, 1.0)])
    assert decisions == [CONTINUE, CONTINUE, STOP, STOP, CONTINUE]
    points = np.array([[0.0, 4.0], [0.4, 0.0], [-0.1, -1.0], [0.1, 3.9], [0.3, 1.0]])
    assert [rank_position(points, i) for i in range(5)] == [0, 0, 4, 3, 2]


def test_min_objectives_are_negated_and_a_non_finite_result_stops_its_trial():
    scheduler = MultiObjectiveASHA(["val/loss", "perf/epoch_s"], ["min", "min"], max_t=4)
    first, second, third = trials(3)
    for trial in (first, second, third):
        scheduler.on_trial_add(None, trial)
    assert scheduler.on_trial_result(None, first, {"training_iteration": 1, "val/loss": 0.2, "perf/epoch_s": 5}) == CONTINUE
    assert scheduler.on_trial_result(None, second, {"training_iteration": 1, "val/loss": 0.3, "perf/epoch_s": 6}) == STOP
    assert scheduler.on_trial_result(None, third, {"training_iteration": 1, "val/loss": float("nan"),
                                                   "perf/epoch_s": 1}) == STOP


def test_rungs_follow_asha_and_the_budget_stops_every_trial():
    scheduler = moasha(max_t=4)
    assert [milestone for milestone, _ in scheduler._rungs] == [1, 2, 4]
    trial, = trials(1)
    scheduler.on_trial_add(None, trial)
    decisions = [scheduler.on_trial_result(None, trial, {"training_iteration": t, "val/f1_macro": 0.5,
                                                         "perf/train_images_per_s": 1.0}) for t in (1, 2, 3, 4)]
    assert decisions == [CONTINUE, CONTINUE, CONTINUE, STOP]
    assert [len(recorded) for _, recorded in scheduler._rungs] == [1, 1, 0]
    assert scheduler.on_trial_result(None, trial, {"training_iteration": 2}) == CONTINUE  # objectives missing


def test_fronts_and_crowding():
    points = np.array([[1.0, 1.0], [2.0, 0.0], [0.0, 2.0], [0.5, 0.5], [0.0, 0.0]])
    assert nondominated_fronts(points).tolist() == [0, 0, 0, 1, 2]
    assert crowding_distance(points[:3]).tolist() == [2.0, np.inf, np.inf]


@pytest.mark.parametrize("objectives", [2, 3])
def test_fronts_follow_the_definition_with_ties(objectives):
    points = np.round(np.random.default_rng(objectives).random((300, objectives)), 1)  # many equal values
    dominates = [[bool((p >= q).all() and (p > q).any()) for q in points] for p in points]
    fronts, left, level = np.full(len(points), -1), set(range(len(points))), 0
    while left:
        current = {j for j in left if not any(dominates[i][j] for i in left)}
        fronts[list(current)], left, level = level, left - current, level + 1
    assert (nondominated_fronts(points) == fronts).all() and fronts.max() > 3


def test_make_scheduler_builds_moasha_on_every_objective():
    scheduler = make_scheduler("moasha", OBJECTIVES, 3)
    assert isinstance(scheduler, MultiObjectiveASHA) and scheduler._metrics == list(OBJECTIVES)
    assert isinstance(make_scheduler("asha", OBJECTIVES, 3), AsyncHyperBandScheduler)
    with pytest.raises(UsageError, match="moasha"):
        make_scheduler("pbt2", OBJECTIVES, 3)
    with pytest.raises(ValueError, match="one mode per metric"):
        MultiObjectiveASHA(["a", "b"], ["max"], 3)


@pytest.mark.slow
def test_a_ray_tune_run_stops_only_the_dominated_trial(ray_cluster):
    def train(config: dict) -> None:  # defined here, so that Ray's workers get it by value
        for epoch in range(1, 5):
            tune.report({"epoch": epoch, "val/f1_macro": config["quality"] * epoch / 4,
                         "perf/train_images_per_s": config["speed"]})

    qualities, speeds = [0.9, 0.8, 0.5], {0.9: 10.0, 0.8: 30.0, 0.5: 5.0}  # 0.5 is dominated at rung 1
    tuner = tune.Tuner(
        tune.with_resources(train, {"cpu": 1}),
        param_space={"quality": tune.grid_search(qualities),
                     "speed": tune.sample_from(lambda spec: speeds[spec.config.quality])},
        tune_config=tune.TuneConfig(scheduler=moasha(), max_concurrent_trials=1),  # rung 1 sees them in this order
        run_config=tune.RunConfig(name="moasha", storage_path=ray_cluster, verbose=0),
    )
    epochs = {r.config["quality"]: r.metrics["epoch"] for r in tuner.fit()}
    assert epochs == {0.9: 4, 0.8: 4, 0.5: 1}
