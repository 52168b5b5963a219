"""Backbones beyond timm's own: study C.1's small CNN (registered as timm model "medtune_cnn") and a
timm-style wrapper around Hugging Face transformers vision checkpoints ("hf:<dir>").

Both follow timm's conventions (group_matcher, get_classifier, reset_classifier, forward_features,
forward_head), so layer grouping and freezing in trainables.models treat them like any timm model:
group 0 is the stem / embeddings, then one group per block in order, the head last.
"""
from __future__ import annotations

import inspect
from collections import OrderedDict

import torch
from timm.layers import SelectAdaptivePool2d
from timm.models import build_model_with_cfg, generate_default_cfgs, register_model
from torch import nn

from trainables.weights import resolve_hf_dir


class ConvBlock(nn.Sequential):
    """5x5 convolution with stride 2, BatchNorm, ReLU, 2x2 max-pool (ceil mode, so small inputs still work)."""

    def __init__(self, in_chs: int, out_chs: int):
        super().__init__(OrderedDict(
            conv=nn.Conv2d(in_chs, out_chs, kernel_size=5, stride=2, padding=2, bias=False),
            bn=nn.BatchNorm2d(out_chs),
            act=nn.ReLU(inplace=True),
            pool=nn.MaxPool2d(2, ceil_mode=True),
        ))


