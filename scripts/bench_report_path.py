"""What one epoch's report costs: in the trial, `trainables.loop.report` with a checkpoint of a given size
against a report of the metrics alone; in the driver, the MLflow tracker's hook for one result.

    $ uv run python scripts/bench_report_path.py --sizes 30,300 --epochs 12   # MB of checkpoint state

(a) For each size, one Ray Tune trial (a local Ray, the experiment's storage under a temporary folder, one
checkpoint kept, as the engine keeps) reports --epochs times with a state of that many MB (float32 tensors,
the size of a model with its Adam state: 30 MB is the tiny multitask model of the smoke tests, 300 MB a
ResNet-50's) and --epochs times without one, sleeping --sleep seconds before each; printed: the median and
range of the seconds each report call took inside the trial (writing the checkpoint, Ray's copy of it into
the trial's folder, and the wait for the driver's next call).
(b) `mlflow_server.tracker.TrialTracker.on_trial_result` for --results results of one trial against the
tracking server of $MEDTUNE_HOME (started if none runs): the median and range of the hook's seconds, then
how long its writes took to reach the server (the hook's own time when it writes them itself).
"""
from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time


def timed_reports(config: dict) -> None:
    """The trial: `epochs` reports with a checkpoint of `mb` MB (trainables.loop.report) or without one."""
    import torch
    from ray import tune

    from trainables.loop import report

    state = {"weights": torch.zeros(config["mb"] * 2**18)} if config["mb"] else None
    seconds = []
    for epoch in range(1, config["epochs"] + 1):
        time.sleep(config["sleep"])
        started = time.perf_counter()
        metrics = {"epoch": epoch, "val/score": float(epoch)}
        report(metrics, state)
        seconds.append(time.perf_counter() - started)
    tune.report({"epoch": config["epochs"] + 1, "all_report_s": seconds})


def spread(values: list[float]) -> str:
    return (f"median {statistics.median(values) * 1000:.1f} ms (range {min(values) * 1000:.1f}-"
            f"{max(values) * 1000:.1f} ms, {len(values)} calls)")


def trial_reports(sizes: list[int], epochs: int, sleep: float) -> list[str]:
    """A line per size (0: metrics only), printed after Ray's own output."""
    import ray
    from ray import tune

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    lines = []
    try:
        with tempfile.TemporaryDirectory() as storage:
            for mb in [0, *sizes]:
                result = tune.Tuner(
                    tune.with_resources(timed_reports, {"cpu": 1}),
                    param_space={"mb": mb, "epochs": epochs, "sleep": sleep},
                    run_config=tune.RunConfig(name=f"report-{mb}", storage_path=storage, verbose=0,
                                              checkpoint_config=tune.CheckpointConfig(num_to_keep=1)),
                ).fit()[0]
                if result.error:
                    raise SystemExit(f"the {mb} MB trial failed: {result.error}")
                what = f"with a {mb} MB checkpoint" if mb else "metrics only"
                lines.append(f"(a) report {what}: {spread(result.metrics['all_report_s'][1:])} (the first left out)")
    finally:
        ray.shutdown()
    return lines


def tracker_hooks(results: int) -> None:
    from mlflow import MlflowClient
    from ray.train._internal.storage import StorageContext
    from ray.tune.experiment import Trial

    from mlflow_server.server import configure_client, ensure_server
    from mlflow_server.tracker import TrialTracker, get_or_create_parent_run
    from search.home import results_dir

    configure_client()
    uri = ensure_server(results_dir())
    experiment = f"bench-report-path-{time.strftime('%Y%m%d-%H%M%S')}"
    parent = get_or_create_parent_run(MlflowClient(uri), experiment, {})
    with tempfile.TemporaryDirectory() as folder:
        storage = StorageContext(storage_path=folder, experiment_dir_name="e")
        trial = Trial("train", config={"train": {"epochs": results}}, trial_id="t_00000", storage=storage, stub=True)
        tracker = TrialTracker(uri, experiment, parent, {}, os.path.join(folder, "pending"))
        tracker.on_trial_start(iteration=0, trials=[trial], trial=trial)
        seconds, started = [], time.perf_counter()
        for epoch in range(1, results + 1):
            result = {"epoch": epoch, "training_iteration": epoch, "val/score": epoch / results, "val/loss": 1 / epoch}
            hook = time.perf_counter()
            tracker.on_trial_result(iteration=epoch, trials=[trial], trial=trial, result=result)
            seconds.append(time.perf_counter() - hook)
        tracker.on_trial_complete(iteration=results, trials=[trial], trial=trial)
        tracker.on_experiment_end(trials=[trial])
        print(f"(b) tracker hook per result: {spread(seconds)}; all {results} results on the server "
              f"{time.perf_counter() - started:.2f} s after the first hook ({uri}, experiment {experiment!r})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="30,300", help="checkpoint sizes in MB, comma-separated")
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--sleep", type=float, default=0.2, help="seconds of 'training' before each report")
    parser.add_argument("--results", type=int, default=50, help="results given to the tracker")
    args = parser.parse_args()
    try:
        sizes = [int(size) for size in args.sizes.split(",")]
    except ValueError:
        parser.error(f"--sizes {args.sizes!r}: expected whole MB separated by commas, e.g. 30,300")
    print(f"load average {os.getloadavg()[0]:.1f}")
    print("\n".join(trial_reports(sizes, args.epochs, args.sleep)))
    tracker_hooks(args.results)
    print(f"load average {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
