"""The zeroshot trainable (study A.3): prompt sets, local-only CLIP models, zero-shot and linear
probe runs of a tiny random-weight open_clip model on generated data, through a real Ray Tune Tuner."""
import json
import math
import os
import re

import huggingface_hub
import numpy as np
import pytest
import torch
from ray import tune

from search.spacefile import load_module
from trainables.clip_models import load_clip
from trainables.data import generate_annotation_list, generate_covid_radiography
from trainables.data.synthetic.covid_radiography import CLASSES
from trainables.loop import evaluate_once, start_trial
from trainables.trial_data import open_data, prepare_data
from trainables.prompts import class_prompts, parse_prompt_sets, readable, select_prompt_set
from trainables.registry import TRAINABLES, nested_config, value_problem
from trainables.zeroshot import TASK, check, image_features, text_classifier, train, zero_shot_logits

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SPACE = os.path.join(ROOT, "spaces", "zeroshot.py")
TINY = os.path.join(ROOT, "spaces", "clip_configs", "medtune-tiny-clip.json")
SPEC = TRAINABLES["zeroshot"]
CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def cfg(tmp_path_factory):
    """A full config of the tiny model on a small generated COVID-19 Radiography set."""
    root = str(tmp_path_factory.mktemp("covid"))
    generate_covid_radiography(root, per_class=16, image_size=32, mask_size=16)
    return {**SPEC.defaults, "clip/model": "medtune-tiny-clip", "clip/model_config": TINY, "data/root": root,
            "data/image_size": 32, "train/batch_size": 16,
            "clip/prompt_sets": json.dumps({"label": ["{}"], "sentence": ["a chest x-ray showing {}"],
                                            "ensemble": ["{}", "a chest x-ray showing {}"]}),
            "clip/prompt_set": "sentence"}


def evaluate(cfg: dict) -> dict:
    """The metrics a zeroshot trial reports for each epoch, computed in this process."""
    device, data, model, loader = start_trial(cfg, TASK)
    return evaluate_once(TASK, model, loader, cfg, data, device)


@pytest.fixture(scope="module")
def clip(cfg):
    torch.manual_seed(0)
    return load_clip(cfg, CPU)


@pytest.mark.parametrize("folder, words", [("Lung_Opacity", "lung opacity"), ("Viral Pneumonia", "viral pneumonia"),
                                           ("COVID", "covid"), (" no-finding ", "no finding")])
def test_class_folders_become_readable_names(folder, words):
    assert readable(folder) == words


def test_templates_fill_readable_names_and_dict_sets_follow_label_order():
    classes = ["Lung_Opacity", "Normal"]
    assert class_prompts(["a {} x-ray", "{}"], classes) == [["a lung opacity x-ray", "lung opacity"],
                                                            ["a normal x-ray", "normal"]]
    per_class = {"Normal": ["clear lungs"], "Lung_Opacity": ["an opacity", "a dense area"]}
    assert class_prompts(per_class, classes) == [["an opacity", "a dense area"], ["clear lungs"]]


