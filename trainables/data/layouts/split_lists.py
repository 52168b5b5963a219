"""Official split lists for the class-folder layouts (COVID-CT's `Data-split/` folder).

`split_files` is a folder, absolute or relative to the data root (e.g. "../Data-split"),
searched recursively for `.txt` files whose names contain exactly one of "train", "val"
or "test" (COVID-CT: `COVID/trainCT_COVID.txt`, `NonCOVID/valCT_NonCOVID.txt`, ...).
Each non-empty line names one image: by path relative to the root when it contains a
"/", else by file name, which must match exactly one image of the set.

The listing keeps the images named by some list; those in no list are left out. The test
lists' images are the held-out test split (`Listing.test`): `open_dataset(part="search")`
leaves them out of the set entirely, so a test image can never reach training or model
selection, and `part="test"` opens only them. `ImageSet.split` holds the official train
and val indices. Without test lists a test split is drawn from the train images (see
`trainables.data.split`).
"""

from __future__ import annotations

import os
from collections import defaultdict

from ..cache import DataError
from .listing import Listing

PARTS = ("train", "val", "test")


def apply(listing: Listing, root: str, split_files: str) -> Listing:
    """`listing` restricted to its listed images, with the official train/val split and test images."""
    folder = os.path.normpath(os.path.join(root, split_files))
    if not os.path.isdir(folder):
        raise DataError(
            f"Split files {split_files!r} (data/split_files) resolve to {folder!r}, which is not a folder; expected a "
            "folder, absolute or relative to the data root, holding .txt lists named with train, val or test."
        )
    lists = _list_files(folder)
    by_path = {rel: i for i, rel in enumerate(listing.files)}
    by_name = defaultdict(list)
    for i, rel in enumerate(listing.files):
        by_name[os.path.basename(rel)].append(i)
    part_of: dict[int, tuple[str, str]] = {}  # image index -> (part, where it was listed)
    for path, part in lists:
        with open(path, encoding="utf-8-sig") as f:
            for number, line in enumerate(f, 1):
                name, where = line.strip(), f"{path}:{number}"
                if not name:
                    continue
                if "/" in name:
                    found = [by_path[os.path.normpath(name)]] if os.path.normpath(name) in by_path else []
                else:
                    found = by_name.get(name, [])
                if len(found) != 1:
                    problem = "matches no image of the set" if not found else (
                        "matches several images: " + ", ".join(repr(listing.files[i]) for i in found)
                    )
                    raise DataError(
                        f"Split list line {where} names {name!r}, which {problem}; each line must name one image "
                        f"under {root!r} by its unique file name or its path relative to that root."
                    )
                earlier = part_of.setdefault(found[0], (part, where))
                if earlier[0] != part:
                    raise DataError(
                        f"Image {listing.files[found[0]]!r} is listed as {earlier[0]} ({earlier[1]}) and as {part} "
                        f"({where}); each image may be in one of the train, val and test lists only."
                    )
    keep = sorted(part_of)
    split = {part: [k for k, i in enumerate(keep) if part_of[i][0] == part] for part in PARTS}
    for part in ("train", "val"):
        if not split[part]:
            raise DataError(
                f"The split lists under {folder!r} name no {part} images; expected .txt lists whose names contain "
                "train and val (and optionally test)."
            )
    test = split.pop("test")
    return listing.subset(keep, split, [path for path, _ in lists], test or None)


def _list_files(folder: str) -> list[tuple[str, str]]:
    """(path, part) of every split list under `folder`, sorted by path."""
    found = []
    for parent, dirs, names in os.walk(folder):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        for name in names:
            parts = [p for p in PARTS if p in name.lower()]
            if not name.lower().endswith(".txt") or not parts:
                continue
            if len(parts) > 1:
                raise DataError(
                    f"Split list {os.path.join(parent, name)!r} has a name containing {' and '.join(parts)}; "
                    "each list's file name must contain exactly one of train, val or test."
                )
            found.append((os.path.join(parent, name), parts[0]))
    if not found:
        raise DataError(
            f"Split files folder {folder!r} holds no .txt lists whose names contain train, val or test "
            "(e.g. trainCT_COVID.txt, valCT_COVID.txt, testCT_COVID.txt)."
        )
    return sorted(found)
