"""Finding image files and decoding them (Pillow) into the uint8 arrays of an `ImageSet`."""

from __future__ import annotations

import os

import numpy as np
from PIL import Image

from .cache import BadImageError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
HIGH_DEPTH_MODES = ("I", "F", "I;16", "I;16L", "I;16B", "I;16N")  # 16-bit and float images
CHANNEL_MODES = {1: "L", 3: "RGB"}  # data/channels -> the Pillow mode images are decoded to


def is_image(name: str) -> bool:
    return name.lower().endswith(IMAGE_EXTENSIONS) and not name.startswith(".")


def images_in(folder: str) -> list[str]:
    """Sorted image file names directly inside `folder` ([] when it is not a folder)."""
    if not os.path.isdir(folder):
        return []
    return sorted(n for n in os.listdir(folder) if is_image(n) and os.path.isfile(os.path.join(folder, n)))


def subfolders(root: str) -> list[str]:
    """Sorted visible sub-folder names of `root`; hidden ones and archive debris such as `__MACOSX` are left out."""
    return sorted(
        d for d in os.listdir(root) if os.path.isdir(os.path.join(root, d)) and not d.startswith((".", "__"))
    )


def decode(
    root: str, rel: str, mask_files: list[str] | None, image_size: int, channels: int
) -> tuple[np.ndarray, np.ndarray | None]:
    """One image resized to image_size² (bilinear) and, with `mask_files`, the logical OR of its masks.

    Masks are resized to the image's own grid and then to image_size², nearest neighbour.
    """
    image = _gray_or_rgb(read_image(root, rel, rel), channels)
    pixels = np.asarray(image.resize((image_size, image_size), Image.BILINEAR), dtype=np.uint8)
    pixels = pixels.reshape(image_size, image_size, channels)
    if mask_files is None:
        return pixels, None
    merged = np.zeros((image.height, image.width), dtype=bool)
    for mask_rel in mask_files:
        mask = read_image(root, mask_rel, rel).convert("L").resize(image.size, Image.NEAREST)
        merged |= np.asarray(mask) > 127
    mask = Image.fromarray(merged.astype(np.uint8)).resize((image_size, image_size), Image.NEAREST)
    return pixels, np.asarray(mask, dtype=np.uint8)


def read_image(root: str, rel: str, image_rel: str) -> Image.Image:
    """Fully decode file `rel` (the image `image_rel` or one of its masks) or raise a BadImageError."""
    path = os.path.join(root, rel)
    try:
        with Image.open(path) as image:
            image.load()
            return image
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        what = "image" if rel == image_rel else "mask"
        raise BadImageError(
            f"Cannot decode {what} file {path!r} ({e}); it is corrupt, truncated or not an image. Replace or remove "
            'it, or open the data with on_bad_image="skip" (data/on_bad_image) to leave such images out.',
            file=image_rel,
            reason=f"{what} {rel!r}: {e}" if what == "mask" else str(e),
        ) from e


def _gray_or_rgb(image: Image.Image, channels: int) -> Image.Image:
    """`image` as 8-bit L or RGB; 16-bit and float images are min-max scaled first."""
    if image.mode in HIGH_DEPTH_MODES:
        values = np.asarray(image, dtype=np.float64)
        low, high = values.min(), values.max()
        image = Image.fromarray(((values - low) * (255 / max(high - low, 1e-12))).round().astype(np.uint8))
    return image.convert(CHANNEL_MODES[channels])
