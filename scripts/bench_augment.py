"""Augmentation where it is cheapest: images/s of a trial's training batches augmented per image in the loader
(aug/where "loader", torchvision) against per batch on the trial's device (aug/where "device", Kornia).

    $ uv run python scripts/bench_augment.py                                  # CPU, 32 to 256 px, one thread
    $ uv run python scripts/bench_augment.py --device cuda --workers 4 --image-size 224,299 --batch 64

Both are the trial's own path (trainables.trial_data.prepare_data and trial_loader on the generated
covid_radiography set with its masks, and trainables.loop.to_device, with Data.augment for "device"), with every
step a config offers switched on (trainables.augment.STRONG: crop, both flips, rotation, colour jitter), and
no model: --batches training batches per round (one epoch's first; the generated set's epoch is 16 batches
of 16 images), from the loader's iterator to the augmented, normalised batch on the device (synchronised on
a GPU), each place with its own loader (its workers persistent, as in a trial), alternating the two for
--rounds after one round of warm-up. Printed per image size: the median images/s of each and their ratio
(device over loader), and the loader's busy milliseconds per image (its producer's time reading, augmenting
and collating, as perf/loader_images_per_s counts it). --threads is the trial process's torch threads (a
1-CPU trial: 1); loader workers (--workers) run one thread each, as in a trial.
"""
from __future__ import annotations

import argparse
import os
import statistics
import time


def batches_per_s(data, loader, cfg: dict, device, batches: int, epoch: int) -> tuple[float, float]:
    """(images/s, the loader's busy seconds per image) over the first `batches` training batches of `epoch`
    through the trial's loader, augmented where cfg's aug/where says."""
    import torch

    from trainables.loop import to_device

    images, busy = 0, 0.0
    started = time.perf_counter()
    for _, (batch, load_s) in zip(range(batches), loader.epoch(epoch)):
        batch = to_device(batch, device, cfg, data.augment)
        images, busy = images + len(batch[0]), busy + load_s
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return images / (time.perf_counter() - started), busy / max(images, 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image-size", default="32,64,128,256", help="comma-separated sides in px")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--batches", type=int, default=8, help="training batches per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--workers", type=int, default=0, help="data/workers")
    parser.add_argument("--threads", type=int, default=1, help="the trial process's torch threads")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    sizes = [int(s) for s in args.image_size.split(",")]
    if min(args.batch, args.batches, args.rounds, args.threads, *sizes) < 1 or args.workers < 0:
        parser.error(f"--batch {args.batch}, --batches {args.batches}, --rounds {args.rounds}, --threads "
                     f"{args.threads}, --image-size {args.image_size}: each takes whole numbers of 1 or more; "
                     f"--workers {args.workers}: 0 or more")

    import torch

    from trainables.augment import STRONG
    from trainables.registry import TRAINABLES
    from trainables.trial_data import prepare_data, trial_loader

    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(f"{name}: batch {args.batch}, {args.batches} batches x {args.rounds} rounds, data/workers {args.workers}, "
          f"{args.threads} torch thread(s); augmentation {STRONG}; load average {os.getloadavg()[0]:.1f}", flush=True)
    print(f"{'px':>5} {'loader img/s':>13} {'device img/s':>13} {'device/loader':>14} "
          f"{'loader busy ms/img (loader, device)':>36}")
    for size in sizes:
        base = {**TRAINABLES["multitask"].defaults, **STRONG, "data/image_size": size, "train/batch_size": args.batch,
                "data/workers": args.workers}
        cfgs = {where: {**base, "aug/where": where} for where in ("loader", "device")}
        paths = {}
        for where, cfg in cfgs.items():
            data = prepare_data(cfg, masks=True)
            paths[where] = (data, trial_loader(data, cfg, device))
        rates: dict[str, list[float]] = {"loader": [], "device": []}
        busy: dict[str, list[float]] = {"loader": [], "device": []}
        for round_ in range(args.rounds + 1):  # the first round (workers' start, caches) is not counted
            for where, cfg in cfgs.items():
                rate, per_image = batches_per_s(*paths[where], cfg, device, args.batches, round_ + 1)
                if round_:
                    rates[where].append(rate)
                    busy[where].append(per_image)
        loader, on_device = statistics.median(rates["loader"]), statistics.median(rates["device"])
        print(f"{size:>5} {loader:>13.0f} {on_device:>13.0f} {on_device / loader:>14.2f} "
              f"{1000 * statistics.median(busy['loader']):>18.2f}, {1000 * statistics.median(busy['device']):.2f}",
              flush=True)


if __name__ == "__main__":
    main()
