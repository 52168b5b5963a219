"""Multitask U-Net losses: classification weight and segmentation loss (studies A.5 and C.2), 5 seeds.

    $ tune-export <multitask experiment> -o exports/multitask.yaml
    $ tune-ablate ablations/multitask_losses.py

A.5 trained with a fixed 0.5/0.5 loss and blamed the weights for trailing the single-task models;
C.2 compared BCE and Dice (and MSE) for segmentation with one run each. Here both are varied one at
a time around the searched best config, each on 5 seeds, on classification and segmentation metrics.
"""

BASELINE = "exports/multitask.yaml"                # tune-export of spaces/multitask.py; its best config
FACTORS = {
    "loss/cls_weight": [0.1, 0.3, 0.5, 0.7, 0.9],  # loss = (1 - w) * segmentation + w * classification; A.5 used 0.5
    "loss/seg": ["bce", "dice", "focal"],          # C.2's losses (smp.losses), focal for the class imbalance of masks
}
METRICS = {"val/dice": "max", "val/miou": "max"}  # segmentation, reported beside the export's objectives
SEEDS = 5                                          # 95% interval half-width 1.24 SD of the seeds (2.48 with 3)
SMOKE = {
    "model/encoder": "tu-test_resnet",             # as spaces/multitask.py SMOKE: a tiny random-init encoder
    "data/image_size": 64,
    "train/epochs": 2,
    "train/batch_size": 4,                         # more steps per epoch: it learns in 2 epochs only so
    "optim/lr": 1e-3,
    "model/frozen_layers": 0,                      # freezing random-init stages cannot learn
}
