"""Self-supervised backbone, partial fine-tuning: frozen layers and training-data fraction (study A.2), 5 seeds.

    $ tune-run spaces/ssl_finetune.py --data /data/COVID-19_Radiography_Dataset ...
    $ tune-export <experiment> -o exports/ssl_finetune.yaml
    $ tune-ablate ablations/ssl_frozen_fraction.py                 # or pass another export as the baseline

The study reported one run per cell (DINOv2, 8 blocks frozen: F1 0.9648 on all data, 0.9614 at 50%,
0.9467 at 25%); here each level is repeated over seeds and compared with the baseline paired by seed,
and the data/fraction levels give a learning curve: what would labelling more images buy?
"""

BASELINE = "exports/ssl_finetune.yaml"  # tune-export of spaces/ssl_finetune.py; its best config
FACTORS = {
    "model/frozen_layers": [0, 3, 6, 9],           # timm groups: embeddings, then one per block; 9 = the study's 8 blocks
    "data/fraction": [0.25, 0.5, 0.75, 1.0],       # the study's shares of the training split
}
SEEDS = 5                                          # 95% interval half-width 1.24 SD of the seeds (2.48 with 3)
VARY = "seed"                                      # the study's fixed 80/20 split; "split" adds data-sampling variance
SMOKE = {
    "model/backbone": "test_vit3",                 # the tiny random-init ViT of the space's smoke study (9 blocks)
    "data/image_size": 64,                         # as spaces/ssl_finetune.py SMOKE: minutes on a CPU
    "train/epochs": 2,
    "train/batch_size": 4,                         # more steps per epoch: the random-init model learns in 2 epochs
    "optim/lr": 1e-3,
    "model/frozen_layers": 0,                      # the baseline trains every layer; the factor freezes from there
}
