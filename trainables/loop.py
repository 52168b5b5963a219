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
from trainables.data import fraction_subset, open_dataset, train_val_split

OPTIMIZERS = ("adam", "adamw", "sgd")
SCHEDULES = ("constant", "cosine")


@dataclass(frozen=True)
class Task:
    """What differs between trainables; the loop does the rest.

    build(cfg, num_classes) -> model with frozen layers applied
    loss(model, batch, cfg) -> scalar training loss of one batch
    evaluate(model, loader, cfg, num_classes, device) -> dict of validation metrics
    """

    build: Callable[[dict, int], nn.Module]
    loss: Callable[[nn.Module, tuple, dict], torch.Tensor]
    evaluate: Callable[[nn.Module, torch.utils.data.DataLoader, dict, int, torch.device], dict]
    masks: bool


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


def fit(config: dict, task: Task) -> None:
    """Train `task` under config, reporting metrics and a checkpoint to Ray Tune every epoch."""
    cfg = flat_config(config)
    torch.set_num_threads(trial_cpus())
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    seed = int(cfg["train/seed"])

    ds = open_dataset(cfg["data/root"] or None, cfg["data/image_size"], cfg["data/channels"], masks=task.masks)
    train_idx, val_idx = train_val_split(ds, cfg["data/val_fraction"], cfg["data/split_seed"])
    train_idx = fraction_subset(train_idx, ds.labels, cfg["data/fraction"], cfg["data/split_seed"])
    mean, std = normalization(cfg, ds.images, train_idx)
    masks = ds.masks if task.masks else None
    train_set = ArrayDataset(ds.images, ds.labels, train_idx, build_transforms(cfg, mean, std, True), masks)
    val_set = ArrayDataset(ds.images, ds.labels, val_idx, build_transforms(cfg, mean, std, False), masks)
    batch = cfg["train/batch_size"]
    val_loader = torch.utils.data.DataLoader(val_set, batch_size=batch)
    num_classes = len(ds.classes)

    seed_everything(seed)
    model = task.build(cfg, num_classes).to(device)
    optimizer = make_optimizer(cfg, [p for p in model.parameters() if p.requires_grad])
    schedule = make_schedule(cfg, optimizer)
    start_epoch, train_total_s = 0, 0.0
    checkpoint = tune.get_checkpoint()
    if checkpoint:
        with checkpoint.as_directory() as d:
            state = torch.load(os.path.join(d, "state.pt"), map_location=device, weights_only=False)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        schedule.load_state_dict(state["schedule"])
        start_epoch, train_total_s = state["epoch"], state["train_total_s"]
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)

    for epoch in range(start_epoch + 1, cfg["train/epochs"] + 1):
        seed_everything(seed * 1000 + epoch)  # each epoch's shuffling and augmentation replay on resume
        loader = torch.utils.data.DataLoader(
            train_set, batch_size=batch, shuffle=True, drop_last=len(train_set) > batch,
            generator=torch.Generator().manual_seed(seed * 1000 + epoch),
        )
        model.train()
        seen, loss_sum, t0 = 0, 0.0, time.perf_counter()
        for step, data in enumerate(loader):
            data = tuple(x.to(device) for x in data)
            loss = task.loss(model, data, cfg)
            if not math.isfinite(loss.item()):
                raise FloatingPointError(f"The training loss became {loss.item()} at epoch {epoch}, step {step}.")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            seen += len(data[0])
            loss_sum += loss.item() * len(data[0])
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        epoch_s = time.perf_counter() - t0
        train_total_s += epoch_s
        schedule.step()

        model.eval()
        with torch.no_grad():
            metrics = task.evaluate(model, val_loader, cfg, num_classes, device)
        metrics.update({
            "epoch": epoch,
            "train/loss": loss_sum / max(seen, 1),
            "perf/train_images_per_s": seen / epoch_s,
            "perf/epoch_s": epoch_s,
            "perf/train_total_s": train_total_s,
            "perf/peak_mem_mb": peak_memory_mb(device),
        })
        with tempfile.TemporaryDirectory() as d:
            torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                        "schedule": schedule.state_dict(), "epoch": epoch,
                        "train_total_s": train_total_s}, os.path.join(d, "state.pt"))
            tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(d))
