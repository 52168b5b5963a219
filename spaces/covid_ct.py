"""COVID-CT binary classification: augmentation, normalisation and backbone searched for AUROC (study D.1-D.2).

    $ tune-run spaces/covid_ct.py --smoke-test
    $ tune-run spaces/covid_ct.py --data /data/COVID-CT/Images-processed --gpus-per-trial 0.5

The public repository keeps the images in Images-processed/CT_COVID and CT_NonCOVID (heights
153-1853 px) and the official split lists in Data-split/, which data/split_files points at
(relative to --data). The study found augmentation mattered most (random resized crop, flips
with p=0.7, rotation, brightness/contrast jitter), the data set's own normalisation beat
ImageNet's, and DenseNet-169 fine-tuned from denseblock3 on (SGD lr 0.007 halved on a
schedule, batch 128) won: accuracy 0.89, F1 0.90, AUC 0.89. AlexNet, also tried there, is not
a timm model.
"""

TRAINABLE = "classification"
OBJECTIVES = {"val/auroc": "max", "perf/train_images_per_s": "max"}
DEFAULTS = {
    "data/layout": "image_folder",
    "eval/positive_class": "CT_COVID",    # test sensitivity at 90%/95% specificity is COVID's
    "data/split_files": "../Data-split",  # the repository's official train/val/test lists
    "data/channels": 3,
    "data/image_size": 224,
    "train/epochs": 100,
    "train/batch_size": 128,
    "optim/name": "sgd",
    "optim/lr": 0.007,
    "optim/schedule": "step",
    "optim/step_epochs": 40,
    "optim/gamma": 0.5,                   # halved every optim/step_epochs
    "model/frozen_layers": 3,             # stem, denseblock1, denseblock2 frozen: train from denseblock3 on
}
SMOKE = {"model/backbone": "test_resnet", "data/image_size": 64, "train/epochs": 2, "train/batch_size": 8,
         "optim/lr": 0.01, "model/frozen_layers": 0}

BACKBONES = ["resnet18", "resnet50", "densenet121", "densenet161", "densenet169"]


def space(trial):
    trial.suggest_categorical("model/backbone", BACKBONES)
    trial.suggest_categorical("data/normalize", ["dataset", "imagenet"])
    trial.suggest_float("aug/crop_scale", 0.5, 1.0, step=0.1)   # RandomResizedCrop min scale; 1.0: none
    trial.suggest_float("aug/hflip", 0.0, 0.7, step=0.35)
    trial.suggest_float("aug/vflip", 0.0, 0.7, step=0.35)
    trial.suggest_float("aug/rotation", 0.0, 30.0, step=10.0)
    trial.suggest_float("aug/brightness", 0.0, 0.4, step=0.1)
    trial.suggest_float("aug/contrast", 0.0, 0.4, step=0.1)
    trial.suggest_float("optim/lr", 1e-3, 3e-2, log=True)
