"""Check a tabular benchmark's surrogate against real training: the configs it predicts best, trained.

    $ uv run python scripts/bench_surrogate_check.py benchmarks/classification_table_32px.json --top 5 --seeds 5

The replay's --answer surrogate (scripts/bench_tabular_replay.surrogate_table: a random forest over the
space's whole grid) sets the target every search is timed against: the grid's best predicted final primary
objective. Here the --top configs of the grid by that prediction, and the table's best row, are trained in this
process as the table's rows were (scripts/bench_tabular_build.train_in_process, the table's constants), each
under --seeds training seeds: the table's seed, then the next ones. A row's value in the table is one seed's on
its building machine; another CPU may train the same config and seed to another value, and seeds differ too,
so each config is compared with the best row trained here under the same seeds. Printed: the best row's
measured final value, then each config's predicted and measured value, its difference from the best row's
(with 95% t-intervals over the seeds from three on, search.ablation.stats) and, for a config the table holds, its row's
value. Last, how many configs measured within --tolerance of the table's best row and of the best row trained
here, and the mean measured minus predicted.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import time

import numpy as np

from bench_tabular_build import machine_line, train_in_process
from bench_tabular_replay import Table, surrogate_table, target


def key(params: dict) -> str:
    return json.dumps(params, sort_keys=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("table")
    parser.add_argument("--top", type=int, default=5, help="how many of the best predicted configs to train")
    parser.add_argument("--tolerance", type=float, default=0.01)
    parser.add_argument("--seeds", type=int, default=1, help="training seeds per config: the table's, then the next")
    args = parser.parse_args()
    for flag in ("top", "seeds"):
        if getattr(args, flag) < 1:
            parser.error(f"--{flag} {getattr(args, flag)}: takes a whole number of 1 or more")

    from search.ablation.stats import paired, summarize
    from search.spacefile import load_space

    with open(args.table) as f:
        raw = json.load(f)
    dense, r2 = surrogate_table(raw, load_space(raw["space"]))
    table, grid = Table(raw, "flops"), Table(dense, "flops")
    primary, sign = table.primary, table.signs[0]
    rows = {key(row["params"]): row["curves"][primary][-1] for row in raw["rows"]}
    best_row = raw["rows"][int(np.argmax(table.finals[:, 0]))]
    top = [grid.rows[i] for i in np.argsort(-grid.finals[:, 0], kind="stable")[:args.top]]  # finals: maximised
    seeds = [raw["constants"]["train/seed"] + i for i in range(args.seeds)]
    print(f"{args.table}: {len(raw['rows'])} rows, surrogate over {len(dense['rows'])} configs (R² {r2:.2f}); "
          f"table's best final {primary} {sign * table.best:.4f}; the {args.top} best predicted and the best row, "
          f"trained under seeds {seeds[0]}-{seeds[-1]}; load average {os.getloadavg()[0]:.1f}; {machine_line()}",
          flush=True)
    trained: dict[str, np.ndarray] = {}  # a config's final values under the seeds, trained once

    def measure(params: dict) -> np.ndarray:
        if key(params) not in trained:
            trained[key(params)] = np.array([train_in_process({**raw["constants"], **params, "train/seed": seed},
                                                              raw["space"])[-1][primary] for seed in seeds])
        return trained[key(params)]

    t0 = time.perf_counter()
    reference = measure(best_row["params"])
    best = summarize(list(reference))
    print(f" best row: measured {spread(best.mean, best.low, best.high)}  table {sign * table.best:.4f}  "
          f"{best_row['params']}", flush=True)
    measured = []
    for rank, row in enumerate(top, 1):
        values = measure(row["params"])
        summary, against = summarize(list(values)), paired(dict(zip(seeds, values)), dict(zip(seeds, reference)))
        measured.append(summary.mean)
        held = rows.get(key(row["params"]))
        print(f"{rank:>2}. predicted {row['curves'][primary][-1]:.4f}  "
              f"measured {spread(summary.mean, summary.low, summary.high)}  "
              f"against the best row {spread(against.diff, against.low, against.high, '+')}  "
              f"table {'-' if held is None else f'{held:.4f}'}  {row['params']}", flush=True)
    goal = sign * table.target(args.tolerance)  # within tolerance of the table's best row
    here = sign * target(sign * best.mean, args.tolerance)  # ... of the best row trained here
    within = [sum(sign * m >= sign * g for m in measured) for g in (goal, here)]
    drift = statistics.mean(m - row["curves"][primary][-1] for m, row in zip(measured, top))
    print(f"measured within {args.tolerance:.0%} of the table's best: {within[0]} of {args.top}; of the best row "
          f"trained here: {within[1]} of {args.top}; mean measured - predicted {drift:+.4f} "
          f"({time.perf_counter() - t0:.0f} s)")


def spread(mean: float, low: float, high: float, sign: str = "") -> str:
    """A mean over seeds with its 95% t-interval (none, NaN, from fewer seeds than search.ablation.stats asks)."""
    interval = "" if math.isnan(low) else f" [{low:{sign}.4f}, {high:{sign}.4f}]"
    return f"{mean:{sign}.4f}{interval}"


if __name__ == "__main__":
    main()
