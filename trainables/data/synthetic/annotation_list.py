"""Synthetic chest radiographs with multi-label findings in the MedFMC annotation-list layout.

    <root>/images/case_0001.png ...
    <root>/classes.txt      the five findings, one per line
    <root>/trainval.txt     the labelled pool: "case_0001.png 0,3", "case_0002.png" (no finding), ...
    <root>/test.txt         the held-out fifth of the images, same format

Findings have a long-tail frequency and are drawn independently, so some images have several
and some none. Each has its own pattern on a radiograph-like background:

    effusion      the bottom of one lung filled bright, with a flat upper edge (prevalence 45%)
    nodule        one or two small, sharp bright round spots inside the lungs (30%)
    cardiomegaly  a much wider heart shadow between the lungs (20%)
    fracture      a bright oblique bar across the lateral chest wall (12%)
    pneumothorax  a very dark, texture-free region at the top of one lung, edged by a bright pleural line (8%)
"""

from __future__ import annotations

import os

import numpy as np
from PIL import Image

from .checks import check_ints
from .draw import blob, grid, lungs, soft_inside, to_uint8

FINDINGS = ("effusion", "nodule", "cardiomegaly", "fracture", "pneumothorax")
PREVALENCE = (0.45, 0.3, 0.2, 0.12, 0.08)


def generate_annotation_list(root: str, images: int = 400, image_size: int = 64, seed: int = 0) -> None:
    """Write `images` radiographs under `root`/images, 4/5 of them listed in trainval.txt, the rest in test.txt."""
    check_ints(images=(images, 10), image_size=(image_size, 32))
    os.makedirs(os.path.join(root, "images"), exist_ok=True)
    lines = []
    for n in range(1, images + 1):
        rng = np.random.default_rng([seed, n])
        found = [c for c, p in enumerate(PREVALENCE) if rng.random() < p]
        name = f"case_{n:04d}.png"
        Image.fromarray(_radiograph(rng, found, image_size)).save(os.path.join(root, "images", name))
        lines.append(f"{name} {','.join(map(str, found))}".rstrip() + "\n")
    test = set(np.random.default_rng([seed, images]).permutation(images)[: images // 5].tolist())
    for name, part in (("trainval.txt", False), ("test.txt", True)):
        with open(os.path.join(root, name), "w") as f:
            f.writelines(line for i, line in enumerate(lines) if (i in test) == part)
    with open(os.path.join(root, "classes.txt"), "w") as f:
        f.writelines(finding + "\n" for finding in FINDINGS)


def _radiograph(rng: np.random.Generator, found: list[int], size: int) -> np.ndarray:
    x, y = grid(size)
    shapes = [(0.5 + side * 0.19, 0.47, 0.14, 0.28, side * 0.08, side) for side in (-1, 1)]
    field = lungs(x, y, shapes, edge=0.05)
    body = soft_inside(x, y, 0.5, 0.58, 0.45, 0.55, 0.0, 0.04)
    heart_width = 0.2 if 2 in found else 0.1
    heart = soft_inside(x, y, 0.5, 0.62, heart_width, 0.13, 0.0, 0.08)
    picture = 0.06 + 0.5 * body - 0.32 * field + 0.25 * heart + rng.normal(0, 0.035, x.shape)
    side = rng.choice([-1, 1])
    cx = 0.5 + side * 0.19
    if 0 in found:  # fluid in the lower part of one lung, flat meniscus
        level = rng.uniform(0.55, 0.62)
        picture += 0.3 * field * (np.abs(x - cx) < 0.16) * (y > level)
    if 1 in found:
        for _ in range(rng.integers(1, 3)):
            s = rng.choice([-1, 1])
            picture += 0.5 * blob(x, y, 0.5 + s * rng.uniform(0.13, 0.24), rng.uniform(0.3, 0.55), 0.035)
    if 3 in found:  # a bright oblique bar on the lateral chest wall
        s, cy = rng.choice([-1, 1]), rng.uniform(0.3, 0.6)
        along = (y - cy) + 0.6 * s * (x - 0.5 - s * 0.36)
        picture += 0.6 * (np.abs(along) < 0.04) * (np.abs(x - 0.5 - s * 0.36) < 0.1)
    if 4 in found:  # air at the apex of one lung: black and texture-free, edged by the bright pleural line
        px = 0.5 - side * 0.19
        apex = soft_inside(x, y, px, 0.3, 0.14, 0.13, 0.0, 0.03)
        pleura = np.abs(np.hypot((x - px) / 0.14, (y - 0.3) / 0.13) - 1) < 0.2
        picture = picture * (1 - 0.95 * apex) + 0.4 * pleura
    return to_uint8(picture)
