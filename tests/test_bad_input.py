"""Every bad input the issue lists is one clear error (exit 2, no traceback) raised before any trial
starts, naming the offending value. Runs `tune-run` / `tune-train` / `tune-ui` in process (one torch
import)."""
import importlib
import os
import socket

import numpy as np
import pytest
import ray
import yaml
from PIL import Image

from search.cli import run_main, train_main, ui_main
from search.errors import UsageError
from search.preflight import check_trainable
from search.home import ExperimentState
from trainables.registry import TRAINABLES

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLASSIFICATION = os.path.join(ROOT, "spaces", "classification.py")
MULTITASK = os.path.join(ROOT, "spaces", "multitask.py")
SEGMENTATION = os.path.join(ROOT, "spaces", "segmentation.py")
MEDFMC = os.path.join(ROOT, "spaces", "medfmc.py")
TRIPLET = os.path.join(ROOT, "spaces", "triplet.py")
SMOKE = ["--smoke-test", "--num-samples", "1"]


def png(path, size=40, value=None):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    pixels = np.random.default_rng(len(str(path))).integers(0, 255, (size, size), dtype=np.uint8)
    Image.fromarray(pixels if value is None else np.full((size, size), value, np.uint8)).save(path)


def covid_tree(root, masks=True, per_class=6):
    for cls in ("COVID", "Normal"):
        for n in range(per_class):
            png(os.path.join(root, cls, "images", f"{cls}-{n}.png"))
            if masks:
                png(os.path.join(root, cls, "masks", f"{cls}-{n}.png"), value=255)
    return root


def space_file(tmp, text, name="space.py"):
    path = tmp / name
    path.write_text(text)
    return str(path)


def no_images(tmp):
    root = covid_tree(str(tmp / "data"))
    os.makedirs(os.path.join(root, "Empty Class", "images"))
    return [CLASSIFICATION, *SMOKE, "--data", root]


def corrupt(tmp):
    root = covid_tree(str(tmp / "data"))
    with open(os.path.join(root, "COVID", "images", "COVID-3.png"), "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n truncated")
    return [CLASSIFICATION, *SMOKE, "--data", root]


def no_mask(tmp):
    root = covid_tree(str(tmp / "data"))
    os.remove(os.path.join(root, "Normal", "masks", "Normal-2.png"))
    return [MULTITASK, *SMOKE, "--data", root]


def escaping_annotation(tmp):
    root = tmp / "data"
    for n in range(4):
        png(str(root / "images" / f"x{n}.png"))
    (root / "trainval.txt").write_text("x0.png 0\nx1.png 1\n../../etc/passwd.png 0\nx3.png 1\n")
    return [MEDFMC, *SMOKE, "--data", str(root)]


def resume_of_a_retrain(tmp):
    home = str(tmp.parent / "runs")  # the home fixture's
    ExperimentState(home, "retrained").save_settings({"config_file": "best.yaml", "cpus_per_trial": 1.0})
    return [CLASSIFICATION, "--name", "retrained", "--resume"]


