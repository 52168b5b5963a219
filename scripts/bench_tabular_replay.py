"""Replay searches against the tabular benchmark: no training, the table's curves answer every epoch.

    $ uv run python scripts/bench_tabular_replay.py benchmarks/multitask_table.json --seeds 20

Each search is the engine's own objects, driven as Ray Tune's controller drives them: the searcher is
search.searcher.ResumableOptunaSearch over search.sampling.SpaceSampler with the Optuna sampler of
make_sampler (so a trial the scheduler stopped is told to Optuna as PRUNED, and TPE sees it as completed with
its last epoch's values: search.tpe), and the scheduler is
make_scheduler's (Ray's FIFOScheduler and AsyncHyperBandScheduler, or search.moasha.MultiObjectiveASHA), called
with stub Ray Trials. --concurrency trials run at once, each epoch one unit of time; compute is counted in
trial-epochs. A config the sampler proposes is answered by the table's nearest row (searched keys: a
categorical mismatch counts 1, a numeric difference its share of the key's range in the table), so a small
table answers many configs with one row.

Figures, over --seeds seeds (median and interquartile range):
- trial-epochs until a trial that ran its whole budget ends within --tolerance of the table's best final
  primary objective (runs that never do within --budget are counted as not found);
- Kégl's normalised score at each budget share: (m - r) / (b - r), where m and r are the medians over seeds
  of the best final primary value found by the method and by random search + FIFO, and b the table's best
  (0 = random search, 1 = the table's best);
- the hypervolume of the Pareto front of the trials that ran their whole budget (objectives scaled to the
  table's range, reference point its worst), as a share of the whole table's, at each budget share;
- rows/trials: how many distinct rows answered the trials a search started, and how many it started
  (medians). A config near one tried before is answered by the same row, with the same curves: a real
  search would learn something new from it, the replay nothing, so a sampler that proposes near its best
  configs (TPE) is shown at a disadvantage against one that spreads them (random search). --answer
  unseen answers each config with the nearest row the search has not started yet (any row once all have
  been): every trial brings a new row, as a new config would bring new results. --answer surrogate
  replays against the space's whole grid (its searched keys must be choices, integers or floats with a
  step), each config's curves predicted by a random forest fitted on the table's rows (its cross-validated
  R² is printed): a config is answered as itself, a repeat is a true repeat, and the best and the
  hypervolume are the grid's.
The speed objective is by default a load-free stand-in, images per GFLOP of training (the table's FLOPs
per image); --speed measured uses the throughput measured when the table was built.
--tpe KEY=VALUE (repeatable) replays TPE with make_sampler's settings changed, e.g. --tpe n_startup_trials=5
--tpe group=true; --reduction-factor N replays ASHA and MO-ASHA keeping 1/N at each rung; --first-seed shifts
the seeds (to confirm a finding on seeds it was not chosen on). Setups take make_sampler's samplers (tpe,
nsga2, random) and two the engine does not offer: gp (Optuna's GPSampler, which learns from COMPLETE trials
only) and qmc (Optuna's QMCSampler, scrambled Sobol). --grace-period N replays ASHA and MO-ASHA with their
first rung at epoch N. --stopped complete (replay only; the engine tells PRUNED) tells a trial the scheduler
stopped as COMPLETE with the objectives of its last epoch, as Ray's own OptunaSearch does, so that samplers
that learn from COMPLETE trials only (GP, NSGA-II) see them; --stopped hidden tells it PRUNED to Optuna's
plain TPESampler, which ranks it after every completed trial and, with several objectives, among the bad
ones (the engine before search.tpe).
"""
from __future__ import annotations

import argparse
import functools
import heapq
import json
import math
import os
import statistics
import time
import warnings

import numpy as np

SETUPS = (("random", "fifo"), ("random", "asha"), ("tpe", "fifo"), ("tpe", "asha"), ("tpe", "moasha"),
          ("random", "moasha"))
SHARES = (0.25, 0.5, 1.0)
HALVING = ("asha", "moasha")  # the schedulers --reduction-factor and --grace-period apply to
REPLAY_SAMPLERS = ("gp", "qmc")  # samplers the replay offers beyond make_sampler's


