"""BatchNorm statistics that belong to the weights being validated.

In training a BatchNorm layer normalises with each batch's own statistics and keeps an exponential
moving average (momentum 0.1) of them for evaluation. After a few steps (short epochs, small data sets,
large learning rates) that average still mixes the statistics of earlier weights and of augmented
images, so in eval mode a model that has learned can predict one class for everything. Before each
validation the loop therefore re-estimates the running statistics of the BatchNorm layers that train,
as a plain cumulative average over un-augmented training images with the current weights
(train/bn_reestimate_images; 0 keeps the moving averages).

Not torch.optim.swa_utils.update_bn, because it resets and re-estimates every BatchNorm layer, the
frozen ones too (whose statistics must stay those of their weights), runs the whole model in training
mode (dropout and stochastic depth active while the statistics are gathered), and calls
model(batch[0]), which does not fit a forward that needs more than the images (the triplet model's
phase).
"""
from __future__ import annotations

from typing import Callable, Iterable

import torch
from torch import nn

from trainables.models import frozen_norms


def trained_batchnorms(model: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    """The BatchNorm layers with running statistics that are not frozen."""
    frozen = set(frozen_norms(model))
    return [m for m in model.modules()
            if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats and m not in frozen]


@torch.no_grad()
def reestimate_batchnorm(model: nn.Module, forward: Callable[[torch.Tensor], object],
                         images: Iterable[torch.Tensor]) -> None:
    """Replace the running statistics of the model's trained BatchNorm layers by their cumulative average
    (momentum=None) over `images`, run through `forward` with everything else in eval mode.

    Frozen layers are untouched; a layer that `forward` never reaches keeps its statistics. The model is
    left in eval mode.
    """
    layers = trained_batchnorms(model)
    saved = [(m, m.momentum, {k: v.clone() for k, v in m.state_dict().items()}) for m in layers]
    model.eval()
    for m in layers:
        m.reset_running_stats()
        m.momentum = None
        m.train()
    if layers:
        for x in images:
            forward(x)
    for m, momentum, state in saved:
        m.momentum = momentum
        if m.num_batches_tracked == 0:
            m.load_state_dict(state)
    model.eval()
