"""Test, train/val splits (official lists, or drawn once, saved and reused) and training subsets (fraction, k-shot).

The held-out test split is the official test list where the layout has one (COVID-CT's
`Data-split/*/test*.txt`, a MedFMC `*_test*.txt` as data/test_annotations). Otherwise
`hold_out_test` draws it once from the listing, before anything is decoded: of each stratum
round(test_fraction * n) images (never a stratum's last one, and every class keeps an image
outside test), with a fixed seed stream that no data/split_seed shares, so seeds, val
fractions and train/val re-draws never move it. Where official train/val lists exist but no
test list, it is drawn from the official train images only: the official val split stays
intact, so validation numbers stay comparable with the official protocol. It is saved as
`<root>/.medtune/test-[<variant>-]frac<f>.json` (or in the node cache when root is not
writable) and read back on later opens. Train/val are then split from the remaining images.
No layout here names patients; one that does must group the test draw by patient.

Multi-label sets (labels (N, C)) are stratified on each image's rarest label: the label
with the fewest images in the set, ties to the lower index; images without any label form
their own stratum.
"""

from __future__ import annotations

import json
import numbers
import os
import tempfile
from collections.abc import Callable

import numpy as np

from .cache import DataError, ImageSet, cache_dir

TEST_STREAM = (7357, 0)  # the test draw's seed; data/split_seed streams are single integers, never this pair


