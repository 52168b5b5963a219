"""Breast ultrasound (BUSI) classification, benign / malignant / normal, small CNN vs timm backbones (study C.1).

    $ tune-run spaces/busi_cnn.py --smoke-test
    $ tune-run spaces/busi_cnn.py --data /data/Dataset_BUSI_with_GT

BUSI keeps each class in its folder with `<name>.png` beside `<name>_mask.png` (masks are not
needed here). The study's custom CNN (medtune_cnn) on 512 px grayscale, AdamW lr 1e-3 wd 1e-5,
reached 3-class accuracy 0.85.
"""

TRAINABLE = "classification"
OBJECTIVES = {"val/f1_macro": "max", "perf/train_images_per_s": "max"}
DEFAULTS = {
    "data/layout": "busi",
    "data/image_size": 512,
    "data/channels": 1,
    "train/epochs": 30,
    "optim/name": "adamw",
    "optim/lr": 1e-3,
    "optim/weight_decay": 1e-5,
    "model/backbone": "medtune_cnn",
}
SMOKE = {"data/image_size": 64, "train/epochs": 2, "train/batch_size": 8}


def space(trial):
    backbone = trial.suggest_categorical("model/backbone", ["medtune_cnn", "resnet18", "densenet121"])
    trial.suggest_categorical("data/image_size", [256, 512])   # image size changes the score: search it
    trial.suggest_float("optim/lr", 1e-4, 3e-3, log=True)
    trial.suggest_float("aug/hflip", 0.0, 0.5, step=0.25)
    if backbone != "medtune_cnn":
        trial.suggest_int("model/frozen_layers", 0, 3)
