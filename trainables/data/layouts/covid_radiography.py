"""The COVID-19 Radiography Database layout.

    <root>/<Class>/images/<name>.png    (any image extension)
    <root>/<Class>/masks/<name>.png     (same file name; may be a different size)

Class folders are the sub-folders of root that hold an `images/` folder, sorted by name;
anything beside them (metadata spreadsheets, README) is ignored.
"""

from __future__ import annotations

import os

import numpy as np

from ..cache import DataError
from ..images import images_in
from .listing import Listing, require_images

HAS_MASKS = True
SHAPE = "<root>/<Class>/images/<name>.png with masks at <root>/<Class>/masks/<name>.png"


def scan(root: str, masks: bool) -> Listing:
    classes = sorted(d for d in os.listdir(root) if os.path.isdir(os.path.join(root, d, "images")))
    if not classes:
        raise DataError(f"Data root {root!r} has no class folders; expected the layout {SHAPE}.")
    files, labels, mask_files, sources = [], [], [], []
    for label, cls in enumerate(classes):
        folder = os.path.join(root, cls)
        names = require_images(folder, images_in(os.path.join(folder, "images")), " in its images/ folder")
        for name in names:
            mask = os.path.join(cls, "masks", name)
            if masks and not os.path.isfile(os.path.join(root, mask)):
                raise DataError(
                    f"Image {os.path.join(root, cls, 'images', name)!r} has no mask: {os.path.join(root, mask)!r} "
                    "does not exist; add it or open the data set with masks=False."
                )
            files.append(os.path.join(cls, "images", name))
            labels.append(label)
            mask_files.append([mask])
        for sub in ("images", "masks"):
            sources += [os.path.join(cls, sub, name) for name in images_in(os.path.join(root, cls, sub))]
    return Listing(classes, files, np.asarray(labels, dtype=np.int64), mask_files if masks else None, sources, [])
