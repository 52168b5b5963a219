"""The BUSI breast-ultrasound layout (Dataset_BUSI_with_GT).

    <root>/<class>/<name>.png          e.g. "benign (12).png"
    <root>/<class>/<name>_mask.png     its lesion mask (all black for normal images)
    <root>/<class>/<name>_mask_1.png   sometimes a second lesion's mask: all masks are merged by OR

Every visible sub-folder of root is a class (benign, malignant, normal), sorted by name.
Mask files (`<name>_mask.png`, `<name>_mask_<k>.png`) are never counted as images; a mask
without its image is ignored.
"""

from __future__ import annotations

import os
import re
from collections import defaultdict

import numpy as np

from ..cache import DataError
from ..images import images_in, subfolders
from .listing import Listing, require_images

HAS_MASKS = True
SHAPE = "<root>/<class>/<name>.png with masks <name>_mask.png (and <name>_mask_1.png ...) beside it"
MASK_NAME = re.compile(r"(?P<stem>.+)_mask(?:_\d+)?")


def scan(root: str, masks: bool) -> Listing:
    classes = subfolders(root)
    if not classes:
        raise DataError(f"Data root {root!r} has no class folders; expected the layout {SHAPE}.")
    files, labels, mask_files, sources = [], [], [], []
    for label, cls in enumerate(classes):
        folder = os.path.join(root, cls)
        every = images_in(folder)
        images, masks_of = [], defaultdict(list)
        for name in every:
            stem = os.path.splitext(name)[0]
            found = MASK_NAME.fullmatch(stem)
            if found:
                masks_of[found["stem"]].append(name)  # sorted: <name>_mask.png before <name>_mask_1.png
            else:
                images.append(name)
        for name in require_images(folder, images, " besides the <name>_mask.png files"):
            stem, ext = os.path.splitext(name)
            own = masks_of.get(stem, [])
            if masks and not any(os.path.splitext(m)[0] == f"{stem}_mask" for m in own):
                raise DataError(
                    f"Image {os.path.join(folder, name)!r} has no mask: {os.path.join(folder, stem + '_mask' + ext)!r} "
                    "does not exist; add it (all black for an image without a lesion) or open the data set "
                    "with masks=False."
                )
            files.append(os.path.join(cls, name))
            labels.append(label)
            mask_files.append([os.path.join(cls, m) for m in own])
        sources += [os.path.join(cls, name) for name in every]
    return Listing(classes, files, np.asarray(labels, dtype=np.int64), mask_files if masks else None, sources, [])
