"""Multitask U-Net: lung segmentation + 4-class diagnosis (study A.5), loss weights searched.

    $ tune-run spaces/multitask.py --smoke-test
    $ tune-run spaces/multitask.py --data /data/COVID-19_Radiography_Dataset --num-samples 64 --gpus-per-trial 0.5

The study trained a U-Net with a classification branch under a fixed 0.5/0.5 loss and blamed
the weights for trailing the single-task models; here the weight, the model and the training
knobs are searched, against training speed.
"""

TRAINABLE = "multitask"
OBJECTIVES = {"val/f1_macro": "max", "perf/train_images_per_s": "max"}  # first = primary
DEFAULTS = {
    "data/image_size": 256,     # the public masks are 256 px
    "train/epochs": 20,         # the study's schedule: Adam, lr 5e-5, wd 1e-6, 20 epochs
    "optim/name": "adam",
    "optim/lr": 5e-5,
    "optim/weight_decay": 1e-6,
}
# Smoke: a tiny random-init encoder learns in 2 epochs only with a larger step (lr 3e-3 was worse) and more
# steps (batch 4: 0.38 -> 0.57 macro F1 at data/fraction 0.25, cls_weight 0.1); frozen_layers is pinned to 0
# because freezing randomly initialised stages cannot learn (frozen 4: 0.40-0.42 even at 3 epochs or batch 2).
SMOKE = {"model/encoder": "tu-test_resnet", "data/image_size": 64, "train/epochs": 2, "train/batch_size": 4,
         "optim/lr": 1e-3, "model/frozen_layers": 0}


def space(trial):
    trial.suggest_categorical("model/arch", ["unet", "unetplusplus", "fpn"])
    trial.suggest_categorical("model/encoder", ["resnet34", "tu-convnext_tiny", "tu-efficientnetv2_rw_s"])
    trial.suggest_int("model/frozen_layers", 0, 4)
    trial.suggest_float("data/fraction", 0.25, 1.0, step=0.25)
    trial.suggest_float("loss/cls_weight", 0.1, 0.9, step=0.1)  # seg weight = 1 - cls_weight
    trial.suggest_categorical("loss/seg", ["dice", "dice_bce", "focal"])
    trial.suggest_float("optim/lr", 1e-5, 1e-3, log=True)
    trial.suggest_float("aug/hflip", 0.0, 0.5, step=0.25)
    trial.suggest_float("aug/rotation", 0.0, 15.0, step=5.0)