def train_val_split(ds: ImageSet, val_fraction: float = 0.2, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Sorted (train, val) indices: the official ones when `ds.split` is set, else drawn and saved.

    A drawn split is stratified by label (multi-label: by rarest label, and every class present in
    the set keeps an image in train). It is saved as `<root>/.medtune/split-[<variant>-]val<f>-seed<k>.json`,
    or, when root is not writable, `<cache_dir()>/splits/<fingerprint>[-<variant>]-val<f>-seed<k>.json`,
    and read back from there on later calls.
    """
    _check_fraction(val_fraction, "val_fraction")
    if ds.part == "test":
        raise DataError(f"The held-out test split of {ds.root!r} is never split into train and val; "
                        'open the data set with part="search" to split it.')
    if ds.split is not None:
        return np.sort(ds.split["train"]), np.sort(ds.split["val"])
    return _saved(
        _paths(ds.root, ds.fingerprint, "split", ds.variant, f"val{val_fraction}-seed{seed}"), ds.files, ds.root,
        ("train", "val"), lambda: (_multilabel_split if ds.multilabel else _stratified_split)(ds, val_fraction, seed),
        {"val_fraction": val_fraction, "seed": seed, "fingerprint": ds.fingerprint},
    )


def hold_out_test(
    files: list[str], labels: np.ndarray, pool: list[int], root: str, fingerprint: str, variant: str, fraction: float
) -> np.ndarray:
    """Sorted indices into `files` of the drawn test split: `fraction` of the images at `pool`, stratified.

    Saved as `<root>/.medtune/test-[<variant>-]frac<f>.json`, or, when root is not writable,
    `<cache_dir()>/splits/<fingerprint>[-<variant>]-frac<f>.json` (`fingerprint`: of the whole listing),
    and read back from there.
    """
    _check_fraction(fraction, "test_fraction (data/test_fraction)")
    pool = np.asarray(pool, dtype=np.int64)
    names = [files[i] for i in pool]

    def draw() -> tuple[np.ndarray, np.ndarray]:
        held = held_out(np.asarray(labels)[pool], fraction, TEST_STREAM)
        return np.flatnonzero(held), np.flatnonzero(~held)

    test, _ = _saved(_paths(root, fingerprint, "test", variant, f"frac{fraction}"), names, root, ("test", "rest"),
                     draw, {"test_fraction": fraction, "seed": list(TEST_STREAM), "fingerprint": fingerprint})
    return pool[test]


def held_out(labels: np.ndarray, fraction: float, stream: tuple[int, ...]) -> np.ndarray:
    """Boolean mask of a stratified draw: per stratum round(fraction * n) images, never a stratum's last one,
    from a permutation seeded by (*stream, stratum); then any class left with no image outside the draw gets
    its first drawn image back."""
    own = strata(labels)
    drawn = np.zeros(len(own), dtype=bool)
    for stratum in np.unique(own):
        members = np.flatnonzero(own == stratum)
        order = np.random.default_rng([*stream, int(stratum)]).permutation(len(members))
        drawn[members[order[: min(round(fraction * len(members)), len(members) - 1)]]] = True
    hot = labels.astype(bool) if labels.ndim == 2 else labels[:, None] == np.unique(labels)[None, :]
    for c in np.flatnonzero(hot.any(0) & ~hot[~drawn].any(0)):
        drawn[np.flatnonzero(hot[:, c] & drawn)[0]] = False
    return drawn


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
    """Val drawn by `held_out` per rarest-label stratum, every class keeping a train image."""
    in_val = held_out(ds.labels, val_fraction, (seed,))
    if not in_val.any():
        raise DataError(
            f"Cannot draw a val split from the {len(ds.files)} images of {ds.root!r} with val_fraction={val_fraction} "
            "while keeping every class in train; use a larger val_fraction or more images."
        )
    return np.flatnonzero(~in_val), np.flatnonzero(in_val)


def _check_fraction(value: float, name: str) -> None:
    if not isinstance(value, numbers.Real) or isinstance(value, bool) or not 0 < value < 1:
        raise DataError(f"{name} must be between 0 and 1 (exclusive), got {value!r}.")


def _paths(root: str, fingerprint: str, kind: str, variant: str, what: str) -> list[str]:
    """Where a drawn split is saved: beside the data, else (root not writable) in the node cache."""
    name = f"{variant}-{what}.json" if variant else f"{what}.json"
    return [os.path.join(root, ".medtune", f"{kind}-{name}"),
            os.path.join(cache_dir(), "splits", f"{fingerprint}-{name}")]


def _saved(
    paths: list[str], files: list[str], root: str, keys: tuple[str, str],
    draw: Callable[[], tuple[np.ndarray, np.ndarray]], about: dict,
) -> tuple[np.ndarray, np.ndarray]:
    """The two parts (sorted indices into `files`) read from the first of `paths` that exists, else drawn
    and saved to the first writable one."""
    for path in paths:
        if os.path.isfile(path):
            return _read(path, files, root, keys)
    parts = draw()
    content = {**about, **{key: [files[i] for i in part] for key, part in zip(keys, parts)}}
    try:
        _write_atomically(paths[0], content)
    except OSError:  # root not writable (read-only mount, another owner): keep it in the node cache
        _write_atomically(paths[1], content)
    return parts


def _read(path: str, files: list[str], root: str, keys: tuple[str, str]) -> tuple[np.ndarray, np.ndarray]:
    lists = " and ".join(repr(key) for key in keys)
    try:
        with open(path) as f:
            saved = json.load(f)
        named = saved[keys[0]] + saved[keys[1]]
    except (ValueError, KeyError, TypeError) as e:
        raise DataError(
            f"Split file {path!r} is not a split (JSON with {lists} lists of files): {e!r}; "
            "delete it to draw a new split."
        ) from e
    index = {name: i for i, name in enumerate(files)}
    missing = [name for name in named if name not in index]
    if missing:
        raise DataError(
            f"Split file {path!r} names {len(missing)} files that are not in the data set at {root!r} "
            f"(first: {missing[0]!r}); delete the file to draw a new split."
        )
    if len(named) != len(files) or len(set(named)) != len(files):
        raise DataError(
            f"Split file {path!r} does not list each of the {len(files)} images at {root!r} exactly once "
            f"(it lists {len(named)} entries, {len(set(named))} distinct); delete the file to draw a new split."
        )
    return tuple(np.sort(np.array([index[n] for n in saved[k]], dtype=np.int64)) for k in keys)


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
