"""`Listing`: what a layout found under a data root, before decoding."""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from ..cache import DataError
from ..images import IMAGE_EXTENSIONS


@dataclass(frozen=True)
class Listing:
    classes: list[str]
    files: list[str]  # image paths relative to root, in set order
    labels: np.ndarray  # int64 (N,) or uint8 multi-hot (N, C)
    masks: list[list[str]] | None  # per image its mask files relative to root (merged by OR); None: no masks
    sources: list[str]  # image and mask files (relative to root) the set depends on by name and byte size
    lists: list[str]  # text files (absolute) the set depends on by content: annotations, split lists
    split: dict[str, list[int]] | None = None  # official "train" / "val" indices into files

    def subset(self, keep: list[int], split: dict[str, list[int]], lists: list[str]) -> Listing:
        """The images at `keep` (in that order), with `split` given as indices into `keep`."""
        return replace(
            self,
            files=[self.files[i] for i in keep],
            labels=self.labels[keep],
            masks=None if self.masks is None else [self.masks[i] for i in keep],
            lists=self.lists + lists,
            split=split,
        )


def require_images(class_folder: str, names: list[str], where: str = "") -> list[str]:
    """`names` unless empty; a class folder without images is a DataError."""
    if not names:
        raise DataError(
            f"Class folder {class_folder!r} has no images; expected {', '.join(IMAGE_EXTENSIONS)} files{where}."
        )
    return names
