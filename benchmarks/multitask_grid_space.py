"""The tabular benchmark's grid: 36 configs of the tiny multitask model, every one of them in the table.

    $ uv run python scripts/bench_tabular_build.py benchmarks/multitask_grid_space.py --configs 60 \
          -o benchmarks/multitask_grid_table.json
    $ uv run python scripts/bench_tabular_replay.py benchmarks/multitask_grid_table.json --seeds 20

Four choices, each a short list, so that a replay's proposal is always a row of the table (no nearest-row
stand-in): the architecture, the segmentation loss, the classification loss weight and the learning rate.
The rest is the smoke settings at 32 px with 4 epochs and no pictures.
"""

TRAINABLE = "multitask"
OBJECTIVES = {"val/f1_macro": "max", "perf/train_images_per_s": "max"}  # first = primary
DEFAULTS = {"model/encoder": "tu-test_resnet", "data/image_size": 32, "train/epochs": 4, "train/batch_size": 4,
            "model/frozen_layers": 0, "optim/name": "adam", "figures/draw": False}


def space(trial):
    trial.suggest_categorical("model/arch", ["unet", "fpn"])
    trial.suggest_categorical("loss/seg", ["dice", "focal"])
    trial.suggest_categorical("loss/cls_weight", [0.2, 0.5, 0.8])  # seg weight = 1 - cls_weight
    trial.suggest_categorical("optim/lr", [3e-4, 1e-3, 3e-3])
