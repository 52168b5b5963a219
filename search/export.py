"""Export an experiment's best config and Pareto set as YAML, and re-train from such a file."""
from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from typing import Any

import yaml

from search.errors import UsageError
from trainables.registry import TrainableSpec


def _parent_run(client, experiment: str):
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        names = sorted(e.name for e in client.search_experiments() if e.name != "Default")
        raise UsageError(f"There is no experiment named {experiment!r} on the tracking server; known: {', '.join(names) or 'none'}.")
    runs = client.search_runs([exp.experiment_id], "tags.`medtune.role` = 'parent'", max_results=1)
    if not runs:
        raise UsageError(f"Experiment {experiment!r} has no parent run; was it created by tune-run?")
    return runs[0]


def _entry(record) -> dict:
    from mlflow_server.server import redact

    return {"trial_id": record.trial_id, "run_id": record.run_id,
            "metrics": {k: v for k, v in sorted(record.metrics.items())},
            "config": {k: redact(v) for k, v in record.config.items()}}


def export_document(experiment: str) -> dict:
    """{experiment, space, trainable, objectives, resources, best, pareto} of a finished experiment.

    best and pareto follow mlflow_server.selection: FINISHED trials with finite objectives only,
    the Pareto front ranked best first, best = its first member.
    """
    from mlflow import MlflowClient

    from mlflow_server.records import collect_trials
    from mlflow_server.selection import pareto_front
    from mlflow_server.server import configure_client, ensure_server
    from search.home import results_dir

    configure_client()
    client = MlflowClient(ensure_server(results_dir()))
    parent = _parent_run(client, experiment)
    with open(client.download_artifacts(parent.info.run_id, "experiment.json")) as f:
        info = json.load(f)
    objectives = json.loads(parent.data.params["objectives"])
    front = pareto_front(collect_trials(client, parent.info.run_id), objectives)
    if not front:
        raise UsageError(f"Experiment {experiment!r} has no finished trial with finite {', '.join(objectives)} "
                         f"to export yet.")
    settings = info["settings"]
    return {
        "experiment": experiment,
        "space": parent.data.tags.get("medtune.space_file"),
        "trainable": parent.data.tags.get("medtune.trainable"),
        "objectives": objectives,
        "resources": {"cpus": settings["cpus_per_trial"], "gpus": settings["gpus_per_trial"]},
        "best": _entry(front[0]),
        "pareto": [_entry(r) for r in front],
    }


def export_experiment(experiment: str, output: str) -> dict:
    """Write export_document(experiment) to output as YAML; return it."""
    doc = export_document(experiment)
    with open(output, "w") as f:
        yaml.safe_dump(doc, f, sort_keys=False)
    return doc


def read_export(path: str) -> dict:
    """The document of a tune-export YAML file; a missing or foreign file is a UsageError."""
    if not os.path.isfile(path):
        raise UsageError(f"Config file {path!r} does not exist; write one with tune-export EXPERIMENT -o {path}.")
    with open(path) as f:
        try:
            doc = yaml.safe_load(f)
        except yaml.YAMLError as exc:
            raise UsageError(f"{path!r} is not YAML ({exc.__class__.__name__}); pass a file written by "
                             f"tune-export.") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("best"), dict) or "trainable" not in doc:
        raise UsageError(f"{path!r} is not a tune-export file: it needs 'trainable' and 'best' entries.")
    return doc


def exported_entry(doc: dict, pareto: int | None, where: str) -> tuple[TrainableSpec, dict[str, Any]]:
    """The trainable and the full, checked config of a tune-export document's best (or pareto[i]) entry,
    eval/test off; keys an export from an older version lacks take the trainable's defaults."""
    from search.overrides import TEST_KEY, check_value
    from trainables.registry import get_trainable

    front = doc.get("pareto") or []
    if pareto is not None and not 0 <= pareto < len(front):
        raise UsageError(f"--pareto {pareto} is out of range; {where} has {len(front)} Pareto trials (0-based).")
    entry = doc["best"] if pareto is None else front[pareto]
    try:
        spec = get_trainable(doc["trainable"])
    except ValueError as exc:
        raise UsageError(f"{where}: {exc}") from None
    given = {k: v for k, v in entry.get("config", {}).items() if k != TEST_KEY}
    config = {key: check_value(key, value, spec.defaults, where) for key, value in given.items()}
    return spec, {**spec.defaults, **config, TEST_KEY: False}


MODEL_DIR = "model"  # artifact folder of a re-train's run: weights.pt (state_dict) and config.json
EXPORT_DIR = "export"  # artifact folder of a re-train's run: the tune-export YAML it was built from


@dataclass
class Retrained:
    """A finished re-train: its metrics (val/*, test/* with intervals, perf/*, ...) and its MLflow run."""

    metrics: dict[str, float]
    run_id: str
    url: str  # the run's page in the MLflow UI


