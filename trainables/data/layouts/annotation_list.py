"""The annotation-list layout of MedFMC (ChestDR, Endo, Colon).

    <root>/images/<files>
    <root>/classes.txt      optional: class names, one per line (else class_0, class_1, ...)
    <root>/<annotations>    the labelled pool (data/annotations, default trainval.txt), one image per line

A line is `<path> <labels>`: the path relative to `<root>/images/` (no whitespace; it may not
leave that folder), the labels comma-separated class indices ("3", "0,4"; nothing after the
path means no finding). MedFMC's own files write a multi-hot vector instead ("0,1,0,..." in
ChestDR, "0 1 0 0" in Endo): a label field of three or more 0/1 values that repeat, which
cannot be a set of indices, is read as one and must hold one value per class.

Labels are int64 class indices when every image has exactly one label (a binary or
multi-class task such as MedFMC Colon), else uint8 multi-hot (N, C) (`ImageSet.multilabel`).

`split_files` may name the official val list, a file relative to root in the same format
(MedFMC's `*_val*.txt`). Its images are the val split, added to the set when the pool lacks
them, and train is the rest of the pool: annotations="chest_1-shot_train_exp1.txt" with
split_files="chest_1-shot_val_exp1.txt" is the challenge's few-shot protocol. An image in
both lists must carry the same labels. Without it, `train_val_split` draws a split.

`test_annotations` may name the official test list (MedFMC's `*_test*.txt`, same format):
its images are the held-out test split (`Listing.test`) and may be in neither the pool nor
the val list. Classes are counted, and single- vs multi-label decided, over all the lists,
so the search and test parts of a set agree on both.
"""

from __future__ import annotations

import os

import numpy as np

from ..cache import DataError
from .listing import Listing

HAS_MASKS = False
SHAPE = "<root>/images/<files> with <root>/trainval.txt lines '<path relative to images/> <label indices>'"
FORMAT = "lines '<path relative to images/> <comma-separated label indices>' (nothing after the path: no finding)"


def scan(root: str, annotations: str, split_files: str, test_annotations: str = "") -> Listing:
    images = os.path.join(root, "images")
    if not os.path.isdir(images):
        raise DataError(f"Data root {root!r} has no images/ folder; expected the annotation_list layout {SHAPE}.")
    classes_file = os.path.join(root, "classes.txt")
    names = _class_names(classes_file) if os.path.isfile(classes_file) else None
    pool = _read_list(root, annotations, "Annotation list (data/annotations)")
    val = _read_list(root, split_files, "Val list (data/split_files)") if split_files else []
    test = _read_list(root, test_annotations, "Test list (data/test_annotations)") if test_annotations else []
    _check_held_out(test, pool + val)
    num_classes = len(names) if names is not None else _count_classes(pool + val + test)
    labelled: dict[str, tuple[frozenset[int], str]] = {}
    for where, path, values in pool + val + test:
        found = _labels(values, num_classes, names, where)
        earlier = labelled.setdefault(path, (found, where))
        if earlier[0] != found:
            raise DataError(
                f"Image {path!r} is labelled {sorted(earlier[0])} at {earlier[1]} and {sorted(found)} at {where}; "
                "an image listed twice must carry the same labels."
            )
    files = list(labelled)
    sets = [labelled[path][0] for path in files]
    if all(len(s) == 1 for s in sets):
        labels = np.asarray([next(iter(s)) for s in sets], dtype=np.int64)
    else:
        labels = np.zeros((len(files), num_classes), dtype=np.uint8)
        for row, found in zip(labels, sets):
            row[sorted(found)] = 1
    split, searched = None, len(files) - len(test)  # test images come last in `labelled`
    if val:
        val_files = {path for _, path, _ in val}
        split = {part: [i for i, path in enumerate(files[:searched]) if (path in val_files) == (part == "val")]
                 for part in ("train", "val")}
        if not split["train"]:
            raise DataError(
                f"Every image of annotation list {annotations!r} is also in val list {split_files!r}; "
                "train would be empty."
            )
    rel = [os.path.join("images", path) for path in files]
    lists = [os.path.join(root, annotations)] + ([classes_file] if names is not None else [])
    lists += [os.path.join(root, name) for name in (split_files, test_annotations) if name]
    held_out = list(range(searched, len(files))) or None
    return Listing(names or [f"class_{c}" for c in range(num_classes)], rel, labels, None, rel, lists, split, held_out)