def capped_gamma(fraction: float, n: int) -> int:
    """Optuna's default_gamma with another fraction: the best ceil(fraction * n) trials, at most 25, form l(x)."""
    return min(math.ceil(fraction * n), 25)


def parse_bool(text: str) -> bool:
    if text.lower() not in ("true", "false"):
        raise ValueError("true or false")
    return text.lower() == "true"


def parse_count(text: str, low: int) -> int:
    if not text.isdigit() or int(text) < low:
        raise ValueError(f"an integer >= {low}")
    return int(text)


def parse_number(text: str, high: float, accepted: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (0 < value <= high and math.isfinite(value)):
        raise ValueError(accepted)
    return value


TPE_SETTINGS = {
    "n_startup_trials": lambda t: parse_count(t, 0), "n_ei_candidates": lambda t: parse_count(t, 1),
    "multivariate": parse_bool, "group": parse_bool, "constant_liar": parse_bool, "consider_endpoints": parse_bool,
    "prior_weight": lambda t: parse_number(t, math.inf, "a positive number"),
    "gamma": lambda t: functools.partial(capped_gamma, parse_number(
        t, 1.0, "a fraction in (0, 1]: the share of finished trials (at most 25) that forms l(x), Optuna's 0.1")),
}


def replay_sampler(name: str, seed: int, tpe: dict, stopped: str = "pruned"):
    """make_sampler's sampler, or one of the replay's own: gp (Optuna's GPSampler), qmc (scrambled Sobol), and
    with stopped="hidden" Optuna's plain TPESampler for tpe."""
    import optuna

    from search.sampling import TPE_DEFAULTS, make_sampler

    if name == "tpe" and stopped == "hidden":
        return optuna.samplers.TPESampler(seed=seed, **{**TPE_DEFAULTS, **tpe})
    if name == "gp":
        return optuna.samplers.GPSampler(seed=seed)
    if name == "qmc":
        return optuna.samplers.QMCSampler(seed=seed, qmc_type="sobol", scramble=True)
    return make_sampler(name, seed, **(tpe if name == "tpe" else {}))


def searcher_class(stopped: str):
    """The engine's searcher; with stopped="complete", one that tells a trial stopped before its budget as
    COMPLETE with its last epoch's objectives instead of PRUNED (a replay-only switch)."""
    from optuna.trial import TrialState

    from mlflow_server.selection import finite
    from search.searcher import ResumableOptunaSearch

    if stopped != "complete":
        return ResumableOptunaSearch

    class StoppedAsComplete(ResumableOptunaSearch):
        def _ending(self, trial_id, result, error):
            state, values = super()._ending(trial_id, result, error)
            if state == TrialState.PRUNED:
                values = [result.get(metric) for metric in self._objectives]
                if all(map(finite, values)):
                    return TrialState.COMPLETE, values
            return state, values

    return StoppedAsComplete


def tpe_settings(items: list[str]) -> dict:
    """--tpe KEY=VALUE items as TPESampler keyword arguments; ValueError names the bad item and what is accepted."""
    from search.sampling import make_sampler

    settings = {}
    for item in items:
        key, sep, text = item.partition("=")
        if not sep or key not in TPE_SETTINGS:
            raise ValueError(f"--tpe {item!r}: expected KEY=VALUE with KEY one of {', '.join(TPE_SETTINGS)}")
        try:
            settings[key] = TPE_SETTINGS[key](text)
        except ValueError as e:
            raise ValueError(f"--tpe {item!r}: {key} takes {e}; got {text!r}") from None
    try:
        make_sampler("tpe", 0, **settings)
    except ValueError as e:
        raise ValueError(f"--tpe {' '.join(items)}: Optuna refuses these settings: {e}") from None
    return settings


def target(best: float, tolerance: float) -> float:
    """The least value (maximised) within `tolerance` of `best`, relative to its size."""
    return best - tolerance * abs(best)


class Table:
    """The benchmark's rows as arrays: final objectives, per-epoch curves, and the nearest-row lookup."""

    def __init__(self, table: dict, speed: str):
        self.objectives, self.rows, self.constants = table["objectives"], table["rows"], table["constants"]
        self.primary, *_ = self.objectives
        self.keys = sorted(self.rows[0]["params"])
        self.epochs = len(self.rows[0]["curves"][self.primary])
        speed_key = list(self.objectives)[1] if len(self.objectives) > 1 else None
        self.curves = {}
        for metric in self.objectives:
            if metric == speed_key and speed == "flops":
                self.curves[metric] = np.array([[1e9 / r["train_flops_per_image"]] * self.epochs for r in self.rows])
            else:
                self.curves[metric] = np.array([r["curves"][metric] for r in self.rows], dtype=float)
        self.signs = np.array([1.0 if mode == "max" else -1.0 for mode in self.objectives.values()])
        self.finals = np.stack([self.curves[m][:, -1] for m in self.objectives], axis=1) * self.signs  # maximised
        self.low, self.high = self.finals.min(axis=0), self.finals.max(axis=0)
        self.best = self.finals[:, 0].max()
        self.full_hv = self.hypervolume(self.finals)
        values = {k: [r["params"][k] for r in self.rows] for k in self.keys}
        self.numeric = {k: np.array(v, float) for k, v in values.items() if all(isinstance(x, (int, float)) for x in v)}
        self.categorical = {k: np.array(v, object) for k, v in values.items() if k not in self.numeric}

    def target(self, tolerance: float) -> float:
        """The least final primary value (maximised) within `tolerance` of the best: the searches' goal."""
        return target(self.best, tolerance)

    def nearest(self, config: dict, taken: set[int] = frozenset()) -> int:
        """The row nearest config; rows in taken only once every row is."""
        distance = np.zeros(len(self.rows))
        for key, column in self.numeric.items():
            span = column.max() - column.min()
            distance += np.abs(column - config[key]) / span if span else 0.0
        for key, column in self.categorical.items():
            distance += column != config[key]
        if len(taken) < len(self.rows):
            distance[list(taken)] = np.inf
        return int(np.argmin(distance))

    def hypervolume(self, points: np.ndarray) -> float:
        """Hypervolume of maximised points scaled to the table's range, against its worst corner."""
        from optuna._hypervolume import compute_hypervolume

        if not len(points):
            return 0.0
        scaled = (points - self.low) / np.where(self.high > self.low, self.high - self.low, 1.0)
        return compute_hypervolume(-scaled, np.zeros(len(self.low)))


def space_grid(raw: dict, space, limit: int = 200_000) -> list[dict]:
    """Every config of the table's searched keys, from the distributions the space gives them (a finite grid:
    choices, integers, floats with a step); ValueError names a key without one, or a grid over `limit`."""
    import itertools

    import optuna

    from search.sampling import SpaceSampler

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    constants = {**space.defaults, **raw["constants"]}
    trial = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0)).ask()
    SpaceSampler(space, constants, set(raw["constants"]))(trial)
    keys = sorted(raw["rows"][0]["params"])
    values = []
    for key in keys:
        dist = trial.distributions[key]
        if isinstance(dist, optuna.distributions.CategoricalDistribution):
            values.append(list(dist.choices))
        elif isinstance(dist, optuna.distributions.IntDistribution) and not dist.log:
            values.append(list(range(dist.low, dist.high + 1, dist.step)))
        elif isinstance(dist, optuna.distributions.FloatDistribution) and dist.step is not None:
            count = int(round((dist.high - dist.low) / dist.step)) + 1
            values.append([dist.low + i * dist.step for i in range(count)])  # as Optuna computes them
        else:
            raise ValueError(f"--answer surrogate: {key!r} is {dist}; it takes a space whose searched keys are "
                             f"choices, integers or floats with a step (a finite grid)")
    size = math.prod(len(v) for v in values)
    if size > limit:
        raise ValueError(f"--answer surrogate: the space's grid has {size} configs; at most {limit} are predicted")
    return [dict(zip(keys, combo)) for combo in itertools.product(*values)]


