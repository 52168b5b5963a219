"""Build the tabular benchmark: train a random sample of a space's configs once, keeping every epoch's objectives.

    $ uv run python scripts/bench_tabular_build.py spaces/multitask.py --smoke-test --configs 100 \\
          --set train/epochs=4 --set data/image_size=32 --processes 2 -o benchmarks/multitask_table.json

Configs are drawn as preflight draws them (Optuna's random sampler over space(), with the SMOKE keys and the
--set overrides pinned), deduplicated, and each is trained in-process by the space's trainable (one torch
thread per process, no Ray, no checkpoint files: the loop's report is captured). A rerun with the same
arguments trains only the rows the table (<output>) lacks: a larger --configs extends it. Rows are also
appended to <output>l as they finish, so an interrupted build resumes where it stopped; the table is
written at the end and that file removed. Besides the space's objectives, each epoch keeps the CPU seconds of
the process and each row the training FLOPs per image (forward + backward, torch's FlopCounterMode; models of
the multitask and classification trainables): load-free stand-ins for the throughput objective, which a busy
machine makes noisy.
"""
from __future__ import annotations

import json
import os
import sys
import time

from space_args import pinned, space_parser

KEPT = ("val/loss", "val/dice", "perf/epoch_s", "perf/train_images_per_s")  # kept beside the objectives
FLOP_MODELS = {"multitask": "create_segmenter", "classification": "create_classifier"}  # trainable: model builder


def train_in_process(cfg: dict, space_path: str) -> list[dict]:
    """Train flat config `cfg` with the space's trainable in this process (one torch thread, no Ray, no
    checkpoint written, the loop's report captured; the last epoch's pictures drawn, as a trial draws
    them); each epoch's metrics with its CPU and wall seconds and the time it ended ("at", seconds since
    the epoch)."""
    import tempfile

    import torch

    import trainables.loop as loop
    from search.spacefile import load_space

    torch.set_num_threads(1)
    epochs, started = [], [time.process_time(), time.perf_counter()]

    def capture(metrics: dict, state: dict, artifacts=None) -> None:
        if artifacts:
            with tempfile.TemporaryDirectory() as folder:
                artifacts(folder)
        now = [time.process_time(), time.perf_counter()]
        epochs.append({**metrics, "cpu_s": now[0] - started[0], "wall_s": now[1] - started[1], "at": time.time()})
        started[:] = now

    loop.report, loop.restore, loop.trial_cpus = capture, (lambda device: None), (lambda: 1)
    load_space(space_path).trainable.function()(cfg)
    return epochs


def machine_line() -> str:
    """This machine as a table records it: host, CPUs, the CPU's model and the vector instructions torch picks its
    kernels by (trainables.machine). A row's values are its machine's: another CPU may train the same config and
    seed to others."""
    import torch

    from trainables.machine import machine

    where = machine(torch.device("cpu"))
    return (f"{where['machine/host']}, {os.cpu_count()} CPUs, {where['machine/cpu']}, "
            f"torch CPU capability {where['machine/cpu_capability']}")


def train_one(job: tuple[int, dict, str, list[str]]) -> dict:
    """Config `cfg` (index i) trained in this process; its row: searched params, per-epoch curves, FLOPs."""
    from search.spacefile import load_space

    i, cfg, space_path, searched = job
    space = load_space(space_path)
    epochs = train_in_process(cfg, space_path)
    metrics = [*space.objectives, *KEPT, "cpu_s", "wall_s"]
    return {"index": i, "params": {k: cfg[k] for k in searched},
            "curves": {m: [e[m] for e in epochs] for m in metrics if m in epochs[0]},
            "train_flops_per_image": train_flops(cfg, space.trainable.name), "load": os.getloadavg()[0]}


def check_flops(trainable: str) -> None:
    if trainable not in FLOP_MODELS:
        raise ValueError(f"the table's FLOPs are counted for the trainables {', '.join(FLOP_MODELS)}, "
                         f"not {trainable!r}")


def train_flops(cfg: dict, trainable: str) -> int:
    """FLOPs of one training image through the config's model (4 classes, as the synthetic set has), forward
    and backward; ValueError for a trainable other than FLOP_MODELS'."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from trainables import models

    check_flops(trainable)
    model = getattr(models, FLOP_MODELS[trainable])(cfg, 4)
    x = torch.zeros(2, cfg["data/channels"], cfg["data/image_size"], cfg["data/image_size"])
    with FlopCounterMode(display=False) as counter:
        outputs = model(x)
        sum(out.sum() for out in (outputs if isinstance(outputs, tuple) else (outputs,))).backward()
    return counter.get_total_flops() // 2


def main() -> None:
    parser = space_parser(__doc__)
    parser.add_argument("--configs", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("-o", "--output", default="benchmarks/multitask_table.json")
    args = parser.parse_args()

    import multiprocessing

    from search.preflight import sample_configs
    from search.spacefile import load_space

    space = load_space(args.space)
    try:
        check_flops(space.trainable.name)  # before any config trains
    except ValueError as e:
        parser.error(f"{args.space}: {e}")
    pins = pinned(space, args)
    constants = {**space.defaults, "train/seed": args.seed, **pins}
    configs, choices = sample_configs(space, constants, set(pins), n=4 * args.configs, seed=args.seed)
    searched = sorted(choices.keys() | {k for c in configs for k in c if c[k] != constants.get(k)})
    unique = list({json.dumps({k: c[k] for k in searched}, sort_keys=True): c for c in configs}.values())
    configs = unique[:args.configs]

    partial = args.output + "l"
    done = {}
    if os.path.exists(args.output):  # the table so far
        with open(args.output) as f:
            done = {row["index"]: row for row in json.load(f)["rows"]}
    if os.path.exists(partial):  # the rows of an interrupted build
        with open(partial) as f:
            done.update({row["index"]: row for row in map(json.loads, f)})
    todo = [(i, c, space.path, searched) for i, c in enumerate(configs) if i not in done]
    print(f"{len(configs)} configs, {len(done)} done; load average {os.getloadavg()}", flush=True)
    t0 = time.perf_counter()
    with multiprocessing.get_context("spawn").Pool(args.processes) as pool, open(partial, "a") as out:
        for row in pool.imap_unordered(train_one, todo):
            out.write(json.dumps(row) + "\n")
            out.flush()
            done[row["index"]] = row
            print(f"{len(done)}/{len(configs)} f1 {row['curves'][space.primary[0]][-1]:.3f} "
                  f"{time.perf_counter() - t0:.0f} s, load {row['load']:.1f}", flush=True)
    table = {
        "space": os.path.relpath(space.path), "command": " ".join(["python", *sys.argv]),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "machine": machine_line(),
        "objectives": space.objectives, "constants": {k: v for k, v in constants.items() if k not in searched},
        "choices": {k: sorted(v) for k, v in choices.items()},
        "rows": [done[i] for i in sorted(done)],
    }
    with open(args.output, "w") as f:
        json.dump(table, f, separators=(",", ":"))
    os.remove(partial)
    print(f"wrote {args.output}: {len(done)} rows; this run {time.perf_counter() - t0:.0f} s wall; "
          f"load average {os.getloadavg()}")


if __name__ == "__main__":
    main()
