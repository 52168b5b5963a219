"""Ablation specs, their bad input, the grid of runs, and the shipped ablation files."""
import os
import runpy

import pytest
import yaml

from search.ablation.grid import BASELINE, FACTOR_TAG, LEVEL_TAG, SEED_TAG, grid
from search.ablation.spec import load_ablation, make_ablation, parse_factors, read_ablation_file
from search.export import exported_entry, read_export
from search.errors import UsageError
from search.overrides import check_value
from trainables.registry import get_trainable

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
KNOWN = get_trainable("classification").defaults


def export_doc(space: str, **config) -> dict:
    """A tune-export document of a space file's DEFAULTS (what tune-export writes, without a search)."""
    declared = runpy.run_path(os.path.join(ROOT, "spaces", space))
    entry = {"trial_id": "t0", "run_id": "r0", "metrics": {}, "config": {**declared["DEFAULTS"], **config}}
    return {"experiment": space, "trainable": declared["TRAINABLE"], "objectives": declared["OBJECTIVES"],
            "best": entry, "pareto": [entry, {**entry, "config": {**entry["config"], "optim/lr": 1e-4}}]}


DOC = export_doc("ssl_finetune.py", **{"model/frozen_layers": 9})


def test_factors_are_typed_against_the_defaults():
    factors = parse_factors(["data/fraction=0.25, 0.5,1", "model/frozen_layers=0,9", "data/normalize=dataset,imagenet"],
                            KNOWN)
    assert factors == {"data/fraction": [0.25, 0.5, 1.0], "model/frozen_layers": [0, 9],
                       "data/normalize": ["dataset", "imagenet"]}
    assert type(factors["data/fraction"][2]) is float and type(factors["model/frozen_layers"][0]) is int


@pytest.mark.parametrize("flags, seeds, message", [
    (["model/nope=1,2"], 3, "Unknown factor 'model/nope' in --factor; known keys are: aug/brightness"),
    (["data/fraction=a,b"], 3, "--factor data/fraction=a has the wrong type: data/fraction takes a number"),
    (["data/fraction=0,0.5"], 3, "data/fraction=0.0 is out of range; accepted values lie in (0, 1]"),
    (["data/normalize=dataset,zscore"], 3, "choose one of: 'dataset', 'imagenet'"),
    (["data/fraction=0.5"], 3, "a factor needs a list of at least two levels"),
    (["data/fraction=0.5,0.50,1"], 3, "data/fraction level 0.5 in --factor is given twice"),
    (["data/fraction=0.5,1", "data/fraction=0.25,1"], 3, "--factor data/fraction is given twice"),
    (["eval/test=true,false"], 3, "eval/test is not accepted as a factor"),
    (["train/seed=1,2"], 3, "train/seed is not accepted as a factor"),
    (["data/fraction"], 3, "is not of the form KEY=V1,V2"),
    (["data/fraction=0.5,1"], 0, "--seeds 0 is not accepted: the number of seeds is an integer of at least 1"),
    (["data/fraction=0.5,1"], -2, "--seeds -2 is not accepted"),
])
def test_bad_factors_and_seeds_are_one_clear_line(flags, seeds, message):
    with pytest.raises(UsageError) as error:
        make_ablation(DOC, parse_factors(flags, KNOWN), seeds)
    assert message in str(error.value) and "\n" not in str(error.value)


def test_split_seed_is_a_factor_only_while_seeds_keep_the_split():
    factors = {"data/split_seed": [1, 2]}
    assert make_ablation(DOC, factors, 3).factors == {"data/split_seed": (1, 2)}
    with pytest.raises(UsageError, match="data/split_seed is not accepted as a factor"):
        make_ablation(DOC, factors, 3, vary="split")
    with pytest.raises(UsageError, match="--vary 'both' is not accepted; choose one of: 'seed', 'split'"):
        make_ablation(DOC, factors, 3, vary="both")


def test_baseline_from_an_export_fills_keys_an_older_export_lacks(tmp_path):
    path = tmp_path / "best.yaml"
    path.write_text(yaml.safe_dump(DOC))
    spec, config = exported_entry(read_export(str(path)), None, str(path))
    assert spec.name == "classification" and config["model/frozen_layers"] == 9
    assert config["data/image_size"] == 224 and config["train/bn_reestimate_images"] == KNOWN["train/bn_reestimate_images"]
    assert config["eval/test"] is False
    assert exported_entry(DOC, 1, "x")[1]["optim/lr"] == 1e-4
    with pytest.raises(UsageError, match=r"--pareto 2 is out of range; x has 2 Pareto trials \(0-based\)"):
        exported_entry(DOC, 2, "x")
    with pytest.raises(UsageError, match="does not exist; write one with tune-export"):
        read_export(str(tmp_path / "missing.yaml"))
    (tmp_path / "other.yaml").write_text("a: 1\n")
    with pytest.raises(UsageError, match="is not a tune-export file"):
        read_export(str(tmp_path / "other.yaml"))
    with pytest.raises(UsageError, match="Unknown trainable 'nope'"):
        exported_entry({**DOC, "trainable": "nope"}, None, "x")


