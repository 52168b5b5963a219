"""Compare two tabular replays seed for seed: the figures of docs/benchmarks.md's paired comparisons.

    $ uv run python scripts/bench_tabular_replay.py benchmarks/multitask_table_32px.json --budget 400 \
          --seeds 160 --setups tpe+asha --stopped hidden -o before.json
    $ uv run python scripts/bench_tabular_replay.py ... --stopped pruned -o after.json
    $ uv run python scripts/bench_tabular_paired.py before.json after.json --setup tpe+asha

Both files come from bench_tabular_replay.py -o over the same table, seeds and budget. For one setup
(or two: --setup A --other-setup B), seed by seed: in how many seeds the second is cheaper, dearer or
the same in trial-epochs until a config within the tolerance of the table's best ends (not found
counted as the budget), and higher, lower or the same in the hypervolume share at each budget share;
the mean difference, and the two-sided Wilcoxon signed-rank test's p over the seeds that differ
(SciPy; zero differences dropped).
"""
from __future__ import annotations

import argparse
import json

SAME = ("table", "seeds", "first_seed", "budget", "tolerance", "concurrency", "primary_only", "speed", "answer")


def load(path: str, setup: str) -> tuple[dict, dict]:
    """The replay's arguments and one setup's per-seed figures; ValueError names what is missing."""
    with open(path) as f:
        raw = json.load(f)
    if setup not in raw.get("figures", {}):
        raise ValueError(f"{path}: no setup {setup!r}; it holds {', '.join(raw.get('figures', {})) or 'none'}")
    return {**raw["args"], "budget": raw["budget"]}, raw["figures"][setup]


def paired(first: list[float], second: list[float]) -> str:
    """How the second list compares with the first, seed for seed."""
    from scipy.stats import wilcoxon

    diffs = [b - a for a, b in zip(first, second)]
    moved = [d for d in diffs if abs(d) > 1e-12]
    p = f"{wilcoxon(moved).pvalue:.2g}" if moved else "-"
    return (f"higher {sum(d > 0 for d in moved)}, lower {sum(d < 0 for d in moved)}, "
            f"same {len(diffs) - len(moved)}; mean difference {sum(diffs) / len(diffs):+.4f}; Wilcoxon p {p}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("first", help="bench_tabular_replay.py -o output (the baseline)")
    parser.add_argument("second", help="bench_tabular_replay.py -o output (compared with the first)")
    parser.add_argument("--setup", default="tpe+asha", help="the setup compared (default tpe+asha)")
    parser.add_argument("--other-setup", help="the second file's setup, when it differs from --setup")
    args = parser.parse_args()
    try:
        (a_args, a), (b_args, b) = load(args.first, args.setup), load(args.second, args.other_setup or args.setup)
    except (OSError, ValueError) as e:
        parser.error(str(e))
    differ = [f"{k}: {a_args.get(k)!r} vs {b_args.get(k)!r}" for k in SAME if a_args.get(k) != b_args.get(k)]
    if differ:
        parser.error("the two replays must share table, seeds and budget; they differ in " + "; ".join(differ))
    budget = a_args["budget"]
    cost = [[x if x is not None else budget for x in fig["to_target"]] for fig in (a, b)]
    print(f"{args.second} against {args.first}, {len(cost[0])} seeds from {a_args['first_seed']}, "
          f"budget {budget} trial-epochs")
    print(f"trial-epochs to the target: {paired(*cost)} (higher = dearer)")
    for share in a["hv"]:
        print(f"HV@{float(share):.0%}: {paired(a['hv'][share], b['hv'][share])}")


if __name__ == "__main__":
    main()
