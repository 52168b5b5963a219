"""Brain MRI tumour detection (yes / no) with the study's small CNN against timm backbones (study C.1).

    $ tune-run spaces/brain_mri.py --smoke-test
    $ tune-run spaces/brain_mri.py --data /data/brain_tumor_dataset

The public set is an image folder (yes/, no/) of MRI slices of many sizes. The study's custom CNN
(medtune_cnn: three 5x5 stride-2 conv blocks with BN, ReLU and max-pool, then 256-64-classes) on
512 px grayscale with AdamW lr 1e-3 reached accuracy 1.0, which near-duplicate slices across the
split explain: compare backbones on the same split, and distrust perfect scores.
"""

TRAINABLE = "classification"
OBJECTIVES = {"val/accuracy": "max", "perf/train_images_per_s": "max"}
DEFAULTS = {
    "data/layout": "image_folder",
    "data/image_size": 512,
    "data/channels": 1,
    "train/epochs": 20,
    "optim/name": "adamw",
    "optim/lr": 1e-3,
    "optim/weight_decay": 1e-5,
    "model/backbone": "medtune_cnn",
}
SMOKE = {"data/image_size": 64, "train/epochs": 2, "train/batch_size": 8}


def space(trial):
    backbone = trial.suggest_categorical("model/backbone", ["medtune_cnn", "resnet18", "efficientnet_b0"])
    trial.suggest_float("optim/lr", 1e-4, 3e-3, log=True)
    trial.suggest_float("aug/hflip", 0.0, 0.5, step=0.25)
    trial.suggest_float("aug/rotation", 0.0, 15.0, step=5.0)
    if backbone != "medtune_cnn":
        trial.suggest_int("model/frozen_layers", 0, 3)
