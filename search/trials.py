"""What the engine runs: a search over a space (Optuna sampler + scheduler), or a fixed list of configs
(a re-train, an ablation). Each gives the configs preflight checks, and Ray Tune's search algorithm,
scheduler and trial count; the engine does the rest the same way for both."""
from __future__ import annotations

from dataclasses import dataclass, field

from search.errors import UsageError
from search.spacefile import Space


def ray_scheduler(ray_name: str, **params):
    """A factory of Ray Tune's scheduler `ray_name` on the first objective (tune.create_scheduler passes
    each scheduler only the parameters it takes)."""
    def make(objectives: dict[str, str], max_t: int, **settings):
        from ray import tune

        metric, mode = next(iter(objectives.items()))
        return tune.create_scheduler(ray_name, metric=metric, mode=mode, max_t=max_t, **{**params, **settings})

    return make


def moasha(objectives: dict[str, str], max_t: int, grace_period: int = 1, reduction_factor: int = 2):
    """Our multi-objective ASHA (search.moasha), on every objective."""
    from search.moasha import MultiObjectiveASHA

    return MultiObjectiveASHA(list(objectives), list(objectives.values()), max_t, grace_period=grace_period,
                              reduction_factor=reduction_factor)


# --scheduler name -> factory(objectives, max_t, **settings over ours)
SCHEDULERS = {
    "asha": ray_scheduler("async_hyperband", grace_period=1, reduction_factor=2),
    "moasha": moasha,
    "fifo": ray_scheduler("fifo"),
    "median": ray_scheduler("median_stopping_rule", grace_period=1),
    "hyperband": ray_scheduler("hyperband"),
}


PAUSING = {"hyperband"}  # schedulers that pause trials and continue them later from their last checkpoint


def make_scheduler(name: str, objectives: dict[str, str], max_t: int, **settings):
    """The scheduler `name` on the first objective, or on all of them (moasha); `settings` (e.g.
    reduction_factor, the tabular replay's --reduction-factor) over ours."""
    if name not in SCHEDULERS:
        raise UsageError(f"Unknown scheduler {name!r}; accepted: {', '.join(SCHEDULERS)}.")
    return SCHEDULERS[name](objectives, max_t, **settings)


class Trials:
    """What Search and Configs have in common; the defaults of the hooks only one of them needs."""

    num_samples: int
    selects = True  # the summary names the best trial (Pareto front) and how to export it

    def prepare(self, optuna_storage: str) -> None:
        """What tuner_args needs that takes time, done while Ray starts (search.engine.start_services)."""

    def after(self, name: str, optuna_storage: str) -> None:
        """Runs once the trials have all ended."""

    def trial_tags(self, config: dict) -> dict[str, str]:
        """The MLflow tags of the trial run of `config` (a trial's flat config as tracked)."""
        return {}


