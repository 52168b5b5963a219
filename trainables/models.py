"""Model factories (timm backbones, medtune_cnn, "hf:" transformers checkpoints, smp segmentation models),
local pretrained weights, frozen layers, and the cheap up-front checks the driver runs on every model.

"Frozen layers" means the same for every model: the parameters are grouped in the order of timm's
group_matcher(coarse=True) — group 0 the stem / embeddings, then one group per block or stage in order —
and model/frozen_layers=N freezes the first N groups; a classifier's head is never frozen. For a ViT with
12 blocks (DINOv2, BEiTv2; timm or "hf:") the groups are stem, blocks 0-11, head, so "the first 8 encoder
layers frozen" (study A.2) is model/frozen_layers=9: the stem plus 8 blocks. count_groups(cfg) gives the
upper bound of model/frozen_layers for the model a config names.
"""
from __future__ import annotations

import difflib
import functools
import re
from pathlib import Path
from typing import Callable

import segmentation_models_pytorch as smp
import timm
import torch
from timm.models import (PretrainedCfg, adapt_input_conv, get_pretrained_cfg, group_parameters, load_state_dict,
                         split_model_name_tag)
from timm.models._manipulate import group_with_matcher
from torch import nn

from trainables.backbones import create_hf_classifier, hf_classifier_from_config, hf_config
from trainables.registry import get_trainable
from trainables.weights import resolve_weights, weights_config

HF_PREFIX = "hf:"


def _suggest(name: str, options: list[str]) -> str:
    close = difflib.get_close_matches(name, options, n=5, cutoff=0.5)
    return f" Did you mean one of: {', '.join(close)}?" if close else ""


def check_timm_name(name: str, key: str = "model/backbone") -> None:
    if not timm.is_model(name):
        accepted = "'hf:<local transformers checkpoint directory>' or " if key.endswith("backbone") else ""
        raise ValueError(
            f"Unknown timm model {name!r} in {key}; use {accepted}any name from timm.list_models() (which "
            f"includes 'medtune_cnn'; tests use the tiny 'test_*' models).{_suggest(name, timm.list_models())}"
        )


def check_backbone(backbone: str, weights: str = "", key: str = "model/backbone") -> None:
    """model/backbone (or gate/backbone) with its model/pretrained: names, directories and files only."""
    if backbone.startswith(HF_PREFIX):
        if weights:
            raise ValueError(f"model/pretrained={weights!r} must be empty with model/backbone={backbone!r}: an "
                             "'hf:' backbone's weights are the checkpoint in its directory.")
        hf_config(backbone)
        return
    check_timm_name(backbone, key)
    if weights:
        _check_architecture(backbone, weights, resolve_weights(weights))


def _check_architecture(name: str, spec: str, path: Path, key: str = "model/backbone", prefix: str = "") -> None:
    """Weights saved with a timm config.json (save_pretrained, timm's hub repos) match timm model `name`."""
    saved = (weights_config(path) or {}).get("architecture")
    if saved and saved != split_model_name_tag(name)[0]:
        raise ValueError(f"model/pretrained={spec!r} holds weights of timm model {saved!r} (its config.json), "
                         f"but {key} is {prefix + name!r}; use {key}={prefix + saved!r} or other weights.")


def create_classifier(cfg: dict, num_classes: int) -> nn.Module:
    """The classifier model/backbone names with a fresh head of num_classes outputs.

    model/backbone: any timm name (including "medtune_cnn") or "hf:<dir>" (a transformers checkpoint,
    see trainables.backbones.HFClassifier). model/pretrained (timm only): empty for random weights, or a
    local weights file, save_pretrained directory or "hf-hub:<id>" in the local HF cache
    (trainables.weights.resolve_weights). The checkpoint's head is kept when it has num_classes outputs;
    any other tensor that does not fit the model is an error, except the stem's input channels, which
    timm adapts (a 3-channel stem is summed for 1-channel input, and the reverse repeated), and the
    position embeddings of fixed-size models, built for data/image_size and resampled by timm.
    """
    backbone, weights = cfg["model/backbone"], cfg["model/pretrained"]
    check_backbone(backbone, weights)
    kwargs = dict(in_chans=cfg["data/channels"], drop_rate=cfg["model/drop_rate"])
    if backbone.startswith(HF_PREFIX):
        return create_hf_classifier(backbone, num_classes, **kwargs)
    if (get_pretrained_cfg(backbone) or PretrainedCfg()).fixed_input_size:  # ViT, BEiT, Swin: position
        kwargs["img_size"] = cfg["data/image_size"]  # embeddings for the trial's size (timm resamples weights)
    if not weights:
        return timm.create_model(backbone, num_classes=num_classes, **kwargs)
    return _timm_with_weights(backbone, weights, num_classes, kwargs)


