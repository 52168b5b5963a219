"""Loader for the COVID-19 Radiography Database layout.

    <root>/<Class>/images/<name>.png    (also .jpg / .jpeg)
    <root>/<Class>/masks/<name>.png     (same file name; may be a different size)

Class folders are the sub-directories of root that hold an `images/` folder, sorted by
name; anything beside them (metadata spreadsheets, README) is ignored.
"""

from __future__ import annotations

import hashlib
import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from PIL import Image

from .cache import DataError, ImageSet, build_once, cache_dir, read_image_set, write_image_set
from .synthetic import ensure_synthetic

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg")
LAYOUT = "<root>/<Class>/images/<name>.png with masks at <root>/<Class>/masks/<name>.png"


def open_dataset(root: str | None, image_size: int, channels: int = 1, masks: bool = True) -> ImageSet:
    """Open a data set decoded to `image_size` px; None or "" means the embedded synthetic set."""
    if not isinstance(image_size, int) or isinstance(image_size, bool) or image_size < 1:
        raise DataError(f"image_size must be a positive integer, got {image_size!r}.")
    if channels not in (1, 3):
        raise DataError(f"channels must be 1 (grayscale) or 3 (RGB), got {channels!r}.")
    root = _resolve(root)
    classes, files, labels = _scan(root, masks)
    fingerprint = _fingerprint(root, classes)
    key = f"{fingerprint}-s{image_size}-c{channels}" + ("-m" if masks else "")
    path = build_once(
        os.path.join(cache_dir(), "decoded", key),
        lambda tmp: write_image_set(
            tmp, classes, files, labels, _decode_all(root, files, image_size, channels, masks),
            image_size, channels, masks,
        ),
    )
    return read_image_set(path, root, fingerprint)


def data_fingerprint(root: str | None) -> str:
    """The fingerprint `open_dataset(root, ...)` gives, from file names and sizes only."""
    root = _resolve(root)
    classes, _, _ = _scan(root, masks=False)
    return _fingerprint(root, classes)


def _resolve(root: str | None) -> str:
    root = os.path.abspath(root) if root else ensure_synthetic()
    if not os.path.isdir(root):
        raise DataError(
            f"Data root {root!r} does not exist or is not a folder; expected a folder laid out as {LAYOUT}."
        )
    return root


def _images_in(folder: str) -> list[str]:
    if not os.path.isdir(folder):
        return []
    return sorted(n for n in os.listdir(folder) if n.lower().endswith(IMAGE_EXTENSIONS) and not n.startswith("."))


def _scan(root: str, masks: bool) -> tuple[list[str], list[str], np.ndarray]:
    """Class names, image paths relative to root and labels; checks that every mask exists."""
    classes = sorted(d for d in os.listdir(root) if os.path.isdir(os.path.join(root, d, "images")))
    if not classes:
        raise DataError(f"Data root {root!r} has no class folders; expected the layout {LAYOUT}.")
    files, labels = [], []
    for label, cls in enumerate(classes):
        names = _images_in(os.path.join(root, cls, "images"))
        if not names:
            raise DataError(
                f"Class folder {os.path.join(root, cls)!r} has no images; "
                "expected .png, .jpg or .jpeg files in its images/ folder."
            )
        for name in names:
            mask = os.path.join(root, cls, "masks", name)
            if masks and not os.path.isfile(mask):
                image = os.path.join(root, cls, "images", name)
                raise DataError(
                    f"Image {image!r} has no mask: {mask!r} does not exist; "
                    "add it or open the data set with masks=False."
                )
            files.append(os.path.join(cls, "images", name))
            labels.append(label)
    return classes, files, np.asarray(labels, dtype=np.int64)


def _fingerprint(root: str, classes: list[str]) -> str:
    """Digest of the relative paths and byte sizes of every image and mask file."""
    digest = hashlib.sha256(b"covid_radiography-v1")
    for cls in classes:
        for sub in ("images", "masks"):
            for name in _images_in(os.path.join(root, cls, sub)):
                size = os.path.getsize(os.path.join(root, cls, sub, name))
                digest.update(f"{cls}/{sub}/{name}\0{size}\n".encode())
    return digest.hexdigest()[:16]


def _decode_all(root: str, files: list[str], image_size: int, channels: int, masks: bool):
    """(image, mask) arrays in `files` order, decoded on a thread pool (PIL releases the GIL)."""
    with ThreadPoolExecutor(max_workers=min(16, os.cpu_count() or 1)) as pool:
        yield from pool.map(lambda rel: _decode(root, rel, image_size, channels, masks), files)


def _decode(root: str, rel: str, image_size: int, channels: int, masks: bool) -> tuple[np.ndarray, np.ndarray | None]:
    image = _read_image(os.path.join(root, rel)).convert("L" if channels == 1 else "RGB")
    pixels = np.asarray(image.resize((image_size, image_size), Image.BILINEAR), dtype=np.uint8)
    pixels = pixels.reshape(image_size, image_size, channels)
    if not masks:
        return pixels, None
    cls, _, name = rel.split(os.sep)
    mask = _read_image(os.path.join(root, cls, "masks", name)).convert("L")
    mask = mask.resize(image.size, Image.NEAREST).resize((image_size, image_size), Image.NEAREST)
    return pixels, (np.asarray(mask) > 127).astype(np.uint8)


def _read_image(path: str) -> Image.Image:
    """Fully decode one image file, turning any decoding failure into a DataError."""
    try:
        with Image.open(path) as image:
            image.load()
            return image
    except (OSError, SyntaxError, ValueError) as e:
        raise DataError(f"Cannot decode image file {path!r} ({e}); it is corrupt, truncated or not an image.") from e
