"""Opening a data set in any public layout: scan it, fingerprint it, decode it once per node, memory-map it."""

from __future__ import annotations

import hashlib
import logging
import os
from concurrent.futures import ThreadPoolExecutor

from .cache import BadImageError, DataError, ImageSet, build_once, cache_dir, read_image_set, write_image_set
from .images import decode
from .layouts import LAYOUTS, MODULES, Listing, check_layout, scan
from .synthetic import ensure_synthetic

ON_BAD_IMAGE = ("fail", "skip")
log = logging.getLogger(__name__)


def open_dataset(
    root: str | None,
    image_size: int,
    channels: int = 1,
    masks: bool = True,
    layout: str = "covid_radiography",
    split_files: str = "",
    annotations: str = "trainval.txt",
    on_bad_image: str = "fail",
) -> ImageSet:
    """Open a data set decoded to `image_size` px; None or "" means the layout's synthetic set.

    `layout` is one of LAYOUTS (see `trainables.data.layouts`); `split_files` names official
    split lists and `annotations` the labelled pool (annotation_list only), both relative to
    root. A corrupt image fails the open (on_bad_image="fail") or is left out and listed in
    `ImageSet.skipped` ("skip").
    """
    if not isinstance(image_size, int) or isinstance(image_size, bool) or image_size < 1:
        raise DataError(f"image_size must be a positive integer, got {image_size!r}.")
    if channels not in (1, 3):
        raise DataError(f"channels must be 1 (grayscale) or 3 (RGB), got {channels!r}.")
    if on_bad_image not in ON_BAD_IMAGE:
        raise DataError(
            f"on_bad_image (data/on_bad_image) must be one of {', '.join(ON_BAD_IMAGE)}, got {on_bad_image!r}: "
            '"fail" stops at the first undecodable image, "skip" leaves such images out and lists them.'
        )
    root = _resolve(root, layout)
    listing = scan(layout, root, masks, split_files, annotations)
    fingerprint = _fingerprint(layout, root, listing)
    skip = on_bad_image == "skip"
    key = f"{fingerprint}-s{image_size}-c{channels}" + ("-m" if masks else "") + ("-skip" if skip else "")
    path = build_once(
        os.path.join(cache_dir(), "decoded", key),
        lambda tmp: write_image_set(
            tmp, listing.classes, listing.files, listing.labels, listing.split,
            _decode_all(root, listing, image_size, channels, skip), image_size, channels, masks,
        ),
    )
    selection = []
    if layout == "annotation_list":
        selection = [os.path.splitext(name)[0].replace(os.sep, "_") for name in (annotations, split_files) if name]
    ds = read_image_set(path, root, fingerprint, selection)
    if ds.skipped:
        log.warning("Left out %d undecodable images of %s (first: %s).", len(ds.skipped), root, ds.skipped[0])
    return ds


def data_fingerprint(
    root: str | None, layout: str = "covid_radiography", split_files: str = "", annotations: str = "trainval.txt"
) -> str:
    """The fingerprint `open_dataset` gives for these arguments, from file names, sizes and list contents only."""
    root = _resolve(root, layout)
    return _fingerprint(layout, root, scan(layout, root, False, split_files, annotations))


def _resolve(root: str | None, layout: str) -> str:
    check_layout(layout)
    root = os.path.abspath(root) if root else ensure_synthetic(layout)
    if not os.path.isdir(root):
        raise DataError(
            f"Data root {root!r} does not exist or is not a folder; expected a folder laid out as "
            f"{MODULES[layout].SHAPE} (data/layout={layout!r}; layouts: {', '.join(LAYOUTS)})."
        )
    return root


def _fingerprint(layout: str, root: str, listing: Listing) -> str:
    """Digest of the layout, the names and byte sizes of the image and mask files, and the lists' contents."""
    digest = hashlib.sha256(f"{layout}-v1".encode())
    for rel in listing.sources:
        digest.update(f"{rel}\0{os.path.getsize(os.path.join(root, rel))}\n".encode())
    for path in listing.lists:
        with open(path, "rb") as f:
            digest.update(f"{os.path.relpath(path, root)}\0{hashlib.sha256(f.read()).hexdigest()}\n".encode())
    return digest.hexdigest()[:16]


def _decode_all(root: str, listing: Listing, image_size: int, channels: int, skip: bool):
    """(image, mask) arrays in file order, decoded on a thread pool (PIL releases the GIL); with
    `skip`, an undecodable image yields its BadImageError instead."""

    def one(i: int):
        try:
            return decode(root, listing.files[i], None if listing.masks is None else listing.masks[i],
                          image_size, channels)
        except BadImageError as e:
            if skip:
                return e
            raise

    pool = ThreadPoolExecutor(max_workers=min(16, os.cpu_count() or 1))
    try:
        yield from pool.map(one, range(len(listing.files)))
    finally:  # after a failure, decode nothing more
        pool.shutdown(cancel_futures=True)