def surrogate_table(raw: dict, space) -> tuple[dict, float]:
    """The table over its space's whole grid (space_grid), each config's curves of the objectives and its FLOPs
    per image predicted by a random forest fitted on the table's rows (scikit-learn, one multi-output forest,
    targets standardised); with the forest's 5-fold cross-validated R² of the final primary objective."""
    from sklearn.ensemble import RandomForestRegressor
    from sklearn.metrics import r2_score
    from sklearn.model_selection import KFold, cross_val_predict

    rows, objectives = raw["rows"], list(raw["objectives"])
    grid = space_grid(raw, space)
    keys = sorted(rows[0]["params"])
    levels = {k: sorted({str(c[k]) for c in grid}) for k in keys if any(isinstance(c[k], str) for c in grid)}

    def encode(configs: list[dict]) -> np.ndarray:
        columns = [[float(c[k]) for c in configs] for k in keys if k not in levels]
        columns += [[float(str(c[k]) == level) for c in configs] for k in levels for level in levels[k]]
        return np.array(columns, float).T

    epochs = len(rows[0]["curves"][objectives[0]])
    targets = np.array([[v for m in objectives for v in r["curves"][m]] + [math.log(r["train_flops_per_image"])]
                        for r in rows], float)
    mean, scale = targets.mean(axis=0), np.where(targets.std(axis=0) > 0, targets.std(axis=0), 1.0)
    forest = RandomForestRegressor(n_estimators=300, random_state=0)
    x, y = encode([r["params"] for r in rows]), (targets - mean) / scale
    final = epochs - 1  # the primary's last epoch is column epochs - 1
    held_out = cross_val_predict(forest, x, y, cv=KFold(5, shuffle=True, random_state=0))
    r2 = float(r2_score(y[:, final], held_out[:, final]))
    predicted = forest.fit(x, y).predict(encode(grid)) * scale + mean
    dense = [{"index": i, "params": config, "train_flops_per_image": float(math.exp(p[-1])),
              "curves": {m: [float(v) for v in p[j * epochs:(j + 1) * epochs]] for j, m in enumerate(objectives)}}
             for i, (config, p) in enumerate(zip(grid, predicted))]
    return {**raw, "rows": dense}, r2


