"""Command-line entry points: tune-run, tune-export, tune-train, tune-ablate, tune-report, tune-ui.

Only argparse is imported at module level, so `--help` answers at once; the engine (Ray,
Optuna, MLflow, torch) is imported when a command runs.
"""
from __future__ import annotations

import argparse
import os
import sys

SMOKE_SAMPLES = 4


def _fail(exc: Exception) -> int:
    print(f"error: {exc}", file=sys.stderr)
    return 2


def _engine_flags(p: argparse.ArgumentParser) -> None:
    """How the engine places the trials of tune-run and tune-ablate."""
    p.add_argument("--cpus-per-trial", type=float, default=1.0, help="CPUs of each trial (default 1)")
    p.add_argument("--gpus-per-trial", type=float, default=0.0, help="GPUs of each trial; fractions allowed, e.g. "
                                                                     "0.5 packs two trials per GPU")
    p.add_argument("--max-concurrent", type=int, help="at most this many trials at once")
    p.add_argument("--max-failures", type=int, default=0, help="retries of a failed trial from its last checkpoint")
    p.add_argument("--address", help="an existing Ray cluster (e.g. auto); default: start a local one")


def _run_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="tune-run",
        description="Run a hyperparameter search defined by a space file (Ray Tune + Optuna), "
                    "tracking every trial in MLflow.",
        epilog="Example: tune-run spaces/multitask.py --smoke-test",
    )
    p.add_argument("space", help="path of the space file, e.g. spaces/multitask.py")
    p.add_argument("--data", help="data root in its public layout (default: embedded synthetic chest X-rays)")
    p.add_argument("--name", help="experiment name (default: <space>-<timestamp>); needed with --resume")
    p.add_argument("--num-samples", type=int, help=f"number of trials (default 16, {SMOKE_SAMPLES} with --smoke-test); "
                                                   "with --resume, continue the search up to this many trials")
    p.add_argument("--smoke-test", action="store_true", help="apply the space file's SMOKE overrides: tiny models, few epochs")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="fix a config key for every trial, type-checked (repeatable)")
    p.add_argument("--scheduler", default="asha", help="asha (default), fifo, median or hyperband on the first objective, or moasha on all of them")
    p.add_argument("--sampler", default="tpe", help="Optuna sampler: tpe (default; multi-objective TPE for several objectives), nsga2, random")
    _engine_flags(p)
    p.add_argument("--time-budget", type=float, metavar="SECONDS", help="stop starting/running trials after this long")
    p.add_argument("--resume", action="store_true", help="continue the interrupted experiment named by --name, "
                                                         "or a finished one with a larger --num-samples")
    p.add_argument("--seed", type=int, default=0, help="sampler seed and train/seed of every trial")
    return p


def run_main(argv: list[str] | None = None) -> int:
    args = _run_parser().parse_args(argv)
    from dataclasses import replace

    from search.errors import UsageError
    from search.experiment import Settings, default_name, load_settings
    from search.home import results_dir
    from search.overrides import parse_sets
    from search.runner import run_experiment
    from search.spacefile import load_space
    from trainables.data import DataError

    home, space = results_dir(), None
    try:
        if args.resume:
            if not args.name:
                raise UsageError("--resume needs --name NAME, the experiment to continue.")
            settings = load_settings(home, args.name)
            if args.num_samples:  # continue the search up to this many trials
                settings = replace(settings, num_samples=args.num_samples)
        else:
            space = load_space(args.space)
            overrides = parse_sets(args.set, {**space.defaults, **space.smoke} if args.smoke_test else space.defaults)
            if args.data:
                overrides["data/root"] = os.path.abspath(args.data)
            settings = Settings(
                name=args.name or default_name(args.space), space_path=space.path,
                num_samples=args.num_samples or (SMOKE_SAMPLES if args.smoke_test else 16),
                scheduler=args.scheduler, sampler=args.sampler, cpus_per_trial=args.cpus_per_trial,
                gpus_per_trial=args.gpus_per_trial, max_concurrent=args.max_concurrent,
                time_budget=args.time_budget, max_failures=args.max_failures, seed=args.seed,
                smoke_test=args.smoke_test, overrides=overrides,
            )
        return run_experiment(settings, home, resume=args.resume, address=args.address, space=space)
    except (UsageError, DataError) as exc:
        return _fail(exc)


