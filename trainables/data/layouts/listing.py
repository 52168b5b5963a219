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
    test: list[int] | None = None  # official held-out "test" indices into files (a test list)

    def subset(
        self, keep: list[int], split: dict[str, list[int]] | None, lists: list[str], test: list[int] | None = None
    ) -> Listing:
        """The images at `keep` (in that order), with `split` and `test` given as indices into `keep`."""
        return replace(
            self,
            files=[self.files[i] for i in keep],
            labels=self.labels[keep],
            masks=None if self.masks is None else [self.masks[i] for i in keep],
            lists=self.lists + lists,
            split=split,
            test=test,
        )

    def part(self, test: list[int], part: str) -> Listing:
        """The held-out `test` images (part "test", no split), or all others (part "search") with the
        official train/val split, if any, renumbered over them and with the test images taken out."""
        held = set(test)
        if part == "test":
            return self.subset(sorted(held), None, [])
        keep = [i for i in range(len(self.files)) if i not in held]
        split = None
        if self.split is not None:
            members = {name: set(indices) for name, indices in self.split.items()}
            split = {name: [k for k, i in enumerate(keep) if i in members[name]] for name in ("train", "val")}
        return self.subset(keep, split, [])


def require_images(class_folder: str, names: list[str], where: str = "") -> list[str]:
    """`names` unless empty; a class folder without images is a DataError."""
    if not names:
        raise DataError(
            f"Class folder {class_folder!r} has no images; expected {', '.join(IMAGE_EXTENSIONS)} files{where}."
        )
    return names
