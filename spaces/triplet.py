"""COVID-CT, three phases per trial: supervised fine-tuning, triplet embedding, classifier (D.2-D.4).

    $ tune-run spaces/triplet.py --smoke-test
    $ tune-run spaces/triplet.py --data /data/COVID-CT/Images-processed --gpus-per-trial 1 --num-samples 32
    $ tune-run spaces/triplet.py --data /data/COVID-CT/Images-processed --gpus-per-trial 1 --num-samples 16 \
          --set model/backbone=densenet169 --set model/pretrained=/weights/densenet169.safetensors

The data is the COVID-CT image folders (CT_COVID, CT_NonCOVID) with the official split lists in
../Data-split beside them. The study fine-tuned an ImageNet DenseNet-169 (classifier + denseblock4
+ denseblock3; SGD lr 0.007, batch 128; test acc 0.89, AUC 0.89), put three linear layers giving
L2-normalised 512-d embeddings on it, trained them with triplet loss (margin 0.5, SGD lr 5e-4;
random or augmented-positive triplets), then a linear classifier on the embeddings with some lower
layers unfrozen (SGD lr 3e-4): test accuracy 0.941, AUC 0.942. DEFAULTS are those settings; the
search varies the backbone (the study's ResNet/DenseNet set), margin, mining, embedding size, the
layers unfrozen for the classifier and the learning rates. Weights load from local files only: the
last command pins the study's backbone and its ImageNet weights; the others start from random
weights. Every trial has the same phase lengths, so the scheduler compares trials within a phase.
"""

TRAINABLE = "triplet"
OBJECTIVES = {"val/auroc": "max", "perf/train_images_per_s": "max"}  # first = primary
DEFAULTS = {
    "data/layout": "image_folder",
    "eval/positive_class": "CT_COVID",    # test sensitivity at 90%/95% specificity is COVID's
    "data/split_files": "../Data-split",  # the official train/val/test lists, relative to --data
    "data/channels": 3,
    "data/image_size": 224,         # the images range from 124 to 1853 px: resized
    "data/normalize": "dataset",    # the data set's own mean/std beat ImageNet's (D.1)
    "aug/crop_scale": 0.5,          # D.1: RandomResizedCrop, flips with p=0.7, rotation, colour jitter
    "aug/hflip": 0.7,
    "aug/vflip": 0.7,
    "aug/rotation": 15.0,
    "aug/brightness": 0.2,
    "aug/contrast": 0.2,
    "model/backbone": "densenet169",
    "model/frozen_layers": 3,       # stem, denseblock1, denseblock2 frozen: denseblock3, 4 and the head train
    "train/batch_size": 128,
    "train/epochs": 200,            # the study ran 300 triplet epochs; shortened for a search
    "triplet/supervised_epochs": 50,
    "triplet/embedding_epochs": 100,  # phase 3, the classifier: the remaining 50
    "optim/name": "sgd",
    "optim/lr": 0.007,
    "optim/momentum": 0.9,
    "optim/schedule": "constant",   # the study halved the lr every 400 epochs, longer than any phase here
    "triplet/margin": 0.5,
    "triplet/mining": "random",
    "triplet/embedding_dim": 512,
    "triplet/embedding_lr": 5e-4,
    "triplet/classifier_lr": 3e-4,
    "triplet/unfrozen_layers": 1,   # "some lower layers": the last backbone group and the embedding layers
}
SMOKE = {"model/backbone": "test_resnet", "model/frozen_layers": 1, "data/image_size": 64, "train/epochs": 3,
         "triplet/supervised_epochs": 1, "triplet/embedding_epochs": 1, "train/batch_size": 8,
         "optim/lr": 0.01, "triplet/embedding_lr": 0.01, "triplet/classifier_lr": 0.01}

BACKBONES = ["resnet18", "resnet50", "densenet121", "densenet161", "densenet169"]


def space(trial):
    trial.suggest_categorical("model/backbone", BACKBONES)
    trial.suggest_float("triplet/margin", 0.1, 1.0, step=0.1)
    trial.suggest_categorical("triplet/mining", ["random", "augmented", "batch_hard"])
    trial.suggest_categorical("triplet/embedding_dim", [128, 256, 512])
    trial.suggest_int("triplet/unfrozen_layers", 0, 3)  # every backbone above has at least 5 groups
    trial.suggest_float("optim/lr", 1e-3, 3e-2, log=True)
    trial.suggest_float("triplet/embedding_lr", 1e-4, 3e-3, log=True)
    trial.suggest_float("triplet/classifier_lr", 1e-4, 3e-3, log=True)
