"""BUSI lesion segmentation + diagnosis in one model, its own head gating the masks (study C.3, one stage).

    $ tune-run spaces/busi_multitask.py --smoke-test
    $ tune-run spaces/busi_multitask.py --data /data/Dataset_BUSI_with_GT --gpus-per-trial 0.5

The multitask U-Net's classification head (smp aux_params) decides "normal", and the predicted
mask of such an image is blanked (gate/class). The study gated with a separate classifier
(spaces/busi_segmentation.py); here the loss weight between the two tasks is searched too.
"""

TRAINABLE = "multitask"
OBJECTIVES = {"val/miou_gated": "max", "val/f1_macro": "max"}
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
}
SMOKE = {"model/encoder": "tu-test_resnet", "data/image_size": 64, "train/epochs": 2, "train/batch_size": 8,
         "optim/lr": 1e-3}


def space(trial):
    trial.suggest_float("loss/cls_weight", 0.1, 0.9, step=0.1)
    trial.suggest_categorical("loss/seg", ["bce", "mse", "dice", "dice_bce", "focal"])
    trial.suggest_float("optim/lr", 1e-5, 1e-3, log=True)
    trial.suggest_float("aug/hflip", 0.0, 0.5, step=0.25)
