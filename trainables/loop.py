"""The training loop every trainable shares: data, optimiser, epochs, speed, checkpoints, reports.

Every trainable is a `Task` run by `fit`. Each epoch: a training pass (frozen parts' normalisation in eval
mode, see models.train_mode), then the trained BatchNorm layers' statistics re-estimated on un-augmented
training images (trainables.batchnorm, train/bn_reestimate_images), then validation and the report with
its checkpoint; after the last epoch with eval/test, the held-out test split (trainables.evaluation).
A task with phases gets a fresh optimizer and schedule at the start of each phase (trainables.optim);
a task where nothing trains is evaluated once and that result reported for every epoch."""
from __future__ import annotations

import dataclasses
import logging
import math
import os
import random
import resource
import tempfile
import time
from dataclasses import dataclass, replace
from typing import Callable, Iterator

import numpy as np
import torch
from ray import tune
from torch import nn

from trainables.augment import build_transforms
from trainables.batchnorm import reestimate_batchnorm
from trainables.data import ImageSet, fraction_subset, open_dataset, shots_subset, train_val_split
from trainables.data.arrays import ArrayDataset
from trainables.data.normalization import normalization
from trainables.evaluation import test_metrics
from trainables.loading import TrialLoader
from trainables.models import train_mode
from trainables.optim import make_optimizer, make_schedule, set_epoch_lr

WARMUP_STEPS = 3  # training steps of each worker process (start or restart) left out of the model's throughput
log = logging.getLogger(__name__)


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

    build: Callable[[dict, "Data"], nn.Module]
    loss: Callable[[nn.Module, tuple, dict], torch.Tensor] | None
    evaluate: Callable[[nn.Module, TrialLoader, dict, "Data", torch.device], dict]
    masks: bool
    check: Callable[[dict], object] | None = None
    phases: Callable[[dict], tuple[Phase, ...]] | None = None
    enter: Callable[[nn.Module, int, dict], None] | None = None
    transform: Callable[[nn.Module], Callable] | None = None


@dataclass(frozen=True)
class Data:
    """A trial's data: the decoded set, its split and subsets, and the datasets built on them."""

    ds: ImageSet
    train_idx: np.ndarray
    val_idx: np.ndarray
    mean: list[float]
    std: list[float]
    train_set: ArrayDataset
    val_set: ArrayDataset
    positive: int = 1  # binary data: the label of eval/positive_class (default the second class)

    @property
    def classes(self) -> list[str]:
        return self.ds.classes

    @property
    def multilabel(self) -> bool:
        return self.ds.multilabel

    def class_index(self, name: str, key: str) -> int:
        """The label of class `name`; an unknown name is an error listing the classes."""
        if name not in self.ds.classes:
            raise ValueError(f"{key}={name!r} is not a class of this data set; its classes are: "
                             f"{', '.join(self.ds.classes)}.")
        return self.ds.classes.index(name)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def trial_cpus() -> int:
    try:
        return max(1, int(tune.get_context().get_trial_resources().required_resources.get("CPU", 1)))
    except Exception:  # outside a Tune trial
        return os.cpu_count() or 1


def reset_peak_memory(device: torch.device) -> None:
    """Start measuring this trial's peak memory (see peak_memory_mb)."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        return
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # resets the process's peak resident set size (VmHWM) to its current size
    except OSError as err:
        log.warning("The peak memory cannot be reset (%s); perf/peak_mem_mb is this process's lifetime peak.", err)


def peak_memory_mb(device: torch.device) -> float:
    """The trial's peak memory in MiB since reset_peak_memory: on a GPU the most allocated by torch on it;
    on CPU the trial process's peak resident set size (VmHWM; loader workers not included). Where
    /proc/self/clear_refs cannot be written, the process's lifetime peak, which in a reused Ray worker
    includes earlier trials (a warning says so)."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    try:
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("VmHWM:")) / 1024  # kB
    except (OSError, StopIteration):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def open_data(cfg: dict, masks: bool, part: str = "search") -> ImageSet:
    """The decoded data set a config names (data/root in data/layout; empty: generated data): its train+val
    images (part "search"), or only its held-out test images (part "test", for the final evaluation)."""
    return open_dataset(cfg["data/root"] or None, cfg["data/image_size"], cfg["data/channels"], masks=masks,
                        layout=cfg["data/layout"], split_files=cfg["data/split_files"],
                        annotations=cfg["data/annotations"], on_bad_image=cfg["data/on_bad_image"], part=part,
                        test_annotations=cfg["data/test_annotations"], test_fraction=cfg["data/test_fraction"])


