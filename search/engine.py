"""The one path every command's trials take (tune-run, tune-train, tune-ablate): check the configs
it will run before anything starts, start the tracking server and Ray, run the trials through one
Ray Tune Tuner with the live view and the MLflow tracker, and summarise.

    outcome = engine.run(Experiment(name, spec, objectives, Configs([config, ...], tags=[{...}, ...]),
                                    source="best.yaml", settings={...}), home)

An experiment is resumable by its name (resume=True), from the state `search.home` keeps for it.
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
import threading
from dataclasses import dataclass, field

from search.errors import UsageError
from search.home import ExperimentState
from search.summary import Outcome, summarize
from search.trials import Configs, Search
from trainables.registry import TrainableSpec


@dataclass
class Experiment:
    """One command's trials and how to run them."""

    name: str
    trainable: TrainableSpec
    objectives: dict[str, str]  # ordered; the first is the primary objective
    trials: Search | Configs
    source: str  # what the trials come from, as shown to the user: a space file, an exported YAML
    settings: dict = field(default_factory=dict)  # saved for a resume, logged on the parent run
    tags: dict[str, str] = field(default_factory=dict)  # on the parent run and every trial run
    cpus_per_trial: float = 1.0
    gpus_per_trial: float = 0.0
    max_concurrent: int | None = None
    time_budget: float | None = None
    max_failures: int = 0
    resume_command: str = ""  # how the user continues it after an interruption; "" = not resumable


def run(exp: Experiment, home: str, resume: bool = False, address: str | None = None) -> Outcome:
    """Check, run (or resume) and summarise the experiment's trials; the outcome's code is 0 when
    a trial finished with finite objectives, 1 when none did, 130 when interrupted (state saved).

    Everything that can be refused is refused (UsageError, DataError) before the tracking server
    or Ray starts. Resuming an experiment whose trials all ended only prints its summary again,
    unless exp.trials.num_samples asks for more trials than it made: a new round makes the rest.
    """
    quiet_libraries()
    state = ExperimentState(home, exp.name)
    check_state(exp.name, state, resume)
    rounds = asked_rounds(state) if resume else []
    made, done = trials_made(state, rounds), os.path.exists(state.search_done)
    least = made if done else max(made, sum(rounds))  # an interrupted round is finished whole
    if exp.trials.num_samples < least:
        raise UsageError(f"Experiment {exp.name!r} has made {made} trials"
                         + ("" if done else f" of the {sum(rounds)} it is running")
                         + f"; ask for {least} or more, not {exp.trials.num_samples}.")
    configs, choices = exp.trials.checked()
    trials_to_run = not (done and exp.trials.num_samples <= max(sum(rounds), made))
    from search.preflight import fingerprint, preflight

    with startup_lines():
        if trials_to_run:  # a finished search only prints its summary again
            print(f"Checks: {len(configs)} config{'s' * (len(configs) != 1)} of {exp.trainable.name} (models and "
                  f"weights, the trainable's rules, the data; imports torch)", flush=True)
            for note in preflight(exp.trainable, configs, choices):
                print(f"note: {note}", flush=True)
        tags = {"medtune.experiment": exp.name, "medtune.trainable": exp.trainable.name,
                "medtune.data_fingerprint": fingerprint(configs[0]), **exp.tags}
        state.save_settings(exp.settings)

        from mlflow import MlflowClient

        from mlflow_server.tracker import get_or_create_parent_run

        uri, own_ray = start_services(home, address, trials_to_run,
                                      lambda: exp.trials.prepare(state.optuna_storage) if trials_to_run else None)
    import ray

    stopping = None  # Ray's shutdown, which waits for its processes to end, beside the summary
    try:
        client = MlflowClient(uri)
        parent = get_or_create_parent_run(client, exp.name, tags)
        client.log_param(parent, "objectives", json.dumps(exp.objectives))  # idempotent on resume
        client.log_dict(parent, {"settings": exp.settings, **exp.trials.record()}, "experiment.json")
        if not trials_to_run:
            print(f"Experiment {exp.name!r} already ran its search; its summary again:", flush=True)
        else:
            n = exp.trials.num_samples
            more = f" ({made} made, {n - made} more)" if made else ""
            print(f"Experiment {exp.name!r}: {n} trial{'s' * (n != 1)}{more} of {exp.trainable.name} from "
                  f"{exp.source}; tracking at {uri}", flush=True)
            with contextlib.suppress(FileNotFoundError):
                os.remove(state.search_done)  # a finished search asked for more trials
            if not run_trials(exp, state, rounds, uri, parent, tags):
                hint = f" Continue it with: {exp.resume_command}" if exp.resume_command else ""
                print(f"\nExperiment {exp.name!r} was interrupted; its state is saved.{hint}", flush=True)
                return Outcome(130, [])
            open(state.search_done, "w").close()
        if own_ray:  # the summary needs the trials' records only
            stopping = threading.Thread(target=ray.shutdown, name="ray-shutdown")
            stopping.start()
        return summarize(client, exp, state, parent, tags)
    finally:
        if stopping:
            stopping.join()
        elif own_ray:
            ray.shutdown()


