"""Data path: training throughput through the trial's loader against batches in memory, the decoded set's memory
with concurrent trials, and decoding once against decoding every epoch.

    $ uv run python scripts/bench_data_path.py                       # synthetic 299-px X-rays, resnet18 at 128 px
    $ uv run python scripts/bench_data_path.py --per-class 100 --steps 12 --rounds 2   # about 5 minutes, idle 2 CPUs
    $ uv run python scripts/bench_data_path.py --data /data/COVID-19_Radiography_Dataset --image-size 224

The data is a root in the covid_radiography layout (--data), or a synthetic one written once by the project's
generator at the real set's 299 px (--per-class images per class, kept under /tmp for later runs). The node
cache is a fresh folder (--cache to reuse one), so that the first open decodes. Three measurements:

(c) decode once vs every epoch: the first open_data (decoding every image into the node cache, on the
    project's thread pool), a later open (scan and fingerprint only, as every trial does), an epoch of reading
    every image from the cache through ArrayDataset (transform left out), and an epoch of decoding every image
    file again with trainables.data.images.decode, in one thread as one loader worker would.
(b) memory: --processes 1, 2 and 4 spawned processes each run prepare_data (the trial's data) and read every
    training and validation image through the datasets, then wait while this process reads their proportional
    set size (PSS, /proc/<pid>/smaps) in the mappings of the node cache and in all. The decoded set is
    memory-mapped, so if it exists once, the processes' data PSS adds up to one copy (the file's size).
(a) throughput: the classification trainable's own start (trainables.loop.start_trial: data, model, the trial's
    TrialLoader with data/workers workers) and train_epoch, --steps steps read through the loader, against the
    same model stepping on --steps batches taken from that loader beforehand and held in memory as tensors
    (same batch size, same steps, --threads torch threads, same augmentation), alternating for --rounds after a
    warm-up; images per second of both and their ratio (goal: at least 0.95).

The load average is printed: on a busy machine the times say little; rerun on an idle one.
"""
from __future__ import annotations

import argparse
import itertools
import multiprocessing
import os
import statistics
import tempfile
import time

GENERATED = "/tmp/medtune-bench-data"  # synthetic roots, one per (images per class, size), kept for later runs


def data_root(args) -> str:
    """--data, or the synthetic covid_radiography set of --per-class images per class at --source-size px."""
    if args.data:
        return args.data
    from trainables.data.cache import build_once
    from trainables.data.synthetic import generate_covid_radiography

    target = os.path.join(GENERATED, f"covid_radiography-{args.per_class}-{args.source_size}")
    return build_once(target, lambda tmp: generate_covid_radiography(tmp, args.per_class, image_size=args.source_size,
                                                                      mask_size=min(256, args.source_size)))


def decoding(cfg: dict, epochs: int) -> dict:
    """(c): seconds of the first open (decoding into the node cache), of a later open, and per epoch of reading
    the decoded images from the cache and of decoding the image files."""
    from trainables.data.arrays import ArrayDataset
    from trainables.data.images import decode
    from trainables.trial_data import open_data

    started = time.perf_counter()
    open_data(cfg, masks=False)
    first = time.perf_counter() - started
    started = time.perf_counter()
    ds = open_data(cfg, masks=False)
    reopen = time.perf_counter() - started
    dataset = ArrayDataset(ds.images, ds.labels, range(len(ds.files)), transform=lambda image: image)
    cache, files = [], []
    for _ in range(epochs):
        started = time.perf_counter()
        for i in range(len(dataset)):
            dataset[i]
        cache.append(time.perf_counter() - started)
        started = time.perf_counter()
        for rel in ds.files:
            decode(ds.root, rel, None, cfg["data/image_size"], cfg["data/channels"])
        files.append(time.perf_counter() - started)
    return {"images": len(ds.files), "bytes": ds.images.nbytes, "first": first, "reopen": reopen,
            "cache": statistics.median(cache), "files": statistics.median(files)}


def hold(cfg: dict, ready, done) -> None:
    """(b), in a spawned process: the trial's data, every image read once, held until `done`."""
    import torch

    from trainables.trial_data import prepare_data

    torch.set_num_threads(1)
    data = prepare_data(cfg, masks=False)
    for dataset in (data.train_set, data.val_set):
        for i in range(len(dataset)):
            dataset[i]
    ready.wait()
    done.wait()


def pss_kib(pid: int, under: str) -> tuple[int, int]:
    """(PSS of the mappings of files under `under`, PSS of the whole process) of process pid, in KiB."""
    data = total = 0
    path = ""
    with open(f"/proc/{pid}/smaps") as f:
        for line in f:
            fields = line.split()
            if not fields[0].endswith(":"):  # a mapping's header: address range, perms, offset, device, inode, path
                path = fields[5] if len(fields) > 5 else ""
            elif fields[0] == "Pss:":
                total += int(fields[1])
                data += int(fields[1]) if path.startswith(under) else 0
    return data, total


