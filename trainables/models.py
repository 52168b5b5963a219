"""Model factories (timm backbones, smp segmentation models), local pretrained weights, frozen layers."""
from __future__ import annotations

import difflib
import os
import re

import segmentation_models_pytorch as smp
import timm
import torch
from timm.models import group_parameters, load_state_dict
from timm.models._manipulate import group_with_matcher
from torch import nn


def _suggest(name: str, options: list[str]) -> str:
    close = difflib.get_close_matches(name, options, n=5, cutoff=0.5)
    return f" Did you mean one of: {', '.join(close)}?" if close else ""


def check_timm_name(name: str) -> None:
    if not timm.is_model(name):
        raise ValueError(
            f"Unknown timm model {name!r}; use any name from timm.list_models() "
            f"(tests use the tiny 'test_*' models).{_suggest(name, timm.list_models())}"
        )


def check_weights_file(path: str) -> None:
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"Pretrained weights file {path!r} does not exist. Weights are loaded from local "
            "files only: download the model's checkpoint (e.g. the timm/Hugging Face "
            "'pytorch_model.bin' or '.safetensors' file) on a machine with network access, copy "
            "it here and set model/pretrained to its path, or leave model/pretrained empty for "
            "random initialisation."
        )


def create_classifier(cfg: dict, num_classes: int) -> nn.Module:
    """A timm model with a fresh head; weights from the local file in model/pretrained, if any."""
    name, weights = cfg["model/backbone"], cfg["model/pretrained"]
    check_timm_name(name)
    kwargs = dict(num_classes=num_classes, in_chans=cfg["data/channels"], drop_rate=cfg["model/drop_rate"])
    if not weights:
        return timm.create_model(name, pretrained=False, **kwargs)
    check_weights_file(weights)
    return timm.create_model(name, pretrained=True, pretrained_cfg_overlay={"file": weights}, **kwargs)


def create_segmenter(cfg: dict, num_classes: int | None = None) -> nn.Module:
    """An smp model for a binary mask; with num_classes, plus smp's aux_params classification head."""
    arch, encoder = cfg["model/arch"], cfg["model/encoder"]
    if arch.lower() not in smp.MODEL_ARCHITECTURES_MAPPING:
        raise ValueError(
            f"Unknown segmentation architecture {arch!r}; accepted: "
            f"{', '.join(smp.MODEL_ARCHITECTURES_MAPPING)}."
        )
    if encoder.startswith("tu-"):
        check_timm_name(encoder[3:])
    elif encoder not in smp.encoders.encoders:
        raise ValueError(
            f"Unknown smp encoder {encoder!r}; use one of smp's encoders or 'tu-<timm model>'."
            f"{_suggest(encoder, list(smp.encoders.encoders))}"
        )
    aux = {"classes": num_classes, "dropout": 0.0} if num_classes else None
    model = smp.create_model(arch, encoder_name=encoder, encoder_weights=None,
                             in_channels=cfg["data/channels"], classes=1, aux_params=aux)
    if cfg["model/pretrained"]:
        load_encoder_weights(model.encoder, encoder, cfg["model/pretrained"])
    return model


def _timm_name(feature_name: str) -> str:
    """timm's feature extractor flattens 'stages.0' into 'stages_0'; map it back."""
    return re.sub(r"^([A-Za-z]\w*?)_(\d+)(?=\.|$)", r"\1.\2", feature_name)


def load_encoder_weights(encoder: nn.Module, encoder_name: str, path: str) -> None:
    """Load a local state dict (a timm model's for 'tu-' encoders, else the encoder's own)."""
    check_weights_file(path)
    state = load_state_dict(path)  # .pth/.bin or .safetensors; unwraps 'state_dict'/'model' entries
    target = encoder.model if encoder_name.startswith("tu-") else encoder
    names = {(_timm_name(k) if encoder_name.startswith("tu-") else k): k for k in target.state_dict()}
    matched = {names[k]: v for k, v in state.items() if k in names}
    missing = sorted(set(names.values()) - set(matched))
    if missing:
        raise ValueError(
            f"Weights file {path!r} does not fit encoder {encoder_name!r}: {len(missing)} of its "
            f"tensors are missing from the file (e.g. {', '.join(missing[:3])})."
        )
    target.load_state_dict(matched)


def layer_groups(model: nn.Module, timm_name: str | None = None) -> list[list[str]]:
    """Parameter names grouped in the order of timm's group_matcher(coarse=True): stem, then blocks.

    For a timm model its own matcher is used; for an smp 'tu-' encoder the matcher of the timm
    model it wraps; for any other smp encoder each top-level child is a group, the leaf modules
    before the first container (conv1, bn1, ...) forming the stem.
    """
    if hasattr(model, "group_matcher"):
        return list(group_parameters(model, model.group_matcher(coarse=True)).values())
    if timm_name:
        with torch.device("meta"):
            matcher = timm.create_model(timm_name, pretrained=False).group_matcher(coarse=True)
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


def freeze_first(model: nn.Module, groups: list[list[str]], n: int, what: str) -> None:
    """Disable gradients for the parameters of the first n groups."""
    if not 0 <= n <= len(groups):
        raise ValueError(
            f"model/frozen_layers={n} is out of range for {what}: it has {len(groups)} freezable "
            f"groups (stem, then stages), so accepted values are 0 to {len(groups)}."
        )
    frozen = {name for group in groups[:n] for name in group}
    for name, param in model.named_parameters():
        if name in frozen:
            param.requires_grad_(False)


def freeze_classifier(model: nn.Module, cfg: dict) -> None:
    """Freeze the first model/frozen_layers groups of a timm model; its head is never frozen."""
    groups = layer_groups(model)[:-1]  # timm puts the head (and final norm) in the last group
    freeze_first(model, groups, cfg["model/frozen_layers"], cfg["model/backbone"])


def freeze_encoder(model: nn.Module, cfg: dict) -> None:
    """Freeze the first model/frozen_layers groups of an smp model's encoder."""
    name = cfg["model/encoder"]
    groups = layer_groups(model.encoder.model if name.startswith("tu-") else model.encoder,
                          name[3:] if name.startswith("tu-") else None)
    prefix = "model." if name.startswith("tu-") else ""
    groups = [[f"encoder.{prefix}{n}" for n in g] for g in groups]
    freeze_first(model, groups, cfg["model/frozen_layers"], name)
