"""An ablation: a baseline config, factors varied one at a time, K seeds; from flags or an ablation file.

Every check raises a UsageError whose one line names the offending value and what is accepted,
so a bad ablation stops before any trial starts.
"""
from __future__ import annotations

import os
import runpy
from dataclasses import dataclass, field
from typing import Any

from search.errors import UsageError
from search.export import exported_entry, read_export
from search.overrides import TEST_KEY, check_value, parse_value
from trainables.registry import TrainableSpec

VARY = ("seed", "split")  # seed: train/seed only; split: also data/split_seed (train/val redrawn, never test)
SEED_KEY, SPLIT_KEY = "train/seed", "data/split_seed"


@dataclass(frozen=True)
class Ablation:
    """A checked ablation: every level is typed and accepted by the trainable."""

    trainable: TrainableSpec
    baseline: dict[str, Any]           # the full baseline config
    factors: dict[str, tuple]          # ordered: factor key -> its levels, in the order given
    seeds: int
    objectives: dict[str, str]         # metric -> "max" | "min", first = primary (the export's objectives)
    vary: str = "seed"
    source: str = ""                   # where the baseline came from: an export path (and Pareto index) or experiment


@dataclass(frozen=True)
class AblationFile:
    """What an ablation file declares, before the baseline (and so the trainable) is known."""

    path: str
    baseline: str                      # a tune-export YAML path (relative to the working directory) or experiment
    factors: dict[str, list]
    seeds: int
    vary: str = "seed"
    pareto: int | None = None
    smoke: dict[str, Any] = field(default_factory=dict)  # config overrides of --smoke-test, applied to the baseline
    metrics: dict[str, str] = field(default_factory=dict)  # reported beside the export's objectives: metric -> mode


def check_seeds(seeds: Any, where: str = "--seeds") -> int:
    if isinstance(seeds, bool) or not isinstance(seeds, int) or seeds < 1:
        raise UsageError(f"{where} {seeds!r} is not accepted: the number of seeds is an integer of at least 1 "
                         f"(5 or more for intervals that mean something).")
    return seeds


def check_vary(vary: Any, where: str = "--vary") -> str:
    if vary not in VARY:
        raise UsageError(f"{where} {vary!r} is not accepted; choose one of: {', '.join(map(repr, VARY))}.")
    return vary


def parse_factors(items: list[str], known: dict[str, Any]) -> dict[str, list]:
    """`--factor KEY=V1,V2,...` flags -> {key: [typed levels]}, typed against the defaults in `known`."""
    factors: dict[str, list] = {}
    for item in items:
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or not text.strip():
            raise UsageError(f"--factor {item!r} is not of the form KEY=V1,V2,..., e.g. --factor data/fraction=0.25,0.5,1.")
        if key in factors:
            raise UsageError(f"--factor {key} is given twice; give each factor once with all its levels.")
        _check_key(key, known, "--factor")
        try:
            factors[key] = [parse_value(key, level.strip(), known) for level in text.split(",")]
        except UsageError as exc:  # parse_value speaks of --set, the flag it was written for
            raise UsageError(str(exc).replace("--set ", "--factor ", 1)) from None
    return factors


def check_factors(factors: Any, known: dict[str, Any], vary: str, where: str) -> dict[str, tuple]:
    """Checked factors: known keys, typed levels in range, at least two distinct levels each."""
    if not isinstance(factors, dict) or not factors:
        raise UsageError(f"{where} must be a non-empty dict of 'group/name' keys to lists of levels, "
                         f"e.g. {{'data/fraction': [0.25, 0.5, 1.0]}}.")
    checked = {}
    for key, levels in factors.items():
        _check_key(key, known, where)
        if key == SEED_KEY or (key == SPLIT_KEY and vary == "split"):
            raise UsageError(f"{key} is not accepted as a factor in {where}: the seeds vary it "
                             f"({SEED_KEY}, and {SPLIT_KEY} with vary 'split').")
        if not isinstance(levels, (list, tuple)) or len(levels) < 2:
            raise UsageError(f"{key}={levels!r} in {where} is not accepted: a factor needs a list of at least two "
                             f"levels (the baseline's own value is one of the comparisons).")
        typed = tuple(check_value(key, level, known, where) for level in levels)
        if len(set(typed)) < len(typed):
            twice = next(level for level in typed if typed.count(level) > 1)
            raise UsageError(f"{key} level {twice!r} in {where} is given twice; give each level once.")
        checked[key] = typed
    return checked


