"""The training loop every trainable shares: epochs, phases, optimiser, checkpoints, reports.

Every trainable is a `Task` run by `fit`. Each epoch: a training pass (frozen parts' normalisation in eval
mode, see models.train_mode), then the trained BatchNorm layers' statistics re-estimated on un-augmented
training images (trainables.batchnorm, train/bn_reestimate_images), then validation and the report, with
a checkpoint when train/checkpoint_s seconds have passed since the last one and at the last epoch; after
the last epoch with eval/test, the held-out test split (trainables.evaluation), and with the last report,
the trial's pictures (trainables.figures) in its checkpoint's artifacts/figures/.
A task with phases gets a fresh optimizer and schedule at the start of each phase (trainables.optim);
a task where nothing trains is evaluated once and that result reported for every epoch."""
from __future__ import annotations

import math
import os
import random
import tempfile
import time
from dataclasses import dataclass
from typing import Callable, Iterator

import numpy as np
import torch
from ray import tune
from torch import nn

from trainables.batchnorm import reestimate_batchnorm
from trainables.evaluation import test_metrics
from trainables.loading import TrialLoader
from trainables.machine import machine
from trainables.models import compile_training, train_mode
from trainables.optim import make_optimizer, make_schedule, set_epoch_lr
from trainables.registry import CHECKPOINT_ARTIFACTS, DRAW_KEY
from trainables.speed import Speed, reset_peak_memory
from trainables.trial_data import Data, prepare_data, trial_loader, with_transform


@dataclass(frozen=True)
class Phase:
    """A stretch of epochs with its own trained parameters, learning rate, optimizer and schedule."""

    number: int
    epochs: int
    lr: float


@dataclass(frozen=True)
class Task:
    """What differs between trainables; the loop does the rest.

    build(cfg, data) -> model with frozen layers applied
    loss(model, batch, cfg) -> scalar training loss of one batch; None: nothing trains (the model is
        evaluated once, without BatchNorm re-estimation, and that result reported for each epoch)
    evaluate(model, loader, cfg, data, device) -> dict of validation metrics, from the trial's loader
        (all its splits); its predict and score also evaluate the test split (see metrics.Evaluation)
    check(cfg): the trainable's own rules, before anything loads (its registry entry names it too)
    phases(cfg) -> the phases, in order, whose epochs add up to train/epochs; each epoch reports its
        phase's number as "phase". None: one phase of train/epochs at optim/lr, no "phase" reported
    enter(model, phase, cfg): make the model train what phase `phase` (a number) trains
    transform(model) -> the transform of every image, replacing the config's (a model's own preprocessing)
    """

    build: Callable[[dict, Data], nn.Module]
    loss: Callable[[nn.Module, tuple, dict], torch.Tensor] | None
    evaluate: Callable[[nn.Module, TrialLoader, dict, Data, torch.device], dict]
    masks: bool
    check: Callable[[dict], object] | None = None
    phases: Callable[[dict], tuple[Phase, ...]] | None = None
    enter: Callable[[nn.Module, int, dict], None] | None = None
    transform: Callable[[nn.Module], Callable] | None = None


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def trial_cpus() -> int:
    """The CPUs Ray Tune gave this trial; outside a trial, torch's own thread count (OMP_NUM_THREADS or
    every core), so that a caller's setting stands."""
    try:
        return max(1, int(tune.get_context().get_trial_resources().required_resources.get("CPU", 1)))
    except Exception:  # outside a Tune trial
        return torch.get_num_threads()


def device_for_trial() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def restore(device: torch.device) -> dict | None:
    """The state saved by `report` in this trial's last checkpoint, or None on a fresh start."""
    checkpoint = tune.get_checkpoint()
    if not checkpoint:
        return None
    with checkpoint.as_directory() as d:
        return torch.load(os.path.join(d, "state.pt"), map_location=device, weights_only=False)


def report(metrics: dict, state: dict | None, artifacts: Callable[[str], object] | None = None) -> None:
    """Report one epoch's metrics to Ray Tune with `state` saved as the trial's checkpoint (None: metrics
    only), and artifacts(folder) writing files into the checkpoint's CHECKPOINT_ARTIFACTS folder (for the
    trial's MLflow run)."""
    if state is None:
        tune.report(metrics)
        return
    with tempfile.TemporaryDirectory() as d:
        torch.save(state, os.path.join(d, "state.pt"))
        if artifacts:
            artifacts(os.path.join(d, CHECKPOINT_ARTIFACTS))
        tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(d))


def figures(task: Task, model: nn.Module, loader: TrialLoader, cfg: dict, data: Data,
            device: torch.device) -> Callable[[str], object] | None:
    """The writer of the trial's pictures (trainables.figures) into an artifacts folder, for its last report;
    None with figures/draw off. Matplotlib is imported only by a trial that draws."""
    if not cfg[DRAW_KEY]:
        return None
    from trainables.figures import FIGURES, write_figures

    return lambda artifacts: write_figures(task, model, loader, cfg, data, device, os.path.join(artifacts, FIGURES))


