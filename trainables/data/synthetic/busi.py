"""Synthetic breast ultrasound images in the BUSI layout (Dataset_BUSI_with_GT).

    <root>/benign/benign (1).png, benign (1)_mask.png [, benign (1)_mask_1.png]
    <root>/malignant/malignant (1).png, ...
    <root>/normal/normal (1).png, normal (1)_mask.png   (all black)

Images have their own sizes (about 0.6-1 x `image_size`) and show layered tissue under
multiplicative speckle. A lesion is a dark (hypoechoic) mass, written to the mask:

    benign     round or oval, wider than tall, smooth margin, brighter behind it (posterior enhancement)
    malignant  irregular and spiky, taller than wide, darker, with a dark acoustic shadow behind it
    normal     no lesion

About a quarter of the benign and malignant images have a second, smaller lesion whose mask
is written separately as `<name>_mask_1.png`, as in the real data.
"""

from __future__ import annotations

import os

import numpy as np
from PIL import Image

from .checks import check_ints
from .draw import grid, smooth, to_uint8

CLASSES = ("benign", "malignant", "normal")


def generate_busi(root: str, per_class: int = 80, image_size: int = 96, seed: int = 0) -> None:
    """Write `per_class` images with their masks for each of benign, malignant and normal under `root`."""
    check_ints(per_class=(per_class, 1), image_size=(image_size, 32))
    for label, cls in enumerate(CLASSES):
        os.makedirs(os.path.join(root, cls), exist_ok=True)
        for n in range(1, per_class + 1):
            rng = np.random.default_rng([seed, label, n])
            width = int(rng.integers(round(0.75 * image_size), image_size + 1))
            height = int(rng.integers(round(0.6 * image_size), round(0.9 * image_size) + 1))
            x, y = grid(width, height)
            picture = _tissue(rng, x, y)
            lesions = [] if cls == "normal" else [(rng.uniform(0.3, 0.7), 1.0)]
            if lesions and rng.random() < 0.25:  # a smaller second lesion beside the first
                cx = lesions[0][0]
                lesions.append((cx + 0.3 if cx < 0.5 else cx - 0.3, 0.6))
            masks = []
            for cx, scale in lesions:
                picture, inside = _lesion(rng, x, y, picture, cls == "malignant", cx, scale)
                masks.append(inside)
            masks = masks or [np.zeros(x.shape, bool)]
            name = f"{cls} ({n})"
            image = Image.fromarray(to_uint8(picture * rng.uniform(0.85, 1.15)))
            (image.convert("RGB") if rng.random() < 0.5 else image).save(os.path.join(root, cls, f"{name}.png"))
            for k, mask in enumerate(masks):
                suffix = "_mask" if k == 0 else f"_mask_{k}"
                mask_image = Image.fromarray(np.where(mask, 255, 0).astype(np.uint8))
                mask_image.save(os.path.join(root, cls, f"{name}{suffix}.png"))


def _tissue(rng: np.random.Generator, x, y) -> np.ndarray:
    """Skin line, fat, glandular tissue and depth attenuation under smoothed Rayleigh speckle."""
    skin = 0.6 * np.exp(-(((y - 0.03) / 0.02) ** 2))
    interface = rng.uniform(0.2, 0.3) + 0.04 * np.sin(2 * np.pi * (x * rng.uniform(1, 2) + rng.uniform()))
    lumps = smooth(rng.normal(0, 1, x.shape), 0.08 * x.shape[1])
    layers = 0.22 + (y > interface) * (0.2 + 0.04 * lumps / lumps.std())  # fat, then lumpy glandular tissue
    speckle = smooth(rng.rayleigh(1.0, x.shape), 0.7)
    return (skin + layers * np.exp(-0.8 * y)) * speckle / speckle.mean()


def _lesion(rng, x, y, picture, malignant: bool, cx: float, scale: float) -> tuple[np.ndarray, np.ndarray]:
    """`picture` with one dark mass drawn in, and the mass's mask."""
    cy, r = rng.uniform(0.4, 0.6), scale * rng.uniform(0.13, 0.19)
    a, b = (0.85 * r, 1.25 * r) if malignant else (1.35 * r, 0.85 * r)
    theta = np.arctan2((y - cy) / b, (x - cx) / a)
    boundary = np.ones_like(x)
    if malignant:  # spiculated margin: sharp spikes at random angles
        for k in rng.integers(5, 10, size=3):
            boundary += 0.25 * np.abs(np.sin(k * theta / 2 + rng.uniform(0, np.pi))) ** 4
        boundary *= 0.85
    inside = np.hypot((x - cx) / a, (y - cy) / b) < boundary
    soft = smooth(inside.astype(float), 1.0)
    behind = np.exp(-(((x - cx) / a) ** 4)) * np.clip((y - cy) / 0.25, 0, 1) * (1 - soft)
    picture = picture * (1 - soft * (0.9 if malignant else 0.7))
    return picture * (1 - 0.75 * behind if malignant else 1 + 0.9 * behind), inside
