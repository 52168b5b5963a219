"""The training loop every trainable shares: data, optimiser, epochs, speed, checkpoints, reports."""
from __future__ import annotations

import math
import os
import random
import resource
import tempfile
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
from ray import tune
from ray.tune.utils import flatten_dict
from torch import nn

from trainables.augment import ArrayDataset, build_transforms, normalization
from trainables.data import ImageSet, fraction_subset, open_dataset, shots_subset, train_val_split
from trainables.registry import CHOICES

OPTIMIZERS, SCHEDULES = CHOICES["optim/name"], CHOICES["optim/schedule"]


@dataclass(frozen=True)
class Task:
    """What differs between trainables; the loop does the rest.

    build(cfg, data) -> model with frozen layers applied
    loss(model, batch, cfg) -> scalar training loss of one batch
    evaluate(model, loader, cfg, data, device) -> dict of validation metrics
    """

    build: Callable[[dict, "Data"], nn.Module]
    loss: Callable[[nn.Module, tuple, dict], torch.Tensor]
    evaluate: Callable[[nn.Module, torch.utils.data.DataLoader, dict, "Data", torch.device], dict]
    masks: bool


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


def flat_config(config: dict) -> dict:
    """Ray un-flattens 'group/name' keys into nested dicts; trainables use the flat form."""
    return flatten_dict(config, delimiter="/")


def make_optimizer(cfg: dict, params) -> torch.optim.Optimizer:
    name, lr, wd = cfg["optim/name"], cfg["optim/lr"], cfg["optim/weight_decay"]
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=wd)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=wd)
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, weight_decay=wd, momentum=cfg["optim/momentum"])
    raise ValueError(f"optim/name={name!r} is not known; accepted: {', '.join(OPTIMIZERS)}.")


def make_schedule(cfg: dict, optimizer) -> torch.optim.lr_scheduler.LRScheduler:
    if cfg["optim/schedule"] == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=cfg["train/epochs"])
    if cfg["optim/schedule"] == "step":
        return torch.optim.lr_scheduler.StepLR(optimizer, step_size=cfg["optim/step_epochs"], gamma=cfg["optim/gamma"])
    if cfg["optim/schedule"] == "constant":
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)
    raise ValueError(f"optim/schedule={cfg['optim/schedule']!r} is not known; accepted: {', '.join(SCHEDULES)}.")


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def trial_cpus() -> int:
    try:
        return max(1, int(tune.get_context().get_trial_resources().required_resources.get("CPU", 1)))
    except Exception:  # outside a Tune trial
        return os.cpu_count() or 1


def peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
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
    return Data(ds, train_idx, val_idx, mean, std,
                ArrayDataset(ds.images, ds.labels, train_idx, build_transforms(cfg, mean, std, True), mask_arr),
                ArrayDataset(ds.images, ds.labels, val_idx, build_transforms(cfg, mean, std, False), mask_arr))


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


def epoch_loader(data: Data, batch: int, seed: int, epoch: int) -> torch.utils.data.DataLoader:
    """The training loader of one epoch; its shuffle and augmentation replay exactly on resume."""
    seed_everything(seed * 1000 + epoch)
    return torch.utils.data.DataLoader(
        data.train_set, batch_size=batch, shuffle=True, drop_last=len(data.train_set) > batch,
        generator=torch.Generator().manual_seed(seed * 1000 + epoch),
    )


def train_epoch(model, loader, loss_fn, optimizer, device, epoch: int, cfg: dict) -> tuple[int, float, float]:
    """One pass over loader: (images seen, mean loss, seconds). A non-finite loss or OOM fails the trial."""
    model.train()
    seen, loss_sum, t0 = 0, 0.0, time.perf_counter()
    for step, batch in enumerate(loader):
        batch = tuple(x.to(device) for x in batch)
        try:
            loss = loss_fn(model, batch, cfg)
            if not math.isfinite(loss.item()):
                raise FloatingPointError(f"The training loss became {loss.item()} at epoch {epoch}, step {step}; "
                                         f"lower the learning rate (now {cfg['optim/lr']}) or check the data.")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        except torch.OutOfMemoryError as e:
            raise torch.OutOfMemoryError(
                f"Out of memory at epoch {epoch}, step {step} with train/batch_size={cfg['train/batch_size']} "
                f"and data/image_size={cfg['data/image_size']}; lower them or give the trial more memory "
                f"(--gpus-per-trial). {str(e).splitlines()[0] if str(e) else ''}".strip()
            ) from e
        seen += len(batch[0])
        loss_sum += loss.item() * len(batch[0])
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return seen, loss_sum / max(seen, 1), time.perf_counter() - t0


def speed_metrics(seen: int, epoch_s: float, train_total_s: float, device: torch.device) -> dict:
    return {
        "perf/train_images_per_s": seen / epoch_s if epoch_s > 0 else 0.0,
        "perf/epoch_s": epoch_s,
        "perf/train_total_s": train_total_s,
        "perf/peak_mem_mb": peak_memory_mb(device),
    }


def fit(config: dict, task: Task) -> None:
    """Train `task` under config, reporting metrics and a checkpoint to Ray Tune every epoch."""
    cfg = flat_config(config)
    torch.set_num_threads(trial_cpus())
    device = device_for_trial()
    seed = int(cfg["train/seed"])
    data = prepare_data(cfg, task.masks)
    batch = cfg["train/batch_size"]
    val_loader = torch.utils.data.DataLoader(data.val_set, batch_size=batch)

    seed_everything(seed)
    model = task.build(cfg, data).to(device)
    optimizer = make_optimizer(cfg, [p for p in model.parameters() if p.requires_grad])
    schedule = make_schedule(cfg, optimizer)
    start_epoch, train_total_s = 0, 0.0
    if state := restore(device):
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        schedule.load_state_dict(state["schedule"])
        start_epoch, train_total_s = state["epoch"], state["train_total_s"]
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)

    for epoch in range(start_epoch + 1, cfg["train/epochs"] + 1):
        loader = epoch_loader(data, batch, seed, epoch)
        seen, train_loss, epoch_s = train_epoch(model, loader, task.loss, optimizer, device, epoch, cfg)
        train_total_s += epoch_s
        schedule.step()
        model.eval()
        with torch.no_grad():
            metrics = task.evaluate(model, val_loader, cfg, data, device)
        metrics.update({"epoch": epoch, "train/loss": train_loss, "data/skipped_images": len(data.ds.skipped),
                        **speed_metrics(seen, epoch_s, train_total_s, device)})
        if epoch == cfg["train/epochs"] and cfg["eval/test"]:  # once, on the held-out test split
            from trainables.evaluation import test_metrics
            metrics.update(test_metrics(task, model, cfg, data, device))
        report(metrics, {"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                         "schedule": schedule.state_dict(), "epoch": epoch, "train_total_s": train_total_s})