def _first(names: str | tuple | None) -> str:
    """The first of a pretrained cfg's module names (classifier, first_conv), which may be a tuple."""
    return names if isinstance(names, str) else (names or ("",))[0]


def _timm_with_weights(name: str, spec: str, num_classes: int, kwargs: dict) -> nn.Module:
    """Build with the checkpoint's own head size so timm loads it strictly, then reset the head if needed."""
    path = resolve_weights(spec)
    state, default = load_state_dict(str(path)), get_pretrained_cfg(name) or PretrainedCfg()
    head = state.get(f"{_first(default.classifier)}.weight")
    source_classes = head.shape[0] if head is not None else 0
    overlay = {"file": str(path), "num_classes": source_classes}
    stem = state.get(f"{_first(default.first_conv)}.weight")
    if stem is not None and stem.ndim == 4:  # the checkpoint's input channels, for timm's stem adaptation
        overlay["input_size"] = (stem.shape[1], *default.input_size[1:])
    del state  # timm reads the file again, applying the model's own checkpoint filter
    try:
        model = timm.create_model(name, pretrained=True, pretrained_cfg_overlay=overlay,
                                  **{**kwargs, "num_classes": source_classes})
    except (RuntimeError, KeyError) as err:  # strict loading: missing, unexpected or misshapen tensors
        raise ValueError(f"model/pretrained={spec!r} ({path}) does not fit timm model {name!r}: "
                         f"{' '.join(str(err).split())[:400]}") from None
    if source_classes != num_classes:
        model.reset_classifier(num_classes)
    return model


def check_segmenter_names(arch: str, encoder: str) -> None:
    if arch.lower() not in smp.MODEL_ARCHITECTURES_MAPPING:
        raise ValueError(
            f"Unknown segmentation architecture {arch!r}; accepted: "
            f"{', '.join(smp.MODEL_ARCHITECTURES_MAPPING)}."
        )
    if encoder.startswith("tu-"):
        check_timm_name(encoder[3:], "model/encoder")
    elif encoder not in smp.encoders.encoders:
        raise ValueError(
            f"Unknown smp encoder {encoder!r}; use one of smp's encoders or 'tu-<timm model>'."
            f"{_suggest(encoder, list(smp.encoders.encoders))}"
        )


def _build_segmenter(cfg: dict, num_classes: int | None) -> nn.Module:
    arch, encoder = cfg["model/arch"], cfg["model/encoder"]
    check_segmenter_names(arch, encoder)
    aux = {"classes": num_classes, "dropout": 0.0} if num_classes else None
    try:
        return smp.create_model(arch, encoder_name=encoder, encoder_weights=None,
                                in_channels=cfg["data/channels"], classes=1, aux_params=aux)
    except (ValueError, AttributeError, KeyError, TypeError) as err:  # e.g. DPT with a non-timm encoder,
        # or a 'tu-' timm model without the feature pyramid smp needs (ViTs, medtune_cnn)
        raise ValueError(f"model/arch={arch!r} with model/encoder={encoder!r} cannot be built: {err}") from None


