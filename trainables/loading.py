"""A trial's data loading: one DataLoader whose workers serve every pass of the trial (training epochs,
BatchNorm re-estimation, validation), persistent across epochs, with pinned memory on a GPU.

Replay: an epoch's order is a permutation seeded by (train/seed, epoch), and each sample is produced
with torch's CPU random generator seeded from (train/seed, epoch, index), its state restored afterwards
so that loading in the trial's own process leaves its generator alone. Data order and augmentation are
therefore the same on resume and for any data/workers (torch seeds persistent workers only once, so
the seed travels with each sample's key instead).

Loader speed: every batch comes with the seconds its producer (a worker, or the trial's process with
data/workers=0) spent reading, transforming and collating it. The loader's throughput is the images per
second of that busy time times the number of workers: what the loader delivers when the model never
makes it wait, given a free core per worker.
"""
from __future__ import annotations

import time
from typing import Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler, default_collate


def sample_seed(seed: int, epoch: int, index: int) -> int:
    return int(np.random.SeedSequence([seed, epoch, index]).generate_state(1)[0])


class Fetched(list):
    """The samples of one batch, with the time their fetching started."""

    def __init__(self, samples: list, started: float):
        super().__init__(samples)
        self.started = started


class KeyedSamples(Dataset):
    """Samples of several named datasets by key (name, index, epoch), each drawn with the random
    generator seeded from (seed, epoch, index)."""

    def __init__(self, datasets: dict[str, Dataset], seed: int):
        self.datasets, self.seed = datasets, seed

    def __len__(self) -> int:
        return sum(len(d) for d in self.datasets.values())

    def __getitem__(self, key: tuple[str, int, int]):
        name, index, epoch = key
        generator = torch.default_generator  # the CPU generator torchvision's transforms draw from
        state = generator.get_state()
        generator.manual_seed(sample_seed(self.seed, epoch, index))
        try:
            return self.datasets[name][index]
        finally:
            generator.set_state(state)

    def __getitems__(self, keys: list) -> Fetched:
        """The samples at keys, made with one thread as in a loader worker: in the trial's own process its
        intra-op threads would only slow the small per-image operations down."""
        started, threads = time.perf_counter(), torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            return Fetched([self[k] for k in keys], started)
        finally:
            torch.set_num_threads(threads)


def timed_collate(samples: Fetched) -> tuple[object, float]:
    """(the collated batch, seconds spent fetching and collating it)."""
    batch = default_collate(list(samples))
    return batch, time.perf_counter() - samples.started


class Schedule(Sampler):
    """The batch sampler of a TrialLoader: the batches of keys of the pass about to run."""

    def __init__(self):
        self.batches: list[list[tuple]] = []

    def __iter__(self):
        return iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)


class TrialLoader:
    """One DataLoader (data/workers persistent workers) over named datasets; see the module doc.
    `images` and `load_s` count the images of all its passes and the seconds spent producing them."""

    def __init__(self, datasets: dict[str, Dataset], batch: int, seed: int, workers: int, pin: bool):
        self.datasets, self.batch, self.seed, self.workers = datasets, batch, seed, workers
        self.images, self.load_s = 0, 0.0
        self.schedule = Schedule()
        self.loader = DataLoader(KeyedSamples(datasets, seed), batch_sampler=self.schedule, num_workers=workers,
                                 persistent_workers=workers > 0, pin_memory=pin, collate_fn=timed_collate,
                                 generator=torch.Generator().manual_seed(seed))  # not the global generator

    def timed(self, keys: list[tuple], drop_last: bool) -> Iterator[tuple[object, float]]:
        """(batch, seconds to produce it) over `keys` in batches of train/batch_size."""
        b = self.batch
        self.schedule.batches = [keys[i:i + b] for i in range(0, len(keys), b) if not drop_last or i + b <= len(keys)]
        for batch, seconds in self.loader:
            self.images, self.load_s = self.images + len(batch[0]), self.load_s + seconds
            yield batch, seconds

    def epoch(self, epoch: int) -> Iterator[tuple[object, float]]:
        """The training pass of `epoch`: shuffled by (seed, epoch), augmented; a last partial batch is
        dropped when there is a full one."""
        n = len(self.datasets["train"])
        order = torch.randperm(n, generator=torch.Generator().manual_seed(self.seed * 1000 + epoch)).tolist()
        return self.timed([("train", i, epoch) for i in order], drop_last=n > self.batch)

    def ordered(self, name: str, indices=None, drop_last: bool = False) -> "Pass":
        """The batches of dataset `name` (at `indices`, else all of it) in order."""
        indices = range(len(self.datasets[name])) if indices is None else indices
        return Pass(self, [(name, int(i), 0) for i in indices], drop_last)


class Pass:
    """An iterable over the batches of one ordered pass of a TrialLoader."""

    def __init__(self, loader: TrialLoader, keys: list[tuple], drop_last: bool):
        self.loader, self.keys, self.drop_last = loader, keys, drop_last

    def __iter__(self):
        return (batch for batch, _ in self.loader.timed(self.keys, self.drop_last))
