"""tune-export writes no credentials: no tracking URI, token or password reaches the YAML."""
import json

import yaml
from mlflow import MlflowClient

from mlflow_server.records import CONFIG_FILE, PARENT, ROLE, TRIAL
from mlflow_server.tracker import get_or_create_parent_run
from search.export import export_experiment, retrain_config
from trainables.registry import get_trainable


def test_exported_yaml_holds_no_credentials(tracking_uri, tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_TOKEN", "token-that-must-not-leak")
    client = MlflowClient(tracking_uri)
    parent = get_or_create_parent_run(client, "export-secrets", {"medtune.trainable": "classification"})
    client.log_param(parent, "objectives", json.dumps({"val/accuracy": "max"}))
    client.log_dict(parent, {"settings": {"cpus_per_trial": 1.0, "gpus_per_trial": 0.0}}, "experiment.json")
    experiment = client.get_run(parent).info.experiment_id
    run = client.create_run(experiment, tags={ROLE: "trial", PARENT: parent, TRIAL: "t0"}).info.run_id
    client.log_dict(run, {"data/root": "postgresql://mlflow:s3cret@db/runs", "optim/lr": 0.001}, CONFIG_FILE)
    client.log_metric(run, "val/accuracy", 0.9, step=1)
    client.set_terminated(run, "FINISHED")

    out = tmp_path / "best.yaml"
    doc = export_experiment("export-secrets", str(out))
    text = out.read_text()
    assert doc["best"]["config"]["data/root"] == "postgresql://***@db/runs"
    assert "s3cret" not in text and "token-that-must-not-leak" not in text and tracking_uri not in text
    assert yaml.safe_load(text)["best"]["metrics"]["val/accuracy"] == 0.9


def test_an_older_export_lacking_new_keys_takes_the_defaults_and_is_evaluated_on_test():
    spec = get_trainable("classification")
    doc = {"trainable": "classification", "best": {"config": {"optim/lr": 0.001, "model/backbone": "test_resnet"}}}
    assert retrain_config(doc, None, ["train/epochs=1"], "best.yaml")[0] == spec
    config = retrain_config(doc, None, ["train/epochs=1"], "best.yaml")[1]
    assert config == {**spec.defaults, "optim/lr": 0.001, "model/backbone": "test_resnet", "train/epochs": 1,
                      "eval/test": True, "figures/gradcam": True}  # a re-train draws Grad-CAM
    assert retrain_config(doc, None, ["figures/gradcam=false"], "best.yaml")[1]["figures/gradcam"] is False
