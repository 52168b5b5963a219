"""The decoded form of a data set (`ImageSet`) and the per-node cache that holds it.

A data set is decoded once per node into uint8 `.npy` files under
`<cache_dir()>/decoded/<key>/`; every later open, in any process, memory-maps them.
Directories are built in a temporary folder beside their target and renamed into
place under a file lock, so concurrent trials never see a half-written one.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import numpy as np
from filelock import FileLock


class DataError(ValueError):
    """A data set, path or data parameter that cannot be used as given."""


class BadImageError(DataError):
    """An image or mask file that cannot be decoded; `file` is the image's path relative to the root."""

    def __init__(self, message: str, file: str, reason: str):
        super().__init__(message)
        self.file, self.reason = file, reason


@dataclass(frozen=True)
class ImageSet:
    """A decoded data set: arrays in file order plus where they came from."""

    images: np.ndarray  # uint8 (N, S, S, C); may be a read-only np.memmap
    masks: np.ndarray | None  # uint8 (N, S, S) with values 0/1, or None
    labels: np.ndarray  # int64 (N,) class indices, or uint8 (N, C) multi-hot for multi-label sets
    classes: list[str]  # class names in label order
    files: list[str]  # image paths relative to root, in array order
    fingerprint: str  # digest of the source files, independent of image size
    root: str  # absolute data root
    split: dict[str, np.ndarray] | None = None  # official "train"/"val" indices (test images are not in the set)
    skipped: list[str] = field(default_factory=list)  # "<file>: <reason>" of images left out (on_bad_image="skip")
    variant: str = ""  # what besides root picked these images (lists, test split, skips); saved splits are per variant
    part: str = "search"  # "search": train+val images only; "test": the held-out test images only

    @property
    def multilabel(self) -> bool:
        return self.labels.ndim == 2


def cache_dir() -> str:
    """The node's cache folder: `$MEDTUNE_CACHE`, else `~/.cache/medtune`."""
    return os.environ.get("MEDTUNE_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "medtune")


def build_once(target: str, build: Callable[[str], None]) -> str:
    """Create directory `target` by `build(tmp_dir)` unless it exists; atomic across processes."""
    if os.path.isdir(target):
        return target
    parent = os.path.dirname(os.path.abspath(target))
    os.makedirs(parent, exist_ok=True)
    with FileLock(target + ".lock"):
        if not os.path.isdir(target):
            tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(target)}.tmp-", dir=parent)
            try:
                build(tmp)
                os.rename(tmp, target)
            except BaseException:
                shutil.rmtree(tmp, ignore_errors=True)
                raise
    return target


def write_image_set(
    path: str,
    classes: list[str],
    files: list[str],
    labels: np.ndarray,
    split: dict[str, list[int]] | None,
    decoded: Iterable[tuple[np.ndarray, np.ndarray | None] | BadImageError],
    image_size: int,
    channels: int,
    masks: bool,
) -> None:
    """Write decoded (image, mask) pairs, in `files` order, as `.npy` files plus `meta.json`.

    An item of `decoded` that is a BadImageError is left out and listed in `skipped`;
    `labels`, `files` and the `split` indices are then renumbered over the images kept.
    """
    n = len(files)
    arrays = {"images": (n, image_size, image_size, channels)}
    if masks:
        arrays["masks"] = (n, image_size, image_size)
    out = {
        name: np.lib.format.open_memmap(os.path.join(path, f"{name}.npy"), mode="w+", dtype=np.uint8, shape=shape)
        for name, shape in arrays.items()
    }
    kept, skipped = [], []
    for i, item in enumerate(decoded):
        if isinstance(item, BadImageError):
            skipped.append(f"{item.file}: {item.reason}")
            continue
        for name, value in zip(("images", "masks"), item):
            if name in out:
                out[name][len(kept)] = value
        kept.append(i)
    if len(kept) < n:
        if not kept:
            raise DataError(
                f"None of the {n} images could be decoded (first: {skipped[0]}); there is nothing to train on."
            )
        for name, array in out.items():  # drop the unused tail: copy the kept rows into a file of the right shape
            np.save(os.path.join(path, f"{name}.tmp.npy"), array[: len(kept)])
            os.replace(os.path.join(path, f"{name}.tmp.npy"), os.path.join(path, f"{name}.npy"))
    else:
        for array in out.values():
            array.flush()
    renumber = {old: new for new, old in enumerate(kept)}
    if split:
        split = {part: [renumber[i] for i in members if i in renumber] for part, members in split.items()}
    for part, members in (split or {}).items():
        if not members:
            raise DataError(
                f"Every image of the official {part} split was left out as undecodable ({len(skipped)} in all, "
                f"first: {skipped[0]}); replace them, or leave split_files empty to draw a split."
            )
    np.save(os.path.join(path, "labels.npy"), np.asarray(labels)[kept])
    meta = {
        "classes": classes,
        "files": [files[i] for i in kept],
        "image_size": image_size,
        "channels": channels,
        "split": split,
        "skipped": skipped,
    }
    with open(os.path.join(path, "meta.json"), "w") as f:
        json.dump(meta, f)


def read_image_set(path: str, root: str, fingerprint: str, selection: list[str], part: str = "search") -> ImageSet:
    """Memory-map a set written by `write_image_set`; `selection` names what picked its images from root."""
    with open(os.path.join(path, "meta.json")) as f:
        meta = json.load(f)
    masks_file = os.path.join(path, "masks.npy")
    split = meta.get("split")
    return ImageSet(
        images=np.load(os.path.join(path, "images.npy"), mmap_mode="r"),
        masks=np.load(masks_file, mmap_mode="r") if os.path.exists(masks_file) else None,
        labels=np.load(os.path.join(path, "labels.npy")),
        classes=meta["classes"],
        files=meta["files"],
        fingerprint=fingerprint,
        root=root,
        split={k: np.asarray(v, dtype=np.int64) for k, v in split.items()} if split else None,
        skipped=meta.get("skipped", []),
        variant="-".join(selection + ([f"skip{len(meta['skipped'])}"] if meta.get("skipped") else [])),
        part=part,
    )
