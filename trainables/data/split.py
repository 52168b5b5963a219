"""Deterministic stratified train/val split, saved once and reused; stratified data fractions."""

from __future__ import annotations

import json
import numbers
import os
import tempfile

import numpy as np

from .cache import DataError, ImageSet, cache_dir


def train_val_split(ds: ImageSet, val_fraction: float = 0.2, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Sorted (train, val) indices, stratified by label; saved as JSON and reused when present.

    The file is `<root>/.medtune/split-val<f>-seed<k>.json`, or, when root is not writable,
    `<cache_dir()>/splits/<fingerprint>-val<f>-seed<k>.json`.
    """
    if not isinstance(val_fraction, numbers.Real) or not 0 < val_fraction < 1:
        raise DataError(f"val_fraction must be between 0 and 1 (exclusive), got {val_fraction!r}.")
    paths = [
        os.path.join(ds.root, ".medtune", f"split-val{val_fraction}-seed{seed}.json"),
        os.path.join(cache_dir(), "splits", f"{ds.fingerprint}-val{val_fraction}-seed{seed}.json"),
    ]
    for path in paths:
        if os.path.isfile(path):
            return _read(path, ds)
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
    train, val = np.sort(train), np.sort(val)
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
    """Sorted stratified subset of `indices` (e.g. the training split) keeping `fraction` of each class.

    `labels` are the whole data set's labels (indexed by `indices`). Each class keeps
    round(fraction * n) images, at least 1, as a prefix of one seeded permutation, so the
    subset for a smaller fraction lies inside the one for a larger fraction.
    """
    if not isinstance(fraction, numbers.Real) or isinstance(fraction, bool) or not 0 < fraction <= 1:
        raise DataError(f"fraction must be a number in (0, 1], got {fraction!r}.")
    indices = np.asarray(indices)
    if fraction == 1:
        return indices
    ordered = np.sort(indices)
    own = np.asarray(labels)[ordered]
    keep = []
    for label in np.unique(own):
        members = ordered[own == label]
        order = np.random.default_rng([seed, int(label)]).permutation(len(members))
        keep.append(members[order[: max(1, round(fraction * len(members)))]])
    return np.sort(np.concatenate(keep))


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