def create_segmenter(cfg: dict, num_classes: int | None = None) -> nn.Module:
    """An smp model for a binary mask; with num_classes, plus smp's aux_params classification head."""
    model = _build_segmenter(cfg, num_classes)
    if cfg["model/pretrained"]:
        load_encoder_weights(model.encoder, cfg["model/encoder"], cfg["model/pretrained"])
    return model


def _timm_name(feature_name: str) -> str:
    """timm's feature extractor flattens 'stages.0' into 'stages_0'; map it back."""
    return re.sub(r"^([A-Za-z]\w*?)_(\d+)(?=\.|$)", r"\1.\2", feature_name)


def check_encoder_weights(encoder_name: str, weights: str) -> Path:
    """The file model/pretrained names for an smp encoder; a timm config.json beside it must name the same model."""
    path = resolve_weights(weights)
    if encoder_name.startswith("tu-"):
        _check_architecture(encoder_name[3:], weights, path, "model/encoder", "tu-")
    return path


def load_encoder_weights(encoder: nn.Module, encoder_name: str, weights: str) -> None:
    """Load local weights (a timm model's for 'tu-' encoders, else the encoder's own) into an smp encoder.

    `weights` is resolved like model/pretrained (file, directory, "hf-hub:<id>"); a 3-channel stem is
    adapted to a 1-channel encoder (and back) as timm does.
    """
    path = check_encoder_weights(encoder_name, weights)
    state = load_state_dict(str(path))  # .pth/.bin or .safetensors; unwraps 'state_dict'/'model' entries
    timm_encoder = encoder_name.startswith("tu-")
    target = encoder.model if timm_encoder else encoder
    own = target.state_dict()
    names = {(_timm_name(k) if timm_encoder else k): k for k in own}
    matched = {names[k]: v for k, v in state.items() if k in names}
    missing = sorted(set(own) - set(matched))
    if missing:
        raise ValueError(
            f"Weights {weights!r} do not fit encoder {encoder_name!r}: {len(missing)} of its "
            f"tensors are missing from the file (e.g. {', '.join(missing[:3])})."
        )
    stem = next(k for k, v in own.items() if v.ndim == 4)
    if matched[stem].shape[1] != own[stem].shape[1]:
        matched[stem] = adapt_input_conv(own[stem].shape[1], matched[stem])
    try:
        target.load_state_dict(matched)
    except RuntimeError as err:
        raise ValueError(f"Weights {weights!r} do not fit encoder {encoder_name!r}: "
                         f"{' '.join(str(err).split())[:400]}") from None


def _group_matcher(model: nn.Module):
    try:
        return model.group_matcher(coarse=True)
    except (AssertionError, NotImplementedError):  # a few timm models (RDNet) only group block by block
        return model.group_matcher(coarse=False)


@functools.lru_cache(maxsize=64)
def _timm_matcher(name: str):
    with torch.device("meta"):
        return _group_matcher(timm.create_model(name, pretrained=False))


def layer_groups(model: nn.Module, timm_name: str | None = None) -> list[list[str]]:
    """Parameter names grouped in the order of timm's group_matcher(coarse=True): stem, then blocks.

    For a timm model (medtune_cnn and the "hf:" wrapper included) its own matcher is used (the fine one
    for the few without a coarse one); for an smp 'tu-' encoder the matcher of the timm model it wraps;
    for any other model (smp's own encoders, the few timm models without a matcher) each top-level child
    is a group, the leaf modules before the first container (conv1, bn1, ...) forming the stem.
    """
    if hasattr(model, "group_matcher"):
        return list(group_parameters(model, _group_matcher(model)).values())
    if timm_name:
        matcher = _timm_matcher(timm_name)
        timm_names = {_timm_name(n): n for n, _ in model.named_parameters()}
        grouped = group_with_matcher(((n, None) for n in timm_names), matcher)
        return [[timm_names[n] for n in g] for g in grouped.values()]
    groups: list[list[str]] = []
    stem: list[str] = []
    for child_name, child in model.named_children():
        names = [f"{child_name}.{n}" for n, _ in child.named_parameters()]
        if not names:
            continue
        if not groups and not list(child.children()):
            stem += names
            continue
        if stem:
            groups.append(stem)
            stem = []
        groups.append(names)
    return groups + ([stem] if stem else [])


