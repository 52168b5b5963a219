"""Local pretrained weights: what model/pretrained and "hf:<dir>" backbones point at, resolved without a download.

Nothing here imports torch, so the driver can check paths before any trial starts.
"""
from __future__ import annotations

import json
from pathlib import Path

HUB_PREFIX = "hf-hub:"
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")  # save_pretrained names (timm and transformers)
SHARD_INDEXES = ("model.safetensors.index.json", "pytorch_model.bin.index.json")  # large transformers checkpoints
ACCEPTED = ("a weights file (.pth, .pt, .bin or .safetensors), a directory written by save_pretrained "
            f"(holding {' or '.join(WEIGHT_FILES)}), or 'hf-hub:<org>/<name>' from the local Hugging Face cache")


def resolve_weights(spec: str) -> Path:
    """The local file that model/pretrained names; never downloads.

    `spec` is a file, a timm/transformers save_pretrained directory (its model.safetensors, else
    pytorch_model.bin) or "hf-hub:<org>/<name>[@revision]", looked up in the local Hugging Face cache
    only ($HF_HUB_CACHE, by default $HF_HOME/hub).
    """
    if spec.startswith(HUB_PREFIX):
        return _from_hub_cache(spec[len(HUB_PREFIX):])
    path = Path(spec).expanduser()
    if path.is_file():
        return path
    if path.is_dir():
        found = next((path / name for name in WEIGHT_FILES if (path / name).is_file()), None)
        if found is None:
            raise FileNotFoundError(
                f"Pretrained weights directory {spec!r} holds neither {' nor '.join(WEIGHT_FILES)}; "
                f"model/pretrained accepts {ACCEPTED}."
            )
        return found
    raise FileNotFoundError(
        f"Pretrained weights {spec!r} do not exist. Weights are loaded from local files only: download the "
        "checkpoint on a machine with network access (e.g. `hf download timm/resnet18.a1_in1k --local-dir "
        "<dir>`), copy it here and set model/pretrained to it, or leave model/pretrained empty for random "
        f"initialisation; model/pretrained accepts {ACCEPTED}."
    )


def _from_hub_cache(repo: str) -> Path:
    from huggingface_hub import constants, try_to_load_from_cache

    repo_id, _, revision = repo.partition("@")
    for name in WEIGHT_FILES:
        found = try_to_load_from_cache(repo_id, name, revision=revision or None)
        if isinstance(found, str):
            return Path(found)
    raise FileNotFoundError(
        f"Pretrained weights 'hf-hub:{repo}' are not in the local Hugging Face cache {constants.HF_HUB_CACHE!r} "
        f"(looked for {' and '.join(WEIGHT_FILES)} of {repo_id!r} at revision {revision or 'main'!r}); weights "
        f"are never downloaded at run time. Fill the cache on a machine with network access with "
        f"`hf download {repo_id}` and copy its hub directory here, or point HF_HUB_CACHE (or HF_HOME) at a "
        "cache that has it."
    )


def weights_config(path: Path) -> dict | None:
    """The config.json saved beside a save_pretrained weights file (timm or transformers format), if any."""
    config = path.parent / "config.json"
    if path.name not in WEIGHT_FILES or not config.is_file():
        return None
    return json.loads(config.read_text())


def resolve_hf_dir(backbone: str) -> Path:
    """The directory of an "hf:<dir>" backbone, checked to hold a transformers config and its weights."""
    directory = Path(backbone.removeprefix("hf:")).expanduser()
    how = ("download it on a machine with network access, e.g. `hf download facebook/dinov2-base --local-dir "
           f"{directory}`, and copy it here")
    if not directory.is_dir():
        raise FileNotFoundError(f"Backbone {backbone!r}: the directory {str(directory)!r} does not exist; {how}.")
    if not (directory / "config.json").is_file():
        raise FileNotFoundError(
            f"Backbone {backbone!r}: {str(directory)!r} is not a Hugging Face checkpoint, it has no config.json; {how}."
        )
    if not any((directory / name).is_file() for name in WEIGHT_FILES + SHARD_INDEXES):
        raise FileNotFoundError(
            f"Backbone {backbone!r}: {str(directory)!r} has a config.json but no weights "
            f"({' or '.join(WEIGHT_FILES)}); {how}."
        )
    return directory
