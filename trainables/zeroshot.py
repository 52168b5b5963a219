"""CLIP without training (study A.3): zero-shot with a searchable prompt set, or a linear probe.

clip/mode = "zeroshot": each class's prompts (clip/prompt_set of clip/prompt_sets, see
trainables/prompts.py) are encoded by the text tower and averaged into one class embedding
(open_clip's build_zero_shot_classifier); an image's logits are its scaled cosine similarities
to them. Zero-shot needs single-label data: CLIP's softmax over classes has no threshold for
"several findings at once", so multi-label data is a ValueError pointing at the linear probe.

clip/mode = "linear_probe": frozen image features of the training split, standardised, then
scikit-learn's LogisticRegression (C = clip/probe_c; one per class for multi-label data),
scored on the validation split.

Nothing trains here, so the model's BatchNorm statistics (ResNet CLIP towers) are its checkpoint's
own and are used as they are (train/bn_reestimate_images does not apply).

Nothing here depends on epochs: the result is computed once and reported for each of the
train/epochs epochs (space files set train/epochs=1), so schedulers and the tracker see a
complete trial; the checkpoint holds the metrics, so a restarted trial reports the same ones.
Speed: perf/train_images_per_s counts the images encoded (validation images for zero-shot,
training + validation images for the probe) over the seconds spent encoding them (loader waits
excluded), plus the text encoding (zero-shot) or the probe fit (linear probe);
perf/loader_images_per_s is the loader's throughput as in trainables.loading.
"""
from __future__ import annotations

import time
from typing import Callable, Iterable

import numpy as np
import torch
from open_clip import build_zero_shot_classifier
from sklearn.linear_model import LogisticRegression
from sklearn.multiclass import OneVsRestClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from torch import nn
from torchvision.transforms import v2

from trainables.clip_models import Clip, check_clip, load_clip
from trainables.loading import TrialLoader
from trainables.loop import Task, fit
from trainables.speed import Speed
from trainables.trial_data import Data
from trainables.metrics import Evaluation, Outputs, classification_score
from trainables.prompts import class_prompts, select_prompt_set

Head = Callable[[torch.Tensor], np.ndarray]  # image features -> class probabilities
Fitted = tuple[Head, Outputs, int, float]  # (head, validation outputs, images encoded, seconds)


class ClipClassifier(nn.Module):
    """A frozen CLIP model and the head clip/mode fits on its image features (set by the evaluation)."""

    def __init__(self, clip: Clip):
        super().__init__()
        self.model, self.clip = clip.model, clip  # the model registered, so that it moves with .to(device)
        self.head: Head | None = None


def build(cfg: dict, data: Data) -> ClipClassifier:
    return ClipClassifier(load_clip(cfg, torch.device("cpu")))


def clip_transform(clip: Clip) -> v2.Compose:
    """Decoded images through the model's own preprocessing (its size, mean and std)."""
    return v2.Compose([v2.RGB(), v2.ToDtype(torch.float32, scale=True), clip.preprocess])


@torch.no_grad()
def image_features(clip: Clip, batches: Iterable, device: torch.device) -> tuple[torch.Tensor, np.ndarray, float]:
    """L2-normalised image embeddings (N, D) on `device`, the labels in order, and the seconds spent
    encoding them (loader waits excluded)."""
    features, labels, seconds = [], [], 0.0
    for images, y in batches:
        started = time.perf_counter()
        features.append(clip.model.encode_image(images.to(device, non_blocking=True), normalize=True))
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        seconds += time.perf_counter() - started
        labels.append(y.numpy())
    return torch.cat(features), np.concatenate(labels), seconds


def _fixed(prompt: str):
    """A 'template' for build_zero_shot_classifier that ignores the class name: prompts come filled in."""
    return lambda _name: prompt


@torch.no_grad()
def text_classifier(clip: Clip, prompts: list[list[str]], device: torch.device) -> torch.Tensor:
    """(D, C): per class, the normalised mean of its prompts' normalised text embeddings."""
    return torch.cat([build_zero_shot_classifier(clip.model, clip.tokenizer, [""], [_fixed(p) for p in class_list],
                                                 num_classes_per_batch=None, device=device)
                      for class_list in prompts], dim=1)


def zero_shot_logits(clip: Clip, features: torch.Tensor, classifier: torch.Tensor) -> torch.Tensor:
    """CLIP's image-text logits: cosine similarity times the learned scale (plus its bias, for SigLIP)."""
    logits = clip.model.logit_scale.exp() * features @ classifier
    return logits + clip.model.logit_bias if clip.model.logit_bias is not None else logits


def outputs(y_true: np.ndarray, probs: np.ndarray) -> Outputs:
    """The predictions with their loss: the mean cross-entropy of the probabilities (binary per class
    for multi-label data)."""
    p, y = torch.as_tensor(probs, dtype=torch.float64), torch.as_tensor(y_true)
    if y_true.ndim == 2:
        loss = torch.nn.functional.binary_cross_entropy(p, y.double())
    else:
        loss = torch.nn.functional.nll_loss(p.clamp_min(1e-12).log(), y.long())
    return Outputs(loss=loss.item(), y_true=y_true, probs=probs)