def start_trial(cfg: dict, task: Task) -> tuple[torch.device, Data, nn.Module, TrialLoader]:
    """The task's check, then threads, device and peak-memory start of a trial; its data, its model (built
    after seeding with train/seed, on the device; with train/compile, compiled for training) and its loader."""
    if task.check:
        task.check(cfg)
    torch.set_num_threads(trial_cpus())
    device = device_for_trial()
    reset_peak_memory(device)
    data = prepare_data(cfg, task.masks)
    seed_everything(int(cfg["train/seed"]))
    model = place_model(task.build(cfg, data), cfg, device)
    if task.transform:
        data = with_transform(data, task.transform(model))
    return device, data, model, trial_loader(data, cfg, device)


def place_model(model: nn.Module, cfg: dict, device: torch.device) -> nn.Module:
    """The GPU path's keys applied to a trial's model: on the device in the config's memory format, and with
    train/compile its training forward pass compiled (trainables.models.compile_training)."""
    model = model.to(device, memory_format=memory_format(cfg))
    return compile_training(model) if cfg["train/compile"] else model


def memory_format(cfg: dict) -> torch.memory_format:
    return torch.channels_last if cfg["train/channels_last"] else torch.preserve_format


def to_device(batch: tuple, device: torch.device, cfg: dict,
              augment: Callable[[tuple], tuple] | None = None) -> tuple:
    """The batch on the device, augmented there by `augment` (Data.augment) when given, its images (4-D
    tensors) in the config's memory format."""
    batch = tuple(x.to(device, non_blocking=True, memory_format=memory_format(cfg) if x.dim() == 4 else
                       torch.preserve_format) for x in batch)
    if augment is None:
        return batch
    return tuple(x.contiguous(memory_format=memory_format(cfg)) if x.dim() == 4 else x for x in augment(batch))


def training_step(model, batch: tuple, loss_fn, optimizer, epoch: int, step: int, cfg: dict) -> float:
    """One optimizer step on batch; its loss (its forward pass under bfloat16 autocast with train/bf16). A
    non-finite loss or OOM fails the trial with a clear message."""
    try:
        with torch.autocast(batch[0].device.type, dtype=torch.bfloat16, enabled=cfg["train/bf16"]):
            loss = loss_fn(model, batch, cfg)
        value = loss.item()  # one device sync per step
        if not math.isfinite(value):
            raise FloatingPointError(f"The training loss became {value} at epoch {epoch}, step {step}; "
                                     f"lower the learning rate (now {optimizer.param_groups[0]['lr']:g}) or check the data.")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    except torch.OutOfMemoryError as e:
        raise torch.OutOfMemoryError(
            f"Out of memory at epoch {epoch}, step {step} with train/batch_size={cfg['train/batch_size']} "
            f"and data/image_size={cfg['data/image_size']}; lower them or give the trial more memory "
            f"(--gpus-per-trial). {str(e).splitlines()[0] if str(e) else ''}".strip()
        ) from e
    return value


def train_epoch(model, batches: Iterator, loss_fn, optimizer, device, epoch: int, cfg: dict,
                speed: Speed, augment: Callable[[tuple], tuple] | None = None) -> tuple[float, float]:
    """One training pass over (batch, loader seconds) pairs, with the global random generators seeded by
    (train/seed, epoch) for exact replay (dropout, mining, augmentation on the device); (mean loss, seconds).
    augment (Data.augment) augments each batch on the device, as part of its step. Steps are timed into speed."""
    seed_everything(int(cfg["train/seed"]) * 1000 + epoch)
    train_mode(model)
    seen, loss_sum, t0 = 0, 0.0, time.perf_counter()
    for step, (batch, load_s) in enumerate(batches):
        started = time.perf_counter()
        batch = to_device(batch, device, cfg, augment)
        loss = training_step(model, batch, loss_fn, optimizer, epoch, step, cfg)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        speed.add_step(len(batch[0]), time.perf_counter() - started, load_s)
        seen += len(batch[0])
        loss_sum += loss * len(batch[0])
    epoch_s = time.perf_counter() - t0
    speed.train_total_s += epoch_s
    return loss_sum / max(seen, 1), epoch_s


def reestimation_indices(data: Data, cfg: dict) -> np.ndarray:
    """Positions in the training subset of the train/bn_reestimate_images images BatchNorm statistics are
    re-estimated on: the first of a permutation seeded by train/seed, read in index order."""
    order = np.random.default_rng(int(cfg["train/seed"])).permutation(len(data.train_idx))
    return np.sort(order[:cfg["train/bn_reestimate_images"]])


