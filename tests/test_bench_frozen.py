"""The frozen-layers benchmark's FLOP share (scripts/bench_frozen.py), on a tiny timm model."""
import torch

from scripts.bench_frozen import trainable_flop_share
from trainables.models import count_groups, create_classifier, freeze_classifier
from trainables.registry import TRAINABLES

CLS = {**TRAINABLES["classification"].defaults, "model/backbone": "test_resnet", "data/image_size": 32}


def test_trainable_flop_share_is_one_unfrozen_and_falls_as_groups_freeze():
    x = torch.zeros(1, 1, 32, 32)
    shares = []
    for n in range(count_groups(CLS) + 1):
        cfg = {**CLS, "model/frozen_layers": n}
        model = create_classifier(cfg, 4)
        freeze_classifier(model, cfg)
        shares.append(trainable_flop_share(model.eval(), x))
    assert shares[0] == 1.0
    assert all(later < earlier for earlier, later in zip(shares, shares[1:]))
    assert 0 < shares[-1] < 0.5  # the head alone is a small share
