"""Trials as the tests watch them: the engine's trainable wrapped so that each attempt's start and
every epoch it reports are appended to a log, and so that its worker process can be killed after
an epoch, the way a preempted or crashed node kills it."""
import json
import os
import signal
from typing import Callable


def engine_trainables(patch, wrap) -> None:
    """Have the engine (in this process) hand Ray wrap(trainable) for every trainable it runs."""
    from trainables.registry import TrainableSpec

    real = TrainableSpec.function
    patch.setattr(TrainableSpec, "function", lambda spec: wrap(real(spec)))


def recorded(trainable, log: str, kill_after_epoch: int | None = None, kill_if=lambda config: True):
    """The trainable, appending to `log` one JSON line per attempt start (fresh or from a
    checkpoint) and per reported epoch, each with its Ray trial id and node id. With
    kill_after_epoch, the worker process of a trial whose config passes kill_if is SIGKILLed
    right after that epoch's report on its first attempt (from no checkpoint)."""
    def train(config):
        import ray
        from ray import tune

        trial, node = tune.get_context().get_trial_id(), ray.get_runtime_context().get_node_id()
        resumed = tune.get_checkpoint() is not None
        report = tune.report

        def note(**entry):
            with open(log, "a") as f:
                f.write(json.dumps({"trial": trial, "node": node, **entry}) + "\n")

        def logged_report(metrics, checkpoint=None):
            report(metrics, checkpoint=checkpoint)
            note(event="report", epoch=metrics["epoch"])
            if metrics["epoch"] == kill_after_epoch and not resumed and kill_if(config):
                os.kill(os.getpid(), signal.SIGKILL)

        note(event="start", resumed=resumed)
        tune.report = logged_report
        try:
            trainable(config)
        finally:
            tune.report = report

    return train


def entries(log: str) -> list[dict]:
    """The lines `recorded` wrote to log so far (none if it does not exist yet)."""
    if not os.path.exists(log):
        return []
    with open(log) as f:
        return [json.loads(line) for line in f if line.endswith("\n")]


def one_tuner(trials: dict[str, Callable[[], None]], name: str, storage: str, max_failures: int = 0) -> dict:
    """Each named trial (a function of no arguments, e.g. a trainable bound to its config) as one Ray Tune
    trial, all in one Tuner whose workers are reused from trial to trial (a fresh worker spends most of a
    tiny trial importing torch); trial name -> its result."""
    from ray import tune

    def trial(config):
        trials[config["trial"]]()

    results = tune.Tuner(
        tune.with_resources(trial, {"cpu": 1}),
        param_space={"trial": tune.grid_search(sorted(trials))},
        tune_config=tune.TuneConfig(reuse_actors=True),
        run_config=tune.RunConfig(name=name, storage_path=storage, verbose=0,
                                  failure_config=tune.FailureConfig(max_failures=max_failures)),
    ).fit()
    return {result.config["trial"]: result for result in results}
