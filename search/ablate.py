"""tune-ablate: an ablation run by the engine, then analysed and reported on its parent run.

The baseline is a tune-export YAML, an experiment's best trial, or the BASELINE of an ablation file
(search/ablation/spec.py); the runs are grid(ablation) (search/ablation/grid.py), trained as one
experiment of fixed configs (search/trials.Configs) so that it runs, resumes and is tracked as a
search is; the report (search/ablation/report.py) is computed from the runs' final values as MLflow
holds them and logged on the parent run under ablation/.
"""
from __future__ import annotations

import os
import tempfile
import time
from dataclasses import replace

from search.ablation.spec import Ablation, check_seeds, load_ablation, make_ablation, parse_factors
from search.errors import UsageError
from search.export import export_document, exported_entry, read_export

REPORT_FOLDER = "ablation"  # artifact folder of the report on the parent run


def baseline_document(source: str) -> dict:
    """The tune-export document of a YAML file (a path ending in .yaml/.yml, or an existing file) or of
    an experiment's finished trials (any other name)."""
    if source.endswith((".yaml", ".yml")) or os.path.isfile(source):
        return read_export(source)
    return export_document(source)


def build_ablation(args: dict) -> Ablation:
    """The checked ablation of the command's arguments (or of the settings a resume saved)."""
    if args["baseline"].endswith(".py"):
        if args["factors"]:
            raise UsageError(f"--factor is not accepted with the ablation file {args['baseline']!r}: its FACTORS "
                             f"are the ablation; edit them there, or pass a tune-export YAML as the baseline.")
        ablation = load_ablation(args["baseline"], smoke=args["smoke_test"], pareto=args["pareto"],
                                 read=baseline_document)
        return ablation if args["seeds"] is None else replace(ablation, seeds=check_seeds(args["seeds"]))
    if not args["factors"]:
        raise UsageError("tune-ablate needs at least one --factor KEY=V1,V2,... (or an ablation file).")
    doc = baseline_document(args["baseline"])
    spec, _ = exported_entry(doc, args["pareto"], args["baseline"])
    seeds = 5 if args["seeds"] is None else args["seeds"]
    return make_ablation(doc, parse_factors(args["factors"], spec.defaults), seeds, args["vary"],
                         args["pareto"], args["baseline"], _space_smoke(doc) if args["smoke_test"] else None)


def _space_smoke(doc: dict) -> dict:
    """The SMOKE overrides of the space file the exported experiment searched ({} when it is gone)."""
    from search.spacefile import load_space

    space = doc.get("space")
    return dict(load_space(space).smoke) if space and os.path.isfile(space) else {}


def ablate(args: dict, name: str | None, resume: bool, address: str | None) -> int:
    """Run (or resume) the ablation, print and log its report; the command's exit code."""
    from search import engine
    from search.ablation.grid import grid
    from search.home import ExperimentState, results_dir
    from search.trials import Configs

    home = results_dir()
    if resume:
        if not name:
            raise UsageError("--resume needs --name NAME, the ablation to continue.")
        saved = ExperimentState(home, name).load_settings()
        if "ablation" not in saved:
            raise UsageError(f"Experiment {name!r} is not an ablation; continue it with the command that started it.")
        args = saved["ablation"]
    ablation = build_ablation(args)
    name = name or f"ablation-{time.strftime('%Y%m%d-%H%M%S')}"
    runs = grid(ablation)
    exp = engine.Experiment(
        name=name, trainable=ablation.trainable, objectives=ablation.objectives,
        trials=Configs([run.config for run in runs], [run.tags for run in runs]),
        source=ablation.source, settings={"ablation": args, "cpus_per_trial": args["cpus_per_trial"],
                                          "gpus_per_trial": args["gpus_per_trial"]},
        tags={"medtune.kind": "ablation"}, cpus_per_trial=args["cpus_per_trial"],
        gpus_per_trial=args["gpus_per_trial"], max_concurrent=args["max_concurrent"],
        max_failures=args["max_failures"], resume_command=f"tune-ablate --name {name} --resume",
    )
    outcome = engine.run(exp, home, resume=resume, address=address)
    if outcome.code == 130:
        return 130
    return report(ablation, runs, exp.trials, outcome, home)


def report(ablation: Ablation, runs: list, trials, outcome, home: str) -> int:
    """Analyse the runs' final values, print the Markdown report, log every report file on the parent run."""
    from mlflow import MlflowClient

    from mlflow_server.server import ensure_server
    from search.ablation.report import RunResult, analyse, markdown, write_report

    results = []
    for record in outcome.records:
        i = trials.position(record.config)
        if i is not None:
            run = runs[i]
            finished = record.status == "FINISHED"
            results.append(RunResult(run.factor, run.level, run.seed, dict(record.metrics) if finished else {}))
    analysis = analyse(ablation, results)
    client = MlflowClient(ensure_server(home))
    with tempfile.TemporaryDirectory() as folder:
        write_report(analysis, folder)
        client.log_artifacts(outcome.parent, folder, REPORT_FOLDER)
    print(f"\n{markdown(analysis)}")
    print(f"Report files: artifacts {REPORT_FOLDER}/ of the parent run (ablation.md, ablation.csv, plots as HTML "
          f"and PNG).")
    return 0 if any(r.metrics for r in results) else 1


def ablation_args(ns) -> dict:
    """The command's arguments as saved for a resume (JSON)."""
    args = {key: getattr(ns, key) for key in ("baseline", "factors", "seeds", "vary", "pareto", "smoke_test",
                                              "cpus_per_trial", "gpus_per_trial", "max_concurrent",
                                              "max_failures")}
    if os.path.isfile(ns.baseline):  # a resume from another folder finds the same file
        args["baseline"] = os.path.abspath(ns.baseline)
    return args