def replay(table: Table, space, sampler: str, scheduler: str, seed: int, concurrency: int, budget: int,
           objectives: dict, tpe: dict, schedule: dict, stopped: str = "pruned", answer: str = "nearest") -> dict:
    """One search on objectives (the table's, or its primary alone), TPE with make_sampler's settings unless tpe
    changes them, the scheduler with make_scheduler's unless schedule does: the trial-epochs at which each
    trial that ran its whole budget ended, with its row; the trials started, and how many rows answered them."""
    import optuna
    from ray.tune.experiment import Trial
    from ray.tune.schedulers import TrialScheduler

    from search.sampling import SpaceSampler
    from search.trials import make_scheduler
    from trainables.registry import flat_config

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    constants = {**space.defaults, **table.constants}
    metrics, modes = list(objectives), list(objectives.values())
    with warnings.catch_warnings():  # Optuna's deprecation and experimental warnings: shown once, by tpe_settings
        warnings.simplefilter("ignore")
        chosen = replay_sampler(sampler, seed, tpe, stopped)
    searcher = searcher_class(stopped)(space=SpaceSampler(space, constants, set(table.constants)),
                                     metric=metrics if len(metrics) > 1 else metrics[0],
                                     mode=modes if len(modes) > 1 else modes[0],
                                     sampler=chosen, study_name=f"replay-{seed}")
    chooser = make_scheduler(scheduler, objectives, table.epochs, **(schedule if scheduler in HALVING else {}))
    running, done, spent, count, answered = [], [], 0, 0, set()

    def start(now: int) -> None:
        nonlocal count
        trial = Trial("__fake", stub=True, trial_id=f"{count:05d}")
        count += 1
        row = table.nearest(flat_config(searcher.suggest(trial.trial_id)), answered if answer == "unseen" else set())
        answered.add(row)
        chooser.on_trial_add(None, trial)
        heapq.heappush(running, (now + 1, trial.trial_id, trial, row, 1))

    for _ in range(concurrency):
        start(0)
    while running and spent < budget:
        now, _, trial, row, epoch = heapq.heappop(running)
        spent += 1
        result = {"training_iteration": epoch, "epoch": epoch,
                  **{m: float(table.curves[m][row, epoch - 1]) for m in table.objectives}}
        action = chooser.on_trial_result(None, trial, result)
        if action == TrialScheduler.STOP or epoch == table.epochs:
            chooser.on_trial_complete(None, trial, result)
            searcher.on_trial_complete(trial.trial_id, result)
            if epoch == table.epochs:
                done.append((spent, row))
            start(now)
        else:
            searcher.on_trial_result(trial.trial_id, result)
            heapq.heappush(running, (now + 1, trial.trial_id, trial, row, epoch + 1))
    return {"done": done, "trials": count, "rows": len(answered)}