def prepare_data(cfg: dict, masks: bool) -> Data:
    """Open the data set, split it, draw the fraction / k-shot subset, build the datasets."""
    ds = open_data(cfg, masks)
    train_idx, val_idx = train_val_split(ds, cfg["data/val_fraction"], cfg["data/split_seed"])
    train_idx = fraction_subset(train_idx, ds.labels, cfg["data/fraction"], cfg["data/split_seed"])
    if cfg["data/shots_per_class"]:
        train_idx = shots_subset(train_idx, ds.labels, cfg["data/shots_per_class"], cfg["data/split_seed"], ds.classes)
    mean, std = normalization(cfg, ds.images, train_idx)
    mask_arr = ds.masks if masks else None
    data = Data(ds, train_idx, val_idx, mean, std,
                ArrayDataset(ds.images, ds.labels, train_idx, build_transforms(cfg, mean, std, True), mask_arr),
                ArrayDataset(ds.images, ds.labels, val_idx, build_transforms(cfg, mean, std, False), mask_arr))
    if not cfg["eval/positive_class"]:
        return data
    return replace(data, positive=data.class_index(cfg["eval/positive_class"], "eval/positive_class"))


def device_for_trial() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def restore(device: torch.device) -> dict | None:
    """The state saved by `report` in this trial's last checkpoint, or None on a fresh start."""
    checkpoint = tune.get_checkpoint()
    if not checkpoint:
        return None
    with checkpoint.as_directory() as d:
        return torch.load(os.path.join(d, "state.pt"), map_location=device, weights_only=False)


def report(metrics: dict, state: dict) -> None:
    """Report one epoch's metrics to Ray Tune with `state` saved as the trial's checkpoint."""
    with tempfile.TemporaryDirectory() as d:
        torch.save(state, os.path.join(d, "state.pt"))
        tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(d))


def start_trial(cfg: dict, task: Task) -> tuple[torch.device, Data, nn.Module, TrialLoader]:
    """The task's check, then threads, device and peak-memory start of a trial; its data, its model (built
    after seeding with train/seed, on the device) and its loader."""
    if task.check:
        task.check(cfg)
    torch.set_num_threads(trial_cpus())
    device = device_for_trial()
    reset_peak_memory(device)
    data = prepare_data(cfg, task.masks)
    seed_everything(int(cfg["train/seed"]))
    model = task.build(cfg, data).to(device)
    if task.transform:
        data = with_transform(data, task.transform(model))
    return device, data, model, trial_loader(data, cfg, device)


def with_transform(data: Data, transform: Callable) -> Data:
    """data whose datasets pass every image through `transform` instead of the config's transforms."""
    return replace(data, train_set=replace_transform(data.train_set, transform),
                   val_set=replace_transform(data.val_set, transform))


def replace_transform(dataset: ArrayDataset, transform: Callable) -> ArrayDataset:
    return ArrayDataset(dataset.images, dataset.labels, dataset.indices, transform, dataset.masks)


def trial_loader(data: Data, cfg: dict, device: torch.device) -> TrialLoader:
    """The trial's loader of the datasets "train" (augmented), "train_plain" (the training subset through the
    validation transforms) and "val"."""
    datasets = {"train": data.train_set, "train_plain": replace_transform(data.train_set, data.val_set.transform),
                "val": data.val_set}
    return TrialLoader(datasets, cfg["train/batch_size"], int(cfg["train/seed"]), cfg["data/workers"],
                       pin=device.type == "cuda")