def export_main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="tune-export", description="Write an experiment's best config and its Pareto set as YAML.")
    p.add_argument("experiment", help="experiment name, as given to tune-run --name")
    p.add_argument("-o", "--output", default="best.yaml", help="YAML file to write (default best.yaml)")
    args = p.parse_args(argv)
    from search.errors import UsageError
    from search.export import export_experiment

    try:
        doc = export_experiment(args.experiment, args.output)
    except UsageError as exc:
        return _fail(exc)
    print(f"Wrote {args.output}: best trial {doc['best']['trial_id']} and {len(doc['pareto'])} Pareto trial(s).")
    return 0


def train_main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="tune-train", description="Re-train one config from a tune-export YAML, tracked "
                                "in MLflow, and evaluate it once on the held-out test split.")
    p.add_argument("config", help="YAML written by tune-export")
    p.add_argument("--pareto", type=int, metavar="I", help="train the I-th Pareto trial instead of the best one")
    p.add_argument("--name", help="experiment name (default: <exported experiment>-retrain-<timestamp>)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config key (repeatable)")
    p.add_argument("--cpus", type=float, help="CPUs of the run (default: the exported trials' share)")
    p.add_argument("--gpus", type=float, help="GPUs of the run (default: the exported trials' share)")
    args = p.parse_args(argv)
    from search.errors import UsageError
    from search.export import EXPORT_DIR, MODEL_DIR, retrain
    from trainables.data import DataError

    try:
        done = retrain(args.config, pareto=args.pareto, name=args.name, sets=args.set, cpus=args.cpus, gpus=args.gpus)
    except (UsageError, DataError, RuntimeError) as exc:
        return _fail(exc)
    print(f"\n{final_metrics(done.metrics)}")
    print(f"\nModel: {done.url}\n  artifacts {MODEL_DIR}/weights.pt (state_dict), {MODEL_DIR}/config.json and "
          f"{EXPORT_DIR}/{os.path.basename(args.config)}; load it with search.export.load_model (README)")
    return 0


def ablate_main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="tune-ablate",
        description="Ablate one factor at a time around a baseline config, K seeds each, every run evaluated "
                    "once on the held-out test split; report means with 95%% intervals and paired differences "
                    "from the baseline (t-test, Holm-corrected), and learning curves for data/fraction and "
                    "data/shots_per_class.",
        epilog="Example: tune-ablate best.yaml --factor data/fraction=0.25,0.5,1 --seeds 5",
    )
    p.add_argument("baseline", nargs="?", default="",
                   help="a tune-export YAML (its best config), an experiment name (its best trial), or an "
                        "ablation file such as ablations/ssl_frozen_fraction.py")
    p.add_argument("--factor", dest="factors", action="append", default=[], metavar="KEY=V1,V2,...",
                   help="a config key and its levels, varied alone around the baseline (repeatable)")
    p.add_argument("--seeds", type=int, help="seeds per level and for the baseline (default 5, or an ablation "
                                             "file's SEEDS)")
    p.add_argument("--vary", default="seed", help="seed (default): train/seed varies; split: the train/validation "
                                                 "split too (never the test split)")
    p.add_argument("--pareto", type=int, metavar="I", help="the baseline is the I-th Pareto trial of the export")
    p.add_argument("--smoke-test", action="store_true", help="apply the SMOKE overrides: tiny models, few epochs")
    p.add_argument("--name", help="experiment name (default: ablation-<timestamp>); needed with --resume")
    p.add_argument("--resume", action="store_true", help="continue the interrupted ablation named by --name")
    _engine_flags(p)
    args = p.parse_args(argv)
    from search.ablate import ablate, ablation_args
    from search.errors import UsageError
    from trainables.data import DataError

    try:
        if not args.resume and not args.baseline:
            raise UsageError("tune-ablate needs a baseline: a tune-export YAML, an experiment name or an ablation "
                             "file (or --name NAME --resume).")
        return ablate(ablation_args(args), args.name, args.resume, args.address)
    except (UsageError, DataError) as exc:
        return _fail(exc)