@pytest.mark.parametrize("text, name, message", [
    ("{'label': ['{}']}", "label", "not valid JSON"),
    ('["{}"]', "label", "non-empty JSON object"),
    ('{"label": ["{}"]}', "radiology", "known sets: label"),
    ('{"label": ["a chest x-ray"]}', "label", "contain '{}'"),
    ('{"label": "{}"}', "label", "is a str"),
    ('{"per_class": {"Normal": []}}', "per_class", "not so for 'Normal'"),
])
def test_malformed_prompt_sets_are_errors_naming_the_problem(text, name, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        select_prompt_set(text, name)


def test_a_dict_set_must_name_exactly_the_classes():
    with pytest.raises(ValueError, match="no prompts for 'Normal'.*class folders 'COVID', 'Normal'"):
        class_prompts({"COVID": ["covid"]}, ["COVID", "Normal"], "mine")
    with pytest.raises(ValueError, match="prompts for 'Viral_Pneumonia', which the data lacks"):
        class_prompts({"COVID": ["a"], "Normal": ["b"], "Viral_Pneumonia": ["c"]}, ["COVID", "Normal"], "mine")


def test_the_space_files_prompt_sets_fit_the_covid_classes():
    space = load_module(SPACE)
    sets = parse_prompt_sets(space.DEFAULTS["clip/prompt_sets"])
    assert set(sets) == set(space.PROMPT_SETS) and len(sets) >= 4
    prompts = {name: class_prompts(prompt_set, list(CLASSES), name) for name, prompt_set in sets.items()}
    assert prompts["label"] == [["covid"], ["lung opacity"], ["normal"], ["viral pneumonia"]]
    assert all(len(p) == len(CLASSES) for p in prompts.values())
    assert any(len(class_list) > 1 for p in prompts.values() for class_list in p), "an ensemble set"


def test_prompt_sets_change_text_embeddings_and_predictions(cfg, clip):
    _, data, _, loader = start_trial(cfg, TASK)  # the loader's images through the model's own preprocessing
    features, _, _ = image_features(clip, loader.ordered("val"), CPU)
    sets = parse_prompt_sets(cfg["clip/prompt_sets"])
    classifiers = {name: text_classifier(clip, class_prompts(s, data.classes), CPU) for name, s in sets.items()}
    assert classifiers["label"].shape == (32, len(data.classes))
    assert not torch.allclose(classifiers["label"], classifiers["sentence"], atol=1e-3)
    probs = {n: zero_shot_logits(clip, features, c).softmax(1) for n, c in classifiers.items()}
    assert (probs["label"] - probs["sentence"]).abs().max() > 1e-3
    # an ensemble is the normalised mean of its prompts' normalised embeddings
    mean = classifiers["label"] + classifiers["sentence"]
    torch.testing.assert_close(classifiers["ensemble"], mean / mean.norm(dim=0, keepdim=True), atol=1e-5, rtol=1e-4)


def test_a_missing_checkpoint_fails_before_the_data_is_read(cfg, tmp_path):
    missing = str(tmp_path / "ViT-L-14.pt")
    config = {**cfg, "clip/model": "ViT-L-14", "clip/model_config": "", "model/pretrained": missing,
              "data/root": str(tmp_path / "no-such-data")}
    with pytest.raises(FileNotFoundError, match=f"{re.escape(missing)}.*local files only.*hf download timm/vit_large"):
        train(config)


@pytest.mark.parametrize("change, error, message", [
    ({"clip/model": "ViT-L-41"}, ValueError, "not an open_clip architecture.*Did you mean: .*ViT-L-14"),
    ({"clip/mode": "finetune"}, ValueError, "accepted: zeroshot, linear_probe"),
    ({"clip/prompt_set": "radiology"}, ValueError, "known sets: label, sentence, ensemble"),
    ({"clip/model": "hf-hub:medtune/tiny-clip", "model/pretrained": "w.pt"}, ValueError, "brings its own weights"),
    ({"clip/model_config": TINY + ".missing"}, ValueError, "cannot be read as an open_clip model-config"),
])
def test_bad_configs_are_refused_before_loading(cfg, change, error, message):
    with pytest.raises(error, match=message):
        check({**cfg, **change})


def test_a_probe_c_of_zero_is_refused_before_any_trial():
    assert value_problem("clip/probe_c", 0.0) == "clip/probe_c=0.0 is out of range; accepted values lie in (0, inf]."


def test_weights_come_from_a_local_file_or_the_local_hf_cache(cfg, clip, tmp_path, monkeypatch):
    """A saved checkpoint loads through model/pretrained and through a hand-made HF cache entry; an
    uncached hf-hub model is an error saying how to get it, never a download."""
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    with pytest.raises(FileNotFoundError, match="'hf-hub:medtune/tiny-clip' is not in the local Hugging Face cache.*"
                                                "hf download medtune/tiny-clip"):
        load_clip({**cfg, "clip/model": "hf-hub:medtune/tiny-clip"}, CPU)

    weights = tmp_path / "open_clip_pytorch_model.bin"
    torch.save(clip.model.state_dict(), weights)
    torch.manual_seed(1)  # a different random init, so equal weights prove the file was loaded
    from_file = load_clip({**cfg, "model/pretrained": str(weights)}, CPU)

    commit = "0" * 40
    repo = tmp_path / "hub" / "models--medtune--tiny-clip"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True)
    (snapshot / "open_clip_config.json").write_text(json.dumps({"model_cfg": json.loads(open(TINY).read())}))
    (snapshot / "open_clip_pytorch_model.bin").write_bytes(weights.read_bytes())
    from_hub = load_clip({**cfg, "clip/model": "hf-hub:medtune/tiny-clip", "clip/model_config": ""}, CPU)

    for loaded in (from_file, from_hub):
        for (name, expected), actual in zip(clip.model.state_dict().items(), loaded.model.state_dict().values()):
            assert torch.equal(expected, actual), name


