"""Frozen layers: the step time of one backbone with 0, 1/4, 1/2 and 3/4 of its groups frozen, against the bound.

    $ uv run python scripts/bench_frozen.py                          # resnet18, 128 px, batch 16, 1 thread
    $ uv run python scripts/bench_frozen.py --steps 30 --rounds 3    # about 15 minutes on an idle 2-CPU machine (1.2-2.6 s a step)
    $ uv run python scripts/bench_frozen.py --backbone convnext_tiny --threads 2

The classifier is built and frozen by the project's own functions (trainables.models.create_classifier,
freeze_classifier over count_groups's groups, model/frozen_layers = round(fraction * groups)), random weights,
and stepped by trainables.loop.training_step (forward, backward, optimizer step, in train_mode) on one random
batch. The four models step in turn, --steps each per round, so that a drift of the machine's load spreads over
all of them; the first --warmup steps of each model are left out. Printed per fraction: the median step time,
its ratio to the unfrozen model's, the trainable share t of the forward FLOPs, the bound (1 + 2t) / 3 of full
fine-tuning's cost (the forward pass costs 1 and the backward pass 2, of which the frozen part needs none), and
measured / bound; the goal is at most 1.10.

t is counted with torch's FlopCounterMode per module (trainable_flop_share): the forward FLOPs of the modules
whose parameters are all frozen (their children and parameter-free operations included) against the whole
forward pass's. The load average is printed: on a busy machine the times say little; rerun on an idle one.
"""
from __future__ import annotations

import argparse
import os
import statistics
import time

import torch
from torch import nn

FRACTIONS = (0.0, 0.25, 0.5, 0.75)


def frozen(module: nn.Module) -> bool:
    """Whether `module` has parameters and none of them requires a gradient."""
    params = list(module.parameters())
    return bool(params) and not any(p.requires_grad for p in params)


def trainable_flop_share(model: nn.Module, x: torch.Tensor) -> float:
    """The share of the forward FLOPs of model(x) spent outside its frozen parts, counted with torch's
    FlopCounterMode per module: a frozen part is a module all of whose parameters are frozen, counted
    whole (children included) where its parent is not frozen too."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(x)
    flops = {name: sum(ops.values()) for name, ops in counter.get_flop_counts().items()}
    root = type(model).__name__  # FlopCounterMode names modules "<class of the root>.<qualified name>"
    modules = dict(model.named_modules())
    parent = {name: name.rpartition(".")[0] for name in modules if name}
    frozen_flops = sum(flops.get(f"{root}.{name}", 0) for name, module in modules.items()
                       if name and frozen(module) and not frozen(modules[parent[name]]))
    total = counter.get_total_flops()
    return 1.0 - frozen_flops / total if total else 1.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="resnet18", help="a timm name (model/backbone)")
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--channels", type=int, default=1)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--classes", type=int, default=4)
    parser.add_argument("--steps", type=int, default=20, help="timed steps of each model per round")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--warmup", type=int, default=3, help="steps of each model left out, before the first round")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    args = parser.parse_args()

    from trainables import classification
    from trainables.loop import training_step
    from trainables.models import count_groups, create_classifier, freeze_classifier, train_mode
    from trainables.optim import make_optimizer
    from trainables.registry import get_trainable

    torch.set_num_threads(args.threads)
    cfg = {**get_trainable("classification").defaults, "model/backbone": args.backbone,
           "data/image_size": args.image_size, "data/channels": args.channels, "train/batch_size": args.batch}
    groups = count_groups(cfg)
    x = torch.randn(args.batch, args.channels, args.image_size, args.image_size)
    batch = (x, torch.randint(0, args.classes, (args.batch,)))
    runs = []
    for fraction in FRACTIONS:
        n = round(fraction * groups)
        config = {**cfg, "model/frozen_layers": n}
        torch.manual_seed(0)
        model = create_classifier(config, args.classes)
        freeze_classifier(model, config)
        share = trainable_flop_share(model.eval(), x[:1])
        train_mode(model)
        runs.append({"fraction": fraction, "frozen": n, "share": share, "model": model, "times": [],
                     "optimizer": make_optimizer(model, config, config["optim/lr"])})

    def step(run: dict, i: int) -> float:
        started = time.perf_counter()
        training_step(run["model"], batch, classification.loss, run["optimizer"], 1, i, cfg)
        return time.perf_counter() - started

    load = [os.getloadavg()[0]]
    for run in runs:
        for i in range(args.warmup):
            step(run, i)
    for _ in range(args.rounds):
        for run in runs:
            run["times"] += [step(run, i) for i in range(args.steps)]
        load.append(os.getloadavg()[0])

    print(f"{args.backbone}, {args.image_size} px, {args.channels} channel(s), batch {args.batch}, {groups} groups, "
          f"{args.threads} thread(s), {args.rounds} x {args.steps} steps per model; "
          f"load average {' -> '.join(f'{v:.1f}' for v in load)}")
    print("frozen      groups  step (median)  vs unfrozen  trainable FLOPs  bound  measured/bound  goal <= 1.10")
    full = statistics.median(runs[0]["times"])
    for run in runs:
        median = statistics.median(run["times"])
        ratio, bound = median / full, (1 + 2 * run["share"]) / 3
        print(f"{run['fraction']:<11.2f} {run['frozen']:>6}  {median * 1000:>10.1f} ms  {ratio:>11.3f}  "
              f"{run['share']:>15.3f}  {bound:>5.3f}  {ratio / bound:>14.3f}  {'yes' if ratio / bound <= 1.10 else 'no'}")


if __name__ == "__main__":
    main()
