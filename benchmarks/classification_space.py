"""A second task for the tabular benchmark: 4-class classification by five tiny timm models, 1,440 configs.

    $ uv run python scripts/bench_tabular_build.py benchmarks/classification_space.py --configs 200 \
          -o benchmarks/classification_table_32px.json
    $ uv run python scripts/bench_tabular_replay.py benchmarks/classification_table_32px.json --answer surrogate --budget 1600

The classification trainable on the synthetic set at 32 px, 4 epochs, random weights, searched over the
model, the optimiser, its learning rate and schedule, the training-data fraction and two augmentations:
every key a short list, so that the replay's surrogate covers the space's whole grid.
"""

TRAINABLE = "classification"
OBJECTIVES = {"val/f1_macro": "max", "perf/train_images_per_s": "max"}  # first = primary
DEFAULTS = {"data/image_size": 32, "train/epochs": 4, "train/batch_size": 4, "model/frozen_layers": 0,
            "figures/draw": False}


def space(trial):
    trial.suggest_categorical("model/backbone", ["test_resnet", "test_convnext", "test_efficientnet", "test_vit",
                                                 "test_byobnet"])
    trial.suggest_categorical("optim/name", ["adam", "adamw", "sgd"])
    trial.suggest_categorical("optim/lr", [3e-4, 1e-3, 3e-3])
    trial.suggest_categorical("optim/schedule", ["constant", "cosine"])
    trial.suggest_float("data/fraction", 0.25, 1.0, step=0.25)
    trial.suggest_categorical("aug/hflip", [0.0, 0.5])
    trial.suggest_categorical("aug/crop_scale", [0.6, 1.0])
