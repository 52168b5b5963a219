"""The optimizer and learning-rate schedule of a stretch of training, from timm's factories.

optim/name picks timm's optimizer (OPTIMIZERS); weight decay (optim/weight_decay) applies to weights
only: timm's default filter leaves norm parameters and biases (every 1-d parameter) undecayed, and only
parameters that require gradients are optimised. optim/schedule picks timm's per-epoch schedule
(SCHEDULES): constant; cosine, annealed to 0 over the stretch's epochs; step, times optim/gamma every
optim/step_epochs epochs. With optim/warmup_epochs = W > 0 the first W epochs warm up, epoch k training at
lr * k / (W + 1) (timm's linear warm-up from lr / (W + 1)), and the schedule runs over the epochs after them.

The schedule's lr is a function of the epoch only (`set_epoch_lr`), so a resumed trial continues at
exactly the lr of an uninterrupted one. Torch-free on import: the registry reads the tables.
"""
from __future__ import annotations

OPTIMIZERS = {"adam": "adam", "adamw": "adamw", "sgd": "momentum"}  # optim/name -> timm name (sgd: no Nesterov)
SCHEDULES = {"constant": "constant", "cosine": "cosine", "step": "step"}  # optim/schedule -> timm name


def make_optimizer(model, cfg: dict, lr: float):
    """timm's optimizer optim/name at `lr` over the parameters of `model` that require gradients."""
    from timm.optim import create_optimizer_v2

    return create_optimizer_v2(model, OPTIMIZERS[cfg["optim/name"]], lr=lr, weight_decay=cfg["optim/weight_decay"],
                               momentum=cfg["optim/momentum"])


def make_schedule(optimizer, cfg: dict, epochs: int):
    """timm's schedule optim/schedule for a stretch of `epochs` epochs, the first optim/warmup_epochs warming up."""
    from timm.scheduler import create_scheduler_v2

    warmup, lr = cfg["optim/warmup_epochs"], optimizer.param_groups[0]["lr"]
    schedule, _ = create_scheduler_v2(optimizer, SCHEDULES[cfg["optim/schedule"]], num_epochs=max(epochs - warmup, 1),
                                      decay_epochs=cfg["optim/step_epochs"], decay_rate=cfg["optim/gamma"],
                                      warmup_epochs=warmup, warmup_lr=lr / (warmup + 1), warmup_prefix=True)
    return schedule


def set_epoch_lr(schedule, epoch: int) -> None:
    """Set the lr of the stretch's epoch `epoch` (0 = its first)."""
    schedule.step(epoch)