CASES = {
    "space file missing": (lambda tmp: [str(tmp / "absent.py")], "does not exist"),
    "space file not Python": (lambda tmp: [space_file(tmp, "x", "space.txt")], "is not a Python file"),
    "space file without space()": (
        lambda tmp: [space_file(tmp, "TRAINABLE = 'classification'\nOBJECTIVES = {'val/accuracy': 'max'}\n")],
        "has no space(trial) function"),
    "unknown trainable": (
        lambda tmp: [space_file(tmp, "TRAINABLE = 'classfication'\nOBJECTIVES = {'val/accuracy': 'max'}\n"
                                     "def space(trial): pass\n")], "Unknown trainable 'classfication'"),
    "objective not reported": (
        lambda tmp: [space_file(tmp, "TRAINABLE = 'classification'\nOBJECTIVES = {'val/dice': 'max'}\n"
                                     "def space(trial): pass\n")], "'val/dice' in"),
    "unknown timm model": (lambda tmp: [CLASSIFICATION, *SMOKE, "--set", "model/backbone=resnet999"], "resnet999"),
    "unknown architecture": (lambda tmp: [SEGMENTATION, *SMOKE, "--set", "model/arch=unet3"], "unet3"),
    "unknown encoder": (lambda tmp: [SEGMENTATION, *SMOKE, "--set", "model/encoder=tu-resnet999"], "resnet999"),
    "space samples an unknown model": (
        lambda tmp: [space_file(tmp, "TRAINABLE = 'classification'\nOBJECTIVES = {'val/accuracy': 'max'}\n"
                                     "def space(trial):\n"
                                     "    trial.suggest_categorical('model/backbone', ['test_resnet', 'resnet5O'])\n")],
        "resnet5O"),
    "missing pretrained weights": (
        lambda tmp: [CLASSIFICATION, *SMOKE, "--set", "model/pretrained=/no/such/weights.safetensors"],
        "/no/such/weights.safetensors"),
    "--set unknown key": (lambda tmp: [CLASSIFICATION, "--set", "optim/lrr=1"], "Unknown config key 'optim/lrr'"),
    "--set wrong type": (lambda tmp: [CLASSIFICATION, "--set", "train/epochs=two"], "train/epochs takes an integer"),
    "--set wrong type under --smoke-test": (lambda tmp: [CLASSIFICATION, *SMOKE, "--set", "train/epochs=two"],
                                            "train/epochs takes an integer (default 2)"),  # SMOKE's, not DEFAULTS' 20
    "--set unknown choice": (lambda tmp: [CLASSIFICATION, "--set", "data/layout=dicom"], "data/layout='dicom'"),
    "unknown positive class": (lambda tmp: [CLASSIFICATION, *SMOKE, "--set", "eval/positive_class=COVlD"],
                               "eval/positive_class='COVlD' is not a class"),
    "--set eval/test=true": (lambda tmp: [CLASSIFICATION, "--set", "eval/test=true"], "eval/test=True in the command"),
    "space sets eval/test": (
        lambda tmp: [space_file(tmp, "TRAINABLE = 'classification'\nOBJECTIVES = {'val/accuracy': 'max'}\n"
                                     "SMOKE = {'model/backbone': 'test_resnet'}\n"
                                     "def space(trial):\n    trial.suggest_categorical('eval/test', [False, True])\n"),
                     *SMOKE], "eval/test=True in"),
    "data path missing": (lambda tmp: [CLASSIFICATION, *SMOKE, "--data", str(tmp / "nowhere")], "does not exist"),
    "data path empty": (lambda tmp: [CLASSIFICATION, *SMOKE, "--data", str(tmp)], "is empty"),
    "class folder without images": (no_images, "Empty Class"),
    "corrupt image": (corrupt, "COVID-3.png"),
    "image without its mask": (no_mask, "Normal-2.png"),
    "annotation path escaping the root": (escaping_annotation, "../../etc/passwd.png"),
    "data/fraction outside (0, 1]": (lambda tmp: [CLASSIFICATION, "--set", "data/fraction=1.5"], "data/fraction=1.5"),
    "more shots than a class has": (
        lambda tmp: [MEDFMC, *SMOKE, "--set", "data/shots_per_class=500"], "500"),
    "triplet phases longer than the training": (
        lambda tmp: [TRIPLET, *SMOKE, "--set", "triplet/embedding_epochs=300"], "triplet/embedding_epochs=300"),
    "resume of an unknown experiment": (lambda tmp: [CLASSIFICATION, "--name", "never-ran", "--resume"],
                                        "no experiment named 'never-ran'"),
    "resume of a re-train": (resume_of_a_retrain, "'retrained' in"),
    "unknown scheduler": (lambda tmp: [CLASSIFICATION, "--scheduler", "pbt2"], "Unknown scheduler 'pbt2'"),
}


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("MEDTUNE_HOME", str(tmp_path / "runs"))
    monkeypatch.setenv("MEDTUNE_CACHE", str(tmp_path / "cache"))
    monkeypatch.chdir(ROOT)
    return tmp_path / "runs"


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_input_is_one_clear_error_before_any_trial(case, home, tmp_path, capsys, fault_log, no_ray):
    build, needle = CASES[case]
    work = tmp_path / "work"
    work.mkdir()
    assert run_main(build(work)) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("error:") == 1 and needle in err and "Traceback" not in err, err
    assert not os.path.exists(home / "ray") and not ray.is_initialized()  # no trial was launched
    fault_log(fault=f"bad input: {case}", outcome=err.strip().splitlines()[0][:300], bad_inputs=1)


