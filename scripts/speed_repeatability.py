"""Run one config of a space file several times, one trial at a time, and print the spread of its speed metrics.

    $ uv run python scripts/speed_repeatability.py spaces/multitask.py --smoke-test
    $ uv run python scripts/speed_repeatability.py spaces/classification.py --set data/workers=4 --repeats 3

The config is the space's DEFAULTS (with --smoke-test, then its SMOKE) and the --set overrides; searched
keys keep their defaults. Each run is a fresh trial on a local Ray cluster with --cpus CPUs, started
after the cluster has settled (--settle seconds: on 2 CPUs Ray's own start-up work slowed a first run by
10-25%). The spread is (max - min) / mean. The load average is printed: other processes on the machine
change the numbers, so compare runs on an idle machine.
"""
from __future__ import annotations

import os
import statistics
import tempfile
import time

from space_args import pinned, space_parser

METRICS = ("perf/train_images_per_s", "perf/loader_images_per_s", "perf/epoch_s", "perf/train_total_s",
           "perf/peak_mem_mb")


def run_once(spec, config: dict, cpus: float, gpus: float, storage: str, name: str) -> dict:
    from ray import tune

    from trainables.registry import nested_config

    tuner = tune.Tuner(tune.with_resources(spec.function(), {"cpu": cpus, "gpu": gpus}),
                       param_space=nested_config(config),
                       run_config=tune.RunConfig(name=name, storage_path=storage, verbose=0))
    result = tuner.fit()[0]
    if result.error:
        raise SystemExit(f"Run {name} failed: {result.error}")
    return result.metrics


def main() -> None:
    parser = space_parser(__doc__)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--cpus", type=float, default=1.0)
    parser.add_argument("--gpus", type=float, default=0.0)
    parser.add_argument("--settle", type=float, default=60.0, help="seconds to wait after Ray starts")
    args = parser.parse_args()

    import ray

    from search.spacefile import load_space

    space = load_space(args.space)
    config = {**space.defaults, **pinned(space, args)}
    ray.init(num_cpus=os.cpu_count(), log_to_driver=False, include_dashboard=False, logging_level="ERROR")
    time.sleep(args.settle)
    print(f"load average before: {os.getloadavg()[0]:.2f}")
    runs = []
    with tempfile.TemporaryDirectory() as storage:
        for i in range(args.repeats):
            metrics = run_once(space.trainable, config, args.cpus, args.gpus, storage, f"speed-{i}")
            runs.append(metrics)
            print(f"run {i + 1}: " + ", ".join(f"{m} {metrics[m]:.1f}" for m in METRICS))
    ray.shutdown()
    print(f"load average after: {os.getloadavg()[0]:.2f}")
    for m in METRICS:
        values = [r[m] for r in runs]
        mean = statistics.fmean(values)
        print(f"{m}: mean {mean:.1f}, spread {(max(values) - min(values)) / mean:.1%}")


if __name__ == "__main__":
    main()