def _check_held_out(test: list[tuple[str, str, list[int]]], others: list[tuple[str, str, list[int]]]) -> None:
    """A test list's images may be in no other list."""
    listed = {path: where for where, path, _ in others}
    for where, path, _ in test:
        if path in listed:
            raise DataError(
                f"Image {path!r} is in the test list at {where} and also at {listed[path]}; a held-out test image "
                "may be in neither data/annotations nor data/split_files."
            )


def _class_names(path: str) -> list[str]:
    with open(path, encoding="utf-8-sig") as f:
        names = [line.strip() for line in f if line.strip()]
    if not names:
        raise DataError(f"Class list {path!r} is empty; expected one class name per line (or no classes.txt at all).")
    return names


def _read_list(root: str, rel: str, what: str) -> list[tuple[str, str, list[int]]]:
    """(where, image path relative to images/, label values) per non-empty line."""
    path = os.path.join(root, rel)
    if not os.path.isfile(path):
        raise DataError(
            f"{what} {rel!r} is not a file ({path!r}); expected a file relative to the data root with {FORMAT}."
        )
    entries, seen = [], {}
    with open(path, encoding="utf-8-sig") as f:
        for number, line in enumerate(f, 1):
            tokens, where = line.split(), f"{path}:{number}"
            if not tokens:
                continue
            image = os.path.normpath(tokens[0])
            if os.path.isabs(tokens[0]) or image == ".." or image.startswith(".." + os.sep):
                raise DataError(
                    f"Annotation line {where} names {tokens[0]!r}, which leaves the images folder "
                    f"{os.path.join(root, 'images')!r}; paths must be relative to it and stay inside it."
                )
            try:
                values = [int(v) for v in ",".join(tokens[1:]).split(",") if v]
            except ValueError:
                raise DataError(
                    f"Annotation line {where} has labels {' '.join(tokens[1:])!r}, which are not integers; "
                    f"expected {FORMAT}."
                ) from None
            if not os.path.isfile(os.path.join(root, "images", image)):
                raise DataError(
                    f"Annotation line {where} names {tokens[0]!r}, but {os.path.join(root, 'images', image)!r} "
                    "is not a file; each path must name an image under the images/ folder."
                )
            if image in seen:
                raise DataError(
                    f"Annotation line {where} lists {tokens[0]!r} again (first at {seen[image]}); list each image once."
                )
            seen[image] = where
            entries.append((where, image, values))
    if not entries:
        raise DataError(f"{what} {path!r} lists no images; expected {FORMAT}.")
    return entries


def _is_vector(values: list[int]) -> bool:
    return len(values) >= 3 and set(values) <= {0, 1} and len(set(values)) < len(values)


def _count_classes(entries: list[tuple[str, str, list[int]]]) -> int:
    """Without classes.txt: one more than the largest index, or the length of the multi-hot vectors."""
    counts = [len(v) if _is_vector(v) else max(v, default=-1) + 1 for _, _, v in entries]
    if max(counts) < 1:
        raise DataError(
            f"The annotation lists ({entries[0][0]} ...) give no labels at all and there is no classes.txt; "
            "add labels, or a classes.txt naming the classes."
        )
    return max(counts)


def _labels(values: list[int], num_classes: int, names: list[str] | None, where: str) -> frozenset[int]:
    accepted = f"0 to {num_classes - 1}" + (f" (classes.txt: {', '.join(names)})" if names else "")
    if _is_vector(values):
        if len(values) != num_classes:
            raise DataError(
                f"Annotation line {where} has a multi-hot label vector of {len(values)} values; expected one "
                f"0/1 value per class, {num_classes} in all."
            )
        return frozenset(i for i, v in enumerate(values) if v)
    if len(set(values)) < len(values):
        raise DataError(f"Annotation line {where} repeats a label index in {values}; list each class index once.")
    outside = [v for v in values if not 0 <= v < num_classes]
    if outside:
        raise DataError(
            f"Annotation line {where} has label index {outside[0]}, outside the class list; accepted: {accepted}."
        )
    return frozenset(values)
