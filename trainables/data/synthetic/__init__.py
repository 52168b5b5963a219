"""Generated data sets, one per public layout, each with the layout's quirks and class patterns a small CNN learns.

A layout's set is written once per node under `<cache_dir()>/synthetic/<name>/` (built in a
temporary folder and renamed under a file lock) and is what `open_dataset(None, ...)` opens.
"""

from __future__ import annotations

import logging
import os

from ..cache import build_once, cache_dir
from ..layouts import check_layout
from .annotation_list import generate_annotation_list
from .busi import generate_busi
from .covid_radiography import generate_covid_radiography
from .image_folder import DATA as IMAGE_FOLDER_DATA
from .image_folder import generate_image_folder

log = logging.getLogger(__name__)

# layout -> (folder under <cache_dir()>/synthetic, generator, the data root inside that folder)
SYNTHETIC = {
    "covid_radiography": ("covid_radiography-v2", generate_covid_radiography, ""),
    "image_folder": ("image_folder-v1", generate_image_folder, IMAGE_FOLDER_DATA),
    "busi": ("busi-v1", generate_busi, ""),
    "annotation_list": ("annotation_list-v1", generate_annotation_list, ""),
}


def synthetic_root(layout: str = "covid_radiography") -> str:
    """The data root of the layout's synthetic set (for image_folder: its Images-processed folder)."""
    check_layout(layout)
    folder, _, data = SYNTHETIC[layout]
    return _data_root(os.path.join(cache_dir(), "synthetic", folder), data)


def ensure_synthetic(layout: str = "covid_radiography", root: str | None = None) -> str:
    """Generate the layout's default synthetic set into folder `root` (default: the cache) unless present;
    returns its data root."""
    check_layout(layout)
    folder, generate, data = SYNTHETIC[layout]
    target = root or os.path.join(cache_dir(), "synthetic", folder)

    def announced(tmp: str) -> None:
        log.info("Data: generating the synthetic %s set in %s", layout, target)
        generate(tmp)

    return _data_root(build_once(target, announced), data)


def _data_root(folder: str, data: str) -> str:
    return os.path.join(folder, data) if data else folder


__all__ = [
    "SYNTHETIC",
    "ensure_synthetic",
    "generate_annotation_list",
    "generate_busi",
    "generate_covid_radiography",
    "generate_image_folder",
    "synthetic_root",
]
