"""Checks run in the driver before any trial starts, on the configs a command will run (a space's
samples, or the fixed configs of a re-train or an ablation) and the choices they can take: the
models they name, the trainable's own rules and the data they read. Each problem is a UsageError
or DataError naming the value."""
from __future__ import annotations

from search.errors import UsageError
from search.overrides import check_value
from search.sampling import SpaceTrial
from search.spacefile import Space
from trainables.registry import TrainableSpec

MODEL_KEYS = ("model/backbone", "model/encoder", "model/arch", "model/pretrained", "gate/backbone", "clip/model")
SIGNATURE_KEYS = MODEL_KEYS + ("model/frozen_layers", "data/channels", "data/image_size")
DATA_KEYS = ("data/root", "data/layout", "data/split_files", "data/annotations", "data/test_annotations",
             "data/test_fraction", "data/on_bad_image", "data/channels")
SAMPLES = 32  # random configs drawn to see what the space can produce


def sample_configs(space: Space, constants: dict, pinned: set[str], n: int = SAMPLES, seed: int = 0):
    """n full configs drawn by Optuna's random sampler from space(), every value type-checked,
    and every choice the space offers per key (including those not drawn)."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    configs, choices = [], {}
    fixed = {key: constants[key] for key in pinned}
    for _ in range(n):
        trial = study.ask()
        try:
            space.space(SpaceTrial(trial, fixed, choices))
        except Exception as exc:
            raise UsageError(f"space() of {space.path!r} failed: {type(exc).__name__}: {exc}") from exc
        for key, value in trial.params.items():
            check_value(key, value, space.defaults, f"space() of {space.path!r}")
        configs.append({**constants, **trial.params})
        study.tell(trial, state=optuna.trial.TrialState.PRUNED)
    for key, values in choices.items():
        if key not in pinned:
            for value in values:
                check_value(key, value, space.defaults, f"the choices of space() in {space.path!r}")
    return configs, {k: v for k, v in choices.items() if k not in pinned}


def check_models(spec: TrainableSpec, configs: list[dict], choices: dict[str, set]) -> None:
    """Every model name and weights source the configs name or can choose exists (before any download
    or build)."""
    from trainables.models import check_model_config

    seen = set()
    for config in configs:
        variants = [config] + [{**config, key: value} for key in MODEL_KEYS for value in choices.get(key, ())]
        for cfg in variants:
            signature = tuple(cfg.get(key) for key in SIGNATURE_KEYS)
            if signature in seen:
                continue
            seen.add(signature)
            try:
                check_model_config(cfg, spec.name)
            except (ValueError, FileNotFoundError) as exc:
                raise UsageError(str(exc)) from None


def check_trainable(spec: TrainableSpec, configs: list[dict], choices: dict[str, set]) -> None:
    """The trainable's own rules (TrainableSpec.check; cheap, no training) on each config, and on the
    first with each name the space can choose in place of its own (e.g. a loss/seg no sample drew)."""
    check = spec.load_check()
    if check is None:
        return
    named = [{**configs[0], key: value} for key, values in choices.items() for value in values
             if isinstance(value, str)]
    for cfg in configs + named:
        try:
            check(cfg)
        except (ValueError, FileNotFoundError) as exc:
            raise UsageError(str(exc)) from None


def check_data(spec: TrainableSpec, configs: list[dict], choices: dict[str, set]) -> list[str]:
    """Open (decode into the node cache) each data set the configs read and draw their subsets.

    Catches missing or empty folders, images without masks, corrupt images, annotation paths
    outside the root, bad split files, and more shots than a class has. Returns notes such as
    images skipped under data/on_bad_image=skip.
    """
    from trainables.data import fraction_subset, open_dataset, shots_subset, train_val_split

    notes, groups = [], {}
    for cfg in configs:
        groups.setdefault(tuple(cfg[k] for k in DATA_KEYS), []).append(cfg)
    for key, group in groups.items():
        cfg = group[0]
        ds = open_dataset(cfg["data/root"] or None, min(c["data/image_size"] for c in group), cfg["data/channels"],
                          masks=spec.needs_masks, layout=cfg["data/layout"],
                          split_files=cfg["data/split_files"], annotations=cfg["data/annotations"],
                          on_bad_image=cfg["data/on_bad_image"], test_annotations=cfg["data/test_annotations"],
                          test_fraction=cfg["data/test_fraction"])  # part "search": sets test apart, undecoded
        for name in {c["eval/positive_class"] for c in group} - {""}:
            if name not in ds.classes:
                raise UsageError(f"eval/positive_class={name!r} is not a class of the data set at {ds.root}; its "
                                 f"classes are: {', '.join(ds.classes)}.")
        if ds.skipped:
            notes.append(f"{len(ds.skipped)} unreadable image(s) in {ds.root} are skipped "
                         f"(data/on_bad_image=skip), e.g. {ds.skipped[0]}")
        fractions = {c["data/fraction"] for c in group} | choices.get("data/fraction", set())
        shots = {c["data/shots_per_class"] for c in group} | choices.get("data/shots_per_class", set())
        for val_fraction, seed in {(c["data/val_fraction"], c["data/split_seed"]) for c in group}:
            train, _ = train_val_split(ds, val_fraction, seed)
            for fraction in fractions:
                subset = fraction_subset(train, ds.labels, fraction, seed)
                for k in shots - {0}:
                    shots_subset(subset, ds.labels, k, seed, ds.classes)
    return notes


def preflight(spec: TrainableSpec, configs: list[dict], choices: dict[str, set]) -> list[str]:
    """All the checks above on full flat configs of `spec` and the other values each key can take
    (`choices`, e.g. a space's categorical choices); returns notes for the console."""
    check_models(spec, configs, choices)
    check_trainable(spec, configs, choices)
    return check_data(spec, configs, choices)


def fingerprint(cfg: dict) -> str:
    """The data fingerprint of the data set a config reads (file names, sizes and lists)."""
    from trainables.data import data_fingerprint

    return data_fingerprint(cfg["data/root"] or None, cfg["data/layout"], cfg["data/split_files"],
                            cfg["data/annotations"], cfg["data/test_annotations"], cfg["data/test_fraction"])
