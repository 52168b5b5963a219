"""Three-phase training of COVID-CT (studies D.2-D.4): supervised, triplet embedding, classifier.

One trial, train/epochs epochs in all, counted 1.. across the phases:
  1. triplet/supervised_epochs: the timm backbone and its linear head, cross-entropy, lr optim/lr,
     the first model/frozen_layers groups frozen. Predictor: the head.
  2. triplet/embedding_epochs: the backbone without its head plus three linear layers giving
     L2-normalised triplet/embedding_dim embeddings, triplet loss (margin triplet/margin, triplets
     by triplet/mining, see trainables.mining), lr triplet/embedding_lr, the same groups frozen.
     Predictor: k-NN (triplet/knn_k) against the training split's embeddings.
  3. the remaining epochs: a linear classifier on the embeddings, lr triplet/classifier_lr; with
     triplet/unfrozen_layers = N > 0 the last N backbone groups and the embedding layers above
     them train with it, with N = 0 the classifier alone. Predictor: the classifier.
Every epoch reports the current predictor's validation metrics, "phase", and val/knn_accuracy of the
current embedding space (phase 1: the backbone's pooled features). val/loss is the validation loss
of the phase's objective: cross-entropy in phases 1 and 3, the mean triplet loss over all triplets
within each validation batch in phase 2. Each phase has its own optimizer (optim/name) and schedule
(trainables.optim) over the parameters it trains, with its learning rate and length.
"""
from __future__ import annotations

import numpy as np
import torch
from sklearn.metrics import accuracy_score
from sklearn.neighbors import KNeighborsClassifier
from torch import nn

from trainables.augment import strong_augmentation
from trainables.loop import Phase, Task, fit
from trainables.trial_data import Data
from trainables.losses import class_loss
from trainables.metrics import Evaluation, Outputs, classification_metrics, classification_score, probabilities
from trainables.mining import check_mining, mine, triplet_loss
from trainables.models import create_classifier, freeze_classifier, layer_groups


def phase_epochs(cfg: dict) -> tuple[int, int, int]:
    """Epochs of the supervised, embedding and classifier phases; an impossible split is an error."""
    supervised, embedding, total = cfg["triplet/supervised_epochs"], cfg["triplet/embedding_epochs"], cfg["train/epochs"]
    if supervised < 0 or embedding < 0 or supervised + embedding >= total:
        raise ValueError(
            f"triplet/supervised_epochs={supervised} and triplet/embedding_epochs={embedding} do not fit "
            f"train/epochs={total}: both must be 0 or more and their sum below train/epochs, so that the "
            f"classifier phase gets the remaining epochs (at least one)."
        )
    return supervised, embedding, total - supervised - embedding


def phases(cfg: dict) -> tuple[Phase, ...]:
    """The three phases with their lengths and learning rates."""
    lrs = (cfg["optim/lr"], cfg["triplet/embedding_lr"], cfg["triplet/classifier_lr"])
    return tuple(Phase(number, epochs, lr) for number, (epochs, lr) in enumerate(zip(phase_epochs(cfg), lrs), 1))


def check(cfg: dict) -> None:
    """The mining strategy and the phase split (the driver's preflight calls this too): ValueError naming the value."""
    check_mining(cfg["triplet/mining"])
    phase_epochs(cfg)


