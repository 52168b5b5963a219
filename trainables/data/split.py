"""Train/val splits (official lists, or drawn once, saved and reused) and training subsets (fraction, k-shot).

Multi-label sets (labels (N, C)) are stratified on each image's rarest label: the label
with the fewest images in the set, ties to the lower index; images without any label form
their own stratum.
"""

from __future__ import annotations

import json
import numbers
import os
import tempfile

import numpy as np

from .cache import DataError, ImageSet, cache_dir


def train_val_split(ds: ImageSet, val_fraction: float = 0.2, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Sorted (train, val) indices: the official ones when `ds.split` is set, else drawn and saved.

    A drawn split is stratified by label (multi-label: by rarest label, and every class present in
    the set keeps an image in train). It is saved as `<root>/.medtune/split-[<variant>-]val<f>-seed<k>.json`,
    or, when root is not writable, `<cache_dir()>/splits/<fingerprint>[-<variant>]-val<f>-seed<k>.json`,
    and read back from there on later calls.
    """
    if not isinstance(val_fraction, numbers.Real) or not 0 < val_fraction < 1:
        raise DataError(f"val_fraction must be between 0 and 1 (exclusive), got {val_fraction!r}.")
    if ds.split is not None:
        return np.sort(ds.split["train"]), np.sort(ds.split["val"])
    variant = f"{ds.variant}-" if ds.variant else ""
    paths = [
        os.path.join(ds.root, ".medtune", f"split-{variant}val{val_fraction}-seed{seed}.json"),
        os.path.join(cache_dir(), "splits", f"{ds.fingerprint}-{variant}val{val_fraction}-seed{seed}.json"),
    ]
    for path in paths:
        if os.path.isfile(path):
            return _read(path, ds)
    train, val = (_multilabel_split if ds.multilabel else _stratified_split)(ds, val_fraction, seed)
    content = {
        "val_fraction": val_fraction,
        "seed": seed,
        "fingerprint": ds.fingerprint,
        "train": [ds.files[i] for i in train],
        "val": [ds.files[i] for i in val],
    }
    try:
        _write_atomically(paths[0], content)
    except OSError:  # root not writable (read-only mount, another owner): keep it in the node cache
        _write_atomically(paths[1], content)
    return train, val


def fraction_subset(indices: np.ndarray, labels: np.ndarray, fraction: float, seed: int = 0) -> np.ndarray:
    """Sorted stratified subset of `indices` (e.g. the training split) keeping `fraction` of each stratum.

    `labels` are the whole data set's labels (indexed by `indices`), (N,) or multi-hot (N, C);
    strata are the classes, or the rarest labels among `indices`. Each stratum keeps
    round(fraction * n) images, at least 1, as a prefix of one seeded permutation, so the
    subset for a smaller fraction lies inside the one for a larger fraction.
    """
    if not isinstance(fraction, numbers.Real) or isinstance(fraction, bool) or not 0 < fraction <= 1:
        raise DataError(
            f"fraction must be a number in (0, 1], got {fraction!r} (data/fraction: the share of the training split "
            "to keep)."
        )
    indices = np.asarray(indices)
    if fraction == 1:
        return indices
    ordered = np.sort(indices)
    own = strata(np.asarray(labels)[ordered])
    keep = []
    for stratum in np.unique(own):
        members = ordered[own == stratum]
        order = np.random.default_rng([seed, int(stratum)]).permutation(len(members))
        keep.append(members[order[: max(1, round(fraction * len(members)))]])
    return np.sort(np.concatenate(keep))


def shots_subset(
    indices: np.ndarray, labels: np.ndarray, shots: int, seed: int = 0, classes: list[str] | None = None
) -> np.ndarray:
    """Sorted k-shot subset of `indices` (the training split): `shots` images of each class; 0 means all.

    Single-label: exactly `shots` per class. Multi-label (MedFMC): at least `shots` images
    containing each class, picked in rounds, rarest class first, each class taking its next
    image from its own seeded order of the images carrying it. The picks of round k never
    depend on later rounds, so the 1-shot set lies inside the 5-shot set inside the 10-shot set.
    Classes are those with at least one image in `labels`; `classes` only names them in errors.
    """
    if not isinstance(shots, numbers.Integral) or isinstance(shots, bool) or shots < 0:
        raise DataError(
            f"shots must be a non-negative integer, got {shots!r} (data/shots_per_class: images per class, 0 = all)."
        )
    indices = np.asarray(indices)
    if shots == 0:
        return indices
    labels = np.asarray(labels)
    hot = labels.astype(bool) if labels.ndim == 2 else labels[:, None] == np.arange(labels.max() + 1)
    ordered = np.sort(indices)
    counts = hot[ordered].sum(0)
    present = np.flatnonzero(hot.any(0))
    for c in present:
        if counts[c] < shots:
            name = f"class {classes[c]!r}" if classes else f"class {c}"
            raise DataError(
                f"{name} has {counts[c]} images in the training split, fewer than the {shots} shots requested "
                f"(data/shots_per_class); use at most {counts[c]} shots, or 0 for all images."
            )
    queues = {c: iter(ordered[hot[ordered, c]][np.random.default_rng([seed, int(c)]).permutation(counts[c])])
              for c in present}
    chosen: set[int] = set()
    have = np.zeros(hot.shape[1], dtype=np.int64)
    for round_ in range(1, shots + 1):
        for c in sorted(present, key=lambda c: (counts[c], c)):
            while have[c] < round_:
                pick = int(next(queues[c]))
                if pick not in chosen:
                    chosen.add(pick)
                    have += hot[pick]
    return np.sort(np.fromiter(chosen, dtype=indices.dtype if indices.size else np.int64))


def strata(labels: np.ndarray) -> np.ndarray:
    """The stratum of each row: its class, or for multi-hot rows the rarest label among these rows
    (ties to the lower index), and C (the number of classes) for rows without any label."""
    if labels.ndim == 1:
        return labels
    hot = labels.astype(bool)
    frequency = np.where(hot, hot.sum(0)[None, :], np.iinfo(np.int64).max)
    return np.where(hot.any(1), np.argmin(frequency, axis=1), hot.shape[1])


def _stratified_split(ds: ImageSet, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    from sklearn.model_selection import train_test_split  # imported here: it takes seconds to import

    try:
        train, val = train_test_split(
            np.arange(len(ds.files)), test_size=val_fraction, stratify=ds.labels, random_state=seed
        )
    except ValueError as e:
        raise DataError(
            f"Cannot split the {len(ds.files)} images of {ds.root!r} stratified by class "
            f"with val_fraction={val_fraction}: {e}"
        ) from e
    return np.sort(train), np.sort(val)


def _multilabel_split(ds: ImageSet, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Per rarest-label stratum, round(val_fraction * n) images to val (never a stratum's last one);
    then any class left without a train image gets back its first val image."""
    own = strata(ds.labels)
    in_val = np.zeros(len(own), dtype=bool)
    for stratum in np.unique(own):
        members = np.flatnonzero(own == stratum)
        order = np.random.default_rng([seed, int(stratum)]).permutation(len(members))
        in_val[members[order[: min(round(val_fraction * len(members)), len(members) - 1)]]] = True
    hot = ds.labels.astype(bool)
    for c in np.flatnonzero(hot.any(0) & ~hot[~in_val].any(0)):
        in_val[np.flatnonzero(hot[:, c] & in_val)[0]] = False
    if not in_val.any():
        raise DataError(
            f"Cannot draw a val split from the {len(ds.files)} images of {ds.root!r} with val_fraction={val_fraction} "
            "while keeping every class in train; use a larger val_fraction or more images."
        )
    return np.flatnonzero(~in_val), np.flatnonzero(in_val)


def _read(path: str, ds: ImageSet) -> tuple[np.ndarray, np.ndarray]:
    try:
        with open(path) as f:
            saved = json.load(f)
        named = saved["train"] + saved["val"]
    except (ValueError, KeyError, TypeError) as e:
        raise DataError(
            f"Split file {path!r} is not a split (JSON with 'train' and 'val' lists of files): {e!r}; "
            "delete it to draw a new split."
        ) from e
    index = {name: i for i, name in enumerate(ds.files)}
    missing = [name for name in named if name not in index]
    if missing:
        raise DataError(
            f"Split file {path!r} names {len(missing)} files that are not in the data set at {ds.root!r} "
            f"(first: {missing[0]!r}); delete the file to draw a new split."
        )
    if len(named) != len(ds.files) or len(set(named)) != len(ds.files):
        raise DataError(
            f"Split file {path!r} does not list each of the {len(ds.files)} images at {ds.root!r} exactly once "
            f"(it lists {len(named)} entries, {len(set(named))} distinct); delete the file to draw a new split."
        )
    return tuple(np.sort(np.array([index[n] for n in saved[k]], dtype=np.int64)) for k in ("train", "val"))


def _write_atomically(path: str, content: dict) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".split-", suffix=".tmp", dir=os.path.dirname(path))
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(content, f, indent=1)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise
