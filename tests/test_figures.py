"""The pictures: each trial's (trainables.figures) from real tiny models on the generated data, the
experiment's (mlflow_server.pareto) on the real MLflow server, and one real trial on Ray whose pictures
reach its MLflow run through the tracker. Each is a valid PNG of some size whose title is in its file."""
import uuid
from pathlib import Path

import numpy as np
import pytest
from mlflow import MlflowClient
from PIL import Image
from ray import tune

from mlflow_server.pareto import log_pareto, pareto_figure
from mlflow_server.records import TrialRecord
from mlflow_server.tracker import TrialTracker, get_or_create_parent_run
from trainables import classification, multitask
from trainables.figures import curve_classes, gradcam_figure, write_figures
from trainables.loop import figures, start_trial
from trainables.metrics import Outputs
from trainables.models import create_classifier
from trainables.registry import TRAINABLES, nested_config

TINY = {"data/image_size": 32, "train/batch_size": 16, "data/fraction": 0.25, "data/val_fraction": 0.2,
        "data/workers": 0, "train/epochs": 1, "train/bn_reestimate_images": 32}
CLASSIFIER = {**TRAINABLES["classification"].defaults, **TINY, "model/backbone": "test_resnet",
              "model/frozen_layers": 2, "figures/gradcam": True}
MULTITASK = {**TRAINABLES["multitask"].defaults, **TINY, "model/encoder": "tu-test_resnet"}


def png(path) -> dict:
    """The PNG's text chunks; it must open as a whole, non-trivial image."""
    assert Path(path).stat().st_size > 10_000, path
    with Image.open(path) as image:
        assert image.format == "PNG" and min(image.size) > 300
        image.verify()
    with Image.open(path) as image:
        return dict(image.text)


@pytest.fixture(scope="module")
def classifier_trial():
    """A classification trial's task, model (random weights, 2 layer groups frozen), loader, config, data, device."""
    device, data, model, loader = start_trial(CLASSIFIER, classification.TASK)
    return classification.TASK, model, loader, CLASSIFIER, data, device


def test_a_classification_trial_gets_its_confusion_matrix_curves_and_grad_cam(classifier_trial, tmp_path):
    paths = write_figures(*classifier_trial, str(tmp_path))
    titles = {Path(p).name: png(p)["Title"] for p in paths}
    assert sorted(titles) == ["confusion_matrix.png", "gradcam.png", "roc_pr_curves.png"]
    val = len(classifier_trial[4].val_idx)
    assert titles["confusion_matrix.png"] == f"Validation confusion matrix ({val} images)"
    assert titles["roc_pr_curves.png"] == f"Validation ROC and precision-recall curves (one-vs-rest per class, {val} images)"
    assert titles["gradcam.png"].startswith("Grad-CAM of the true class at layer layer")


def test_figures_draw_off_leaves_a_trial_without_pictures(classifier_trial):
    task, model, loader, cfg, data, device = classifier_trial
    assert all(spec.defaults["figures/draw"] is True for spec in TRAINABLES.values())  # on unless turned off
    assert figures(task, model, loader, {**cfg, "figures/draw": False}, data, device) is None  # report() writes no artifacts
    assert callable(figures(task, model, loader, cfg, data, device))


def test_grad_cam_of_a_vision_transformer_lays_its_tokens_out(classifier_trial):
    _, _, _, cfg, data, device = classifier_trial
    vit = create_classifier({**cfg, "model/backbone": "test_vit"}, len(data.classes)).to(device)
    figure = gradcam_figure(vit, data, device)
    assert figure.get_suptitle().startswith("Grad-CAM of the true class at layer blocks.")
    assert [t.get_text() for t in figure.axes[0].get_yticklabels()] == [f"True {c}" for c in data.classes]


def test_curves_are_of_the_positive_class_for_binary_data_and_per_class_otherwise():
    probs = np.array([[0.8, 0.2], [0.3, 0.7], [0.6, 0.4], [0.1, 0.9]])
    assert curve_classes(Outputs(loss=0, y_true=np.array([0, 1, 0, 1]), probs=probs), positive=0) == [0]
    three = np.array([[0.5, 0.3, 0.2]] * 4)
    assert curve_classes(Outputs(loss=0, y_true=np.array([0, 1, 1, 0]), probs=three), positive=1) == [0, 1]
    multilabel = np.array([[1, 0, 1], [0, 1, 1], [1, 1, 1], [0, 0, 1]])  # class 2 has no negatives
    assert curve_classes(Outputs(loss=0, y_true=multilabel, probs=three), positive=1) == [0, 1]


