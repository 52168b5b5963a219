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
within each validation batch in phase 2. Each phase has its own optimizer (optim/name) and schedule.
"""
from __future__ import annotations

import numpy as np
import torch
from sklearn.metrics import accuracy_score
from sklearn.neighbors import KNeighborsClassifier
from torch import nn

from trainables.classification import class_loss, probabilities, score
from trainables.loop import (Data, Speed, Task, epoch_metrics, flat_config, make_optimizer, make_schedule,
                             prepare_validation, report, restore, seed_everything, start_trial, train_epoch)
from trainables.evaluation import test_metrics
from trainables.metrics import Evaluation, Outputs, classification_metrics
from trainables.mining import check_mining, mine, strong_augmentation, triplet_loss
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


def phase_of(epoch: int, epochs: tuple[int, int, int]) -> int:
    return 1 if epoch <= epochs[0] else 2 if epoch <= epochs[0] + epochs[1] else 3


def check(cfg: dict) -> tuple[int, int, int]:
    """Mining strategy, k-NN k, embedding size and the phase split (the driver's preflight calls this
    too): ValueError naming the value; returns the phase epochs."""
    check_mining(cfg["triplet/mining"])
    for key in ("triplet/knn_k", "triplet/embedding_dim"):
        if cfg[key] < 1:
            raise ValueError(f"{key}={cfg[key]} must be a whole number of at least 1.")
    return phase_epochs(cfg)


class EmbeddingNet(nn.Module):
    """A timm classifier, an L2-normalised embedding of its pooled features, a classifier on that."""

    def __init__(self, backbone: nn.Module, embedding_dim: int, num_classes: int):
        super().__init__()
        width = backbone.head_hidden_size
        self.backbone = backbone
        self.projection = nn.Sequential(nn.Linear(width, embedding_dim), nn.ReLU(),
                                        nn.Linear(embedding_dim, embedding_dim), nn.ReLU(),
                                        nn.Linear(embedding_dim, embedding_dim))
        self.classifier = nn.Linear(embedding_dim, num_classes)

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        features = self.backbone.forward_head(self.backbone.forward_features(images), pre_logits=True)
        return nn.functional.normalize(self.projection(features), dim=1)

    def forward(self, images: torch.Tensor, phase: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(vectors of the phase's embedding space, class logits or None in phase 2)."""
        if phase == 1:
            features = self.backbone.forward_features(images)
            return self.backbone.forward_head(features, pre_logits=True), self.backbone.forward_head(features)
        embeddings = self.embed(images)
        return embeddings, self.classifier(embeddings) if phase == 3 else None


def feature_groups(backbone: nn.Module) -> list[list[str]]:
    """The backbone's timm groups (stem, blocks...) without its classifier; a final norm joins the last block."""
    *groups, head = layer_groups(backbone)
    classifier = {id(p) for p in backbone.get_classifier().parameters()}
    params = dict(backbone.named_parameters())
    return groups[:-1] + [groups[-1] + [n for n in head if id(params[n]) not in classifier]]


def set_phase(model: EmbeddingNet, phase: int, cfg: dict) -> None:
    """Let exactly the parameters the phase trains require gradients."""
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
    model = EmbeddingNet(create_classifier(cfg, len(data.classes)), cfg["triplet/embedding_dim"], len(data.classes))
    check_unfrozen(model, cfg)
    return model


def check_unfrozen(model: EmbeddingNet, cfg: dict) -> None:
    groups = len(feature_groups(model.backbone))
    if not 0 <= cfg["triplet/unfrozen_layers"] <= groups:
        raise ValueError(f"triplet/unfrozen_layers={cfg['triplet/unfrozen_layers']} is out of range for "
                         f"{cfg['model/backbone']}: it has {groups} backbone groups (stem, then blocks), "
                         f"so accepted values are 0 to {groups}.")


def phase_config(cfg: dict, phase: int, epochs: tuple[int, int, int]) -> dict:
    """cfg with the phase's learning rate and length, for the optimizer and schedule factories."""
    lr = {1: cfg["optim/lr"], 2: cfg["triplet/embedding_lr"], 3: cfg["triplet/classifier_lr"]}[phase]
    return {**cfg, "optim/lr": lr, "train/epochs": epochs[phase - 1]}


def phase_loss(phase: int, augment, triplet):
    """loss(model, batch, cfg) of one training batch in `phase`."""
    def loss(model: EmbeddingNet, batch: tuple, cfg: dict) -> torch.Tensor:
        images, labels = batch
        if phase == 2:
            return triplet(*mine(cfg["triplet/mining"], model.embed, images, labels, augment))
        return class_loss(model(images, phase)[1], labels)
    return loss