def figures(table: Table, runs: list[dict], budget: int, tolerance: float) -> dict:
    """Per run: trial-epochs to a config within tolerance of the best; best primary and hypervolume by share."""
    target = table.target(tolerance)
    to_target, best, hv = [], {s: [] for s in SHARES}, {s: [] for s in SHARES}
    for run in runs:
        hits = [spent for spent, row in run["done"] if table.finals[row, 0] >= target]
        to_target.append(min(hits) if hits else None)
        for share in SHARES:
            rows = [row for spent, row in run["done"] if spent <= share * budget]
            best[share].append(table.finals[rows, 0].max() if rows else table.low[0])
            hv[share].append(table.hypervolume(table.finals[rows]) / table.full_hv)
    return {"to_target": to_target, "best": best, "hv": hv}


def quartiles(values: list[float]) -> tuple[float, float, float]:
    q1, q2, q3 = np.percentile(values, [25, 50, 75])
    return float(q2), float(q1), float(q3)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("table", nargs="?", default="benchmarks/multitask_table.json")
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument("--first-seed", type=int, default=0, help="seeds first-seed .. first-seed + seeds - 1")
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--budget", type=int, help="trial-epochs per search (default: the table's, rows x epochs)")
    parser.add_argument("--tolerance", type=float, default=0.01)
    parser.add_argument("--speed", choices=("flops", "measured"), default="flops")
    parser.add_argument("--answer", choices=("nearest", "unseen", "surrogate"), default="nearest",
                        help="which row answers a config: the nearest, the nearest this search has not "
                             "started yet (all rows once every row has been), or the config itself on the "
                             "space's grid, its curves predicted by a random forest fitted on the table")
    parser.add_argument("--setups", default=",".join(f"{a}+{b}" for a, b in SETUPS))
    parser.add_argument("--primary-only", action="store_true",
                        help="search and stop on the primary objective alone, as a one-objective space does "
                             "(hypervolumes still over the table's objectives)")
    parser.add_argument("--tpe", action="append", default=[], metavar="KEY=VALUE",
                        help="a TPESampler setting for the replay (repeatable): " + ", ".join(TPE_SETTINGS)
                             + "; gamma=F is min(ceil(F * n), 25), Optuna's default form with F = 0.1")
    parser.add_argument("--reduction-factor", type=int, metavar="N",
                        help="ASHA's and MO-ASHA's reduction factor (make_scheduler's: 2): a rung keeps 1/N")
    parser.add_argument("--grace-period", type=int, metavar="N",
                        help="ASHA's and MO-ASHA's first rung, in epochs (make_scheduler's: 1)")
    parser.add_argument("--stopped", choices=("pruned", "hidden", "complete"), default="pruned",
                        help="how a trial the scheduler stopped is told to Optuna: PRUNED (the engine's), PRUNED "
                             "with plain TPE (hidden: the engine before search.tpe) or, "
                             "replay only, COMPLETE with its last epoch's objectives")
    parser.add_argument("-o", "--output", help="write the per-seed figures here (JSON)")
    args = parser.parse_args()
    if args.reduction_factor is not None and args.reduction_factor < 2:
        parser.error(f"--reduction-factor {args.reduction_factor}: takes a whole number of 2 or more")
    if args.grace_period is not None and args.grace_period < 1:
        parser.error(f"--grace-period {args.grace_period}: takes a whole number of 1 or more")
    schedule = {"reduction_factor": args.reduction_factor} if args.reduction_factor else {}
    if args.grace_period:
        schedule["grace_period"] = args.grace_period
    try:
        tpe = tpe_settings(args.tpe)
    except ValueError as e:
        parser.error(str(e))

    from search.spacefile import load_space

    with open(args.table) as f:
        raw = json.load(f)
    space, table = load_space(raw["space"]), Table(raw, args.speed)
    budget = args.budget or len(table.rows) * table.epochs  # the table's, also when the surrogate answers
    if args.answer == "surrogate":
        try:
            dense, r2 = surrogate_table(raw, space)
        except ValueError as e:
            parser.error(str(e))
        print(f"surrogate: {len(dense['rows'])} configs of the space's grid, predicted by a random forest fitted on "
              f"{args.table}'s rows (5-fold cross-validated R² of the final {table.primary}: {r2:.2f})")
        table = Table(dense, args.speed)
    objectives = {table.primary: table.objectives[table.primary]} if args.primary_only else table.objectives
    from search.sampling import SAMPLERS
    from search.trials import PAUSING, SCHEDULERS

    samplers, schedulers = (*SAMPLERS, *REPLAY_SAMPLERS), [s for s in SCHEDULERS if s not in PAUSING]
    for setup in args.setups.split(","):
        sampler, _, scheduler = setup.partition("+")
        if sampler not in samplers or scheduler not in schedulers:
            parser.error(f"--setups {setup!r}: expected SAMPLER+SCHEDULER, SAMPLER one of {', '.join(samplers)}, "
                         f"SCHEDULER one of {', '.join(schedulers)}")
    target = table.target(args.tolerance)
    within = int((table.finals[:, 0] >= target).sum())
    print(f"{args.table}: {len(table.rows)} rows x {table.epochs} epochs; best final {table.primary} "
          f"{table.signs[0] * table.best:.4f}, {within} rows within {args.tolerance:.0%}; budget {budget} trial-epochs, "
          f"{args.concurrency} trials at once, seeds {args.first_seed}-{args.first_seed + args.seeds - 1}, "
          f"searched on {', '.join(objectives)}, TPE: {' '.join(args.tpe) or 'make_sampler'}, "
          f"reduction factor: {args.reduction_factor or 'make_scheduler'}, "
          f"grace period: {args.grace_period or 'make_scheduler'}, stopped trials told {args.stopped.upper()}, "
          f"speed objective: {args.speed}, answers: {args.answer}; "
          f"load average {os.getloadavg()[0]:.1f}")
    t0, out = time.perf_counter(), {}
    for setup in args.setups.split(","):
        sampler, scheduler = setup.split("+")
        runs = [replay(table, space, sampler, scheduler, seed, args.concurrency, budget, objectives, tpe, schedule,
                       args.stopped, args.answer)
                for seed in range(args.first_seed, args.first_seed + args.seeds)]
        out[setup] = {**figures(table, runs, budget, args.tolerance), "trials": [r["trials"] for r in runs],
                      "rows": [r["rows"] for r in runs]}
    base = out.get("random+fifo")
    print(f"{'setup':14} {'found':>6} {'trial-epochs to 1%: median [IQR]':>34} {'vs random':>9} {'rows/trials':>11}  "
          + "  ".join(f"Kégl@{s:.0%}" for s in SHARES) + "  " + "  ".join(f"HV@{s:.0%} [IQR]" for s in SHARES))
    for setup, fig in out.items():
        found = [x for x in fig["to_target"] if x is not None]
        med = quartiles([x if x is not None else budget for x in fig["to_target"]])
        ratio = (med[0] / quartiles([x if x is not None else budget for x in base["to_target"]])[0]) if base else float("nan")
        kegl = []
        for share in SHARES:
            r, m = (statistics.median(base["best"][share]) if base else float("nan")), statistics.median(fig["best"][share])
            kegl.append((m - r) / (table.best - r) if table.best != r else float("nan"))
        hv = ["{:.3f} [{:.3f}-{:.3f}]".format(*quartiles(fig["hv"][s])) for s in SHARES]
        print(f"{setup:14} {len(found):>3}/{len(fig['to_target']):<2} {med[0]:>12.0f} [{med[1]:.0f}-{med[2]:.0f}]"
              f"{'':>12} {ratio:>9.2f} {statistics.median(fig['rows']):>5g}/{statistics.median(fig['trials']):<5g}  "
              + "  ".join(f"{k:>8.2f}" for k in kegl) + "  " + "  ".join(hv))
    print(f"({time.perf_counter() - t0:.0f} s; not found counted as the budget, {budget})")
    if args.output:
        with open(args.output, "w") as f:
            json.dump({"args": vars(args), "budget": budget, "figures": out}, f, default=float)


if __name__ == "__main__":
    main()