def prepare_validation(model: nn.Module, loader: TrialLoader, data: Data, cfg: dict, device: torch.device) -> None:
    """Eval mode, with the trained BatchNorm layers' statistics re-estimated on un-augmented training images
    (train/bn_reestimate_images of them, batches of train/batch_size; 0: none) through model(images)."""
    model.eval()
    if cfg["train/bn_reestimate_images"]:
        indices = reestimation_indices(data, cfg)
        batches = loader.ordered("train_plain", indices, drop_last=len(indices) > cfg["train/batch_size"])
        reestimate_batchnorm(model, model, (batch[0].to(device, non_blocking=True) for batch in batches))


def epoch_metrics(epoch: int, train_loss: float, epoch_s: float, speed: Speed, data: Data, cfg: dict,
                  device: torch.device) -> dict:
    """What every trainable reports beside its validation metrics; data/train_images is the size of the
    training subset (after data/fraction and k-shot), the x of an ablation's learning curve."""
    return {"epoch": epoch, "train/loss": train_loss, "data/skipped_images": len(data.ds.skipped),
            "data/train_images": len(data.train_idx),
            **speed.metrics(epoch_s, cfg["data/workers"], device)}


def one_phase(cfg: dict) -> tuple[Phase, ...]:
    return (Phase(1, cfg["train/epochs"], cfg["optim/lr"]),)


def phase_at(phases: tuple[Phase, ...], epoch: int) -> tuple[Phase, int]:
    """The phase epoch `epoch` (1..) belongs to, and the index of that epoch within the phase (0..)."""
    start = 0
    for phase in phases:
        if epoch <= start + phase.epochs:
            return phase, epoch - start - 1
        start += phase.epochs
    raise ValueError(f"Epoch {epoch} is beyond the phases' {start} epochs.")


def fit(cfg: dict, task: Task) -> None:
    """Train `task` under the flat config cfg, reporting metrics to Ray Tune every epoch, with a checkpoint
    every train/checkpoint_s seconds and at the last epoch."""
    device, data, model, loader = start_trial(cfg, task)
    where = machine(device)  # reported with every epoch: the trial's run is tagged with it
    state = restore(device)
    if task.loss is None:
        metrics = state["metrics"] if state else evaluate_once(task, model, loader, cfg, data, device)
        for epoch in range((state or {}).get("epoch", 0) + 1, cfg["train/epochs"] + 1):
            last = epoch == cfg["train/epochs"] and not state  # resumed: the model's fitted head is not restored
            report({**metrics, **where, "epoch": epoch}, {"metrics": metrics, "epoch": epoch},
                   figures(task, model, loader, cfg, data, device) if last else None)
        return
    phases = (task.phases or one_phase)(cfg)
    start_epoch, speed, phase, saved_at = 0, Speed(), None, time.monotonic()
    if state:
        model.load_state_dict(state["model"])
        start_epoch, speed = state["epoch"], Speed(**state["speed"])

    for epoch in range(start_epoch + 1, cfg["train/epochs"] + 1):
        current, index = phase_at(phases, epoch)
        if current is not phase:
            phase = current
            if task.enter:
                task.enter(model, phase.number, cfg)
            optimizer = make_optimizer(model, cfg, phase.lr)
            schedule = make_schedule(optimizer, cfg, phase.epochs)
            if state and state["phase"] == phase.number:  # resumed within the phase it was saved in
                optimizer.load_state_dict(state["optimizer"])
        set_epoch_lr(schedule, index)
        train_loss, epoch_s = train_epoch(model, loader.epoch(epoch), task.loss, optimizer, device, epoch, cfg, speed,
                                          data.augment)
        prepare_validation(model, loader, data, cfg, device)
        with torch.no_grad():
            metrics = task.evaluate(model, loader, cfg, data, device)
        metrics.update(epoch_metrics(epoch, train_loss, epoch_s, speed, data, cfg, device))
        if task.phases:
            metrics["phase"] = phase.number
        last = epoch == cfg["train/epochs"]
        if last and cfg["eval/test"]:  # once, on the held-out test split
            metrics.update(test_metrics(task, model, cfg, data, device))
        save = last or time.monotonic() - saved_at >= cfg["train/checkpoint_s"]
        saved = {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "phase": phase.number,
                 "epoch": epoch, "speed": speed.state()} if save else None
        report({**metrics, **where}, saved, figures(task, model, loader, cfg, data, device) if last else None)
        if save:
            saved_at = time.monotonic()


def evaluate_once(task: Task, model: nn.Module, loader: TrialLoader, cfg: dict, data: Data,
                  device: torch.device) -> dict:
    """The metrics of a task where nothing trains, reported for every epoch: its evaluation (with its speed
    metrics) of the model as built, and with eval/test the test split's."""
    model.eval()
    with torch.no_grad():
        metrics = {**task.evaluate(model, loader, cfg, data, device), "data/skipped_images": len(data.ds.skipped)}
    return {**metrics, **(test_metrics(task, model, cfg, data, device) if cfg["eval/test"] else {})}
