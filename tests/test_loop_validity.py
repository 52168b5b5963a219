"""Numbers the training loop reports must be about the model: validation with BatchNorm statistics that
belong to the weights, frozen layers that stay frozen, data that replays exactly whatever the number of
loader workers, and peak memory of this trial alone. Real tiny models on the generated data, no Ray."""
import gc

import numpy as np
import pytest
import torch
from torch import nn

from trainables import classification, multitask
from trainables.batchnorm import reestimate_batchnorm
from trainables.loop import prepare_validation, start_trial, train_epoch
from trainables.speed import Speed, peak_memory_mb, reset_peak_memory
from trainables.trial_data import prepare_data, trial_loader
from trainables.models import frozen_norms
from trainables.optim import make_optimizer, make_schedule, set_epoch_lr
from trainables.registry import TRAINABLES

CLASSIFIER = {**TRAINABLES["classification"].defaults, "model/backbone": "test_resnet", "data/image_size": 32,
              "train/batch_size": 16, "optim/lr": 1e-3, "data/fraction": 0.5, "data/workers": 0}
SEGMENTER = {**TRAINABLES["multitask"].defaults, "model/encoder": "tu-test_resnet", "data/image_size": 32,
             "train/batch_size": 16, "optim/lr": 1e-3, "data/fraction": 0.25, "data/workers": 0}


def trained_one_epoch(task, cfg: dict):
    """A model of `task` after one real training epoch under cfg, with its data, loader and device."""
    device, data, model, loader = start_trial(cfg, task.TASK)
    optimizer = make_optimizer(model, cfg, cfg["optim/lr"])
    train_epoch(model, loader.epoch(1), task.loss, optimizer, device, 1, cfg, Speed())
    return model, data, loader, device


@pytest.mark.slow
def test_validation_after_a_few_steps_reflects_the_weights():
    """8 steps at lr 1e-3: the moving-average statistics still belong to the initial weights, and the
    model predicts one class for every validation image (measured: accuracy 0.26, macro F1 0.10, macro
    recall 0.25); with the statistics re-estimated the same weights give accuracy 0.42, macro F1 0.41."""
    model, data, loader, device = trained_one_epoch(classification, CLASSIFIER)
    weights = {k: v.clone() for k, v in model.state_dict().items()}
    scores = {}
    for images in (0, 1024):
        model.load_state_dict(weights)
        cfg = {**CLASSIFIER, "train/bn_reestimate_images": images}
        prepare_validation(model, loader, data, cfg, device)
        with torch.no_grad():
            scores[images] = classification.TASK.evaluate(model, loader, cfg, data, device)
    assert scores[0]["val/recall_macro"] == pytest.approx(0.25)  # one of the 4 classes predicted for all
    assert scores[0]["val/f1_macro"] < 0.15
    assert scores[1024]["val/f1_macro"] > 0.3 and scores[1024]["val/accuracy"] > 0.35


def test_reestimation_is_the_average_over_the_images_and_leaves_the_rest_alone():
    torch.manual_seed(0)
    reached, unreached, frozen = nn.BatchNorm2d(3), nn.BatchNorm2d(3), nn.BatchNorm2d(3)
    frozen.requires_grad_(False)
    model = nn.ModuleList([reached, unreached, frozen])
    for layer in model:
        layer.running_mean.fill_(5.0)
    batches = [torch.randn(4, 3, 8, 8) * 2 + 1 for _ in range(3)]
    reestimate_batchnorm(model, lambda x: frozen(reached(x)), batches)

    images = torch.cat(batches)
    assert torch.allclose(reached.running_mean, images.mean((0, 2, 3)), atol=1e-5)  # cumulative, not moving
    assert torch.allclose(reached.running_var, torch.stack([b.var((0, 2, 3), unbiased=False) * 256 / 255
                                                            for b in batches]).mean(0), atol=1e-4)
    assert reached.momentum == 0.1 and not model.training
    assert (unreached.running_mean == 5).all() and (frozen.running_mean == 5).all()
    assert frozen.num_batches_tracked == 0


@pytest.mark.slow
@pytest.mark.parametrize("task, cfg", [(classification, CLASSIFIER), (multitask, SEGMENTER)],
                         ids=["timm-classifier", "smp-tu-encoder"])