def _check_key(key: str, known: dict[str, Any], where: str) -> None:
    if key == TEST_KEY:
        raise UsageError(f"{TEST_KEY} is not accepted as a factor in {where}: every ablation run is evaluated once "
                         f"on the held-out test split.")
    if key not in known:
        raise UsageError(f"Unknown factor {key!r} in {where}; known keys are: {', '.join(sorted(known))}.")


def make_ablation(doc: dict, factors: dict, seeds: Any, vary: Any = "seed", pareto: int | None = None,
                  where: str = "the baseline", smoke: dict | None = None, factors_where: str = "--factor",
                  metrics: dict | None = None) -> Ablation:
    """Check everything against the trainable of `doc` (a tune-export document, `where` names it); `smoke`
    overrides (--smoke-test) go onto the baseline before the factors are compared with it; `metrics` are
    reported beside the export's objectives."""
    vary = check_vary(vary)
    seeds = check_seeds(seeds)
    spec, baseline = exported_entry(doc, pareto, where)
    if smoke:
        baseline.update({k: check_value(k, v, spec.defaults, f"SMOKE of {where}") for k, v in smoke.items()})
    checked = check_factors(factors, spec.defaults, vary, factors_where)
    objectives = {**(doc.get("objectives") or {}), **(metrics or {})}
    for metric, mode in objectives.items():
        if metric not in spec.metrics or mode not in ("max", "min"):
            raise UsageError(f"Metric {metric!r}: {mode!r} of {where} is not accepted; trainable {spec.name!r} reports "
                             f"{', '.join(spec.metrics)}, each to 'max' or 'min'.")
    source = where if pareto is None else f"{where} (Pareto trial {pareto})"
    return Ablation(spec, baseline, checked, seeds, dict(objectives), vary, source)


def read_ablation_file(path: str) -> AblationFile:
    """Run an ablation file (trusted configuration code, like a space file) and check its shape."""
    if not os.path.isfile(path) or not path.endswith(".py"):
        raise UsageError(f"Ablation file {path!r} does not exist or is not a .py file; "
                         f"pass one such as ablations/ssl_frozen_fraction.py.")
    try:
        module = runpy.run_path(path)
    except Exception as exc:  # the file's own error, reported with its location
        raise UsageError(f"Ablation file {path!r} failed to import: {type(exc).__name__}: {exc}") from exc
    missing = [name for name in ("BASELINE", "FACTORS", "SEEDS") if name not in module]
    if missing:
        raise UsageError(f"Ablation file {path!r} does not set {', '.join(missing)}; it needs BASELINE "
                         f"(a tune-export YAML or an experiment name), FACTORS ({{key: [levels]}}) and SEEDS.")
    if not isinstance(module["BASELINE"], str) or not module["BASELINE"]:
        raise UsageError(f"BASELINE in {path!r} must be a tune-export YAML path or an experiment name, "
                         f"not {module['BASELINE']!r}.")
    smoke, pareto, metrics = module.get("SMOKE", {}), module.get("PARETO"), module.get("METRICS", {})
    if pareto is not None and (isinstance(pareto, bool) or not isinstance(pareto, int)):
        raise UsageError(f"PARETO in {path!r} must be the 0-based index of a Pareto trial of the export, not {pareto!r}.")
    for name, value in (("SMOKE", smoke), ("METRICS", metrics)):
        if not isinstance(value, dict):
            raise UsageError(f"{name} in {path!r} must be a dict of 'group/name' keys, not {type(value).__name__}.")
    return AblationFile(path, module["BASELINE"], module["FACTORS"], check_seeds(module["SEEDS"], f"SEEDS in {path!r}"),
                        check_vary(module.get("VARY", "seed"), f"VARY in {path!r}"), pareto, smoke, metrics)


def load_ablation(path: str, smoke: bool = False, baseline: str | None = None, pareto: int | None = None,
                  read=read_export) -> Ablation:
    """The checked ablation of an ablation file. `baseline` and `pareto` (flags) replace the file's BASELINE and
    PARETO; `read(source)` turns the baseline into a tune-export document (an experiment name needs the tracker's)."""
    declared = read_ablation_file(path)
    source = baseline or declared.baseline
    return make_ablation(read(source), declared.factors, declared.seeds, declared.vary,
                         declared.pareto if pareto is None else pareto, source,
                         declared.smoke if smoke else None, f"FACTORS in {path!r}", declared.metrics)
