"""Triplets for the embedding phase of the triplet trainable (study D.3), and their loss.

Three ways to form (anchor, positive, negative) triplets from a labelled batch:
  random     each anchor, a random other image of its class, a random image of another class
  augmented  each anchor, a strongly augmented copy of itself, a random image of another class
  batch_hard each anchor, its farthest same-class and its nearest other-class image in the batch
The loss is pytorch-metric-learning's triplet margin loss averaged over the triplets.
"""
from __future__ import annotations

from typing import Callable

import torch
from pytorch_metric_learning import losses, miners, reducers
from pytorch_metric_learning.utils import loss_and_miner_utils as lmu
from torchvision.transforms import v2

MINING = ("random", "augmented", "batch_hard")

Triplets = tuple[torch.Tensor, torch.Tensor, torch.Tensor]


def check_mining(name: str) -> str:
    if name not in MINING:
        raise ValueError(f"triplet/mining={name!r} is not known; accepted: {', '.join(MINING)}.")
    return name


def triplet_loss(margin: float) -> losses.TripletMarginLoss:
    """max(0, d(a, p) - d(a, n) + margin) with Euclidean d, the mean over all given triplets."""
    return losses.TripletMarginLoss(margin=margin, reducer=reducers.MeanReducer())


def strong_augmentation(size: int, mean: list[float], std: list[float]) -> Callable[[torch.Tensor], torch.Tensor]:
    """A new random crop, flips, rotation and colour jitter for each image of a normalised batch.

    The batch is mapped back to [0, 1] first (colour jitter clamps to that range) and
    normalised again after.
    """
    mean_t, std_t = torch.tensor(mean), torch.tensor(std)
    transform = v2.Compose([
        v2.Normalize((-mean_t / std_t).tolist(), (1 / std_t).tolist()),
        v2.RandomResizedCrop(size, scale=(0.5, 1.0), antialias=True),
        v2.RandomHorizontalFlip(0.5),
        v2.RandomVerticalFlip(0.5),
        v2.RandomRotation(15),
        v2.ColorJitter(brightness=0.4, contrast=0.4),
        v2.Normalize(mean, std),
    ])
    return lambda images: torch.stack([transform(image) for image in images])


def random_negatives(labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(anchors, negatives): each image that has another class in the batch, one such image at random."""
    other = labels[:, None] != labels[None, :]
    anchors = other.any(1).nonzero().squeeze(1)
    return anchors, torch.multinomial(other[anchors].float(), 1).squeeze(1)


def mine(strategy: str, embed: Callable[[torch.Tensor], torch.Tensor], images: torch.Tensor,
         labels: torch.Tensor, augment: Callable[[torch.Tensor], torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, Triplets]:
    """(embeddings, their labels, triplet indices into them) of one batch under `strategy`.

    For "augmented" the embeddings are those of the batch followed by those of its augmented
    copies, so the positive of anchor i is i + len(images).
    """
    check_mining(strategy)
    if strategy == "augmented":
        embeddings = embed(torch.cat([images, augment(images)]))
        anchors, negatives = random_negatives(labels)
        return embeddings, torch.cat([labels, labels]), (anchors, anchors + len(images), negatives)
    embeddings = embed(images)
    if strategy == "random":
        return embeddings, labels, lmu.get_random_triplet_indices(labels, t_per_anchor=1)
    return embeddings, labels, miners.BatchHardMiner()(embeddings, labels)
