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
from dataclasses import dataclass

import numpy as np
from filelock import FileLock


class DataError(ValueError):
    """A data set, path or data parameter that cannot be used as given."""


@dataclass(frozen=True)
class ImageSet:
    """A decoded data set: arrays in file order plus where they came from."""

    images: np.ndarray  # uint8 (N, S, S, C); may be a read-only np.memmap
    masks: np.ndarray | None  # uint8 (N, S, S) with values 0/1, or None
    labels: np.ndarray  # int64 (N,)
    classes: list[str]  # class names in label order
    files: list[str]  # image paths relative to root, in array order
    fingerprint: str  # digest of the source files, independent of image size
    root: str  # absolute data root


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
    decoded: Iterable[tuple[np.ndarray, np.ndarray | None]],
    image_size: int,
    channels: int,
    masks: bool,
) -> None:
    """Write decoded (image, mask) pairs, in `files` order, as `.npy` files plus `meta.json`."""
    n = len(files)
    images = np.lib.format.open_memmap(
        os.path.join(path, "images.npy"), mode="w+", dtype=np.uint8, shape=(n, image_size, image_size, channels)
    )
    mask_arr = (
        np.lib.format.open_memmap(
            os.path.join(path, "masks.npy"), mode="w+", dtype=np.uint8, shape=(n, image_size, image_size)
        )
        if masks
        else None
    )
    for i, (image, mask) in enumerate(decoded):
        images[i] = image
        if mask_arr is not None:
            mask_arr[i] = mask
    images.flush()
    if mask_arr is not None:
        mask_arr.flush()
    np.save(os.path.join(path, "labels.npy"), np.asarray(labels, dtype=np.int64))
    with open(os.path.join(path, "meta.json"), "w") as f:
        json.dump({"classes": classes, "files": files, "image_size": image_size, "channels": channels}, f)


def read_image_set(path: str, root: str, fingerprint: str) -> ImageSet:
    """Memory-map a set written by `write_image_set`."""
    with open(os.path.join(path, "meta.json")) as f:
        meta = json.load(f)
    masks_file = os.path.join(path, "masks.npy")
    return ImageSet(
        images=np.load(os.path.join(path, "images.npy"), mmap_mode="r"),
        masks=np.load(masks_file, mmap_mode="r") if os.path.exists(masks_file) else None,
        labels=np.load(os.path.join(path, "labels.npy")),
        classes=meta["classes"],
        files=meta["files"],
        fingerprint=fingerprint,
        root=root,
    )
