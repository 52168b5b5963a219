"""Supervised fine-tuning of the study's six backbones on chest X-rays (study A.1).

    $ tune-run spaces/classification.py --smoke-test
    $ tune-run spaces/classification.py --data /data/COVID-19_Radiography_Dataset --gpus-per-trial 1

Swin, ViT-Base, ConvNeXt, DenseNet, EfficientNetV2 and ResNeXt-101 (timm names) compared on
macro F1 against training speed, with frozen layers, data fraction and augmentation searched.
"""

TRAINABLE = "classification"
OBJECTIVES = {"val/f1_macro": "max", "perf/train_images_per_s": "max"}
DEFAULTS = {"data/image_size": 224, "train/epochs": 20, "optim/name": "adam",
            "optim/lr": 5e-5, "optim/weight_decay": 1e-6}
# Smoke: random-init test_resnet, so frozen_layers is pinned to 0 (frozen random stages gave 0.26-0.37 macro F1)
# and batch 4 gives twice the steps in 2 epochs, as in spaces/multitask.py.
SMOKE = {"model/backbone": "test_resnet", "data/image_size": 64, "train/epochs": 2, "train/batch_size": 4, "optim/lr": 1e-3,
         "model/frozen_layers": 0}

BACKBONES = ["swin_base_patch4_window7_224", "vit_base_patch16_224", "convnext_base",
             "densenet121", "tf_efficientnetv2_s", "resnext101_32x8d"]


def space(trial):
    trial.suggest_categorical("model/backbone", BACKBONES)
    trial.suggest_int("model/frozen_layers", 0, 3)
    trial.suggest_float("data/fraction", 0.25, 1.0, step=0.25)
    trial.suggest_float("optim/lr", 1e-5, 1e-3, log=True)
    trial.suggest_categorical("optim/name", ["adam", "adamw"])
    trial.suggest_float("aug/hflip", 0.0, 0.5, step=0.25)
    trial.suggest_float("aug/rotation", 0.0, 15.0, step=5.0)
    trial.suggest_float("aug/brightness", 0.0, 0.3, step=0.1)