@dataclass
class Search(Trials):
    """num_samples trials whose configs an Optuna sampler draws from a space file's space(trial),
    starting from `constants`; `pinned` keys are fixed, not searched. A scheduler stops poor trials
    on the first objective (moasha: on all of them)."""

    space: Space
    constants: dict
    pinned: set[str]
    num_samples: int
    sampler: str = "tpe"
    scheduler: str = "asha"
    seed: int = 0
    storage: object = field(default=None, init=False, repr=False, compare=False)  # the study's RDBStorage, once open

    def checked(self) -> tuple[list[dict], dict[str, set]]:
        """Configs the space can produce, and every choice it offers, for preflight."""
        from search.preflight import sample_configs
        from search.sampling import make_sampler

        make_scheduler(self.scheduler, self.space.objectives, self.constants["train/epochs"])
        make_sampler(self.sampler, self.seed)
        return sample_configs(self.space, self.constants, self.pinned, seed=self.seed)

    def prepare(self, optuna_storage: str) -> None:
        """Open the study's storage (about 1 s for a new SQLite file: Optuna creates its tables) and
        import the searcher."""
        from optuna.storages import RDBStorage

        import search.searcher  # noqa: F401

        if self.storage is None:
            self.storage = RDBStorage(optuna_storage)

    def tuner_args(self, objectives: dict[str, str], name: str, optuna_storage: str,
                   tracking_uri: str) -> tuple[dict, dict]:
        """Ray Tune's param_space and TuneConfig arguments: the searcher draws every config, and
        stores each trial's MLflow run id (experiment `name` at `tracking_uri`) in the study."""
        from mlflow_server.records import TrialRuns
        from search.sampling import SpaceSampler, make_sampler
        from search.searcher import ResumableOptunaSearch

        self.prepare(optuna_storage)

        metrics, modes = list(objectives), list(objectives.values())
        searcher = ResumableOptunaSearch(
            space=SpaceSampler(self.space, self.constants, self.pinned),
            metric=metrics if len(metrics) > 1 else metrics[0],
            mode=modes if len(modes) > 1 else modes[0],
            sampler=make_sampler(self.sampler, self.seed),
            study_name=name,
            storage=self.storage,
            runs=TrialRuns(tracking_uri, name),
        )
        scheduler = make_scheduler(self.scheduler, objectives, self.constants["train/epochs"])
        return {}, {"search_alg": searcher, "scheduler": scheduler, "num_samples": self.num_samples}

    def record(self) -> dict:
        return {"constants": self.constants}

    def after(self, name: str, optuna_storage: str) -> None:
        """Mark FAIL the Optuna trials still RUNNING once the search is over.

        A resumed search re-attaches the asks its killed predecessor left (ResumableOptunaSearch);
        asks can still be left when a time budget or a stop ends the search before they ran.
        """
        import optuna

        study = optuna.load_study(study_name=name, storage=optuna_storage)
        for trial in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
            study.tell(trial.number, state=optuna.trial.TrialState.FAIL)


@dataclass
class Configs(Trials):
    """Full flat configs, each trained once to the end in the given order (Ray Tune's
    BasicVariantGenerator with them as its points to evaluate, so a resume continues the list),
    and per config the MLflow tags of its trial run (e.g. an ablation's factor, level and seed)."""

    configs: list[dict]
    tags: list[dict[str, str]] = field(default_factory=list)  # empty, or one dict per config
    selects = False  # each config is reported for itself (a re-train, an ablation), none is "best"

    def __post_init__(self):
        if not self.configs:
            raise UsageError("There is no config to train.")
        if self.tags and len(self.tags) != len(self.configs):
            raise ValueError(f"{len(self.tags)} tag sets for {len(self.configs)} configs; give one per config.")

    @property
    def num_samples(self) -> int:
        return len(self.configs)

    def checked(self) -> tuple[list[dict], dict[str, set]]:
        return self.configs, {}

    def tuner_args(self, objectives: dict[str, str], name: str, optuna_storage: str,
                   tracking_uri: str) -> tuple[dict, dict]:
        """Ray Tune's param_space (every key the configs set; Ray takes points only for keys it
        has) and TuneConfig arguments: each config one point to evaluate, trained to the end
        (no Optuna study: the storage and the tracking URI are not needed)."""
        from ray.tune.schedulers import FIFOScheduler
        from ray.tune.search.basic_variant import BasicVariantGenerator

        from trainables.registry import nested_config

        keys = nested_config({key: value for config in self.configs for key, value in config.items()})
        points = [nested_config(config) for config in self.configs]
        return keys, {"search_alg": BasicVariantGenerator(points_to_evaluate=points), "scheduler": FIFOScheduler(),
                      "num_samples": len(points)}

    def record(self) -> dict:
        return {"configs": self.configs}

    def position(self, config: dict) -> int | None:
        """Where a trial's flat config (as tracked) stands in the list; None for one not in it."""
        return next((i for i, cfg in enumerate(self.configs) if cfg == config), None)

    def trial_tags(self, config: dict) -> dict[str, str]:
        i = self.position(config)
        return self.tags[i] if i is not None and self.tags else {}