def classifier_groups(model: nn.Module) -> list[list[str]]:
    """The freezable groups of a classifier: all but the last, which holds the head (and final norms)."""
    return layer_groups(model)[:-1]


def encoder_groups(model: nn.Module, encoder_name: str) -> list[list[str]]:
    """The freezable groups of an smp model's encoder, as names within the whole smp model."""
    timm_encoder = encoder_name.startswith("tu-")
    groups = layer_groups(model.encoder.model if timm_encoder else model.encoder,
                          encoder_name[3:] if timm_encoder else None)
    prefix = "encoder.model." if timm_encoder else "encoder."
    return [[f"{prefix}{n}" for n in g] for g in groups]


def check_frozen_range(n: int, groups: int, what: str) -> None:
    if not 0 <= n <= groups:
        raise ValueError(
            f"model/frozen_layers={n} is out of range for {what}: it has {groups} freezable "
            f"groups (stem, then blocks or stages), so accepted values are 0 to {groups}."
        )


def freeze_first(model: nn.Module, groups: list[list[str]], n: int, what: str) -> None:
    """Disable gradients for the parameters of the first n groups."""
    check_frozen_range(n, len(groups), what)
    frozen = {name for group in groups[:n] for name in group}
    for name, param in model.named_parameters():
        if name in frozen:
            param.requires_grad_(False)


def frozen_norms(model: nn.Module) -> list[nn.Module]:
    """The normalisation layers with running statistics (BatchNorm, InstanceNorm) in frozen parts: those
    whose parameters (for a layer without any, its parent's) all have requires_grad cleared."""
    layers = []
    for parent in model.modules():
        for child in parent.children():
            if isinstance(child, nn.modules.batchnorm._NormBase) and child.track_running_stats:
                params = list(child.parameters()) or list(parent.parameters())
                if params and not any(p.requires_grad for p in params):
                    layers.append(child)
    return layers


def train_mode(model: nn.Module) -> nn.Module:
    """model.train(), with the normalisation layers of frozen parts back in eval mode: their running
    statistics stay fixed (frozen is frozen). Use it wherever a model is put in training mode.

    Frozen parts also record no autograd state, without a no_grad block: the frozen groups are the first
    groups of the computation, and neither their parameters nor their input (the images) require
    gradients, so autograd builds no graph through them and keeps none of their activations.
    """
    model.train()
    for layer in frozen_norms(model):
        layer.eval()
    return model


def compile_training(model: nn.Module, **options) -> nn.Module:
    """train/compile: from now on, model's forward runs compiled by torch.compile(**options) (default: the
    inductor backend, compiled at the first training step) while the model trains (model.training with
    gradients on), and as it is otherwise (validation, BatchNorm re-estimation, the test split, Grad-CAM):
    fewer graphs to compile, and no Grad-CAM hooks through a compiled graph.

    The module is not wrapped (torch.compile(model) would be): state_dict, load_state_dict, parameters and
    submodules are the plain model's, so a checkpoint's keys have no "_orig_mod." prefix and load into an
    uncompiled model. Only forward is compiled: a loss calling another method (triplet's embed in phase 2)
    runs it eagerly. Returns model."""
    eager = model.forward
    compiled = torch.compile(eager, **options)

    def forward(*args, **kwargs):
        return (compiled if model.training and torch.is_grad_enabled() else eager)(*args, **kwargs)

    model.forward = forward
    return model


def freeze_classifier(model: nn.Module, cfg: dict) -> None:
    """Freeze the first model/frozen_layers groups of a create_classifier model; its head is never frozen."""
    freeze_first(model, classifier_groups(model), cfg["model/frozen_layers"], cfg["model/backbone"])


def freeze_encoder(model: nn.Module, cfg: dict) -> None:
    """Freeze the first model/frozen_layers groups of an smp model's encoder."""
    name = cfg["model/encoder"]
    freeze_first(model, encoder_groups(model, name), cfg["model/frozen_layers"], name)


