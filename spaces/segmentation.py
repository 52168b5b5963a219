"""Lung segmentation: the study's eight smp architectures and a choice of losses (study A.4).

    $ tune-run spaces/segmentation.py --smoke-test
    $ tune-run spaces/segmentation.py --data /data/COVID-19_Radiography_Dataset --gpus-per-trial 0.5

Unet, Unet++, MAnet, FPN, PSPNet, PAN, DeepLabV3 and DeepLabV3+ compared on validation Dice
against training speed.
"""

TRAINABLE = "segmentation"
OBJECTIVES = {"val/dice": "max", "perf/train_images_per_s": "max"}
DEFAULTS = {"data/image_size": 256, "train/epochs": 20, "optim/name": "adam",
            "optim/lr": 5e-5, "optim/weight_decay": 1e-6}
SMOKE = {"model/encoder": "tu-test_resnet", "data/image_size": 128,  # PAN needs at least 128 px
         "train/epochs": 2, "train/batch_size": 8, "optim/lr": 1e-3}


def space(trial):
    trial.suggest_categorical("model/arch", ["unet", "unetplusplus", "manet", "fpn", "pspnet", "pan",
                                             "deeplabv3", "deeplabv3plus"])
    trial.suggest_categorical("model/encoder", ["resnet34", "tu-convnext_tiny"])
    trial.suggest_int("model/frozen_layers", 0, 3)   # PSPNet uses only the encoder's first 3 stages
    trial.suggest_categorical("loss/seg", ["dice", "dice_bce", "focal", "lovasz", "tversky", "bce"])
    trial.suggest_float("data/fraction", 0.25, 1.0, step=0.25)
    trial.suggest_float("optim/lr", 1e-5, 1e-3, log=True)
    trial.suggest_float("aug/hflip", 0.0, 0.5, step=0.25)
