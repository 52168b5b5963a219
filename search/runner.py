"""tune-run: a search experiment from its settings, run (or resumed) by the engine."""
from __future__ import annotations

import os
from dataclasses import asdict

from search.engine import Experiment, run
from search.experiment import Settings, check_overrides, git_revision
from search.spacefile import Space, load_space
from search.trials import Search


def run_experiment(settings: Settings, home: str, resume: bool = False, address: str | None = None,
                   space: Space | None = None) -> int:
    """Run settings.num_samples trials of the space (loaded from settings.space_path unless given),
    or resume them; print the summary; 0 on success."""
    space = space or load_space(settings.space_path)
    check_overrides(settings.overrides, space)
    return run(search_experiment(settings, space), home, resume=resume, address=address).code


def search_experiment(settings: Settings, space: Space) -> Experiment:
    source = shown_path(space.path)
    return Experiment(
        name=settings.name, trainable=space.trainable, objectives=space.objectives,
        trials=Search(space, settings.constants(space), set(settings.pinned(space)), settings.num_samples,
                      sampler=settings.sampler, scheduler=settings.scheduler, seed=settings.seed),
        source=source, settings=asdict(settings),
        tags={"medtune.space_file": source, "medtune.git_revision": git_revision(space.path)},
        cpus_per_trial=settings.cpus_per_trial, gpus_per_trial=settings.gpus_per_trial,
        max_concurrent=settings.max_concurrent, time_budget=settings.time_budget,
        max_failures=settings.max_failures,
        resume_command=f"tune-run {source} --name {settings.name} --resume",
    )


def shown_path(path: str) -> str:
    rel = os.path.relpath(path)
    return path if rel.startswith("..") else rel
