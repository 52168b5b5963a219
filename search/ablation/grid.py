"""The runs of an ablation: one factor at a time around the baseline, K seeds each.

Seed i sets train/seed to the baseline's plus i (weight initialisation, data order, augmentation);
with vary "split" it also sets data/split_seed to the baseline's plus i, which redraws the train/val
split and the data/fraction and k-shot subsets. The held-out test split never moves: it is drawn
from a fixed seed stream that no data/split_seed shares (trainables/data/split.py, TEST_STREAM), or
read from the official test list, so every run is evaluated on the same test images.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from search.ablation.spec import SEED_KEY, SPLIT_KEY, Ablation
from search.overrides import TEST_KEY

BASELINE = "baseline"  # the factor name of the baseline runs, shared by every factor
FACTOR_TAG, LEVEL_TAG, SEED_TAG = "medtune.ablation.factor", "medtune.ablation.level", "medtune.ablation.seed"


@dataclass(frozen=True)
class Run:
    """One training run: a factor at one level (or the baseline), under seed index `seed`."""

    factor: str
    level: Any           # None for the baseline
    seed: int            # 0..K-1; seed 0 is the baseline config's own seed
    config: dict[str, Any]

    @property
    def name(self) -> str:
        what = BASELINE if self.factor == BASELINE else f"{self.factor}={self.level}"
        return f"{what} seed {self.seed}"

    @property
    def tags(self) -> dict[str, str]:
        """MLflow tags; the level as JSON, so `json.loads` gives back its value and type."""
        return {FACTOR_TAG: self.factor, LEVEL_TAG: json.dumps(self.level), SEED_TAG: str(self.seed)}


def seeded(config: dict[str, Any], seed: int, vary: str) -> dict[str, Any]:
    """`config` under seed index `seed`, evaluated once on the held-out test split."""
    varied = {SEED_KEY: config[SEED_KEY] + seed}
    if vary == "split":
        varied[SPLIT_KEY] = config[SPLIT_KEY] + seed
    return {**config, **varied, TEST_KEY: True}


def is_baseline_level(ablation: Ablation, factor: str, level: Any) -> bool:
    """A level equal to the baseline's value is the baseline run itself: it is not trained twice."""
    return ablation.baseline[factor] == level


def grid(ablation: Ablation) -> list[Run]:
    """Every run, seed by seed (so a stopped ablation leaves whole pairs): the baseline, then each
    factor's levels in the order given, skipping levels equal to the baseline's value."""
    runs = []
    for seed in range(ablation.seeds):
        runs.append(Run(BASELINE, None, seed, seeded(ablation.baseline, seed, ablation.vary)))
        for factor, levels in ablation.factors.items():
            for level in levels:
                if not is_baseline_level(ablation, factor, level):
                    config = seeded({**ablation.baseline, factor: level}, seed, ablation.vary)
                    runs.append(Run(factor, level, seed, config))
    return runs
