"""Synthetic CT slices in the layout of the COVID-CT repository (image_folder with official split lists).

    <root>/Images-processed/CT_COVID/2020.03.12.20034567-p17-91.png ...      (PNG, some RGB)
    <root>/Images-processed/CT_NonCOVID/12%0.jpg, 13.png ...                  (mostly JPEG)
    <root>/Data-split/COVID/{train,val,test}CT_COVID.txt                      file names, one per line
    <root>/Data-split/NonCOVID/{train,val,test}CT_NonCOVID.txt

Like the real images cut out of papers, every image has its own width and height (a quarter
of `image_size` up to `image_size`) and its own contrast. Each shows an axial chest CT
slice: body, two dark lungs with small vessels, spine. CT_COVID adds several peripheral
ground-glass opacities (soft bright patches) inside the lungs; CT_NonCOVID lungs are clear.
The split lists put 70 / 15 / 15 % of each class in train / val / test.
"""

from __future__ import annotations

import os

import numpy as np
from PIL import Image

from .checks import check_ints
from .draw import blob, grid, soft_inside, to_uint8

CLASSES = ("CT_COVID", "CT_NonCOVID")
SPLIT_FOLDERS = ("COVID", "NonCOVID")
HELD_OUT = 0.15  # share of each class in the val list, and again in the test list
DATA = "Images-processed"  # the data root inside the generated folder


def generate_image_folder(root: str, per_class: int = 150, image_size: int = 160, seed: int = 0) -> None:
    """Write `per_class` CT images per class (sides image_size/4 to image_size) and the split lists under `root`."""
    check_ints(per_class=(per_class, 3), image_size=(image_size, 16))
    for label, (cls, split_folder) in enumerate(zip(CLASSES, SPLIT_FOLDERS)):
        os.makedirs(os.path.join(root, DATA, cls), exist_ok=True)
        names = []
        for n in range(1, per_class + 1):
            rng = np.random.default_rng([seed, label, n])
            width, height = (int(v) for v in rng.integers(image_size // 4, image_size + 1, size=2))
            image = Image.fromarray(_ct_slice(rng, cls == "CT_COVID", width, height))
            if cls == "CT_COVID":
                month, day, page, figure = (int(v) for v in rng.integers(1, [5, 29, 30, 200]))
                name = f"2020.{month:02d}.{day:02d}.{20000000 + n}-p{page}-{figure}.png"  # preprint id, page, figure
                image = image.convert("RGB") if rng.random() < 0.4 else image  # figures saved in colour
            else:
                name = f"{n}%0.jpg" if rng.random() < 0.7 else f"{n}.png"
            image.save(os.path.join(root, DATA, cls, name), quality=90)
            names.append(name)
        order = np.random.default_rng([seed, label]).permutation(per_class)
        held_out = max(1, round(HELD_OUT * per_class))
        train, val = per_class - 2 * held_out, per_class - held_out
        parts = {"train": order[:train], "val": order[train:val], "test": order[val:]}
        os.makedirs(os.path.join(root, "Data-split", split_folder), exist_ok=True)
        for part, members in parts.items():
            with open(os.path.join(root, "Data-split", split_folder, f"{part}{cls}.txt"), "w") as f:
                f.writelines(names[i] + "\n" for i in sorted(members))


def _ct_slice(rng: np.random.Generator, covid: bool, width: int, height: int) -> np.ndarray:
    x, y = grid(width, height)
    body = soft_inside(x, y, 0.5, 0.5, rng.uniform(0.4, 0.46), rng.uniform(0.33, 0.38), 0.0, 0.02)
    shapes = [(0.5 + side * rng.uniform(0.17, 0.21), rng.uniform(0.44, 0.5), rng.uniform(0.12, 0.15),
               rng.uniform(0.2, 0.25), side * rng.uniform(0, 0.2), side) for side in (-1, 1)]
    lungs = np.maximum.reduce([soft_inside(x, y, cx, cy, a, b, t, 0.05) for cx, cy, a, b, t, _ in shapes])
    inside = np.zeros_like(x)
    for cx, cy, a, b, _, side in shapes:
        for _ in range(8):  # vessels: small bright dots
            inside += 0.25 * blob(x, y, cx + rng.uniform(-0.7, 0.7) * a, cy + rng.uniform(-0.7, 0.7) * b, 0.008)
        if covid:  # ground-glass opacities, peripheral and posterior
            for _ in range(rng.integers(3, 6)):
                theta = rng.uniform(-0.4 * np.pi, 0.9 * np.pi)
                r = rng.uniform(0.5, 0.85)
                px, py = cx + side * r * a * np.cos(theta), cy + r * b * np.sin(theta)
                inside += rng.uniform(0.35, 0.5) * blob(x, y, px, py, rng.uniform(0.04, 0.065))
    spine = soft_inside(x, y, 0.5, 0.8, 0.05, 0.05, 0.0, 0.05)
    picture = 0.03 + 0.5 * body - 0.42 * lungs + inside * lungs + 0.4 * spine + rng.normal(0, 0.03, x.shape)
    return to_uint8(np.clip(picture, 0, 1) ** rng.uniform(0.8, 1.25))