def fit_probe(train_x: np.ndarray, train_y: np.ndarray, c: float, multilabel: bool, num_classes: int):
    """Standardised features -> logistic regression; returns predict(x) -> (N, num_classes) probabilities."""
    logistic = LogisticRegression(C=c, max_iter=5000)
    probe = make_pipeline(StandardScaler(), OneVsRestClassifier(logistic) if multilabel else logistic)
    probe.fit(train_x, train_y.astype(int))

    def predict(x: np.ndarray) -> np.ndarray:
        if multilabel:
            return probe.predict_proba(x)
        probs = np.zeros((len(x), num_classes))
        probs[:, probe.classes_] = probe.predict_proba(x)  # classes absent from a k-shot split get 0
        return probs

    return predict


def zero_shot(clip: Clip, cfg: dict, data: Data, loader: TrialLoader, device: torch.device) -> Fitted:
    """Zero-shot classification with the prompt set: (head, validation Outputs, images encoded, seconds)."""
    if data.multilabel:
        raise ValueError("clip/mode='zeroshot' needs single-label data, but this data set is multi-label; "
                         "use clip/mode='linear_probe' for it.")
    prompts = class_prompts(select_prompt_set(cfg["clip/prompt_sets"], cfg["clip/prompt_set"]), data.classes,
                            cfg["clip/prompt_set"])
    t0 = time.perf_counter()
    classifier = text_classifier(clip, prompts, device)
    text_s = time.perf_counter() - t0

    def classify(features: torch.Tensor) -> np.ndarray:
        return zero_shot_logits(clip, features, classifier).softmax(1).cpu().numpy()

    features, y_true, encode_s = image_features(clip, loader.ordered("val"), device)
    t0 = time.perf_counter()
    out = outputs(y_true, classify(features))
    return classify, out, len(y_true), text_s + encode_s + time.perf_counter() - t0


def linear_probe(clip: Clip, cfg: dict, data: Data, loader: TrialLoader, device: torch.device) -> Fitted:
    """A logistic-regression probe on frozen features of the training split: (head, validation Outputs, images
    encoded, seconds)."""
    train_x, train_y, train_s = image_features(clip, loader.ordered("train_plain"), device)
    val_x, y_true, val_s = image_features(clip, loader.ordered("val"), device)
    t0 = time.perf_counter()
    predict = fit_probe(train_x.cpu().numpy(), train_y, cfg["clip/probe_c"], data.multilabel, len(data.classes))

    def classify(features: torch.Tensor) -> np.ndarray:
        return predict(features.cpu().numpy())

    out = outputs(y_true, classify(val_x))
    return classify, out, len(train_y) + len(y_true), train_s + val_s + time.perf_counter() - t0


MODES: dict[str, Callable[[Clip, dict, Data, TrialLoader, torch.device], Fitted]] = {
    "zeroshot": zero_shot,
    "linear_probe": linear_probe,
}


def predict(model: ClipClassifier, batches, cfg: dict, data: Data, device, distances: bool = False) -> Outputs:
    """The fitted head's outputs over batches (the test split is scored with it)."""
    features, y_true, _ = image_features(model.clip, batches, device)
    return outputs(y_true, model.head(features))


class ModeEvaluation(Evaluation):
    """Fit clip/mode's head, then its validation metrics and the speed metrics (see the module doc)."""

    def __call__(self, model: ClipClassifier, loader: TrialLoader, cfg: dict, data: Data, device) -> dict:
        model.head, out, seen, seconds = MODES[cfg["clip/mode"]](model.clip, cfg, data, loader, device)
        speed = Speed(step_rates=[seen / seconds], loader_images=loader.images, loader_s=loader.load_s,
                      train_total_s=seconds)
        return {**self.score(out, data, "val"), **speed.metrics(seconds, cfg["data/workers"], device)}


def check(cfg: dict) -> None:
    """Mode, prompt set and model source, checked before anything is loaded (the driver's preflight
    calls this too): ValueError, or FileNotFoundError for a missing checkpoint."""
    if cfg["clip/mode"] not in MODES:
        raise ValueError(f"clip/mode={cfg['clip/mode']!r} is not known; accepted: {', '.join(MODES)}.")
    if cfg["clip/mode"] == "zeroshot":
        select_prompt_set(cfg["clip/prompt_sets"], cfg["clip/prompt_set"])
    check_clip(cfg)


TASK = Task(build=build, loss=None, evaluate=ModeEvaluation(predict, classification_score), masks=False,
            check=check, transform=lambda model: clip_transform(model.clip))


def train(cfg: dict) -> None:
    """Report the same metrics for each of train/epochs epochs, computing them once (see the module doc)."""
    fit(cfg, TASK)