def start_services(home: str, address: str | None, with_ray: bool, prepare=lambda: None) -> tuple[str, bool]:
    """Start (or reuse) the tracking server and, when trials will run, Ray, side by side: the server's
    start, mostly waiting for its process to answer, and prepare() (the trials' own slow set-up) in
    threads while Ray starts in this one (ray.init belongs to the main thread). The server's URI and
    whether Ray was started here (start_ray); a Ray started here is shut down again if either fails."""
    from concurrent.futures import ThreadPoolExecutor

    import ray

    from mlflow_server.server import configure_client, ensure_server

    configure_client()
    with ThreadPoolExecutor(2) as pool:
        server, prepared = pool.submit(ensure_server, home), pool.submit(prepare)
        own_ray = False
        try:
            own_ray = with_ray and start_ray(address)
            prepared.result()
            return server.result(), own_ray
        except BaseException:
            if own_ray:
                ray.shutdown()
            raise


def check_state(name: str, state: ExperimentState, resume: bool) -> None:
    """A new experiment needs a free name; a resumed one needs the Ray Tune state it left."""
    from ray import tune

    if not resume and os.path.exists(state.ray_dir):
        raise UsageError(
            f"An experiment named {name!r} already exists in {state.home!r}; "
            f"continue it with --resume or choose another --name."
        )
    if resume and not tune.Tuner.can_restore(state.ray_dir):
        raise UsageError(
            f"Experiment {name!r} cannot be resumed: its settings are saved in {state.home!r}, but there is "
            f"no Ray Tune state at {state.ray_dir!r} (the run stopped before saving any, or the folder was "
            f"moved or deleted); start it again under another --name."
        )


def run_trials(exp: Experiment, state: ExperimentState, rounds: list[int], uri: str, parent: str,
               tags: dict[str, str]) -> bool:
    """On the Ray cluster started for them, finish the last round of trials if it was interrupted
    (restored from its checkpoint), then, when exp.trials.num_samples asks for more trials than the
    rounds so far, run one more round of the rest: a new Tuner whose searcher continues the same
    Optuna study, tracked under the same parent run. Then let the trials' source close up.

    False when the run was interrupted (Ctrl-C) before every trial ended: Ray Tune then saves
    its state and returns, and a resume continues the trials left.
    """
    from ray import tune

    trainable = tune.with_resources(exp.trainable.function(), {"cpu": exp.cpus_per_trial, "gpu": exp.gpus_per_trial})
    last = len(rounds) - 1
    if rounds and not round_ended(state.round_dir(last), rounds[last], exp.time_budget):
        # finished and failed trials stay as they are; the others continue from their checkpoints
        tune.Tuner.restore(state.round_dir(last), trainable=trainable, resume_unfinished=True,
                           resume_errored=False).fit()
        if not round_ended(state.round_dir(last), rounds[last], exp.time_budget):
            return False
    rest = exp.trials.num_samples - trials_made(state, rounds)
    if exp.trials.num_samples > sum(rounds) and rest > 0:
        if rounds:
            exp.trials.after(exp.name, state.optuna_storage)  # no ask of an earlier round left RUNNING
        rounds = [*rounds, rest]
        state.save_rounds(rounds)
        new_tuner(exp, state, trainable, len(rounds) - 1, rounds[-1], uri, parent, tags).fit()
        if not round_ended(state.round_dir(len(rounds) - 1), rounds[-1], exp.time_budget):
            return False
    exp.trials.after(exp.name, state.optuna_storage)
    return True