def _on_meta(build: Callable[[], nn.Module]) -> nn.Module | None:
    """build() on the meta device (no memory, no weight init); None for the few models whose constructor
    needs real tensors (e.g. smp's mit_* encoders), which would be slow to build for real."""
    try:
        with torch.device("meta"):
            return build()
    except (RuntimeError, NotImplementedError):
        return None


@functools.lru_cache(maxsize=256)
def _count_classifier_groups(backbone: str) -> int | None:
    if backbone.startswith(HF_PREFIX):
        model = _on_meta(lambda: hf_classifier_from_config(backbone, num_classes=1, in_chans=1))
    else:
        check_timm_name(backbone)
        model = _on_meta(lambda: timm.create_model(backbone, num_classes=1))
    return None if model is None else len(classifier_groups(model))


@functools.lru_cache(maxsize=256)
def _count_encoder_groups(arch: str, encoder: str) -> int | None:
    cfg = {"model/arch": arch, "model/encoder": encoder, "data/channels": 3}
    model = _on_meta(lambda: _build_segmenter(cfg, None))
    return None if model is None else len(encoder_groups(model, encoder))


def count_groups(cfg: dict) -> int | None:
    """How many groups model/frozen_layers can freeze (its accepted range is 0 to this) for the model
    that cfg names: the smp encoder of model/arch + model/encoder when cfg has model/arch, else the
    classifier model/backbone. Built on the meta device, so quick even for large models; None for the
    few models that cannot be built there."""
    if "model/arch" in cfg:
        return _count_encoder_groups(cfg["model/arch"], cfg["model/encoder"])
    return _count_classifier_groups(cfg["model/backbone"])


def _check_frozen_count(cfg: dict, what: str) -> None:
    groups = count_groups(cfg)
    if groups is not None:
        check_frozen_range(cfg["model/frozen_layers"], groups, what)


@functools.lru_cache(maxsize=256)
def check_segmenter_input(arch: str, encoder: str, channels: int, image_size: int) -> None:
    """A forward pass on the meta device at data/image_size: some architectures need larger inputs
    (e.g. PAN at least 128 px) or sizes divisible by the encoder's stride."""
    model = _on_meta(lambda: _build_segmenter({"model/arch": arch, "model/encoder": encoder,
                                                "data/channels": channels}, None))
    if model is None:
        return
    try:
        with torch.device("meta"), torch.no_grad():
            model.eval()(torch.empty(1, channels, image_size, image_size))
    except (RuntimeError, ValueError) as err:
        raise ValueError(f"model/arch={arch!r} with model/encoder={encoder!r} cannot take "
                         f"data/image_size={image_size}: {str(err).splitlines()[0].rstrip('.')}. Choose a larger or "
                         "differently divisible size, or another architecture.") from None


def check_model_config(cfg: dict, trainable: str) -> None:
    """Check the models of one config before any trial starts, without loading weights or building
    models in memory: backbone / architecture / encoder names, "hf:" directories, the files that
    model/pretrained names, model/frozen_layers against the model's group count, and for a
    classifier-gated segmentation (gate/class set) gate/backbone. Missing keys take the trainable's
    defaults. Raises ValueError, or FileNotFoundError for missing files, naming the value."""
    cfg = {**get_trainable(trainable).defaults, **cfg}
    if "model/backbone" in cfg:
        check_backbone(cfg["model/backbone"], cfg["model/pretrained"])
        _check_frozen_count(cfg, cfg["model/backbone"])
    if "model/arch" in cfg:
        if cfg["model/pretrained"]:
            check_encoder_weights(cfg["model/encoder"], cfg["model/pretrained"])
        _check_frozen_count(cfg, cfg["model/encoder"])
        check_segmenter_input(cfg["model/arch"], cfg["model/encoder"], cfg["data/channels"], cfg["data/image_size"])
    if trainable == "segmentation" and cfg.get("gate/class"):
        check_backbone(cfg["gate/backbone"], key="gate/backbone")
