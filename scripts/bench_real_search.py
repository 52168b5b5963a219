"""Real searches, seed for seed: `tune-run` with each sampler + scheduler, the best final primary objective
found against the trial-epochs spent (the tabular replay's measure, on trials that really train).

    $ uv run python scripts/bench_real_search.py benchmarks/classification_space.py --num-samples 50 --seeds 6 \\
          --budget 100

For each seed and --setups entry (SAMPLER+SCHEDULER), one `tune-run SPACE --sampler S --scheduler C --seed N
--num-samples --num-samples` in $MEDTUNE_HOME (its MLflow server started once and shared). Its trials are read
back from Ray Tune's state in the order they were made: each spends its epochs run, and one that ran every epoch
(train/epochs of the space) counts with its final primary objective. Printed per setup: the best found within
--budget trial-epochs, per seed and its median, and the trial-epochs it spent in all; then the first setup
against each other, seed for seed (higher / lower / same, the mean difference and Wilcoxon's p, as
bench_tabular_paired.py prints them). The seed is also every trial's train/seed, so the same config trains
alike in both setups of a seed.
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time

from bench_tabular_paired import paired


def spent_and_best(home: str, name: str, primary: str, mode: str, epochs: int, budget: int) -> tuple[int, float]:
    """Trial-epochs the experiment spent, and the best final `primary` of a trial that ran all `epochs`
    and ended within the first `budget` trial-epochs (nan when none did)."""
    from ray.tune import ExperimentAnalysis

    from search.home import ExperimentState

    trials = sorted(ExperimentAnalysis(ExperimentState(home, name).round_dir(0)).trials,
                    key=lambda t: t.run_metadata.start_time or 0)
    spent, finals = 0, []
    for trial in trials:
        result = trial.last_result or {}
        spent += result.get("training_iteration", 0)
        if spent <= budget and result.get("training_iteration") == epochs and primary in result:
            finals.append(result[primary])
    if not finals:
        return spent, float("nan")
    return spent, max(finals) if mode == "max" else min(finals)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("space")
    parser.add_argument("--setups", default="tpe+asha,random+fifo")
    parser.add_argument("--seeds", type=int, default=4)
    parser.add_argument("--num-samples", type=int, default=50)
    parser.add_argument("--budget", type=int, required=True, help="trial-epochs within which the best is taken")
    parser.add_argument("--smoke-test", action="store_true", help="passed on to tune-run")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="passed on to tune-run")
    args = parser.parse_args()
    if args.seeds < 1 or args.num_samples < 1 or args.budget < 1:
        parser.error(f"--seeds {args.seeds}, --num-samples {args.num_samples}, --budget {args.budget}: each takes "
                     f"a whole number of 1 or more")

    from search.errors import UsageError
    from search.home import results_dir
    from search.overrides import parse_sets
    from search.spacefile import load_space

    space, home = load_space(args.space), results_dir()
    primary, mode = next(iter(space.objectives.items()))
    known = {**space.defaults, **space.smoke} if args.smoke_test else space.defaults
    try:
        epochs = {**known, **parse_sets(args.set, known)}["train/epochs"]  # as tune-run reads them
    except UsageError as e:
        parser.error(str(e))
    setups = args.setups.split(",")
    print(f"{args.space}: {', '.join(setups)}; seeds 0-{args.seeds - 1}, {args.num_samples} trials each, "
          f"{epochs} epochs per trial, best final {primary} within {args.budget} trial-epochs; home {home}; "
          f"load average {os.getloadavg()[0]:.1f}", flush=True)
    best = {setup: [] for setup in setups}
    for seed in range(args.seeds):
        for setup in setups:
            sampler, _, scheduler = setup.partition("+")
            name = f"real-{sampler}-{scheduler}-{seed}-{time.strftime('%H%M%S')}"
            command = [os.path.join(os.path.dirname(sys.executable), "tune-run"), args.space, "--name", name, "--sampler", sampler,
                       "--scheduler", scheduler, "--seed", str(seed), "--num-samples", str(args.num_samples),
                       *(["--smoke-test"] if args.smoke_test else []), *(f"--set={s}" for s in args.set)]
            t0 = time.perf_counter()
            done = subprocess.run(command, capture_output=True, text=True)
            if done.returncode != 0:
                sys.exit(f"{' '.join(command)} exited with {done.returncode}:\n{done.stdout[-2000:]}{done.stderr[-2000:]}")
            spent, value = spent_and_best(home, name, primary, mode, epochs, args.budget)
            best[setup].append(value)
            print(f"seed {seed} {setup:14} best {value:.4f}  {spent} trial-epochs in all  "
                  f"({time.perf_counter() - t0:.0f} s)", flush=True)
    for setup in setups:
        print(f"{setup:14} median best {statistics.median(best[setup]):.4f}  per seed "
              + " ".join(f"{v:.4f}" for v in best[setup]))
    first = setups[0]
    for setup in setups[1:]:
        print(f"{first} against {setup}, seed for seed: {paired(best[setup], best[first])}")


if __name__ == "__main__":
    main()