@dataclass
class Speed:
    """A trial's training speed. Saved in its checkpoint: the throughput (images / seconds) of each step
    after warm-up, the loader's busy time (images, seconds) and the training seconds so far; per worker
    process: the throughput of its warm-up steps (the first WARMUP_STEPS after a start or restart)."""

    step_rates: list[float] = dataclasses.field(default_factory=list)
    loader_images: int = 0
    loader_s: float = 0.0
    train_total_s: float = 0.0
    warmup_rates: list[float] = dataclasses.field(default_factory=list, metadata={"process": True})

    def state(self) -> dict:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if not f.metadata.get("process")}

    def add_step(self, images: int, seconds: float, load_s: float) -> None:
        self.loader_images, self.loader_s = self.loader_images + images, self.loader_s + load_s
        warm = len(self.warmup_rates) >= WARMUP_STEPS
        (self.step_rates if warm else self.warmup_rates).append(images / seconds)

    def metrics(self, epoch_s: float, workers: int, device: torch.device) -> dict:
        """perf/train_images_per_s: the median over the training steps of the trial after the warm-up steps
        of each worker process (until there is one, over the warm-up steps) of a step's images per second,
        a step being from the batch in hand to the optimizer's update done (transfer, forward, backward,
        update; synchronised on a GPU): the model's throughput, without loader waits, and the median
        so that a neighbour's burst on a shared machine does not move it.
        perf/loader_images_per_s: see trainables.loading (busy time of the loader, times its workers).
        perf/epoch_s: wall-clock seconds of this epoch's training pass; perf/train_total_s: their sum.
        perf/peak_mem_mb: see peak_memory_mb."""
        return {
            "perf/train_images_per_s": float(np.median(self.step_rates or self.warmup_rates or [0.0])),
            "perf/loader_images_per_s": max(workers, 1) * self.loader_images / self.loader_s if self.loader_s else 0.0,
            "perf/epoch_s": epoch_s,
            "perf/train_total_s": self.train_total_s,
            "perf/peak_mem_mb": peak_memory_mb(device),
        }


def training_step(model, batch: tuple, loss_fn, optimizer, epoch: int, step: int, cfg: dict) -> float:
    """One optimizer step on batch; its loss. A non-finite loss or OOM fails the trial with a clear message."""
    try:
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
                speed: Speed) -> tuple[float, float]:
    """One training pass over (batch, loader seconds) pairs, with the global random generators seeded by
    (train/seed, epoch) for exact replay (dropout, mining); (mean loss, seconds). Steps are timed into speed."""
    seed_everything(int(cfg["train/seed"]) * 1000 + epoch)
    train_mode(model)
    seen, loss_sum, t0 = 0, 0.0, time.perf_counter()
    for step, (batch, load_s) in enumerate(batches):
        started = time.perf_counter()
        batch = tuple(x.to(device, non_blocking=True) for x in batch)
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
    """What every trainable reports beside its validation metrics."""
    return {"epoch": epoch, "train/loss": train_loss, "data/skipped_images": len(data.ds.skipped),
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
    """Train `task` under the flat config cfg, reporting metrics and a checkpoint to Ray Tune every epoch."""
    device, data, model, loader = start_trial(cfg, task)
    state = restore(device)
    if task.loss is None:
        metrics = state["metrics"] if state else evaluate_once(task, model, loader, cfg, data, device)
        for epoch in range((state or {}).get("epoch", 0) + 1, cfg["train/epochs"] + 1):
            report({**metrics, "epoch": epoch}, {"metrics": metrics, "epoch": epoch})
        return
    phases = (task.phases or one_phase)(cfg)
    start_epoch, speed, phase = 0, Speed(), None
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
        train_loss, epoch_s = train_epoch(model, loader.epoch(epoch), task.loss, optimizer, device, epoch, cfg, speed)
        prepare_validation(model, loader, data, cfg, device)
        with torch.no_grad():
            metrics = task.evaluate(model, loader, cfg, data, device)
        metrics.update(epoch_metrics(epoch, train_loss, epoch_s, speed, data, cfg, device))
        if task.phases:
            metrics["phase"] = phase.number
        if epoch == cfg["train/epochs"] and cfg["eval/test"]:  # once, on the held-out test split
            metrics.update(test_metrics(task, model, cfg, data, device))
        report(metrics, {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "phase": phase.number,
                         "epoch": epoch, "speed": speed.state()})


def evaluate_once(task: Task, model: nn.Module, loader: TrialLoader, cfg: dict, data: Data,
                  device: torch.device) -> dict:
    """The metrics of a task where nothing trains, reported for every epoch: its evaluation (with its speed
    metrics) of the model as built, and with eval/test the test split's."""
    model.eval()
    with torch.no_grad():
        metrics = {**task.evaluate(model, loader, cfg, data, device), "data/skipped_images": len(data.ds.skipped)}
    return {**metrics, **(test_metrics(task, model, cfg, data, device) if cfg["eval/test"] else {})}