class EmbeddingNet(nn.Module):
    """A timm classifier, an L2-normalised embedding of its pooled features, a classifier on that.

    `phase` (set by set_phase) decides what forward gives; `augment` strongly augments a normalised batch
    (the positives of augmented mining)."""

    def __init__(self, backbone: nn.Module, embedding_dim: int, num_classes: int, augment=None):
        super().__init__()
        width = backbone.head_hidden_size
        self.backbone = backbone
        self.projection = nn.Sequential(nn.Linear(width, embedding_dim), nn.ReLU(),
                                        nn.Linear(embedding_dim, embedding_dim), nn.ReLU(),
                                        nn.Linear(embedding_dim, embedding_dim))
        self.classifier = nn.Linear(embedding_dim, num_classes)
        self.phase, self.augment = 1, augment

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        features = self.backbone.forward_head(self.backbone.forward_features(images), pre_logits=True)
        return nn.functional.normalize(self.projection(features), dim=1)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(vectors of the phase's embedding space, class logits or None in phase 2)."""
        if self.phase == 1:
            features = self.backbone.forward_features(images)
            return self.backbone.forward_head(features, pre_logits=True), self.backbone.forward_head(features)
        embeddings = self.embed(images)
        return embeddings, self.classifier(embeddings) if self.phase == 3 else None


def feature_groups(backbone: nn.Module) -> list[list[str]]:
    """The backbone's timm groups (stem, blocks...) without its classifier; a final norm joins the last block."""
    *groups, head = layer_groups(backbone)
    classifier = {id(p) for p in backbone.get_classifier().parameters()}
    params = dict(backbone.named_parameters())
    return groups[:-1] + [groups[-1] + [n for n in head if id(params[n]) not in classifier]]


def set_phase(model: EmbeddingNet, phase: int, cfg: dict) -> None:
    """Enter `phase`: let exactly the parameters it trains require gradients."""
    model.phase = phase
    model.requires_grad_(False)
    if phase in (1, 2):
        model.backbone.requires_grad_(True)
        freeze_classifier(model.backbone, cfg)
    if phase == 2:
        model.backbone.get_classifier().requires_grad_(False)
        model.projection.requires_grad_(True)
    if phase == 3:
        model.classifier.requires_grad_(True)
        unfrozen = cfg["triplet/unfrozen_layers"]
        if unfrozen:
            model.projection.requires_grad_(True)
            names = {n for group in feature_groups(model.backbone)[-unfrozen:] for n in group}
            for name, param in model.backbone.named_parameters():
                param.requires_grad_(name in names)


def build(cfg: dict, data: Data) -> EmbeddingNet:
    if data.multilabel:
        raise ValueError(f"The triplet trainable needs single-label data, but data/layout={cfg['data/layout']!r} "
                         f"gives multi-label annotations; use a classification layout such as image_folder.")
    model = EmbeddingNet(create_classifier(cfg, len(data.classes)), cfg["triplet/embedding_dim"], len(data.classes),
                         strong_augmentation(cfg["data/image_size"], data.mean, data.std))
    check_unfrozen(model, cfg)
    return model


def check_unfrozen(model: EmbeddingNet, cfg: dict) -> None:
    groups = len(feature_groups(model.backbone))
    if not 0 <= cfg["triplet/unfrozen_layers"] <= groups:
        raise ValueError(f"triplet/unfrozen_layers={cfg['triplet/unfrozen_layers']} is out of range for "
                         f"{cfg['model/backbone']}: it has {groups} backbone groups (stem, then blocks), "
                         f"so accepted values are 0 to {groups}.")


def loss(model: EmbeddingNet, batch: tuple, cfg: dict) -> torch.Tensor:
    """The phase's training loss of one batch: triplet loss in phase 2, else cross-entropy."""
    images, labels = batch
    if model.phase == 2:
        return triplet_loss(cfg["triplet/margin"])(*mine(cfg["triplet/mining"], model.embed, images, labels,
                                                          model.augment))
    return class_loss(model(images)[1], labels)


def encode(model: EmbeddingNet, batches, cfg: dict, device) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, float]:
    """(embedding-space vectors, labels, class probabilities or None, mean loss of the phase) over batches."""
    vectors, labels, probs, loss_sum = [], [], [], 0.0
    for images, y in batches:
        images, y = images.to(device), y.to(device)
        v, logits = model(images)
        loss = triplet_loss(cfg["triplet/margin"])(v, y) if logits is None else class_loss(logits, y)
        loss_sum += loss.item() * len(y)
        vectors.append(v.cpu().numpy())
        labels.append(y.cpu().numpy())
        if logits is not None:
            probs.append(probabilities(logits, False))
    labels = np.concatenate(labels)
    return np.concatenate(vectors), labels, np.concatenate(probs) if probs else None, loss_sum / len(labels)


def predict(model: EmbeddingNet, batches, cfg: dict, data: Data, device, distances: bool = False) -> Outputs:
    """The classifier's outputs (phase 3, the final predictor; the test split is scored with it)."""
    _, labels, probs, loss = encode(model, batches, cfg, device)
    return Outputs(loss=loss, y_true=labels, probs=probs)


class PhaseEvaluation(Evaluation):
    """The current predictor's validation metrics and the k-NN accuracy of the current embedding space."""

    def __call__(self, model: EmbeddingNet, loader, cfg: dict, data: Data, device) -> dict:
        train_vectors, train_labels, _, _ = encode(model, loader.ordered("train_plain"), cfg, device)
        vectors, labels, probs, loss = encode(model, loader.ordered("val"), cfg, device)
        knn = KNeighborsClassifier(n_neighbors=min(cfg["triplet/knn_k"], len(train_labels)))
        knn.fit(train_vectors, train_labels)
        if probs is None:
            probs = np.zeros((len(labels), len(data.classes)))
            probs[:, knn.classes_] = knn.predict_proba(vectors)
        return {**classification_metrics(labels, probs, data.classes), "val/loss": loss,
                "val/knn_accuracy": float(accuracy_score(labels, knn.predict(vectors)))}


TASK = Task(build=build, loss=loss, evaluate=PhaseEvaluation(predict, classification_score), masks=False,
            check=check, phases=phases, enter=set_phase)


def train(cfg: dict) -> None:
    """Run the three phases, reporting metrics and a checkpoint to Ray Tune every epoch."""
    fit(cfg, TASK)
