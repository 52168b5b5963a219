"""Few-shot multi-label classification, MedFMC style: k shots per class x backbone, scored by mAP (study B).

    $ tune-run spaces/medfmc.py --smoke-test
    $ tune-run spaces/medfmc.py --data /data/MedFMC/ChestDR --gpus-per-trial 0.5 --set data/annotations=trainval.txt \
          --set data/test_annotations=test.txt   # the official test list: held out, opened only by tune-train

The data root holds images/ and annotation lists with one `<image> <label,label,...>` line per
image (classes.txt names the findings); data/annotations names the labelled pool from which
data/shots_per_class images per finding are drawn (at least k images containing each finding,
rarest first). Multi-label heads are trained with binary cross-entropy. The challenge's
DenseNet-121 baseline reached mAP 0.23-0.25 on ChestDR (19 findings) after 40 epochs. For the
single-label Colon task, point --data at its list: accuracy and AUROC are reported as well.
"""

TRAINABLE = "classification"
OBJECTIVES = {"val/map": "max", "perf/train_images_per_s": "max"}
DEFAULTS = {
    "data/layout": "annotation_list",
    "data/channels": 3,
    "data/image_size": 224,
    "data/normalize": "imagenet",
    "train/epochs": 40,
    "optim/name": "adamw",
    "optim/lr": 1e-4,
    "optim/weight_decay": 0.05,
}
SMOKE = {"model/backbone": "test_resnet", "data/image_size": 64, "train/epochs": 2, "train/batch_size": 8,
         "optim/lr": 1e-3, "data/test_annotations": "test.txt"}  # the generated set's official test list

BACKBONES = ["densenet121", "efficientnet_b0", "vit_base_patch16_224", "swin_base_patch4_window7_224"]


def space(trial):
    trial.suggest_categorical("data/shots_per_class", [1, 5, 10])
    trial.suggest_categorical("model/backbone", BACKBONES)
    trial.suggest_int("model/frozen_layers", 0, 3)
    trial.suggest_float("optim/lr", 1e-5, 1e-3, log=True)
    trial.suggest_float("aug/hflip", 0.0, 0.5, step=0.25)
