"""BUSI lesion segmentation: the study's losses compared, with and without classifier gating (study C.2-C.3).

    $ tune-run spaces/busi_segmentation.py --smoke-test
    $ tune-run spaces/busi_segmentation.py --data /data/Dataset_BUSI_with_GT --gpus-per-trial 0.5

A U-Net trained with BCE, MSE, Dice, Dice+BCE or Focal loss (mIoU 0.49 / 0.56 / 0.54 for BCE / MSE /
Dice in the study). Gating (gate/class=normal): a separate classifier (gate/backbone) is trained
alongside, and the predicted mask of an image it calls normal is replaced by an empty mask; that
lifted mIoU for every loss (Dice: 0.540 -> 0.573). Both the plain and the gated Dice, IoU and mIoU
are reported; BUSI's second masks (`_mask_1.png`) are merged and normal images have empty masks.
"""

TRAINABLE = "segmentation"
OBJECTIVES = {"val/miou_gated": "max", "perf/train_images_per_s": "max"}
DEFAULTS = {
    "data/layout": "busi",
    "data/image_size": 256,
    "data/channels": 1,
    "train/epochs": 30,
    "optim/name": "adam",
    "optim/lr": 1e-4,
    "model/arch": "unet",
    "model/encoder": "resnet34",
    "gate/class": "normal",
    "gate/backbone": "resnet18",
}
SMOKE = {"model/encoder": "tu-test_resnet", "gate/backbone": "test_resnet", "data/image_size": 64,
         "train/epochs": 2, "train/batch_size": 8, "optim/lr": 1e-3}


def space(trial):
    trial.suggest_categorical("loss/seg", ["bce", "mse", "dice", "dice_bce", "focal"])
    trial.suggest_categorical("data/image_size", [128, 256])   # image size changes the score: search it
    trial.suggest_float("optim/lr", 1e-5, 1e-3, log=True)
    trial.suggest_float("aug/hflip", 0.0, 0.5, step=0.25)
