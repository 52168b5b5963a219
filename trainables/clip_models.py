"""open_clip models from local files only; nothing is ever downloaded.

Three ways to name a model (clip/model) and its weights (model/pretrained):

    ViT-L-14 + /models/ViT-L-14.pt            a built-in open_clip architecture and a local checkpoint
    my-clip + clip/model_config=my-clip.json  an architecture from a local open_clip model-config JSON
                                              (registered under the file's stem), same weights rule
    hf-hub:microsoft/BiomedCLIP-PubMedBERT_256-vit_base_patch16_224
                                              an open_clip model already in the local Hugging Face
                                              cache (`hf download <id>` on a machine with network
                                              access, then copy the cache, e.g. ~/.cache/huggingface)

An empty model/pretrained means random weights (tests, smoke runs). Hugging Face access is
forced offline while a model loads, so a missing file is an error, never a download.
"""
from __future__ import annotations

import contextlib
import difflib
import json
import os
from dataclasses import dataclass
from typing import Callable

import open_clip
import torch
from huggingface_hub import constants as hf_constants
from huggingface_hub import try_to_load_from_cache
from open_clip.constants import HF_CONFIG_NAME, HF_SAFE_WEIGHTS_NAME, HF_WEIGHTS_NAME
from open_clip.factory import HF_HUB_PREFIX
from torch import nn


@dataclass(frozen=True)
class Clip:
    """A frozen CLIP model with its tokenizer and its image preprocessing (PIL or float tensor in [0, 1])."""

    model: nn.Module
    tokenizer: Callable
    preprocess: Callable


@contextlib.contextmanager
def hf_offline():
    """Hugging Face Hub offline mode (what HF_HUB_OFFLINE=1 sets) for the duration of the block."""
    previous, hf_constants.HF_HUB_OFFLINE = hf_constants.HF_HUB_OFFLINE, True
    try:
        yield
    finally:
        hf_constants.HF_HUB_OFFLINE = previous


def register_model_config(path: str) -> None:
    """Register a local open_clip model-config JSON; its file name without .json becomes a model name."""
    try:
        with open(path) as f:
            config = json.load(f)
    except (OSError, json.JSONDecodeError) as e:
        raise ValueError(f"clip/model_config={path!r} cannot be read as an open_clip model-config JSON ({e}); "
                         "give the path of a .json file like open_clip's model_configs/ViT-B-32.json.") from None
    missing = [k for k in ("embed_dim", "vision_cfg", "text_cfg") if not isinstance(config, dict) or k not in config]
    if missing:
        raise ValueError(f"clip/model_config={path!r} lacks {', '.join(missing)}; an open_clip model config "
                         "has embed_dim, vision_cfg and text_cfg (see open_clip's model_configs/ViT-B-32.json).")
    if open_clip.get_model_config(os.path.splitext(os.path.basename(path))[0]) != config:  # not yet registered
        open_clip.add_model_config(path)


def check_model_name(name: str) -> None:
    if name not in open_clip.list_models():
        close = difflib.get_close_matches(name, open_clip.list_models(), n=5, cutoff=0.5)
        raise ValueError(f"clip/model={name!r} is not an open_clip architecture; use a name from "
                         "open_clip.list_models(), 'hf-hub:<id>' of a locally cached model, or register a "
                         f"config with clip/model_config.{' Did you mean: ' + ', '.join(close) + '?' if close else ''}")


def _download_hint(name: str) -> str:
    """Where weights for a built-in architecture come from, after open_clip's own pretrained table.

    A tag trained with QuickGELU (e.g. OpenAI's) fits only the '-quickgelu' variant of a name.
    """
    quick = name.endswith("-quickgelu")
    for tag in open_clip.list_pretrained_tags_by_model(name):
        cfg = open_clip.get_pretrained_cfg(name, tag)
        if (hub := cfg.get("hf_hub", "").strip("/")) and bool(cfg.get("quick_gelu")) == quick:
            return (f" For example, on a machine with network access run `hf download {hub} {HF_WEIGHTS_NAME}` "
                    f"(open_clip's {tag!r} weights) and copy the file here.")
    return ""


def check_checkpoint(name: str, path: str) -> None:
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"CLIP checkpoint model/pretrained={path!r} for clip/model={name!r} does not exist; weights are "
            "loaded from local files only, so give the path of an open_clip checkpoint (.pt, .bin or "
            f".safetensors) or leave model/pretrained empty for random weights.{_download_hint(name)}"
        )


def check_hf_cache(repo: str) -> None:
    """The open_clip config and weights of `repo` must be in the local Hugging Face cache."""
    def cached(*names: str) -> bool:
        return any(isinstance(try_to_load_from_cache(repo, name), str) for name in names)

    needed = {HF_CONFIG_NAME: cached(HF_CONFIG_NAME), HF_WEIGHTS_NAME: cached(HF_SAFE_WEIGHTS_NAME, HF_WEIGHTS_NAME)}
    if not all(needed.values()):
        lacking = " and ".join(name for name, found in needed.items() if not found)
        raise FileNotFoundError(
            f"clip/model='{HF_HUB_PREFIX}{repo}' is not in the local Hugging Face cache "
            f"({hf_constants.HF_HUB_CACHE} lacks its {lacking}); models are never downloaded at run time: on a "
            f"machine with network access run `hf download {repo}` and copy the cache folder here (or point "
            "HF_HOME at it)."
        )


def check_clip(cfg: dict) -> None:
    """Check clip/model, clip/model_config and model/pretrained without loading anything big; a missing
    file is a FileNotFoundError saying how to get it. Registers clip/model_config with open_clip."""
    if cfg["clip/model_config"]:
        register_model_config(cfg["clip/model_config"])
    name, weights = cfg["clip/model"], cfg["model/pretrained"]
    if name.startswith(HF_HUB_PREFIX):
        if weights:
            raise ValueError(f"model/pretrained={weights!r} cannot be combined with clip/model={name!r}: an "
                             "hf-hub model brings its own weights; leave model/pretrained empty.")
        check_hf_cache(name[len(HF_HUB_PREFIX):])
    else:
        check_model_name(name)
        if weights:
            check_checkpoint(name, weights)


def load_clip(cfg: dict, device: torch.device) -> Clip:
    """The model clip/model with weights model/pretrained, frozen, in eval mode on `device`."""
    check_clip(cfg)
    name = cfg["clip/model"]
    try:
        with hf_offline():
            model, _, preprocess = open_clip.create_model_and_transforms(
                name, pretrained=cfg["model/pretrained"] or None, pretrained_text=False, device=device)
            tokenizer = open_clip.get_tokenizer(name)
    except OSError as e:  # a text tower or tokenizer from the Hugging Face cache is missing
        raise FileNotFoundError(
            f"clip/model={name!r} needs files that are not available locally ({e}); models are never "
            "downloaded at run time: on a machine with network access run `hf download <id>` for the model and "
            "for the text model / tokenizer its open_clip_config.json names, then copy the cache folder here."
        ) from None
    model.eval().requires_grad_(False)
    return Clip(model, tokenizer, preprocess)
