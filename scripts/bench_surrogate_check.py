"""Check a tabular benchmark's surrogate against real training: the configs it predicts best, trained.

    $ uv run python scripts/bench_surrogate_check.py benchmarks/classification_table_32px.json --top 5

The replay's --answer surrogate (scripts/bench_tabular_replay.surrogate_table: a random forest over the
space's whole grid) sets the target every search is timed against: the grid's best predicted final primary
objective. Here the --top configs of the grid by that prediction are trained in this process, as the table's
rows were (scripts/bench_tabular_build.train_in_process, the table's constants and seed), and each one's
predicted and measured final value is printed beside the table's best row and, for a config the table holds,
its row's value. Printed last: how many measured within --tolerance of the table's best, and the mean
measured minus predicted.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import time

import numpy as np

from bench_tabular_build import train_in_process
from bench_tabular_replay import Table, surrogate_table


def key(params: dict) -> str:
    return json.dumps(params, sort_keys=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("table")
    parser.add_argument("--top", type=int, default=5, help="how many of the best predicted configs to train")
    parser.add_argument("--tolerance", type=float, default=0.01)
    args = parser.parse_args()
    if args.top < 1:
        parser.error(f"--top {args.top}: takes a whole number of 1 or more")

    from search.spacefile import load_space

    with open(args.table) as f:
        raw = json.load(f)
    dense, r2 = surrogate_table(raw, load_space(raw["space"]))
    table, grid = Table(raw, "flops"), Table(dense, "flops")
    primary, sign = table.primary, table.signs[0]
    rows = {key(row["params"]): row["curves"][primary][-1] for row in raw["rows"]}
    best = sign * table.best
    top = [grid.rows[i] for i in np.argsort(-grid.finals[:, 0], kind="stable")[:args.top]]  # finals: maximised
    print(f"{args.table}: {len(raw['rows'])} rows, surrogate over {len(dense['rows'])} configs (R² {r2:.2f}); "
          f"table's best final {primary} {best:.4f}; the {args.top} best predicted, trained; "
          f"load average {os.getloadavg()[0]:.1f}", flush=True)
    t0, measured = time.perf_counter(), []
    for rank, row in enumerate(top, 1):
        predicted = row["curves"][primary][-1]
        value = train_in_process({**raw["constants"], **row["params"]}, raw["space"])[-1][primary]
        measured.append(value)
        held = rows.get(key(row["params"]))
        print(f"{rank:>2}. predicted {predicted:.4f}  measured {value:.4f}  "
              f"table {'-' if held is None else f'{held:.4f}'}  {row['params']}", flush=True)
    within = sum(sign * value >= table.target(args.tolerance) for value in measured)
    drift = statistics.mean(m - row["curves"][primary][-1] for m, row in zip(measured, top))
    print(f"measured within {args.tolerance:.0%} of the table's best: {within} of {args.top}; "
          f"mean measured - predicted {drift:+.4f} ({time.perf_counter() - t0:.0f} s)")


if __name__ == "__main__":
    main()
