"""Orchestration overhead: `tune-run` against a plain loop of the same configs, in as many processes as
tune-run runs trials at once.

    $ uv run python scripts/bench_overhead.py spaces/multitask.py --smoke-test --num-samples 4 --set train/epochs=1 \\
          --set data/fraction=0.25 --set data/image_size=32 --set figures/draw=false  # ~3 s trials, idle 2-CPU VM
    $ uv run python scripts/bench_overhead.py spaces/multitask.py --smoke-test --num-samples 4 --set train/epochs=3 \\
          --set data/fraction=0.25                                                    # ~24 s trials
    $ uv run python scripts/bench_overhead.py ... --profile overhead.prof   # the driver under cProfile

tune-run runs with --scheduler fifo --sampler random (every trial runs its whole budget) in $MEDTUNE_HOME (and
starts its MLflow server there if none runs); the configs its trials ran are then trained again by
scripts/bench_tabular_build.train_in_process in --processes spawned processes (imports included, no Ray, no
checkpoint files, no tracking) at Ray's trial niceness (--nice), so that a busy machine favours neither.
Printed: both wall times and their ratio; the time from the start to the first trial's first epoch (Ray's
result timestamps are whole seconds); tune-run's phases, from its live view's lines as they arrive (the start
up to the first trial's start, the trials, and the tail from the last trial's end to the exit: the summary);
per trial, Ray's time_total_s against the same config's time in the loop (the overhead inside a trial:
reports, checkpoints, the worker); and what is left, the experiment's fixed cost (Ray and MLflow start,
preflight, summary). The load average is printed: on a busy machine the figures say little; rerun on an idle
one. Where the environment sets PYTHONDONTWRITEBYTECODE, unset it (as .ci/run does): every process would
otherwise compile all it imports, about twice the start and twice a fresh Ray worker's imports of an ordinary
install.
"""
from __future__ import annotations

import collections
import contextlib
import multiprocessing
import os
import re
import statistics
import subprocess
import sys
import time

from bench_tabular_build import train_in_process
from space_args import space_parser


PROGRESS = re.compile(r"\[\s*\d+:\d\d\] ")  # the live view's lines: a trial started, ended, ...


def cpu_seconds(driver: int) -> dict[int, tuple[str, float]]:
    """Every process's (group, user + system CPU-seconds so far): the driver, Ray's trial workers
    (titled ray::...), Ray's own processes, the MLflow server, and the rest by name."""
    import ray  # noqa: F401  (it puts its own copy of psutil on the path)
    import psutil

    seconds = {}
    for proc in psutil.process_iter(["name", "cmdline"]):
        with contextlib.suppress(psutil.Error):
            line = " ".join(proc.info["cmdline"] or [])
            group = ("driver" if proc.pid == driver else "Ray's trial workers" if line.startswith("ray::")
                     else "Ray's own processes" if "/ray/" in line or proc.info["name"] in ("raylet", "gcs_server")
                     else "the MLflow server" if "mlflow" in line else proc.info["name"])
            times = proc.cpu_times()
            seconds[proc.pid] = (group, times.user + times.system)
    return seconds


def run_tune(args, name: str) -> tuple[float, float, list[float], collections.Counter]:
    """Run tune-run; (start, end) wall-clock times (seconds since the epoch), the times of its live
    view's lines (the first: the first trial started; the last: the last trial ended), and the CPU-seconds
    each group of processes (cpu_seconds) used between those two lines, while the trials ran (a process
    that ended before the last line is not counted)."""
    tune_run = os.path.join(os.path.dirname(sys.executable), "tune-run")
    command = [tune_run, args.space, "--scheduler", "fifo", "--sampler", "random", "--num-samples",
               str(args.num_samples), "--max-concurrent", str(args.processes), "--name", name,
               *(["--smoke-test"] if args.smoke_test else []),
               *[a for s in args.set for a in ("--set", s)]]
    if args.profile:
        command = [sys.executable, "-m", "cProfile", "-o", args.profile, *command]
    start, progress, first, last = time.time(), [], None, None
    with open(f"/tmp/{name}.log", "w") as log, subprocess.Popen(command, stdout=subprocess.PIPE,
                                                                 stderr=subprocess.STDOUT, text=True) as proc:
        for line in proc.stdout:
            if PROGRESS.match(line):
                progress.append(time.time())
                last = cpu_seconds(proc.pid)
                first = first or last
            log.write(line)
    end = time.time()
    if proc.returncode:
        raise SystemExit(f"tune-run exited with {proc.returncode}; see /tmp/{name}.log")
    used = collections.Counter()
    for pid, (group, seconds) in last.items():
        used[group] += seconds - first.get(pid, (group, 0.0))[1]
    return start, end, progress, used


