"""GPU path: training images/s per trial and in aggregate with 1, 2 and 4 trials sharing one GPU.

    $ uv run python scripts/bench_gpu.py                                   # resnet18 classifier, 224 px, batch 32
    $ uv run python scripts/bench_gpu.py --bf16 --channels-last            # the GPU-path keys, one by one or together
    $ uv run python scripts/bench_gpu.py --bf16 --channels-last --compile  # + torch.compile (inductor; compiled in warm-up)
    $ uv run python scripts/bench_gpu.py --trainable multitask --arch unet --backbone resnet34 --image-size 256 --batch 16
    $ uv run python scripts/bench_gpu.py --device cpu --backbone test_resnet --image-size 32 --batch 4 \\
          --warmup 3 --steps 3 --trials 1,2                                # smoke run without a GPU: the script works

Without a CUDA device the script says so in one line and exits with code 2, unless --device cpu is given.

What it measures. A search with --gpus-per-trial 1/N runs N trials on one GPU as N Ray worker processes: Ray
only sets CUDA_VISIBLE_DEVICES and counts the shares; the processes' CUDA contexts take turns on the GPU. So
for each N in --trials this script starts N fresh processes on the device itself (forked from a fork server
that has imported torch and the trainables once and never touched CUDA) rather than through Ray Tune: the
figure is the training pass's own throughput, without data loading, validation and Ray's overhead (those
are benchmarks 1 and 4). Each process builds the trainable's model with the project's builder
(trainables.models.create_classifier, or create_segmenter with the classification head for multitask; random
weights), moves it to the device in the config's memory format and, with --compile, compiles it as a trial
does (trainables.loop.place_model, as start_trial), then runs trainables.loop.train_epoch, the trial's own training
pass (to_device, training_step with train/bf16, synchronise), over one random batch held in host memory
(pinned on a GPU, as the trial's loader pins it): --warmup steps (compilation included), a barrier that
waits for all N processes, then --steps timed steps. Per trial: perf/train_images_per_s of the timed steps
(trainables.speed: the median over steps of images/s) and perf/peak_mem_mb. Per N: the sum of the trials'
medians, the wall-clock aggregate (all timed images over first start to last end), its ratio to 1 trial's,
and the largest peak memory of a trial. The load average is printed: on a busy machine the host side of
each step (Python, kernel launches) is slowed too; rerun on an idle one.
"""
from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import queue as queues
import statistics
import sys
import time

TRAINABLES = ("classification", "multitask")
PRELOAD = ["__main__", "torch", "trainables.loop", "trainables.models", "trainables.classification",
           "trainables.multitask"]
BARRIER_S = 1800  # the longest a trial waits for the others' warm-up (inductor compiles in it)


def config(args: argparse.Namespace) -> dict:
    """The trial's flat config: the trainable's defaults with the benchmark's model, sizes and GPU-path keys."""
    from trainables.registry import get_trainable

    model = {"model/backbone": args.backbone} if args.trainable == "classification" else \
        {"model/arch": args.arch, "model/encoder": args.backbone}
    return {**get_trainable(args.trainable).defaults, **model, "data/image_size": args.image_size,
            "data/channels": args.channels, "train/batch_size": args.batch, "train/bf16": args.bf16,
            "train/channels_last": args.channels_last, "train/compile": args.compile}


