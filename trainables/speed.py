"""A trial's speed, measured: the model's training throughput over fixed steps after warm-up, the loader's
throughput apart, seconds per epoch, total training time, and peak memory of this trial alone."""
from __future__ import annotations

import dataclasses
import logging
import resource
from dataclasses import dataclass

import numpy as np
import torch

WARMUP_STEPS = 3  # training steps of each worker process (start or restart) left out of the model's throughput
log = logging.getLogger(__name__)


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
        a step being from the batch in hand to the optimizer's update done (transfer, with aug/where "device"
        the batch's augmentation, forward, backward, update; synchronised on a GPU): the model's throughput,
        without loader waits, and the median so that a neighbour's burst on a shared machine does not move it.
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