def test_frozen_layers_stay_frozen_through_training_and_validation(task, cfg):
    cfg = {**cfg, "model/frozen_layers": 2}  # the stem and the first stage
    device, data, model, loader = start_trial(cfg, task.TASK)
    resnet = model if task is classification else model.encoder.model
    frozen = frozen_norms(model)
    assert {id(m) for m in frozen} == {id(m) for part in (resnet.conv1, resnet.bn1, resnet.layer1)
                                       for m in part.modules()
                                       if isinstance(m, nn.BatchNorm2d)}
    before = {k: v.clone() for k, v in model.state_dict().items()}
    outputs = {}

    def keep(name):
        def hook(module, inputs, output):
            outputs[name] = output
        return hook

    for name in ("layer1", "layer2"):  # the output of the frozen prefix, and of the next (trained) stage
        getattr(resnet, name).register_forward_hook(keep(name))
    optimizer = make_optimizer(model, cfg, cfg["optim/lr"])
    train_epoch(model, loader.epoch(1), task.loss, optimizer, device, 1, cfg, Speed())
    assert outputs["layer1"].grad_fn is None and outputs["layer2"].grad_fn is not None

    prepare_validation(model, loader, data, cfg, device)  # re-estimates the trained layers only
    after = model.state_dict()
    frozen_names = [n for n, m in model.named_modules() if any(m is f for f in frozen)]
    trained_names = [n for n, m in model.named_modules()
                     if isinstance(m, nn.BatchNorm2d) and n.startswith(("layer2", "encoder.model.layer2"))]
    for name in frozen_names:
        for buffer in ("running_mean", "running_var", "num_batches_tracked"):
            assert torch.equal(after[f"{name}.{buffer}"], before[f"{name}.{buffer}"]), f"{name}.{buffer}"
    assert trained_names and all(not torch.equal(after[f"{n}.running_mean"], before[f"{n}.running_mean"])
                                 for n in trained_names)


def epoch_batches(cfg: dict, epoch: int):
    loader = trial_loader(prepare_data(cfg, masks=True), cfg, torch.device("cpu"))
    return [batch for batch, _ in loader.epoch(epoch)]


def test_data_order_and_augmentation_replay_for_any_number_of_workers():
    cfg = {**SEGMENTER, "aug/hflip": 0.5, "aug/rotation": 20.0, "aug/crop_scale": 0.5, "train/batch_size": 8}
    torch.manual_seed(123)
    expected_draw = torch.rand(1)
    torch.manual_seed(123)
    in_process = epoch_batches(cfg, 2)
    assert torch.equal(torch.rand(1), expected_draw)  # loading in the trial's process leaves its generator alone
    with_workers = epoch_batches({**cfg, "data/workers": 2}, 2)  # a fresh loader at epoch 2, as on resume
    assert len(in_process) == len(with_workers)
    for a, b in zip(in_process, with_workers):
        assert all(torch.equal(x, y) for x, y in zip(a, b))
    other_epoch = epoch_batches(cfg, 3)
    assert not torch.equal(in_process[0][0], other_epoch[0][0])


def test_peak_memory_is_this_trials_own():
    cpu = torch.device("cpu")
    reset_peak_memory(cpu)
    big = np.ones(300 * 2**20 // 8)  # 300 MiB, touched
    del big
    gc.collect()
    earlier_peak = peak_memory_mb(cpu)
    reset_peak_memory(cpu)  # a new trial in the same process
    assert peak_memory_mb(cpu) < earlier_peak - 250


def test_weight_decay_skips_norms_and_biases():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, bias=False), nn.BatchNorm2d(4), nn.Flatten(), nn.Linear(4, 2))
    model[0].requires_grad_(False)  # frozen: not optimised at all
    optimizer = make_optimizer(model, {**CLASSIFIER, "optim/name": "adamw", "optim/weight_decay": 0.05}, 1e-3)
    decay = {id(p): group["weight_decay"] for group in optimizer.param_groups for p in group["params"]}
    assert decay == {id(model[1].weight): 0.0, id(model[1].bias): 0.0, id(model[3].bias): 0.0,
                     id(model[3].weight): 0.05}
    assert type(optimizer) is torch.optim.AdamW


def epoch_lrs(cfg: dict, epochs: int) -> list[float]:
    """The lr of each epoch of a stretch of `epochs` epochs at lr 1 under cfg's schedule."""
    optimizer = make_optimizer(nn.Linear(2, 2), cfg, 1.0)
    schedule, lrs = make_schedule(optimizer, cfg, epochs), []
    for epoch in range(epochs):
        set_epoch_lr(schedule, epoch)
        lrs.append(optimizer.param_groups[0]["lr"])
    return lrs


def test_schedules_keep_their_meaning_and_warm_up_raises_the_lr():
    cosine = {**CLASSIFIER, "optim/schedule": "cosine"}
    assert epoch_lrs(cosine, 4) == pytest.approx([1.0, 0.853553, 0.5, 0.146447], abs=1e-6)  # annealed to 0
    step = {**CLASSIFIER, "optim/schedule": "step", "optim/step_epochs": 2, "optim/gamma": 0.5}
    assert epoch_lrs(step, 5) == pytest.approx([1.0, 1.0, 0.5, 0.5, 0.25])
    assert epoch_lrs({**CLASSIFIER, "optim/schedule": "constant"}, 3) == pytest.approx([1.0, 1.0, 1.0])
    # warm-up: epoch k of the first 3 at k / 4, then the cosine over the 3 epochs after them
    assert epoch_lrs({**cosine, "optim/warmup_epochs": 3}, 6) == pytest.approx([0.25, 0.5, 0.75, 1.0, 0.75, 0.25])
    sgd = make_optimizer(nn.Linear(2, 2), {**CLASSIFIER, "optim/name": "sgd"}, 0.1)
    assert sgd.param_groups[0]["momentum"] == 0.9 and not sgd.param_groups[0]["nesterov"]
