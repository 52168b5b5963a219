"""Real searches, seed for seed: `tune-run` with each sampler + scheduler, the best final primary objective
found against the trial-epochs spent (the tabular replay's measures, on trials that really train).

    $ uv run python scripts/bench_real_search.py benchmarks/classification_space.py --num-samples 50 --seeds 6 \\
          --budget 100 --table benchmarks/classification_table_32px.json

For each seed and --setups entry (SAMPLER+SCHEDULER), one `tune-run SPACE --sampler S --scheduler C --seed N
--num-samples --num-samples` in $MEDTUNE_HOME (its MLflow server started once and shared). Its trials are read
back from Ray Tune's state in the order they were made: each spends its epochs run, and one that ran every epoch
(train/epochs of the space) counts with its final primary objective. Printed per setup: the best found within
--budget trial-epochs, per seed and its median, and the trial-epochs it spent in all; then the first setup
against each other, seed for seed (higher / lower / same, the mean difference and Wilcoxon's p, as
bench_tabular_paired.py prints them). The seed is also every trial's train/seed, so the same config trains
alike in both setups of a seed.

--table TABLE adds the replay's measure of compute: the trial-epochs spent until a trial that ran every epoch
ends within --tolerance of the table's best final primary (Table.target), per seed; a search whose trials
never do is not found (">" all it spent): its true cost lies above what it spent, so the median is printed
as the range it must lie in (with not found counted as what they spent, then as never found). Random +
FIFO's trials are independent draws of the space, so the share p of its finished trials that reach the
target, pooled over its seeds (with the exact 95% interval), gives the median compute random search needs,
epochs x ceil(ln 0.5 / ln(1 - p)) trial-epochs, without running it until it finds one; each setup's median
is printed against that. As the seed is every trial's train/seed, seeds may differ in that share: the same
median is also printed with a share of its own per seed (beta-binomial, seed_varying_median), with the
likelihood-ratio p of that against one share. Where the table has two objectives, each setup's front within
--budget is measured as the replay measures it (front_shares), and the first setup compared seed for seed.
--reuse reads back a seed's search the home already holds (the latest real-SAMPLER-SCHEDULER-SEED-HHMMSS that
finished, saved with the same trials, --smoke-test and --set) instead of running it again: an interrupted run
picks up where it stopped, and --first-seed adds seeds to earlier ones.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import re
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass

from bench_tabular_paired import paired


@dataclass
class Search:
    """What one search spent and found, its trials in the order they were made."""

    spent: int  # trial-epochs, in all
    best: float  # the best final primary of a trial that ended within the budget (nan when none did)
    within: list[tuple[float, dict]]  # the final primary and flat config of each trial that ended within it
    finals: list[float]  # the final primary of every trial that ran all its epochs
    to_target: int | None  # trial-epochs spent when the first trial reaching the target ended (None: never)


def read_search(home: str, name: str, primary: str, mode: str, epochs: int, budget: int,
                target: float | None = None) -> Search:
    """One experiment's trials, read back from Ray Tune's state: see Search. A trial counts once it has run
    all `epochs`; `target` is reached by a final primary at or beyond it (in the direction of `mode`)."""
    from ray.tune import ExperimentAnalysis

    from search.home import ExperimentState
    from trainables.registry import flat_config

    trials = sorted(ExperimentAnalysis(ExperimentState(home, name).round_dir(0)).trials,
                    key=lambda t: t.run_metadata.start_time or 0)
    sign = 1.0 if mode == "max" else -1.0
    spent, within, finals, to_target = 0, [], [], None
    for trial in trials:
        result = trial.last_result or {}
        spent += result.get("training_iteration", 0)
        if result.get("training_iteration") != epochs or primary not in result:
            continue
        finals.append(result[primary])
        if spent <= budget:
            within.append((result[primary], flat_config(trial.config)))
        if to_target is None and target is not None and sign * result[primary] >= sign * target:
            to_target = spent
    values = [value for value, _ in within]
    best = (max(values) if mode == "max" else min(values)) if values else float("nan")
    return Search(spent, best, within, finals, to_target)


def front_shares(searches: list[Search], table, trainable: str) -> list[float]:
    """Each search's hypervolume as a share of the table's: the front of its trials that ended within the
    budget, over the table's two objectives as the replay counts them (the primary, and the speed as 1e9 /
    training FLOPs per image, counted once per model: the model/* keys, data/channels and data/image_size),
    scaled to the table's range against its worst corner. Above 1 where a trial beat the table's best."""
    import numpy as np
    from bench_tabular_build import train_flops

    flops: dict[tuple, int] = {}

    def speed(config: dict) -> float:
        model = tuple(sorted((k, v) for k, v in config.items()
                             if k.startswith("model/") or k in ("data/channels", "data/image_size")))
        if model not in flops:
            flops[model] = train_flops(config, trainable)
        return 1e9 / flops[model]

    shares = []
    for search in searches:
        points = np.array([[value, speed(config)] for value, config in search.within]).reshape(-1, 2) * table.signs
        points = points[(points >= table.low).all(axis=1)]  # a point worse than the table's worst adds nothing
        shares.append(table.hypervolume(points) / table.full_hv)
    return shares


def random_search_median(hits: int, draws: int, epochs: int) -> tuple[float, float, float]:
    """Median trial-epochs random search needs to draw a config that reaches the target, from `hits` of `draws`
    independent draws that did: the estimate, then its exact 95% interval (lowest, highest)."""
    from scipy.stats import binomtest

    def median(p: float) -> float:
        if p <= 0:
            return math.inf
        return epochs * (1 if p >= 1 else math.ceil(math.log(0.5) / math.log1p(-p)))

    ci = binomtest(hits, draws).proportion_ci(0.95, method="exact")
    return median(hits / draws), median(ci.high), median(ci.low)


def seed_varying_median(hits: list[int], draws: list[int], epochs: int,
                        resamples: int = 1000) -> tuple[float, float, float, float]:
    """Median trial-epochs random search needs when each seed's configs reach the target in a share of its own
    (hits of draws per seed; the shares beta-distributed over seeds, fitted by maximum likelihood to a
    beta-binomial): the estimate, its 95% interval (percentile bootstrap over seeds), and the likelihood-ratio
    p against one share for every seed. Two seeds or more."""
    import numpy as np
    from scipy import optimize, special, stats

    def fit(k: np.ndarray, n: np.ndarray) -> tuple[np.ndarray, float]:
        result = optimize.minimize(lambda ab: -stats.betabinom.logpmf(k, n, *np.exp(ab)).sum(), [0.0, 3.0],
                                   method="Nelder-Mead")
        return np.exp(result.x), -result.fun

    def median(k: np.ndarray, n: np.ndarray, fitted: tuple[np.ndarray, float] | None = None) -> float:
        if not k.any():
            return math.inf
        (a, b), _ = fitted or fit(k, n)

        def log_unfound(d: float) -> float:  # log of (the chance d draws miss) / ½
            return special.betaln(a, b + d) - special.betaln(a, b) - math.log(0.5)

        if log_unfound(1e12) > 0:
            return math.inf
        return float(epochs * max(1, math.ceil(optimize.brentq(log_unfound, 0, 1e12))))

    k, n = np.array(hits), np.array(draws)
    fitted = fit(k, n) if k.any() else None
    with np.errstate(invalid="ignore"):  # the standard error of resamples with no hit (an infinite median)
        ci = stats.bootstrap((k, n), median, paired=True, vectorized=False, method="percentile",
                             n_resamples=resamples, random_state=0).confidence_interval
    ratio = 2 * (fitted[1] - stats.binom.logpmf(k, n, k.sum() / n.sum()).sum()) if fitted else 0.0
    p = 0.5 * stats.chi2.sf(ratio, 1) if ratio > 0 else 1.0  # one share is the boundary: half a chi-square
    return median(k, n, fitted), ci.low, ci.high, p


def finished_name(home: str, prefix: str, wanted: dict) -> str | None:
    """The latest experiment `prefix-HHMMSS` of the home whose search finished with the saved settings in
    `wanted` (those tune-run saved: sampler, scheduler, seed, num_samples, smoke_test, overrides)."""
    from search.home import ExperimentState, experiment_names

    for name in sorted((n for n in experiment_names(home) if re.fullmatch(re.escape(prefix) + r"-\d{6}", n)),
                       key=lambda n: n[-6:], reverse=True):
        state = ExperimentState(home, name)
        if os.path.exists(state.search_done) and all(state.load_settings().get(k) == v for k, v in wanted.items()):
            return name
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("space")
    parser.add_argument("--setups", default="tpe+asha,random+fifo")
    parser.add_argument("--seeds", type=int, default=4)
    parser.add_argument("--first-seed", type=int, default=0, help="seeds first-seed .. first-seed + seeds - 1")
    parser.add_argument("--num-samples", type=int, default=50)
    parser.add_argument("--budget", type=int, required=True, help="trial-epochs within which the best is taken")
    parser.add_argument("--table", help="a tabular benchmark of the space: its best sets the compute target")
    parser.add_argument("--tolerance", type=float, default=0.01, help="the target: this close to the table's best")
    parser.add_argument("--reuse", action="store_true", help="read back the home's finished searches of a seed")
    parser.add_argument("--smoke-test", action="store_true", help="passed on to tune-run")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="passed on to tune-run")
    args = parser.parse_args()
    if args.seeds < 1 or args.num_samples < 1 or args.budget < 1 or args.first_seed < 0:
        parser.error(f"--seeds {args.seeds}, --num-samples {args.num_samples}, --budget {args.budget}: each takes "
                     f"a whole number of 1 or more; --first-seed {args.first_seed}: 0 or more")

    from search.errors import UsageError
    from search.home import results_dir
    from search.overrides import parse_sets
    from search.spacefile import load_space

    space, home = load_space(args.space), results_dir()
    primary, mode = next(iter(space.objectives.items()))
    known = {**space.defaults, **space.smoke} if args.smoke_test else space.defaults
    try:
        overrides = parse_sets(args.set, known)  # as tune-run reads them
        epochs = {**known, **overrides}["train/epochs"]
    except UsageError as e:
        parser.error(str(e))
    target = None
    if args.table:
        from bench_tabular_replay import Table

        try:
            with open(args.table) as f:
                table = Table(json.load(f), "flops")
        except (OSError, ValueError, KeyError) as e:
            parser.error(f"--table {args.table}: not a tabular benchmark the replay reads ({e})")
        if table.primary != primary:
            parser.error(f"--table {args.table} holds {table.primary}; the space's primary objective is {primary}")
        target = table.signs[0] * table.target(args.tolerance)
    setups = args.setups.split(",")
    seeds = range(args.first_seed, args.first_seed + args.seeds)
    print(f"{args.space}: {', '.join(setups)}; seeds {seeds[0]}-{seeds[-1]}, {args.num_samples} trials each, "
          f"{epochs} epochs per trial, best final {primary} within {args.budget} trial-epochs"
          + (f", target {target:.4f} ({args.tolerance:.0%} of {args.table}'s best)" if args.table else "")
          + f"; home {home}; load average {os.getloadavg()[0]:.1f}", flush=True)
    searches: dict[str, list[Search]] = {setup: [] for setup in setups}
    for seed in seeds:
        for setup in setups:
            sampler, _, scheduler = setup.partition("+")
            prefix = f"real-{sampler}-{scheduler}-{seed}"
            wanted = {"sampler": sampler, "scheduler": scheduler, "seed": seed, "num_samples": args.num_samples,
                      "smoke_test": args.smoke_test, "overrides": overrides}
            name, t0 = (finished_name(home, prefix, wanted) if args.reuse else None), time.perf_counter()
            ran = name is None
            if ran:
                name = f"{prefix}-{time.strftime('%H%M%S')}"
                command = [os.path.join(os.path.dirname(sys.executable), "tune-run"), args.space, "--name", name,
                           "--sampler", sampler, "--scheduler", scheduler, "--seed", str(seed),
                           "--num-samples", str(args.num_samples),
                           *(["--smoke-test"] if args.smoke_test else []), *(f"--set={s}" for s in args.set)]
                done = subprocess.run(command, capture_output=True, text=True)
                if done.returncode != 0:
                    sys.exit(f"{' '.join(command)} exited with {done.returncode}:\n"
                             f"{done.stdout[-2000:]}{done.stderr[-2000:]}")
            search = read_search(home, name, primary, mode, epochs, args.budget, target)
            searches[setup].append(search)
            print(f"seed {seed} {setup:14} best {search.best:.4f}  {search.spent} trial-epochs in all  "
                  + (f"to target {search.to_target or '-'}  " if args.table else "")
                  + (f"({time.perf_counter() - t0:.0f} s)" if ran else f"(read back: {name})"), flush=True)
    for setup in setups:
        best = [s.best for s in searches[setup]]
        print(f"{setup:14} median best {statistics.median(best):.4f}  per seed " + " ".join(f"{v:.4f}" for v in best))
    first = setups[0]
    for setup in setups[1:]:
        print(f"{first} against {setup}, seed for seed: "
              f"{paired([s.best for s in searches[setup]], [s.best for s in searches[first]])}")
    if args.table:
        print_compute(searches, target, mode, epochs)
        if len(table.objectives) > 1:
            print_fronts(searches, table, space.trainable.name, args.budget)


def print_compute(searches: dict[str, list], target: float, mode: str, epochs: int) -> None:
    """Each setup's trial-epochs to the target, and against random search's median where random + FIFO ran."""
    sign = 1.0 if mode == "max" else -1.0
    bases = {}
    if "random+fifo" in searches:
        hits = [sum(sign * v >= sign * target for v in s.finals) for s in searches["random+fifo"]]
        draws = [len(s.finals) for s in searches["random+fifo"]]
        base = bases["one share"] = random_search_median(sum(hits), sum(draws), epochs)
        print(f"random + FIFO's finished trials reaching the target: {sum(hits)} of {sum(draws)}: median "
              f"trial-epochs to the target {base[0]:.0f} [95% interval {base[1]:.0f}-{base[2]:.0f}]")
        if len(hits) > 1:
            *base, p = seed_varying_median(hits, draws, epochs)
            bases["shares by seed"] = base
            print(f"the same with a share of its own per seed (beta-binomial; against one share, likelihood "
                  f"ratio p {p:.2g}): median {base[0]:.0f} [95% interval {base[1]:.0f}-{base[2]:.0f}]")
    for setup, runs in searches.items():
        cost = [s.to_target if s.to_target is not None else s.spent for s in runs]
        found = sum(s.to_target is not None for s in runs)
        low = statistics.median(cost)
        high = statistics.median([s.to_target if s.to_target is not None else math.inf for s in runs])
        span = f"{low:g}" if low == high else f"at least {low:g}" if high == math.inf else f"{low:g}-{high:g}"
        against = "".join(f"; against random search's median ({model}) {low / base[0]:.2f}"
                          + ("" if low == high else f"-{high / base[0]:.2f}")
                          + f" [{low / base[2]:.2f}-{high / base[1]:.2f}]" for model, base in bases.items())
        print(f"{setup:14} to target: found {found}/{len(runs)}, median {span} trial-epochs per seed "
              f"{' '.join(str(c) if s.to_target is not None else f'>{c}' for c, s in zip(cost, runs))}" + against)


def print_fronts(searches: dict[str, list], table, trainable: str, budget: int) -> None:
    """Each setup's hypervolume share within the budget (front_shares), and the first setup against the others."""
    shares = {setup: front_shares(runs, table, trainable) for setup, runs in searches.items()}
    for setup, values in shares.items():
        low, mid, high = statistics.quantiles(values, n=4) if len(values) > 1 else values * 3
        print(f"{setup:14} hypervolume share within {budget} trial-epochs: median {mid:.3f} "
              f"(quartiles {low:.3f}-{high:.3f})")
    first, *others = shares
    for setup in others:
        print(f"{first} against {setup}, hypervolume share seed for seed: {paired(shares[setup], shares[first])}")


if __name__ == "__main__":
    main()
