"""The GPU-path config keys, checked on CPU: train/bf16 (bfloat16 autocast of the training forward pass) and
train/channels_last (model and images in channels_last) train the multitask model as float32 and the default
memory format do, to within bfloat16's precision and exactly, respectively; train/compile (torch.compile of the
training forward pass) trains it as eager does, and its checkpoints are the plain model's."""
import copy

import pytest
import torch
from torch._dynamo.testing import CompileCounterWithBackend

from search.errors import UsageError
from search.overrides import check_value, parse_value
from trainables import loop, multitask
from trainables.loop import memory_format, start_trial, to_device, training_step
from trainables.models import compile_training, create_segmenter
from trainables.optim import make_optimizer
from trainables.registry import TRAINABLES

CFG = {**TRAINABLES["multitask"].defaults, "model/arch": "fpn", "model/encoder": "tu-test_resnet",
       "data/image_size": 32, "optim/name": "sgd", "optim/lr": 0.1}  # SGD: a weight's change follows its gradient


def batch() -> tuple:
    generator = torch.Generator().manual_seed(0)
    return (torch.randn(4, 1, 32, 32, generator=generator), (torch.rand(4, 1, 32, 32, generator=generator) > 0.5).float(),
            torch.tensor([0, 1, 2, 3]))


def one_step(model: torch.nn.Module, cfg: dict, backend=None) -> tuple[float, dict]:
    """The loss of one training step of a copy of model under cfg, and the copy's weights after it; with
    train/compile, the copy compiled for training with torch.compile's `backend`."""
    model = copy.deepcopy(model).to(memory_format=memory_format(cfg)).train()
    if cfg["train/compile"]:
        compile_training(model, backend=backend)
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


@pytest.fixture
def fresh_dynamo():
    yield
    torch._dynamo.reset()  # the compiled graphs and their guards on the test's models


@pytest.mark.slow  # compiles a graph (about 10 s)
def test_compile_trains_as_eager_does_and_checkpoints_the_plain_module(model, fresh_dynamo):
    """Compiled with the "aot_eager" backend: TorchDynamo captures the forward pass and AOTAutograd traces the
    joint forward and backward graph, as with the default inductor backend, which only then generates C++
    kernels for them. Inductor was measured once on the 2-CPU VM: 134 s to compile this step on one thread (cold cache),
    against 9 s for aot_eager, so the test would not stay under 20 s with it."""
    counter = CompileCounterWithBackend("aot_eager")
    loss, weights = one_step(model, CFG)
    loss_c, weights_c = one_step(model, {**CFG, "train/compile": True}, backend=counter)
    assert counter.frame_count == 1  # the step ran the compiled graph
    assert loss_c == pytest.approx(loss, rel=1e-5)
    assert list(weights_c) == list(weights) == list(model.state_dict())  # no "_orig_mod." prefix
    for key in weights:
        assert torch.allclose(weights_c[key], weights[key], atol=1e-6), key
    step, step_c = update(weights, model), update(weights_c, model)
    assert step.norm() > 0 and torch.allclose(step_c, step, atol=1e-6)

    compiled = compile_training(copy.deepcopy(model), backend=counter)
    compiled.load_state_dict(weights)  # an eager checkpoint loads into the compiled model, and back
    copy.deepcopy(model).load_state_dict(compiled.state_dict())
    eager = copy.deepcopy(model)
    eager.load_state_dict(weights)
    images = batch()[0]
    with torch.no_grad():  # validation: the plain forward pass, nothing compiled
        out, out_eager = compiled.eval()(images), eager.eval()(images)
    assert counter.frame_count == 1
    assert all(torch.equal(a, b) for a, b in zip(out, out_eager))


def test_start_trial_compiles_the_model_it_builds_only_with_train_compile(monkeypatch):
    tiny = {**CFG, "train/batch_size": 4, "data/fraction": 0.25, "train/epochs": 1}
    compiled = []
    monkeypatch.setattr(loop, "compile_training", lambda m: compiled.append(m) or m)
    _, _, plain, _ = start_trial(tiny, multitask.TASK)
    assert compiled == []
    _, _, model, _ = start_trial({**tiny, "train/compile": True}, multitask.TASK)
    assert compiled == [model]  # after it is built and moved to the device
    assert model.state_dict().keys() == plain.state_dict().keys()


def test_train_compile_is_a_boolean_checked_before_any_trial():
    defaults = TRAINABLES["multitask"].defaults
    assert defaults["train/compile"] is False
    assert parse_value("train/compile", "on", defaults) is True
    assert check_value("train/compile", True, defaults, "the test") is True
    with pytest.raises(UsageError, match="train/compile takes a boolean"):
        check_value("train/compile", "yes", defaults, "the test")