def sharing(cfg: dict, processes: int) -> dict:
    """(b): the data PSS of each of `processes` processes holding the trial's data, and their total PSS."""
    from trainables.data import cache_dir

    context = multiprocessing.get_context("spawn")
    ready, done = context.Barrier(processes + 1), context.Event()
    workers = [context.Process(target=hold, args=(cfg, ready, done)) for _ in range(processes)]
    for worker in workers:
        worker.start()
    ready.wait()
    pss = [pss_kib(worker.pid, os.path.join(cache_dir(), "decoded")) for worker in workers]
    own = pss_kib(os.getpid(), os.path.join(cache_dir(), "decoded"))[0]
    done.set()
    for worker in workers:
        worker.join()
    return {"data": [d for d, _ in pss], "total": [t for _, t in pss], "own": own}


def throughput(cfg: dict, args) -> dict:
    """(a): images per second of train_epoch through the trial's loader and on batches held in memory."""
    import trainables.loop as loop
    from trainables import classification
    from trainables.optim import make_optimizer
    from trainables.speed import Speed

    loop.trial_cpus = lambda: args.threads  # start_trial sets torch's threads to the trial's CPUs
    device, data, model, loader = loop.start_trial(cfg, classification.TASK)
    optimizer = make_optimizer(model, cfg, cfg["optim/lr"])
    epochs = itertools.count(1)

    def through_loader(steps: int):  # the trial's training passes, epoch after epoch, for `steps` steps
        return itertools.islice(itertools.chain.from_iterable(loader.epoch(e) for e in epochs), steps)

    def train(batches) -> float:
        return loop.train_epoch(model, batches, classification.TASK.loss, optimizer, device, 1, cfg, Speed())[1]

    in_memory = [(batch, 0.0) for batch, _ in through_loader(args.steps)]
    train(iter(in_memory[:args.warmup]))
    train(through_loader(args.warmup))
    loader.images, loader.load_s = 0, 0.0
    real, memory = [], []
    for _ in range(args.rounds):
        real.append(train(through_loader(args.steps)))
        memory.append(train(iter(in_memory)))
    images = args.steps * cfg["train/batch_size"]
    return {"real": images * len(real) / sum(real), "memory": images * len(memory) / sum(memory),
            "load_s": loader.load_s / len(real), "real_s": statistics.fmean(real), "memory_s": statistics.fmean(memory)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", help="a covid_radiography-layout root (default: a synthetic one)")
    parser.add_argument("--per-class", type=int, default=100, help="synthetic images per class (4 classes)")
    parser.add_argument("--source-size", type=int, default=299, help="synthetic images' side in the files")
    parser.add_argument("--cache", help="the node cache folder (default: a fresh one, so the first open decodes)")
    parser.add_argument("--backbone", default="resnet18")
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--workers", type=int, default=0, help="data/workers of the trial's loader")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    parser.add_argument("--steps", type=int, default=30, help="training steps per round and path")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=2, help="(c): epochs of reading, the median kept")
    parser.add_argument("--processes", type=int, nargs="+", default=[1, 2, 4], help="(b): processes at once")
    args = parser.parse_args()

    os.environ["MEDTUNE_CACHE"] = args.cache or tempfile.mkdtemp(prefix="medtune-bench-cache-")
    from trainables.registry import get_trainable

    cfg = {**get_trainable("classification").defaults, "data/root": data_root(args),
           "data/image_size": args.image_size, "model/backbone": args.backbone,
           "train/batch_size": args.batch, "data/workers": args.workers}
    load = [os.getloadavg()[0]]
    c = decoding(cfg, args.epochs)
    load.append(os.getloadavg()[0])
    b = {n: sharing(cfg, n) for n in args.processes}
    load.append(os.getloadavg()[0])
    a = throughput(cfg, args)
    load.append(os.getloadavg()[0])

    mib = 1 / 1024
    print(f"{c['images']} images of {cfg['data/root']} at {args.image_size} px, cache {os.environ['MEDTUNE_CACHE']}; "
          f"load average {' -> '.join(f'{v:.1f}' for v in load)}")
    print(f"(c) decode once: first open {c['first']:.2f} s (decoding into the cache), later opens {c['reopen']:.2f} s; "
          f"per epoch: from the cache {c['cache']:.3f} s, decoding the files {c['files']:.2f} s "
          f"({c['files'] / c['cache']:.0f}x)")
    print(f"(b) decoded set: one copy {c['bytes'] / 2**20:.1f} MiB")
    print("    processes  data PSS per process (MiB)      data PSS total  / one copy  PSS per process (MiB, mean)")
    for n, m in b.items():
        per = ", ".join(f"{d * mib:.1f}" for d in m["data"])
        print(f"    {n:>9}  {per:<30}  {sum(m['data']) * mib:>10.1f} MiB  {sum(m['data']) * 1024 / c['bytes']:>10.2f}"
              f"  {statistics.fmean(m['total']) * mib:>10.1f}" + (f"  (this process: {m['own'] * mib:.1f})"
                                                                   if m["own"] else ""))
    ratio = a["real"] / a["memory"]
    print(f"(a) {args.backbone}, batch {args.batch}, {args.threads} thread(s), data/workers {args.workers}, "
          f"{args.rounds} x {args.steps} steps: loader {a['real']:.1f} images/s ({a['real_s']:.2f} s per round, "
          f"{a['load_s']:.2f} s of it producing batches), in memory {a['memory']:.1f} images/s "
          f"({a['memory_s']:.2f} s): ratio {ratio:.3f} (goal >= 0.95: {'yes' if ratio >= 0.95 else 'no'})")


if __name__ == "__main__":
    main()
