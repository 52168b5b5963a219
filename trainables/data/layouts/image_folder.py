"""The image-folder classification layout (Brain MRI tumour `yes/` `no/`, COVID-CT `CT_COVID/` `CT_NonCOVID/`).

    <root>/<Class>/<image>     (.png .jpg .jpeg .bmp .tif .tiff; any size, grayscale or RGB)

Every visible sub-folder of root is a class (sorted by name; hidden folders and `__MACOSX`
are left out); its images are the image files directly inside it. No masks.
"""

from __future__ import annotations

import os

import numpy as np

from ..cache import DataError
from ..images import images_in, subfolders
from .listing import Listing, require_images

HAS_MASKS = False
SHAPE = "<root>/<Class>/<image> (one sub-folder of images per class)"


def scan(root: str, masks: bool) -> Listing:
    classes = subfolders(root)
    if not classes:
        raise DataError(f"Data root {root!r} has no class folders; expected the layout {SHAPE}.")
    files, labels = [], []
    for label, cls in enumerate(classes):
        names = require_images(os.path.join(root, cls), images_in(os.path.join(root, cls)))
        files += [os.path.join(cls, name) for name in names]
        labels += [label] * len(names)
    return Listing(classes, files, np.asarray(labels, dtype=np.int64), None, list(files), [])