def test_a_multitask_trial_gets_its_best_and_worst_masks_and_class_pictures(tmp_path):
    device, data, model, loader = start_trial(MULTITASK, multitask.TASK)
    paths = write_figures(multitask.TASK, model, loader, MULTITASK, data, device, str(tmp_path))
    titles = {Path(p).name: png(p)["Title"] for p in paths}
    assert sorted(titles) == ["confusion_matrix.png", "masks_best_worst.png", "roc_pr_curves.png"]
    assert titles["masks_best_worst.png"] == f"Validation masks: the best and worst 4 of {len(data.val_idx)} images by Dice"


# --- the experiment's pictures -----------------------------------------------------------------------------

OBJECTIVES = {"val/f1_macro": "max", "perf/train_images_per_s": "max"}


def test_pareto_png_html_and_learning_curves_on_the_parent_run(mlflow_server, tmp_path):
    client = MlflowClient(mlflow_server)
    parent = get_or_create_parent_run(client, f"figures-{uuid.uuid4().hex[:8]}", {})
    experiment = client.get_run(parent).info.experiment_id
    records = []
    for n, (f1, speed) in enumerate([(0.6, 300.0), (0.8, 100.0), (0.5, 200.0)]):
        run = client.create_run(experiment).info.run_id
        for epoch in (1, 2, 3):
            client.log_metric(run, "val/f1_macro", f1 * epoch / 3, step=epoch)
        config = {"optim/lr": 10.0 ** -n, "model/arch": "unet", "train/epochs": 3}
        records.append(TrialRecord(run, f"6b7e5_0000{n}", "FINISHED", config, {"val/f1_macro": f1,
                                                                                "perf/train_images_per_s": speed}))
    front = log_pareto(client, parent, records, OBJECTIVES)
    assert [r.trial_id for r in front] == ["6b7e5_00001", "6b7e5_00000"]
    folder = Path(client.download_artifacts(parent, "", str(tmp_path)))
    assert {"pareto.html", "pareto.png", "learning_curves.png", "pareto.json"} <= {p.name for p in folder.iterdir()}
    assert png(folder / "pareto.png")["Title"] == "Pareto front: 2 of 3 finished trials (labels: trial numbers)"
    assert png(folder / "learning_curves.png")["Title"] == "Learning curves of the 3 best trials by validation macro F1 (0-1)"

    dominated, line = pareto_figure(records, OBJECTIVES, front).data
    assert list(line.text) == ["1", "0"] and list(dominated.text) == ["2"]  # trials labelled by number, front along x
    assert dominated.hovertext[0].split("<br>") == [  # the searched key only, not the constant ones
        "<b>6b7e5_00002</b>", "val/f1_macro = 0.5", "perf/train_images_per_s = 200", "optim/lr = 0.01"]
    layout = pareto_figure(records, OBJECTIVES, front).layout
    assert layout.yaxis.title.text == "Validation macro F1 (0-1), higher is better"
    assert layout.xaxis.title.text == "Training throughput (images/s), higher is better"


# --- end to end --------------------------------------------------------------------------------------------

@pytest.mark.slow  # one real trial on Ray
def test_a_trials_pictures_reach_its_mlflow_run(ray_cluster, mlflow_server, tmp_path):
    client = MlflowClient(mlflow_server)
    experiment = f"figures-{uuid.uuid4().hex[:8]}"
    parent = get_or_create_parent_run(client, experiment, {})
    tracker = TrialTracker(mlflow_server, experiment, parent, {}, str(tmp_path / "pending"))
    tuner = tune.Tuner(
        tune.with_resources(TRAINABLES["classification"].function(), {"cpu": 1}),
        param_space=nested_config(CLASSIFIER),
        run_config=tune.RunConfig(name=experiment, storage_path=ray_cluster, verbose=0, callbacks=[tracker]),
    )
    assert not tuner.fit().errors
    (run,) = client.search_runs([client.get_run(parent).info.experiment_id], "tags.`medtune.role` = 'trial'")
    assert run.info.status == "FINISHED"
    names = sorted(a.path for a in client.list_artifacts(run.info.run_id, "figures"))
    assert names == ["figures/confusion_matrix.png", "figures/gradcam.png", "figures/roc_pr_curves.png"]
    path = client.download_artifacts(run.info.run_id, "figures/confusion_matrix.png", str(tmp_path))
    assert png(path)["Title"].startswith("Validation confusion matrix")