def run_trial(rank: int, args: argparse.Namespace, barrier, results) -> None:
    """One trial's process: build, warm up, wait for the others, time --steps steps; its figures into results."""
    try:
        import torch

        from trainables import classification, multitask
        from trainables.loop import place_model, train_epoch
        from trainables.models import create_classifier, create_segmenter
        from trainables.optim import make_optimizer
        from trainables.speed import WARMUP_STEPS, Speed, reset_peak_memory

        torch.set_num_threads(args.threads)
        device = torch.device(args.device)
        cfg = config(args)
        reset_peak_memory(device)
        torch.manual_seed(rank)
        n, size = args.batch, args.image_size
        images = torch.randn(n, args.channels, size, size)
        labels = torch.randint(0, args.classes, (n,))
        if args.trainable == "classification":
            model, loss_fn, batch = create_classifier(cfg, args.classes), classification.loss, (images, labels)
        else:
            masks = (torch.rand(n, 1, size, size) > 0.5).float()
            model, loss_fn, batch = create_segmenter(cfg, args.classes), multitask.loss, (images, masks, labels)
        if device.type == "cuda":
            batch = tuple(x.pin_memory() for x in batch)
        model = place_model(model, cfg, device)
        optimizer = make_optimizer(model, cfg, cfg["optim/lr"])
        speed = Speed()
        train_epoch(model, ((batch, 0.0) for _ in range(args.warmup)), loss_fn, optimizer, device, 0, cfg, speed)
        assert len(speed.warmup_rates) == WARMUP_STEPS
        speed.step_rates.clear()  # warm-up steps beyond the trial's own WARMUP_STEPS
        barrier.wait(timeout=BARRIER_S)
        start = time.monotonic()  # system-wide on Linux: comparable between the processes
        _, epoch_s = train_epoch(model, ((batch, 0.0) for _ in range(args.steps)), loss_fn, optimizer, device, 1,
                                 cfg, speed)
        end = time.monotonic()
        perf = speed.metrics(epoch_s, 0, device)
        name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {args.threads} thread(s) a trial"
        results.put({"rank": rank, "images_per_s": perf["perf/train_images_per_s"], "start": start, "end": end,
                     "peak_mb": perf["perf/peak_mem_mb"], "device": name})
    except BaseException as exc:  # noqa: BLE001 - reported by the parent, which exits non-zero
        barrier.abort()
        results.put({"rank": rank, "error": f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"})


def run_round(ctx, n: int, args: argparse.Namespace) -> list[dict]:
    """n trials at once on the device; their results, by rank. Exits with a message if one fails."""
    barrier, results = ctx.Barrier(n), ctx.Queue()
    procs = [ctx.Process(target=run_trial, args=(rank, args, barrier, results), daemon=True) for rank in range(n)]
    for p in procs:
        p.start()
    got = []
    while len(got) < n:
        try:
            got.append(results.get(timeout=5))
        except queues.Empty:
            dead = [p.exitcode for p in procs if p.exitcode not in (None, 0)]
            if dead:
                sys.exit(f"bench_gpu: a trial process of the {n}-trial round died (exit code {dead[0]}).")
    for p in procs:
        p.join()
    errors = [r for r in got if "error" in r]
    if errors:
        first = min(errors, key=lambda r: r["error"].startswith("BrokenBarrierError"))
        sys.exit(f"bench_gpu: trial {first['rank']} of the {n}-trial round failed: {first['error']}")
    return sorted(got, key=lambda r: r["rank"])


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trainable", choices=TRAINABLES, default="classification")
    parser.add_argument("--backbone", default="resnet18",
                        help="model/backbone (a timm name) or, for multitask, model/encoder (an smp encoder, tu-<timm>)")
    parser.add_argument("--arch", default="unet", help="multitask: model/arch (an smp architecture)")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--channels", type=int, default=1)
    parser.add_argument("--batch", type=int, default=32, help="train/batch_size of each trial")
    parser.add_argument("--classes", type=int, default=4)
    parser.add_argument("--warmup", type=int, default=10, help="steps of each trial before the barrier (at least 3)")
    parser.add_argument("--steps", type=int, default=30, help="timed steps of each trial")
    parser.add_argument("--trials", default="1,2,4", help="numbers of concurrent trials on the device, one round each")
    parser.add_argument("--bf16", action="store_true", help="train/bf16")
    parser.add_argument("--channels-last", action="store_true", help="train/channels_last")
    parser.add_argument("--compile", action="store_true", help="train/compile (inductor)")
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda", help="cpu: a smoke run of the script")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads of each trial (a trial's CPUs)")
    args = parser.parse_args(argv)
    try:
        args.rounds = [int(n) for n in args.trials.split(",")]
    except ValueError:
        parser.error(f"--trials {args.trials!r} is not a comma-separated list of numbers, e.g. 1,2,4")
    if not args.rounds or min(args.rounds) < 1:
        parser.error("--trials: each number of trials is at least 1")
    if args.warmup < 3:
        parser.error("--warmup: at least 3 (the trial's own warm-up steps, trainables.speed.WARMUP_STEPS)")
    if args.steps < 1:
        parser.error("--steps: at least 1")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.device == "cuda":
        import torch  # is_available() creates no CUDA context in this process

        if not torch.cuda.is_available():
            print("bench_gpu: no CUDA device here (torch.cuda.is_available() is False); run it on a GPU node, "
                  "or pass --device cpu for a smoke run of the script.", file=sys.stderr)
            sys.exit(2)
    ctx = mp.get_context("forkserver")  # fresh processes, imports done once, CUDA safe
    ctx.set_forkserver_preload(PRELOAD)
    load, rounds = [os.getloadavg()[0]], {}
    for n in args.rounds:
        rounds[n] = run_round(ctx, n, args)
        load.append(os.getloadavg()[0])

    flags = ", ".join(f"{key} {'on' if getattr(args, key) else 'off'}" for key in ("bf16", "channels_last", "compile"))
    model = args.backbone if args.trainable == "classification" else f"{args.arch} + {args.backbone}"
    device = next(iter(rounds.values()))[0]["device"]
    print(f"{args.trainable} {model}, {args.image_size} px, {args.channels} channel(s), batch {args.batch}, {flags}; "
          f"{device}; {args.warmup} warm-up + {args.steps} timed steps per trial; "
          f"load average {' -> '.join(f'{v:.1f}' for v in load)}")
    print("trials  images/s per trial (median step)  mean/trial  aggregate (sum)  aggregate (wall clock)  "
          "vs 1 trial  peak MiB/trial")
    single = None
    for n, results in rounds.items():
        rates = [r["images_per_s"] for r in results]
        total = sum(rates)
        wall = n * args.steps * args.batch / (max(r["end"] for r in results) - min(r["start"] for r in results))
        if n == 1:
            single = total
        versus = f"{total / single:.2f}" if single else "-"
        print(f"{n:<6}  {' / '.join(f'{r:.1f}' for r in rates):<33}  {statistics.mean(rates):>10.1f}  {total:>15.1f}  "
              f"{wall:>22.1f}  {versus:>10}  {max(r['peak_mb'] for r in results):>14.0f}")


if __name__ == "__main__":
    main()
