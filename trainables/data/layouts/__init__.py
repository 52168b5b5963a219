"""The public data layouts: each module turns a data root into a `Listing` (files, labels, masks).

    covid_radiography  <root>/<Class>/images/<name>.png + <root>/<Class>/masks/<name>.png
    image_folder       <root>/<Class>/<image>            (Brain MRI yes/no, COVID-CT CT_COVID/CT_NonCOVID)
    busi               <root>/<class>/<name>.png + <name>_mask.png [+ <name>_mask_1.png ...]
    annotation_list    <root>/images/<files> + <root>/<annotations> lines "<path> <label indices>"

`split_files` names official split lists: for the class-folder layouts a folder of
train/val/test `.txt` lists (see `split_lists`), for annotation_list one val list, and
`test_annotations` its official test list. A listing holds every image of the data set,
held-out test images included (`Listing.test` when a list names them); `open_dataset`
picks the part it opens.
"""

from __future__ import annotations

import os

from ..cache import DataError
from . import annotation_list, busi, covid_radiography, image_folder, split_lists
from .listing import Listing

MODULES = {
    "covid_radiography": covid_radiography,
    "image_folder": image_folder,
    "busi": busi,
    "annotation_list": annotation_list,
}
LAYOUTS = tuple(MODULES)
WITH_MASKS = tuple(name for name, module in MODULES.items() if module.HAS_MASKS)


def check_layout(layout: str) -> None:
    if layout not in MODULES:
        raise DataError(f"Unknown data layout {layout!r} (data/layout); accepted layouts: {', '.join(LAYOUTS)}.")


def scan(
    layout: str, root: str, masks: bool, split_files: str, annotations: str, test_annotations: str = ""
) -> Listing:
    """The listing of `root` in `layout`; `masks` requires every image's mask file to exist."""
    check_layout(layout)
    if test_annotations and layout != "annotation_list":
        raise DataError(
            f"data/test_annotations={test_annotations!r} applies to the annotation_list layout only; the {layout} "
            "layout takes its test lists from data/split_files, so leave test_annotations empty."
        )
    if masks and layout not in WITH_MASKS:
        raise DataError(
            f"The {layout} layout has no masks; open it with masks=False (a classification trainable), "
            f"or use a layout with masks: {', '.join(WITH_MASKS)}."
        )
    if not os.listdir(root):
        raise DataError(f"Data root {root!r} is empty; expected the {layout} layout {MODULES[layout].SHAPE}.")
    if layout == "annotation_list":
        return annotation_list.scan(root, annotations, split_files, test_annotations)
    listing = MODULES[layout].scan(root, masks)
    return split_lists.apply(listing, root, split_files) if split_files else listing