class MedtuneCNN(nn.Module):
    """Study C.1's custom CNN: three conv blocks, global pooling, then fully connected 256-64-classes.

    The first conv block is the stem (group 0), the other two are blocks 1 and 2; the pooling and the
    fully connected layers form the head. Global pooling before the FC layers makes any input size work.
    """

    def __init__(self, num_classes: int = 1000, in_chans: int = 1, widths: tuple[int, ...] = (32, 64, 128),
                 hidden: tuple[int, ...] = (256, 64), drop_rate: float = 0.0, global_pool: str = "avg"):
        super().__init__()
        self.num_classes, self.drop_rate = num_classes, drop_rate
        self.num_features, self.head_hidden_size = widths[-1], hidden[-1]
        self.stem = ConvBlock(in_chans, widths[0])
        self.blocks = nn.Sequential(*(ConvBlock(a, b) for a, b in zip(widths, widths[1:])))
        self.global_pool = SelectAdaptivePool2d(pool_type=global_pool, flatten=True)
        fc_layers: list[nn.Module] = []
        for a, b in zip((widths[-1], *hidden), hidden):
            fc_layers += [nn.Linear(a, b), nn.ReLU(inplace=True)]
        self.pre_logits = nn.Sequential(*fc_layers)
        self.head_drop = nn.Dropout(drop_rate)
        self.fc = nn.Linear(hidden[-1], num_classes) if num_classes > 0 else nn.Identity()

    def group_matcher(self, coarse: bool = False) -> dict:
        return dict(stem=r"^stem\.", blocks=r"^blocks\.(\d+)")

    def get_classifier(self) -> nn.Module:
        return self.fc

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        self.num_classes = num_classes
        if global_pool is not None:
            self.global_pool = SelectAdaptivePool2d(pool_type=global_pool, flatten=True)
        self.fc = nn.Linear(self.head_hidden_size, num_classes) if num_classes > 0 else nn.Identity()

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(self.stem(x))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.head_drop(self.pre_logits(self.global_pool(x)))
        return x if pre_logits else self.fc(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


# No published weights: model/pretrained may point at a checkpoint of an earlier run.
default_cfgs = generate_default_cfgs({
    "medtune_cnn": dict(input_size=(1, 512, 512), pool_size=(8, 8), mean=(0.5,), std=(0.5,),
                        first_conv="stem.conv", classifier="fc", license="apache-2.0"),
})


@register_model
def medtune_cnn(pretrained: bool = False, **kwargs) -> MedtuneCNN:
    """Study C.1's small CNN (grayscale 512x512 in the study; any size and channel count work)."""
    return build_model_with_cfg(MedtuneCNN, "medtune_cnn", pretrained, **kwargs)


class HFClassifier(nn.Module):
    """A transformers vision backbone (DINOv2, BEiT, ViT, ...) with a linear head on its pooled output.

    The pooled output is the model's pooler_output (DINOv2: the normalised CLS token; BEiT: the mean of
    the patch tokens, or CLS), else the first token of last_hidden_state. A 1-channel input is repeated
    to the checkpoint's channels, which equals summing the patch-embedding filters over channels (what
    timm does for grayscale). Position embeddings are interpolated to the input size (DINOv2 always
    does; models whose forward takes `interpolate_pos_encoding` get it set).

    Groups (group_matcher): 0 = every backbone parameter before the first block (embeddings, a shared
    relative position bias), then one group per entry of the backbone's first nn.ModuleList (its
    transformer layers or stages), last the final norm, pooler and head.
    """

    def __init__(self, backbone: nn.Module, num_classes: int, in_chans: int, drop_rate: float = 0.0):
        super().__init__()
        config = backbone.config
        if in_chans not in (1, config.num_channels):
            raise ValueError(f"data/channels={in_chans} does not fit a {config.model_type!r} checkpoint with "
                             f"{config.num_channels} input channels; use 1 (repeated) or {config.num_channels}.")
        self.backbone = backbone
        self.source_chans = config.num_channels
        self.num_classes, self.drop_rate = num_classes, drop_rate
        self.num_features = self.head_hidden_size = getattr(config, "hidden_size", None) or config.hidden_sizes[-1]
        self.head_drop = nn.Dropout(drop_rate)
        self.head = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()
        takes = inspect.signature(backbone.forward).parameters
        self.forward_kwargs = {"interpolate_pos_encoding": True} if "interpolate_pos_encoding" in takes else {}
        blocks = next((name for name, m in backbone.named_modules() if isinstance(m, nn.ModuleList)), None)
        self.blocks_prefix = f"backbone.{blocks}." if blocks is not None else None

    def group_matcher(self, coarse: bool = False):
        prefix = self.blocks_prefix
        names = [name for name, _ in self.named_parameters() if name.startswith("backbone.")]
        first_block = next((i for i, n in enumerate(names) if prefix and n.startswith(prefix)), len(names))
        stem = set(names[:first_block])

        def ordinal(name: str) -> float:
            if prefix and name.startswith(prefix):
                return int(name[len(prefix):].split(".", 1)[0]) + 1
            return 0 if name in stem else float("inf")
        return ordinal

    def get_classifier(self) -> nn.Module:
        return self.head

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        self.num_classes = num_classes
        self.head = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The pooled backbone output, shape (batch, num_features)."""
        if x.shape[1] != self.source_chans:
            x = x.expand(-1, self.source_chans, -1, -1)
        out = self.backbone(pixel_values=x, **self.forward_kwargs)
        pooled = out.pooler_output if getattr(out, "pooler_output", None) is not None else out.last_hidden_state[:, 0]
        return pooled.flatten(1)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.head_drop(x)
        return x if pre_logits else self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


def hf_config(backbone: str):
    """The directory and transformers config of an "hf:<dir>" backbone, checked to be an image model."""
    from transformers import AutoConfig

    directory = resolve_hf_dir(backbone)
    try:
        config = AutoConfig.from_pretrained(directory, local_files_only=True)
    except (ValueError, OSError) as err:  # no or unknown model_type (a timm config.json, say), or not JSON
        raise ValueError(
            f"Backbone {backbone!r}: {str(directory / 'config.json')!r} is not a transformers model config "
            f"({str(err).splitlines()[0]}). A timm checkpoint directory is used as model/backbone=<its "
            "architecture> with model/pretrained=<the directory> instead."
        ) from None
    if config.model_type == "timm_wrapper":
        raise ValueError(f"Backbone {backbone!r} is a timm checkpoint of {config.architecture!r}; use it as "
                         f"model/backbone={config.architecture!r} with model/pretrained=<the directory>.")
    if not hasattr(config, "num_channels"):
        raise ValueError(f"Backbone {backbone!r} holds a {config.model_type!r} model, which is not an image model "
                         "(its config has no num_channels); use a vision checkpoint such as DINOv2 or BEiT.")
    return directory, config


def hf_classifier_from_config(backbone: str, num_classes: int, in_chans: int) -> HFClassifier:
    """An "hf:<dir>" classifier from config.json alone, randomly initialised (build it on the meta
    device to count its groups without memory)."""
    from transformers import AutoModel

    return HFClassifier(AutoModel.from_config(hf_config(backbone)[1]), num_classes, in_chans)


def create_hf_classifier(backbone: str, num_classes: int, in_chans: int, drop_rate: float = 0.0) -> HFClassifier:
    """An "hf:<dir>" backbone with its checkpoint's weights (local files only) and a fresh linear head.

    Weights the checkpoint lacks may only be in the head group (final norm, pooler), which always trains;
    a checkpoint missing any stem or block tensor is an error.
    """
    from transformers import AutoModel

    directory, config = hf_config(backbone)
    model, info = AutoModel.from_pretrained(directory, config=config, local_files_only=True, dtype=torch.float32,
                                            output_loading_info=True)
    classifier = HFClassifier(model, num_classes, in_chans, drop_rate)
    ordinal = classifier.group_matcher()
    below_head = {name for name, _ in classifier.named_parameters() if ordinal(name) != float("inf")}
    missing = sorted(k for k in info["missing_keys"] if f"backbone.{k}" in below_head)
    if missing:
        raise ValueError(
            f"Backbone {backbone!r}: its weights lack {len(missing)} tensors of the {config.model_type!r} model "
            f"below the head (e.g. {', '.join(missing[:3])}), so they would be random; the directory must hold "
            "the complete checkpoint."
        )
    return classifier
