"""The GPU-path config keys, checked on CPU: train/bf16 (bfloat16 autocast of the training forward pass) and
train/channels_last (model and images in channels_last) train the multitask model as float32 and the default
memory format do, to within bfloat16's precision and exactly, respectively."""
import copy

import pytest
import torch

from trainables import multitask
from trainables.loop import memory_format, to_device, training_step
from trainables.models import create_segmenter
from trainables.optim import make_optimizer
from trainables.registry import TRAINABLES

CFG = {**TRAINABLES["multitask"].defaults, "model/arch": "fpn", "model/encoder": "tu-test_resnet",
       "data/image_size": 32, "optim/name": "sgd", "optim/lr": 0.1}  # SGD: a weight's change follows its gradient


def batch() -> tuple:
    generator = torch.Generator().manual_seed(0)
    return (torch.randn(4, 1, 32, 32, generator=generator), (torch.rand(4, 1, 32, 32, generator=generator) > 0.5).float(),
            torch.tensor([0, 1, 2, 3]))


def one_step(model: torch.nn.Module, cfg: dict) -> tuple[float, dict]:
    """The loss of one training step of a copy of model under cfg, and the copy's weights after it."""
    model = copy.deepcopy(model).to(memory_format=memory_format(cfg)).train()
    torch.manual_seed(0)  # the FPN head's dropout
    loss = training_step(model, to_device(batch(), torch.device("cpu"), cfg), multitask.loss,
                         make_optimizer(model, cfg, cfg["optim/lr"]), 1, 0, cfg)
    return loss, {k: v.clone() for k, v in model.state_dict().items()}


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return create_segmenter(CFG, 4)


def update(weights: dict, model: torch.nn.Module) -> torch.Tensor:
    """The step's change of the model's parameters, as one vector."""
    return torch.cat([(weights[name] - p.detach()).flatten() for name, p in model.named_parameters()])


def test_bf16_autocast_trains_float32_weights_within_bfloat16_precision(model):
    loss, weights = one_step(model, CFG)
    loss_bf16, weights_bf16 = one_step(model, {**CFG, "train/bf16": True})
    assert loss_bf16 == pytest.approx(loss, rel=0.02)
    assert all(w.dtype == torch.float32 for w in weights_bf16.values() if w.is_floating_point())
    step, step_bf16 = update(weights, model), update(weights_bf16, model)
    assert step.norm() > 0
    assert torch.nn.functional.cosine_similarity(step, step_bf16, dim=0) > 0.99
    assert step_bf16.norm().item() == pytest.approx(step.norm().item(), rel=0.05)


def test_channels_last_changes_nothing_but_the_memory_format(model):
    cfg = {**CFG, "train/channels_last": True}
    images = to_device(batch(), torch.device("cpu"), cfg)[0]
    assert images.is_contiguous(memory_format=torch.channels_last)
    loss, weights = one_step(model, CFG)
    loss_cl, weights_cl = one_step(model, cfg)
    assert loss_cl == pytest.approx(loss, rel=1e-5)
    for key in weights:
        assert torch.allclose(weights_cl[key], weights[key], atol=1e-5), key