def exported(tmp, **config):
    """A tune-export YAML written by hand: one trial of the classification trainable."""
    entry = {"trial_id": "t0", "run_id": "r0", "metrics": {"val/accuracy": 0.5},
             "config": {"model/backbone": "test_resnet", "train/epochs": 1, **config}}
    path = tmp / "best.yaml"
    path.write_text(yaml.safe_dump({"experiment": "handmade", "space": "spaces/classification.py",
                                    "trainable": "classification", "objectives": {"val/accuracy": "max"},
                                    "resources": {"cpus": 1.0, "gpus": 0.0}, "best": entry, "pareto": [entry]}))
    return str(path)


TRAIN_CASES = {
    "--set unknown model": (lambda tmp: [exported(tmp), "--set", "model/backbone=nope"], "Unknown timm model 'nope'"),
    "exported unknown model": (lambda tmp: [exported(tmp, **{"model/backbone": "resnet5O"})], "resnet5O"),
    "--set unknown positive class": (lambda tmp: [exported(tmp), "--set", "eval/positive_class=COVlD"],
                                     "eval/positive_class='COVlD' is not a class"),
    "--set data path missing": (lambda tmp: [exported(tmp), "--set", f"data/root={tmp / 'nowhere'}"],
                                "does not exist"),
    "--set wrong type": (lambda tmp: [exported(tmp), "--set", "train/epochs=two"], "train/epochs takes an integer"),
    "config file missing": (lambda tmp: [str(tmp / "absent.yaml")], "does not exist"),
    "not a tune-export file": (lambda tmp: [space_file(tmp, "a: 1\n", "best.yaml")], "is not a tune-export file"),
    "--pareto out of range": (lambda tmp: [exported(tmp), "--pareto", "3"], "--pareto 3 is out of range"),
}


@pytest.mark.parametrize("case", sorted(TRAIN_CASES))
def test_bad_retrain_input_is_one_clear_error_before_ray_starts(case, home, tmp_path, capsys, no_ray):
    """tune-train checks its config as tune-run checks a space's (the same preflight) before the
    tracking server or Ray starts."""
    build, needle = TRAIN_CASES[case]
    assert train_main(build(tmp_path)) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("error:") == 1 and needle in err and "Traceback" not in err, err
    assert len(err.strip().splitlines()) == 1, err
    assert not os.path.exists(home / "ray") and not os.path.exists(home / "mlflow") and not ray.is_initialized()


@pytest.mark.parametrize("name", sorted(TRAINABLES))
def test_every_trainable_check_is_registered_for_preflight(name):
    """A trainable module's check(cfg) is the one its TrainableSpec names, which preflight runs."""
    spec = TRAINABLES[name]
    module = importlib.import_module(spec.target.split(":")[0])
    assert (spec.check == f"{module.__name__}:check") == hasattr(module, "check"), spec


def test_a_port_in_use_is_a_clear_error(home, monkeypatch, capsys, fault_log):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        assert ui_main(["--port", str(port)]) == 2
    err = capsys.readouterr().err
    assert f"Port {port}" in err and "already in use" in err
    fault_log(fault="bad input: tracking port in use", outcome=err.strip().splitlines()[0][:300], bad_inputs=1)


def test_a_name_the_space_can_choose_is_checked_even_when_no_sample_drew_it():
    """preflight runs the trainable's check on every offered name (loss/seg here), not only on sampled configs."""
    spec = TRAINABLES["segmentation"]
    with pytest.raises(UsageError, match="loss/seg='dise' is not known"):
        check_trainable(spec, [dict(spec.defaults)], {"loss/seg": {"dice", "dise"}})
