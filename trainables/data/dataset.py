"""Opening a data set in any public layout: scan it, set the held-out test split apart, fingerprint the part
opened, decode it once per node, memory-map it."""

from __future__ import annotations

import hashlib
import logging
import os
from concurrent.futures import ThreadPoolExecutor

from .cache import BadImageError, DataError, ImageSet, build_once, cache_dir, read_image_set, write_image_set
from .images import decode
from .layouts import LAYOUTS, MODULES, Listing, check_layout, scan
from .split import hold_out_test
from .synthetic import ensure_synthetic

ON_BAD_IMAGE = ("fail", "skip")
PARTS = ("search", "test")
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
    part: str = "search",
    test_annotations: str = "",
    test_fraction: float = 0.15,
) -> ImageSet:
    """Open one part of a data set decoded to `image_size` px; None or "" means the layout's synthetic set.

    `layout` is one of LAYOUTS (see `trainables.data.layouts`); `split_files` names official
    split lists, `annotations` the labelled pool and `test_annotations` the official test list
    (annotation_list only), all relative to root. A corrupt image fails the open
    (on_bad_image="fail") or is left out and listed in `ImageSet.skipped` ("skip").

    `part="search"` is the train+val images only: the held-out test images are neither decoded
    into it nor memory-mapped by it, so a search cannot reach them. `part="test"` is only the
    held-out test images (`split` None), decoded into a cache entry of their own. The test split
    is the official test list where there is one, else `test_fraction` of the images drawn once,
    stratified, and saved beside the data (see `trainables.data.split`).
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
    listing, fingerprint, selection = _select(
        layout, root, masks, split_files, annotations, test_annotations, test_fraction, part
    )
    skip = on_bad_image == "skip"
    key = f"{fingerprint}-s{image_size}-c{channels}" + ("-m" if masks else "") + ("-skip" if skip else "")
    target = os.path.join(cache_dir(), "decoded", key + ("-test" if part == "test" else ""))
    if os.path.isdir(target):
        log.info("Data: %d images of %s, decoded at %d px, from the node cache", len(listing.files), root, image_size)
    path = build_once(
        target,
        lambda tmp: write_image_set(
            tmp, listing.classes, listing.files, listing.labels, listing.split,
            _decode_all(root, listing, image_size, channels, skip), image_size, channels, masks,
        ),
    )
    ds = read_image_set(path, root, fingerprint, selection, part)
    if ds.skipped:
        log.warning("Left out %d undecodable images of %s (first: %s).", len(ds.skipped), root, ds.skipped[0])
    return ds


def data_fingerprint(
    root: str | None,
    layout: str = "covid_radiography",
    split_files: str = "",
    annotations: str = "trainval.txt",
    test_annotations: str = "",
    test_fraction: float = 0.15,
    part: str = "search",
) -> str:
    """The fingerprint `open_dataset` gives for these arguments, from file names, sizes and list contents only
    (nothing is decoded; a test split not drawn yet is drawn and saved)."""
    root = _resolve(root, layout)
    return _select(layout, root, False, split_files, annotations, test_annotations, test_fraction, part)[1]


def _resolve(root: str | None, layout: str) -> str:
    check_layout(layout)
    root = os.path.abspath(root) if root else ensure_synthetic(layout)
    if not os.path.isdir(root):
        raise DataError(
            f"Data root {root!r} does not exist or is not a folder; expected a folder laid out as "
            f"{MODULES[layout].SHAPE} (data/layout={layout!r}; layouts: {', '.join(LAYOUTS)})."
        )
    return root


def _select(
    layout: str, root: str, masks: bool, split_files: str, annotations: str, test_annotations: str,
    test_fraction: float, part: str,
) -> tuple[Listing, str, list[str]]:
    """The listing of one part, its fingerprint, and the names of what besides root picked its images."""
    if part not in PARTS:
        raise DataError(
            f"part must be one of {', '.join(PARTS)}, got {part!r}: \"search\" opens the train and val images, "
            '"test" only the held-out test images.'
        )
    whole = scan(layout, root, masks, split_files, annotations, test_annotations)
    digest = _digest(layout, root, whole)
    selection = _selection(layout, root, split_files, annotations, test_annotations)
    test = whole.test
    if test is None:
        pool = whole.split["train"] if whole.split else list(range(len(whole.files)))
        test = hold_out_test(whole.files, whole.labels, pool, root, digest.hexdigest()[:16], "-".join(selection),
                          test_fraction)
        selection.append(f"test{test_fraction}")
    if not len(test):
        message = (f"The held-out test split of {root!r} is empty: data/test_fraction={test_fraction} draws "
                   f"round(fraction * n) of each class's n images, none here; use a larger data/test_fraction, "
                   "more images, or an official test list.")
        if part == "test":
            raise DataError(message)
        log.warning(message)
    listing = whole.part(list(test), part)
    digest.update(f"part\0{part}\n".encode())
    for rel in listing.files:
        digest.update(f"{rel}\n".encode())
    return listing, digest.hexdigest()[:16], selection


def _selection(layout: str, root: str, split_files: str, annotations: str, test_annotations: str) -> list[str]:
    """Names of the lists that pick images from root: annotation lists by stem, a split-list folder by name."""
    if layout == "annotation_list":
        return [os.path.splitext(name)[0].replace(os.sep, "_") for name in (annotations, split_files, test_annotations)
                if name]
    return [os.path.basename(os.path.normpath(os.path.join(root, split_files)))] if split_files else []


def _digest(layout: str, root: str, listing: Listing):
    """Digest of the layout, the names and byte sizes of the image and mask files, and the lists' contents."""
    digest = hashlib.sha256(f"{layout}-v2".encode())
    for rel in listing.sources:
        digest.update(f"{rel}\0{os.path.getsize(os.path.join(root, rel))}\n".encode())
    for path in listing.lists:
        with open(path, "rb") as f:
            digest.update(f"{os.path.relpath(path, root)}\0{hashlib.sha256(f.read()).hexdigest()}\n".encode())
    return digest


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

    log.info("Data: decoding %d images of %s at %d px into the node cache %s", len(listing.files), root, image_size,
             cache_dir())
    pool = ThreadPoolExecutor(max_workers=min(16, os.cpu_count() or 1))
    try:
        yield from pool.map(one, range(len(listing.files)))
    finally:  # after a failure, decode nothing more
        pool.shutdown(cancel_futures=True)
