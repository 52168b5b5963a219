"""The define-by-run space handed to Ray Tune's OptunaSearch, and the Optuna sampler choice."""
from __future__ import annotations

from typing import Any

from search.errors import UsageError
from search.overrides import check_value
from search.spacefile import Space, load_module

SAMPLERS = ("tpe", "nsga2", "random")
TPE_DEFAULTS = {"multivariate": True, "constant_liar": True}


class SpaceTrial:
    """The Optuna trial a space's space(trial) is called with: pinned keys (SMOKE values, --set
    overrides) take their fixed value instead of being searched, and every choice offered to
    suggest_categorical is recorded in `choices` (key -> set), including those not drawn."""

    def __init__(self, trial, pinned: dict[str, Any], choices: dict[str, set] | None = None):
        self._trial, self._pinned = trial, pinned
        self.choices = {} if choices is None else choices

    def __getattr__(self, name: str):
        attr = getattr(self._trial, name)
        if not name.startswith("suggest_"):
            return attr

        def suggest(key: str, *args, **kwargs):
            if name == "suggest_categorical":
                self.choices.setdefault(key, set()).update(kwargs.get("choices", args[0] if args else ()))
            return self._pinned[key] if key in self._pinned else attr(key, *args, **kwargs)

        return suggest


class SpaceSampler:
    """Calls the space file's space(trial); returns the constant config keys for Ray to merge.

    Picklable (Ray saves the searcher with the experiment): the pickle keeps the file's path,
    and a copy restored in a new process (--resume) imports the file again on its first call.
    """

    def __init__(self, space: Space, constants: dict[str, Any], pinned: set[str]):
        self.path, self.constants, self.known = space.path, constants, space.defaults
        self.pinned = {key: constants[key] for key in pinned}
        self._space = space.space

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_space": None}

    def __call__(self, trial) -> dict[str, Any]:
        if self._space is None:
            self._space = load_module(self.path).space
        self._space(SpaceTrial(trial, self.pinned))
        for key, value in trial.params.items():
            check_value(key, value, self.known, f"space() of {self.path!r}")
        return {k: v for k, v in self.constants.items() if k not in trial.params}


def make_sampler(name: str, seed: int | None, **tpe):
    """Optuna sampler by name: TPE (multi-objective TPE for several objectives) that learns from stopped
    trials too (search.tpe), NSGA-II, random. `tpe`: TPESampler settings over TPE_DEFAULTS (the
    tabular replay's --tpe)."""
    import optuna

    if name == "tpe":
        from search.tpe import StoppedTrialsTPE

        return StoppedTrialsTPE(seed=seed, **{**TPE_DEFAULTS, **tpe})
    if name == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=seed)
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    raise UsageError(f"Unknown sampler {name!r}; accepted: {', '.join(SAMPLERS)}.")