@torch.no_grad()
def encode(model: EmbeddingNet, phase: int, loader, device, triplet) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, float]:
    """(embedding-space vectors, labels, class probabilities or None, mean loss of the phase) over loader."""
    vectors, labels, probs, loss_sum = [], [], [], 0.0
    for images, y in loader:
        images, y = images.to(device), y.to(device)
        v, logits = model(images, phase)
        loss = triplet(v, y) if logits is None else class_loss(logits, y)
        loss_sum += loss.item() * len(y)
        vectors.append(v.cpu().numpy())
        labels.append(y.cpu().numpy())
        if logits is not None:
            probs.append(probabilities(logits, False))
    labels = np.concatenate(labels)
    return np.concatenate(vectors), labels, np.concatenate(probs) if probs else None, loss_sum / len(labels)


def evaluate(model: EmbeddingNet, phase: int, train_batches, val_batches, cfg: dict, data: Data, device, triplet) -> dict:
    """The current predictor's validation metrics and the k-NN accuracy of the current embedding space."""
    train_vectors, train_labels, _, _ = encode(model, phase, train_batches, device, triplet)
    vectors, labels, probs, loss = encode(model, phase, val_batches, device, triplet)
    knn = KNeighborsClassifier(n_neighbors=min(cfg["triplet/knn_k"], len(train_labels))).fit(train_vectors, train_labels)
    if probs is None:
        probs = np.zeros((len(labels), len(data.classes)))
        probs[:, knn.classes_] = knn.predict_proba(vectors)
    return {**classification_metrics(labels, probs, data.classes), "val/loss": loss,
            "val/knn_accuracy": float(accuracy_score(labels, knn.predict(vectors)))}


def predict_final(model: EmbeddingNet, loader, cfg: dict, data: Data, device, distances: bool = False) -> Outputs:
    """The final predictor's (phase 3, the classifier) outputs, for the test split."""
    _, labels, probs, loss = encode(model, 3, loader, device, triplet=None)
    return Outputs(loss=loss, y_true=labels, probs=probs)


# The final model as a Task for trainables.evaluation.test_metrics (only masks and evaluate are used).
FINAL = Task(build=build, loss=None, evaluate=Evaluation(predict_final, score), masks=False)


def train(config: dict) -> None:
    """Run the three phases, reporting metrics and a checkpoint to Ray Tune every epoch."""
    cfg = flat_config(config)
    epochs = check(cfg)
    device, data, loader = start_trial(cfg, masks=False)
    augment = strong_augmentation(cfg["data/image_size"], data.mean, data.std)
    triplet = triplet_loss(cfg["triplet/margin"])

    seed_everything(int(cfg["train/seed"]))
    model = build(cfg, data).to(device)
    start_epoch, speed = 0, Speed()
    if state := restore(device):
        model.load_state_dict(state["model"])
        start_epoch, speed = state["epoch"], Speed(**state["speed"])

    phase = 0
    for epoch in range(start_epoch + 1, cfg["train/epochs"] + 1):
        if phase_of(epoch, epochs) != phase:
            phase = phase_of(epoch, epochs)
            set_phase(model, phase, cfg)
            pcfg = phase_config(cfg, phase, epochs)
            optimizer = make_optimizer(pcfg, [p for p in model.parameters() if p.requires_grad])
            schedule = make_schedule(pcfg, optimizer)
            if state and state["phase"] == phase:  # resumed within the phase it was saved in
                optimizer.load_state_dict(state["optimizer"])
                schedule.load_state_dict(state["schedule"])
            loss_fn = phase_loss(phase, augment, triplet)
        train_loss, epoch_s = train_epoch(model, loader.epoch(epoch), loss_fn, optimizer, device, epoch, pcfg, speed)
        schedule.step()
        prepare_validation(model, lambda images: model(images, phase), loader, data, cfg, device)
        metrics = evaluate(model, phase, loader.ordered("train_plain"), loader.ordered("val"), cfg, data, device, triplet)
        metrics.update({"phase": phase, **epoch_metrics(epoch, train_loss, epoch_s, speed, data, cfg, device)})
        if epoch == cfg["train/epochs"] and cfg["eval/test"]:  # once, the final classifier on the test split
            metrics.update(test_metrics(FINAL, model, cfg, data, device))
        report(metrics, {"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                         "schedule": schedule.state_dict(), "phase": phase, "epoch": epoch, "speed": speed.state()})