def report_main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="tune-report",
        description="Analyse a search's Optuna study and log it under analysis/ of its parent run as HTML and "
                    "PNG: hyperparameter importance per objective over the completed trials (PED-ANOVA and "
                    "fANOVA; skipped with a note when too few trials completed), parallel coordinates, "
                    "optimisation history and, for 2-3 objectives, the Pareto front. A search with enough "
                    "completed trials gets it by itself at its end; the README gives both thresholds.",
        epilog="Example: tune-report multitask-20260101-120000",
    )
    p.add_argument("experiment", help="name of a search, as given to tune-run --name")
    args = p.parse_args(argv)
    from search.analysis import report_experiment
    from search.errors import UsageError
    from search.home import results_dir

    try:
        lines = report_experiment(args.experiment, results_dir())
    except (UsageError, RuntimeError) as exc:
        return _fail(exc)
    print("\n".join(lines))
    return 0


def final_metrics(metrics: dict[str, float]) -> str:
    """A table of the validation and test values of each metric (a test value with its 95% interval),
    then one of the other metrics (perf/*, train/*, data/*)."""
    def number(value) -> str:
        return "" if value is None else f"{value:.4g}"

    shown = sorted(k for k in metrics if not k.endswith(("_ci_low", "_ci_high")))
    names = sorted({k.split("/", 1)[1] for k in shown if k.split("/")[0] in ("val", "test")})
    rows = [("metric", "validation", "test [95% interval]")]
    for name in names:
        test, low, high = (metrics.get(f"test/{name}{end}") for end in ("", "_ci_low", "_ci_high"))
        interval = f" [{low:.4g}, {high:.4g}]" if low is not None and high is not None else ""
        rows.append((name, number(metrics.get(f"val/{name}")), number(test) + interval))
    widths = [max(len(row[i]) for row in rows) for i in range(2)]
    lines = [f"  {a:<{widths[0]}}  {b:>{widths[1]}}  {c}" for a, b, c in rows]
    others = [k for k in shown if k.split("/")[0] not in ("val", "test")]
    width = max((len(k) for k in others), default=0)
    lines += ["", *(f"  {key:<{width}}  {metrics[key]:.4g}" for key in others)] if others else []
    return "\n".join(["Final metrics:", *lines])


def ui_main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="tune-ui",
        description="Start (or find) the MLflow tracking server of the home and print its address. The home "
                    "is $MEDTUNE_HOME, else runs/ of the nearest folder, from here up, that has a runs/ home or a "
                    "pyproject.toml, else ./runs. A new server keeps runs in SQLite under the home, or in the "
                    "database $MEDTUNE_MLFLOW_BACKEND names (e.g. postgresql://mlflow@dbhost/mlflow).",
    )
    p.add_argument("--port", type=int, help="port for a new server (default 5000, or a free one)")
    p.add_argument("--host", help="interface a new server binds to (default 127.0.0.1: this machine only); "
                                  "another, e.g. 0.0.0.0, opens it to the network: add --auth")
    p.add_argument("--auth", action="store_true",
                   help="start it with MLflow's basic auth: $MLFLOW_TRACKING_USERNAME and "
                        "$MLFLOW_TRACKING_PASSWORD become its admin and are what clients send")
    p.add_argument("--stop", action="store_true", help="stop the server started for this home (see the description)")
    args = p.parse_args(argv)
    from mlflow_server.server import ensure_server, stop_server
    from search.home import results_dir

    home = results_dir()
    if args.stop:
        stopped = stop_server(home)
        print(f"Stopped the MLflow server at {stopped['uri']} (pid {stopped['pid']}) of the home {home}" if stopped
              else f"No MLflow server of the home {home} was running.")
        return 0
    try:
        uri = ensure_server(home, port=args.port, host=args.host, auth=args.auth or None)
        print(f"MLflow UI: {uri}" + ("" if os.environ.get("MLFLOW_TRACKING_URI") else f"  (home {home})"))
    except RuntimeError as exc:
        return _fail(exc)
    return 0