def new_tuner(exp: Experiment, state: ExperimentState, trainable, k: int, num_samples: int, uri: str,
              parent: str, tags: dict[str, str]):
    """The Tuner of round k: num_samples trials, saved in state.round_dir(k)."""
    from ray import tune

    from mlflow_server.tracker import TrialTracker
    from search.progress import LiveView

    param_space, tune_args = exp.trials.tuner_args(exp.objectives, exp.name, state.optuna_storage, uri)
    folder = state.round_dir(k)
    return tune.Tuner(
        trainable,
        param_space=param_space,
        tune_config=tune.TuneConfig(
            **{**tune_args, "num_samples": num_samples},
            max_concurrent_trials=exp.max_concurrent,
            time_budget_s=exp.time_budget,
            reuse_actors=True,
        ),
        run_config=tune.RunConfig(
            name=os.path.basename(folder),
            storage_path=os.path.dirname(folder),
            verbose=0,
            failure_config=tune.FailureConfig(max_failures=exp.max_failures),
            checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
            callbacks=[TrialTracker(uri, exp.name, parent, tags, state.pending_dir),
                       LiveView(exp.objectives, num_samples)],
        ),
    )


def asked_rounds(state: ExperimentState) -> list[int]:
    """The trials asked of each round so far ([] for a new experiment), less a last round that
    saved no state; for an experiment saved before rounds were recorded, its one round's trials
    as Ray Tune holds them."""
    from ray import tune

    rounds = state.rounds()
    if rounds is None and tune.Tuner.can_restore(state.ray_dir):
        rounds = [len(trials_of(state.ray_dir))]
    rounds = rounds or []
    while len(rounds) > 1 and not tune.Tuner.can_restore(state.round_dir(len(rounds) - 1)):
        rounds = rounds[:-1]  # stopped before Ray Tune saved anything of it: run it again
    return rounds


def trials_of(ray_dir: str) -> list:
    from ray.tune import ExperimentAnalysis

    return ExperimentAnalysis(ray_dir).trials


def trials_made(state: ExperimentState, rounds: list[int]) -> int:
    """How many trials the rounds so far made (each started, ended or pending)."""
    return sum(len(trials_of(state.round_dir(k))) for k in range(len(rounds)))


def round_ended(ray_dir: str, num_samples: int, time_budget: float | None) -> bool:
    """Whether Ray Tune's saved state shows a round over: every trial finished, stopped or failed,
    and all num_samples of them made unless a time budget ended the round first.

    After a Ctrl-C, fit() returns as after the end, but the saved state keeps the unfinished
    trials pending for a resume.
    """
    trials = trials_of(ray_dir)
    ended = all(t.status in ("TERMINATED", "ERROR") for t in trials)
    return ended and (len(trials) >= num_samples or time_budget is not None)


def quiet_libraries() -> None:
    """Keep the console to the live view and the summary; details live in MLflow and Ray's logs."""
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    os.environ.setdefault("TUNE_PRINT_ALL_TRIAL_ERRORS", "0")  # a trial's error: its MLflow run and the summary
    for name in ("mlflow", "ray.tune", "ray.train"):
        logging.getLogger(name).setLevel(logging.ERROR)
    logging.getLogger("ray.tune.tune").addFilter(_not_incomplete_trials)


# Loggers whose INFO records say, one line each, what the start of an experiment is doing: generating
# the synthetic set, decoding images or reading them from the node cache, starting the tracking server.
STARTUP_LOGGERS = ("trainables.data", "mlflow_server.server")


@contextlib.contextmanager
def startup_lines():
    """Print the INFO records of STARTUP_LOGGERS on stdout while the block runs (their warnings go
    where they always go)."""
    handler = logging.StreamHandler(sys.stdout)
    handler.addFilter(lambda record: record.levelno == logging.INFO)
    loggers = [logging.getLogger(name) for name in STARTUP_LOGGERS]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.removeHandler(handler)
            logger.setLevel(level)


def _not_incomplete_trials(record) -> bool:
    """Drop Ray Tune's 'Trials did not complete' error: the summary lists them with their reasons."""
    return "Trials did not complete" not in record.getMessage()


def start_ray(address: str | None = None) -> bool:
    """Connect to the Ray cluster at address (or $RAY_ADDRESS, as `ray job submit` sets it), or
    start a local one over all CPUs: never join whichever cluster last ran on this machine,
    which is what ray.init() without an address does. A Ray this process has already joined (a
    notebook's, a test session's) is used as it is and left running: False then, True otherwise."""
    import ray

    if ray.is_initialized():
        cpus = ray.cluster_resources().get("CPU", 0)
        print(f"Ray: using the cluster this process already joined ({cpus:g} CPU{'' if cpus == 1 else 's'})",
              flush=True)
        return False
    address = address or os.environ.get("RAY_ADDRESS") or "local"
    print(f"Ray: starting a local cluster over {os.cpu_count()} CPUs" if address == "local"
          else f"Ray: connecting to the cluster at {address}", flush=True)
    ray.init(address=address, log_to_driver=False, include_dashboard=False, logging_level="ERROR",
             **({"num_cpus": os.cpu_count()} if address == "local" else {}))
    return True
