"""The engine's fixed-config path (a re-train; tune-ablate's N configs with tags per trial): each config
is one trial run in the order given, tagged with its tags, on a local Ray cluster and a real MLflow
server; the experiment's state lies where search.home says; a resume of the ended run only summarises."""
import os

import pytest
import ray
from mlflow import MlflowClient

from conftest import join_ray
from search import engine
from search.errors import UsageError
from search.home import ExperimentState
from search.trials import Configs
from trainables.registry import get_trainable

SPEC = get_trainable("classification")
BASE = {**SPEC.defaults, "model/backbone": "test_resnet", "data/image_size": 32, "train/batch_size": 8,
        "train/epochs": 1, "data/fraction": 0.25, "train/bn_reestimate_images": 32, "figures/draw": False}


def experiment(name: str, configs: Configs) -> engine.Experiment:
    return engine.Experiment(name=name, trainable=SPEC, objectives={"val/accuracy": "max"}, trials=configs,
                             source="the test", settings={"cpus_per_trial": 1.0, "gpus_per_trial": 0.0},
                             resume_command="resume it")


@pytest.mark.slow
def test_fixed_configs_run_in_order_with_their_tags_and_resume_as_ended(tracking_uri, tmp_path, capsys):
    """Also: the engine runs the trials on a Ray this process already joined, and leaves it running."""
    home = str(tmp_path / "runs")
    join_ray()
    configs = [{**BASE, "train/seed": seed, "train/epochs": epochs} for seed, epochs in ((0, 1), (1, 2))]
    tags = [{"medtune.factor": "baseline", "medtune.seed": "0"}, {"medtune.factor": "train/epochs", "medtune.seed": "1"}]
    exp = experiment("fixed", Configs(configs, tags))
    outcome = engine.run(exp, home)
    out = capsys.readouterr().out
    assert outcome.code == 0, out[-3000:]
    made = sorted(outcome.records, key=lambda r: r.trial_id)  # Ray numbers its trials as it makes them
    assert [r.config for r in made] == configs and [r.status for r in made] == ["FINISHED"] * 2
    assert "Trials: 2 of 2: 2 finished, 0 stopped early, 0 failed" in out and "2/2 trials" in out
    assert "Ray: using the cluster this process already joined (1 CPU)" in out and ray.is_initialized()
    client = MlflowClient(tracking_uri)
    for record, expected in zip(made, tags):
        run = client.get_run(record.run_id)
        assert expected.items() <= run.data.tags.items()
        assert run.data.tags["medtune.trainable"] == "classification" and run.data.tags["medtune.data_fingerprint"]
        epochs = client.get_metric_history(record.run_id, "val/accuracy")
        assert sorted(m.step for m in epochs) == list(range(1, record.config["train/epochs"] + 1))

    state = ExperimentState(home, "fixed")
    assert os.path.isfile(state.search_done) and os.path.isfile(state.settings_file)
    assert state.load_settings() == exp.settings
    again = engine.run(exp, home, resume=True)
    out = capsys.readouterr().out
    assert "already ran its search" in out and " started" not in out
    assert [r.run_id for r in again.records] == [r.run_id for r in outcome.records]
    with pytest.raises(UsageError, match="already exists"):
        engine.run(exp, home)


def test_a_fixed_run_needs_configs_and_one_tag_set_per_config():
    with pytest.raises(UsageError, match="no config"):
        Configs([])
    with pytest.raises(ValueError, match="one per config"):
        Configs([BASE, BASE], [{"medtune.seed": "0"}])
    tagged = Configs([BASE, {**BASE, "train/seed": 1}], [{"a": "0"}, {"a": "1"}])
    assert tagged.trial_tags({**BASE, "train/seed": 1}) == {"a": "1"} and tagged.trial_tags({}) == {}
    assert Configs([BASE]).trial_tags(BASE) == {}


def test_the_home_maps_an_experiment_name_to_its_state(tmp_path, monkeypatch):
    monkeypatch.setenv("MEDTUNE_HOME", str(tmp_path / "home"))
    from search.home import results_dir

    home = results_dir()
    state = ExperimentState(home, "e1")
    assert home == str(tmp_path / "home") and (tmp_path / "home").is_dir()
    assert state.ray_dir == str(tmp_path / "home" / "ray" / "e1")
    assert state.settings_file == str(tmp_path / "home" / "experiments" / "e1.json")
    assert state.optuna_storage == f"sqlite:///{tmp_path / 'home' / 'optuna.db'}"
    assert state.search_done.startswith(state.ray_dir + os.sep)
    assert state.pending_dir == str(tmp_path / "home" / "mlflow" / "pending")
    with pytest.raises(UsageError, match="no experiment named 'e1' to resume .* experiments there: none"):
        state.load_settings()
    ExperimentState(home, "e0").save_settings({"a": 1})
    with pytest.raises(UsageError, match="experiments there: e0"):
        state.load_settings()
    monkeypatch.delenv("MEDTUNE_HOME")
    monkeypatch.chdir(tmp_path)
    assert results_dir() == str(tmp_path / "runs")