def test_grid_one_factor_at_a_time_with_the_baseline_once_per_seed():
    ablation = make_ablation(DOC, {"model/frozen_layers": [0, 9], "data/fraction": [0.25, 0.5, 1.0]}, 3)
    runs = grid(ablation)
    # per seed: the baseline, frozen 0, fractions 0.25 and 0.5 (frozen 9 and fraction 1.0 are the baseline's own)
    assert [(r.factor, r.level) for r in runs[:4]] == [
        (BASELINE, None), ("model/frozen_layers", 0), ("data/fraction", 0.25), ("data/fraction", 0.5)]
    assert len(runs) == 3 * 4 and [r.seed for r in runs] == [s for s in range(3) for _ in range(4)]
    assert sum(r.factor == BASELINE for r in runs) == 3
    configs = [tuple(sorted(r.config.items())) for r in runs]
    assert len(set(configs)) == len(configs)  # no run trained twice
    for run in runs:
        assert run.config["eval/test"] is True
        assert run.config["train/seed"] == DOC["best"]["config"].get("train/seed", 0) + run.seed
        assert run.config["data/split_seed"] == 0
        changed = {k for k, v in run.config.items() if v != ablation.baseline[k]} - {"eval/test", "train/seed"}
        assert changed == (set() if run.factor == BASELINE else {run.factor})
    assert runs[5].tags == {FACTOR_TAG: "model/frozen_layers", LEVEL_TAG: "0", SEED_TAG: "1"}
    assert runs[0].name == "baseline seed 0" and runs[2].name == "data/fraction=0.25 seed 0"
    assert grid(ablation) == runs  # deterministic


def test_vary_split_redraws_train_and_val_per_seed():
    ablation = make_ablation(export_doc("ssl_finetune.py", **{"data/split_seed": 4}), {"data/fraction": [0.5, 1.0]}, 2,
                             vary="split")
    assert [(r.seed, r.config["data/split_seed"], r.config["train/seed"]) for r in grid(ablation)] == [
        (0, 4, 0), (0, 4, 0), (1, 5, 1), (1, 5, 1)]
    assert {r.config["data/test_fraction"] for r in grid(ablation)} == {KNOWN["data/test_fraction"]}


def test_ablation_file_errors(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("BASELINE = 'x.yaml'\nFACTORS = {}\n")
    with pytest.raises(UsageError, match="does not set SEEDS"):
        read_ablation_file(str(bad))
    bad.write_text("BASELINE = 'x.yaml'\nFACTORS = {}\nSEEDS = 0\n")
    with pytest.raises(UsageError, match="SEEDS in .* 0 is not accepted"):
        read_ablation_file(str(bad))
    bad.write_text("1/0\n")
    with pytest.raises(UsageError, match="failed to import: ZeroDivisionError"):
        read_ablation_file(str(bad))
    with pytest.raises(UsageError, match="does not exist or is not a .py file"):
        read_ablation_file(str(tmp_path / "none.py"))


@pytest.mark.parametrize("name, space", [("ssl_frozen_fraction.py", "ssl_finetune.py"),
                                         ("multitask_losses.py", "multitask.py")])
@pytest.mark.parametrize("smoke", [False, True])
def test_shipped_ablation_files_give_valid_grids(tmp_path, name, space, smoke):
    export = tmp_path / "best.yaml"
    export.write_text(yaml.safe_dump(export_doc(space)))
    path = os.path.join(ROOT, "ablations", name)
    ablation = load_ablation(path, smoke=smoke, baseline=str(export))
    declared = read_ablation_file(path)
    assert ablation.seeds == declared.seeds == 5 and list(ablation.factors) == list(declared.factors)
    assert ablation.trainable.name == runpy.run_path(os.path.join(ROOT, "spaces", space))["TRAINABLE"]
    runs = grid(ablation)
    levels = sum(len(v) for v in ablation.factors.values())
    shared = sum(ablation.baseline[k] in v for k, v in ablation.factors.items())
    assert len(runs) == ablation.seeds * (1 + levels - shared)
    for run in runs:
        for key, value in run.config.items():
            if key != "eval/test":
                check_value(key, value, ablation.trainable.defaults, run.name)
        assert run.config["eval/test"] is True
    if smoke:
        assert all(run.config[k] == v for run in runs for k, v in declared.smoke.items() if k != run.factor)
