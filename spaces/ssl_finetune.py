"""Self-supervised backbones, partial fine-tuning: frozen layers x data fraction x backbone (study A.2).

    $ tune-run spaces/ssl_finetune.py --smoke-test
    $ tune-run spaces/ssl_finetune.py --data /data/COVID-19_Radiography_Dataset --gpus-per-trial 1 \
          --set model/pretrained=hf-hub:timm/vit_base_patch14_dinov2.lvd142m   # from the local HF cache
    $ tune-run spaces/ssl_finetune.py --data ... --set model/backbone=hf:/models/dinov2-base  # a transformers checkpoint

The study froze the first 8 encoder layers of DINOv2 and BEiTv2 and trained the rest on 25-100%
of the training split: DINOv2 reached F1 0.965 at a third of full fine-tuning's time per epoch.
Frozen layers count timm's parameter groups: the embeddings, then one transformer block each, so
the study's setting is model/frozen_layers=9. The speed objective shows what freezing buys.
"""

TRAINABLE = "classification"
OBJECTIVES = {"val/f1_macro": "max", "perf/train_images_per_s": "max"}
DEFAULTS = {
    "data/image_size": 224,
    "data/channels": 3,          # the self-supervised weights expect RGB
    "data/normalize": "imagenet",
    "train/epochs": 20,          # the study's schedule: Adam, lr 5e-5, wd 1e-6
    "optim/name": "adam",
    "optim/lr": 5e-5,
    "optim/weight_decay": 1e-6,
}
# test_vit3: 9 blocks, so frozen_layers up to 10 exist; pinned to 0 in the smoke study because the smoke ViT is
# randomly initialised (frozen 3/6 gave 0.175/0.098 macro F1, frozen 0 with batch 4 0.28).
SMOKE = {"model/backbone": "test_vit3", "data/image_size": 64, "train/epochs": 2, "train/batch_size": 4,
         "optim/lr": 1e-3, "model/frozen_layers": 0}

BACKBONES = ["vit_base_patch14_dinov2", "vit_small_patch14_dinov2", "beitv2_base_patch16_224"]


def space(trial):
    trial.suggest_categorical("model/backbone", BACKBONES)
    trial.suggest_int("model/frozen_layers", 0, 9, step=3)   # 9 = embeddings + the first 8 blocks
    trial.suggest_float("data/fraction", 0.25, 1.0, step=0.25)
    trial.suggest_float("optim/lr", 1e-5, 1e-3, log=True)
