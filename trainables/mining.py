"""Triplets for the embedding phase of the triplet trainable (study D.3), and their loss.

Three ways to form (anchor, positive, negative) triplets from a labelled batch:
  random     each anchor, a random other image of its class, a random image of another class
  augmented  each anchor, a strongly augmented copy of itself, a random image of another class
  batch_hard each anchor, its farthest same-class and its nearest other-class image in the batch
The loss is pytorch-metric-learning's triplet margin loss averaged over the triplets (triplet_loss); it lives
here, with the rest of the library's use, so that no other trainable imports the library.
"""
from __future__ import annotations

import functools
from typing import Callable

import torch
from pytorch_metric_learning import losses as pml_losses
from pytorch_metric_learning import miners, reducers
from pytorch_metric_learning.utils import loss_and_miner_utils as lmu

Triplets = tuple[torch.Tensor, torch.Tensor, torch.Tensor]
Embed = Callable[[torch.Tensor], torch.Tensor]
Mined = tuple[torch.Tensor, torch.Tensor, Triplets]  # (embeddings, their labels, triplet indices into them)


def random_negatives(labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(anchors, negatives): each image that has another class in the batch, one such image at random."""
    other = labels[:, None] != labels[None, :]
    anchors = other.any(1).nonzero().squeeze(1)
    return anchors, torch.multinomial(other[anchors].float(), 1).squeeze(1)


def mine_random(embed: Embed, images: torch.Tensor, labels: torch.Tensor, augment: Embed) -> Mined:
    embeddings = embed(images)
    return embeddings, labels, lmu.get_random_triplet_indices(labels, t_per_anchor=1)


def mine_augmented(embed: Embed, images: torch.Tensor, labels: torch.Tensor, augment: Embed) -> Mined:
    """The embeddings of the batch followed by those of its augmented copies: anchor i's positive is i + len(images)."""
    embeddings = embed(torch.cat([images, augment(images)]))
    anchors, negatives = random_negatives(labels)
    return embeddings, torch.cat([labels, labels]), (anchors, anchors + len(images), negatives)


def mine_batch_hard(embed: Embed, images: torch.Tensor, labels: torch.Tensor, augment: Embed) -> Mined:
    embeddings = embed(images)
    return embeddings, labels, miners.BatchHardMiner()(embeddings, labels)


MINING: dict[str, Callable[[Embed, torch.Tensor, torch.Tensor, Embed], Mined]] = {
    "random": mine_random,
    "augmented": mine_augmented,
    "batch_hard": mine_batch_hard,
}


def check_mining(name: str) -> str:
    if name not in MINING:
        raise ValueError(f"triplet/mining={name!r} is not known; accepted: {', '.join(MINING)}.")
    return name


def mine(strategy: str, embed: Embed, images: torch.Tensor, labels: torch.Tensor, augment: Embed) -> Mined:
    """Triplets of one batch under `strategy` (a name of MINING)."""
    return MINING[check_mining(strategy)](embed, images, labels, augment)


@functools.cache
def triplet_loss(margin: float) -> pml_losses.TripletMarginLoss:
    """max(0, d(a, p) - d(a, n) + margin) with Euclidean d, the mean over all given triplets."""
    return pml_losses.TripletMarginLoss(margin=margin, reducer=reducers.MeanReducer())