def retrain(path: str, pareto: int | None = None, name: str | None = None, sets: list[str] = (),
            cpus: float | None = None, gpus: float | None = None) -> Retrained:
    """Train the exported best (or I-th Pareto) config once through the engine, tracked in MLflow,
    and evaluate it once on the held-out test split (eval/test): its test/* metrics beside the val/*
    ones. Its run gets the trained weights and config (MODEL_DIR; load_model reads them back) and
    the YAML (EXPORT_DIR). The config is checked as a search's are (models, the trainable's rules,
    data) before Ray starts; a failed training is a RuntimeError with its reason."""
    from search import engine
    from search.home import ExperimentState, results_dir
    from search.trials import Configs

    doc = read_export(path)
    spec, config = retrain_config(doc, pareto, sets, path)
    entry = doc["best"] if pareto is None else doc["pareto"][pareto]
    resources = doc.get("resources", {})
    cpus = cpus if cpus is not None else resources.get("cpus", 1.0)
    gpus = gpus if gpus is not None else resources.get("gpus", 0.0)
    name = name or f"{doc.get('experiment', 'export')}-retrain-{time.strftime('%Y%m%d-%H%M%S')}"
    exp = engine.Experiment(
        name=name, trainable=spec, objectives=doc.get("objectives", {}),
        trials=Configs([config]), source=path,
        settings={"config_file": os.path.abspath(path), "pareto": pareto, "sets": list(sets),
                  "cpus_per_trial": cpus, "gpus_per_trial": gpus},
        tags={"medtune.kind": "retrain", "medtune.retrain_of": entry.get("run_id", "")}, cpus_per_trial=cpus, gpus_per_trial=gpus,
    )
    home = results_dir()
    outcome = engine.run(exp, home)
    if not outcome.records:
        raise RuntimeError(f"Re-training {name!r} was interrupted before it ended.")
    (record,) = outcome.records
    if record.status != "FINISHED":
        raise RuntimeError(f"Re-training failed: {outcome.errors.get(record.trial_id, record.status)}")
    url = log_model(ExperimentState(home, name).ray_dir, record, spec.name, path)
    return Retrained({k: v for k, v in record.metrics.items() if "/" in k}, record.run_id, url)


def log_model(ray_dir: str, record, trainable: str, export_file: str) -> str:
    """Log the weights of the trial's final checkpoint (a state_dict, MODEL_DIR/weights.pt), its
    trainable and config (MODEL_DIR/config.json) and the export YAML onto its run; the run's URL."""
    import tempfile

    import torch
    from mlflow import MlflowClient
    from ray.tune import ExperimentAnalysis

    from mlflow_server.server import ensure_server
    from search.home import results_dir

    analysis = ExperimentAnalysis(ray_dir)
    trial = next(t for t in analysis.trials if t.trial_id == record.trial_id)
    client = MlflowClient(ensure_server(results_dir()))
    with analysis.get_last_checkpoint(trial).as_directory() as checkpoint, tempfile.TemporaryDirectory() as d:
        state = torch.load(os.path.join(checkpoint, "state.pt"), map_location="cpu", weights_only=False)
        torch.save(state["model"], os.path.join(d, "weights.pt"))
        with open(os.path.join(d, "config.json"), "w") as f:
            json.dump({"trainable": trainable, "config": record.config}, f, indent=1)
        client.log_artifacts(record.run_id, d, MODEL_DIR)
    client.log_artifact(record.run_id, export_file, EXPORT_DIR)
    experiment_id = client.get_run(record.run_id).info.experiment_id
    return f"{client.tracking_uri}/#/experiments/{experiment_id}/runs/{record.run_id}"


def load_model(folder: str):
    """The re-trained model in `folder` (a tune-train run's MODEL_DIR artifact, downloaded), in eval
    mode, and its flat config: built by its trainable's own builder on the data set the config
    names (its classes fix the model's head), then given the trained weights."""
    import importlib

    import torch

    from trainables.registry import get_trainable
    from trainables.trial_data import prepare_data

    with open(os.path.join(folder, "config.json")) as f:
        saved = json.load(f)
    task = importlib.import_module(get_trainable(saved["trainable"]).target.split(":")[0]).TASK
    config = saved["config"]
    model = task.build(config, prepare_data(config, task.masks))
    model.load_state_dict(torch.load(os.path.join(folder, "weights.pt"), map_location="cpu"))
    return model.eval(), config


def retrain_config(doc: dict, pareto: int | None, sets: list[str], where: str) -> tuple[TrainableSpec, dict]:
    """The exported entry's config with the --set overrides, evaluated once on test (eval/test)."""
    from search.overrides import TEST_KEY, parse_sets
    from trainables.registry import GRADCAM_KEY

    spec, config = exported_entry(doc, pareto, where)
    gradcam = {GRADCAM_KEY: True} if GRADCAM_KEY in spec.defaults else {}  # --set figures/gradcam=false wins
    return spec, {**config, **gradcam, **parse_sets(list(sets), spec.defaults), TEST_KEY: True}