def tune_trials(name: str) -> list[tuple[dict, float, float]]:
    """Each trial of experiment `name` in $MEDTUNE_HOME: (flat config, time_total_s, first result timestamp)."""
    from ray.tune import ExperimentAnalysis

    from search.home import ExperimentState, results_dir
    from trainables.registry import flat_config

    analysis = ExperimentAnalysis(ExperimentState(results_dir(), name).ray_dir)
    frames = analysis.trial_dataframes
    return [(flat_config(t.config), t.last_result["time_total_s"], float(frames[t.trial_id]["timestamp"].min()))
            for t in analysis.trials]


def loop_one(job: tuple[dict, str]) -> list[dict]:
    return train_in_process(*job)


def main() -> None:
    parser = space_parser(__doc__)
    parser.add_argument("--num-samples", type=int, default=4)
    parser.add_argument("--processes", type=int, default=os.cpu_count(), help="the loop's; tune-run's trials at once")
    parser.add_argument("--nice", type=int, default=15, help="the loop's niceness; Ray runs its trial workers at 15")
    parser.add_argument("--profile", metavar="FILE", help="run tune-run under cProfile, writing FILE")
    args = parser.parse_args()

    from search.spacefile import load_space

    space_path = load_space(args.space).path
    name = f"overhead-{time.strftime('%Y%m%d-%H%M%S')}"
    load = [os.getloadavg()[0]]
    start, end, progress, used = run_tune(args, name)
    load.append(os.getloadavg()[0])
    trials = tune_trials(name)
    loop_start = time.time()
    with multiprocessing.get_context("spawn").Pool(args.processes, initializer=os.nice, initargs=(args.nice,)) as pool:
        loop = pool.map(loop_one, [(config, space_path) for config, _, _ in trials], chunksize=1)
    loop_end = time.time()
    load.append(os.getloadavg()[0])

    tune_s, loop_s = end - start, loop_end - loop_start
    in_trial = [ray_s - sum(e["wall_s"] for e in epochs) for (_, ray_s, _), epochs in zip(trials, loop)]
    slots = -(-len(trials) // args.processes)  # trials one after another in the busiest slot
    print(f"{name}: {len(trials)} trials of {statistics.fmean(sum(e['wall_s'] for e in ep) for ep in loop):.1f} s "
          f"(loop, mean), {args.processes} at once; load average {' -> '.join(f'{x:.1f}' for x in load)}")
    print(f"tune-run {tune_s:.1f} s, plain loop {loop_s:.1f} s: ratio {tune_s / loop_s:.2f}")
    print(f"first epoch reported after: tune-run {min(t for _, _, t in trials) - start:.0f} s (1 s resolution), "
          f"loop {min(ep[0]['at'] for ep in loop) - loop_start:.1f} s")
    print(f"tune-run's phases: {progress[0] - start:.1f} s to the first trial's start, {progress[-1] - progress[0]:.1f} s "
          f"of trials (to the last trial's end), {end - progress[-1]:.1f} s from there to its exit (the summary)")
    print("CPU-seconds while the trials ran: " + ", ".join(f"{group} {seconds:.1f}" for group, seconds
                                                          in used.most_common(5)))
    print(f"inside a trial (Ray's time_total_s - the loop's time for its config): mean {statistics.fmean(in_trial):.2f} s,"
          f" per trial {', '.join(f'{x:.1f}' for x in in_trial)}")
    print(f"left, per trial: {(tune_s - loop_s) / slots - statistics.fmean(in_trial):.2f} s "
          f"((tune-run - loop) / {slots} trials per slot - inside a trial)")
    if args.profile:
        import pstats

        pstats.Stats(args.profile).sort_stats("cumulative").print_stats(25)


if __name__ == "__main__":
    main()