@pytest.mark.filterwarnings("ignore:Label not .* is present in all training examples")  # a rare finding
def test_multilabel_data_takes_the_linear_probe_and_refuses_zero_shot(cfg, tmp_path):
    generate_annotation_list(str(tmp_path), images=40, image_size=32)
    config = {**cfg, "data/root": str(tmp_path), "data/layout": "annotation_list"}
    with pytest.raises(ValueError, match="needs single-label data.*clip/mode='linear_probe'"):
        evaluate(config)
    metrics = evaluate({**config, "clip/mode": "linear_probe"})
    assert 0.0 <= metrics["val/map"] <= 1.0 and math.isfinite(metrics["val/loss"])


@pytest.mark.slow
def test_zero_shot_and_linear_probe_report_every_metric_through_ray_tune(cfg, ray_cluster):
    config = nested_config({**cfg, "train/epochs": 2, "figures/draw": False})
    config["clip"]["mode"] = tune.grid_search(["zeroshot", "linear_probe"])
    results = tune.Tuner(
        tune.with_resources(SPEC.function(), {"cpu": 1}), param_space=config,
        run_config=tune.RunConfig(name="zeroshot", storage_path=ray_cluster, verbose=0),
    ).fit()
    assert not results.errors, results.errors
    by_mode = {r.config["clip"]["mode"]: r for r in results}
    for mode, result in by_mode.items():
        history = result.metrics_dataframe
        assert list(history["epoch"]) == [1, 2], mode
        for metric in SPEC.metrics:
            assert history[metric].notna().all(), (mode, metric)
            assert history[metric].nunique() == 1, (mode, metric)  # computed once, reported per epoch
        assert history["perf/train_images_per_s"].gt(0).all() and result.checkpoint is not None
    val = len(prepare_data(cfg, masks=False).val_idx)
    zs, lp = (by_mode[m].metrics for m in ("zeroshot", "linear_probe"))
    # the probe encodes training + validation images, zero-shot the validation images only
    assert lp["perf/train_images_per_s"] * lp["perf/epoch_s"] > 3 * val
    assert zs["perf/train_images_per_s"] * zs["perf/epoch_s"] == pytest.approx(val)
    assert np.isclose(sum(map(sum, zs["val/confusion_matrix"]["matrix"])), val)


@pytest.mark.parametrize("mode", ["zeroshot", "linear_probe"])
def test_eval_test_scores_the_held_out_split_with_intervals(cfg, mode):
    metrics = evaluate({**cfg, "clip/mode": mode, "eval/test": True, "eval/bootstrap": 50})
    test = open_data(cfg, masks=False, part="test")
    assert metrics["test/images"] == len(test.labels) > 0
    assert sum(map(sum, metrics["test/confusion_matrix"]["matrix"])) == len(test.labels)
    assert metrics["test/accuracy_ci_low"] <= metrics["test/accuracy"] <= metrics["test/accuracy_ci_high"]
    assert 0.0 <= metrics["test/ece"] <= 1.0
    assert "test/accuracy" not in evaluate({**cfg, "clip/mode": mode})  # a search never opens it
