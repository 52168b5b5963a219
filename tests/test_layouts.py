"""Layouts beyond COVID-19 Radiography (image folders with split lists, BUSI, MedFMC annotation lists),
bad input, the skip policy, k-shot and multi-label subsets, and the generated set of every layout.

Trees are written by the tests as real image files in each public layout, with its quirks.
"""

import json
import os
import re

import numpy as np
import pytest
from PIL import Image

from scripts import make_synthetic
from tests.files import lines, save
from trainables.data import (
    LAYOUTS,
    DataError,
    ImageSet,
    data_fingerprint,
    ensure_synthetic,
    fraction_subset,
    open_dataset,
    shots_subset,
    synthetic,
    synthetic_root,
    train_val_split,
)


pytestmark = pytest.mark.usefixtures("cache")  # every test its own node cache (tests/conftest.py)


def truncate(path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


# --- image_folder --------------------------------------------------------------------------------


@pytest.fixture
def brain(tmp_path):
    """Brain-MRI-like classes with spaces in their names; images of many sizes, formats and modes."""
    root = tmp_path / "brain tumor"
    save(root / "no tumor" / "1 no.jpeg", (45, 60), value=30)
    save(root / "no tumor" / "N2.JPG", (240, 200), "RGB", (255, 0, 0))
    save(root / "no tumor" / "no 3.bmp", (17, 23), value=60)
    save(root / "yes tumor" / "Y1.png", (300, 310), "LA", (200, 255))
    save(root / "yes tumor" / "Y2.tif", (64, 32), value=220)
    save(root / "yes tumor" / "Y3.png", (31, 77), "P", 7)
    (root / "yes tumor" / "Thumbs.db").write_bytes(b"\0" * 20)
    (root / "yes tumor" / "notes.txt").write_text("not an image")
    save(root / "yes tumor" / ".hidden.png")
    save(root / "__MACOSX" / "no tumor" / "._1 no.jpeg")
    save(root / "stray.png")
    return root


def test_image_folder_reads_every_format_size_and_mode(brain):
    ds = open_dataset(str(brain), 24, masks=False, layout="image_folder")
    assert ds.classes == ["no tumor", "yes tumor"] and ds.masks is None and ds.split is None
    assert ds.files == [
        "no tumor/1 no.jpeg", "no tumor/N2.JPG", "no tumor/no 3.bmp", "yes tumor/Y1.png", "yes tumor/Y2.tif",
        "yes tumor/Y3.png",
    ]
    assert ds.labels.tolist() == [0, 0, 0, 1, 1, 1] and ds.labels.dtype == np.int64 and not ds.multilabel
    assert ds.images.shape == (6, 24, 24, 1)
    means = ds.images.reshape(6, -1).mean(1)
    assert np.allclose(means[[0, 2, 3, 4]], [30, 60, 200, 220], atol=2)
    assert abs(means[1] - 76) <= 2  # pure red in luminance
    rgb = open_dataset(str(brain), 8, channels=3, masks=False, layout="image_folder")
    assert rgb.images.shape == (6, 8, 8, 3) and np.allclose(rgb.images[1].reshape(-1, 3).mean(0), [254, 0, 0], atol=2)


def test_high_bit_depth_images_are_scaled_to_8_bits(tmp_path):
    gradient = (np.arange(40 * 30).reshape(30, 40) * 50).astype(np.uint16)  # 0 .. 59950
    (tmp_path / "d" / "a").mkdir(parents=True)
    Image.fromarray(gradient).save(tmp_path / "d" / "a" / "scan.tif")
    save(tmp_path / "d" / "b" / "plain.png")
    ds = open_dataset(str(tmp_path / "d"), 30, masks=False, layout="image_folder")
    assert ds.images[0].min() <= 2 and ds.images[0].max() >= 250


def test_image_folder_has_no_masks(brain):
    with pytest.raises(DataError, match=r"image_folder layout has no masks.*masks=False.*covid_radiography, busi"):
        open_dataset(str(brain), 16, layout="image_folder")


def test_class_folder_without_images_is_an_error(brain):
    (brain / "maybe").mkdir()
    (brain / "maybe" / "readme.txt").write_text("no images here")
    with pytest.raises(DataError, match=r"Class folder '.*maybe' has no images; expected .png, .jpg"):
        open_dataset(str(brain), 16, masks=False, layout="image_folder")


@pytest.fixture
def covid_ct(tmp_path):
    """The COVID-CT repository: Images-processed/ beside Data-split/ with per-class train/val/test name lists."""
    repo = tmp_path / "COVID-CT"
    covid = ["2020.01.24.919183-p27-132.png", "2020.02.10.20021584-p6-52%11.png", "2020.03.01.20029769-p21-72_1.png",
             "2020.03.12.20034686-p17-91-4.png", "2020.03.16.20036145-p19-140-3.png", "covid 6.jpg"]
    noncovid = ["0.jpg", "1%0.jpg", "kjr-21-e24-g001-l-a.jpg", "3.png", "4.png", "5%2.jpg"]
    rng = np.random.default_rng(0)
    for cls, names, value in (("CT_COVID", covid, 200), ("CT_NonCOVID", noncovid, 40)):
        for name in names:
            width, height = (int(v) for v in rng.integers(124, 400, size=2))
            save(repo / "Images-processed" / cls / name, (width, height), "RGB" if name.endswith("png") else "L",
                 (value, value, value) if name.endswith("png") else value)
    (repo / "Images-processed" / "CT_COVID.zip").write_bytes(b"PK\x03\x04")  # the archives sit beside the folders
    split = repo / "Data-split"
    lines(split / "COVID" / "trainCT_COVID.txt", *covid[:3], "")
    (split / "COVID" / "valCT_COVID.txt").write_bytes(f"{covid[3]}  \r\n\r\n".encode())  # CRLF, trailing blanks
    lines(split / "COVID" / "testCT_COVID.txt", covid[4])  # covid[5] is in no list
    lines(split / "NonCOVID" / "trainCT_NonCOVID.txt", *noncovid[:3])
    lines(split / "NonCOVID" / "valCT_NonCOVID.txt", "CT_NonCOVID/3.png")  # a path relative to the root
    lines(split / "NonCOVID" / "testCT_NonCOVID.txt", noncovid[4], noncovid[5])
    (split / "README.txt").write_text("not a list: no train, val or test in the name")
    return repo


def test_official_split_lists_give_train_and_val_and_leave_test_out(covid_ct):
    root = str(covid_ct / "Images-processed")
    ds = open_dataset(root, 16, masks=False, layout="image_folder", split_files="../Data-split")
    assert ds.classes == ["CT_COVID", "CT_NonCOVID"]
    listed = {"train": ["CT_COVID/2020.01.24.919183-p27-132.png", "CT_COVID/2020.02.10.20021584-p6-52%11.png",
                        "CT_COVID/2020.03.01.20029769-p21-72_1.png", "CT_NonCOVID/0.jpg", "CT_NonCOVID/1%0.jpg",
                        "CT_NonCOVID/kjr-21-e24-g001-l-a.jpg"],
              "val": ["CT_COVID/2020.03.12.20034686-p17-91-4.png", "CT_NonCOVID/3.png"]}
    assert sorted(ds.files) == sorted(listed["train"] + listed["val"])  # test and unlisted images are not in the set
    for part, expected in listed.items():
        assert sorted(ds.files[i] for i in ds.split[part]) == sorted(expected)
    train, val = train_val_split(ds, 0.5, seed=3)  # the official split wins over fraction and seed
    assert np.array_equal(train, ds.split["train"]) and np.array_equal(val, ds.split["val"])
    assert not (covid_ct / "Images-processed" / ".medtune").exists()
    assert ds.labels[val].tolist() == [0, 1]
    absolute = open_dataset(root, 16, masks=False, layout="image_folder", split_files=str(covid_ct / "Data-split"))
    assert absolute.fingerprint == ds.fingerprint == data_fingerprint(root, "image_folder", "../Data-split")
    assert ds.fingerprint != data_fingerprint(root, "image_folder")
    whole = open_dataset(root, 16, masks=False, layout="image_folder")  # without the lists: one test image per class
    held_out = open_dataset(root, 16, masks=False, layout="image_folder", part="test")
    assert len(whole.files) == 10 and whole.split is None and len(held_out.files) == 2


def test_editing_a_split_list_changes_the_fingerprint_and_the_split(covid_ct):
    root = str(covid_ct / "Images-processed")
    before = open_dataset(root, 16, masks=False, layout="image_folder", split_files="../Data-split")
    train_list, val_list = (covid_ct / "Data-split" / "NonCOVID" / f"{p}CT_NonCOVID.txt" for p in ("train", "val"))
    lines(train_list, "0.jpg", "1%0.jpg", "CT_NonCOVID/3.png")  # same bytes, names moved between lists
    lines(val_list, "kjr-21-e24-g001-l-a.jpg")
    after = open_dataset(root, 16, masks=False, layout="image_folder", split_files="../Data-split")
    assert after.fingerprint != before.fingerprint
    assert "CT_NonCOVID/kjr-21-e24-g001-l-a.jpg" in [after.files[i] for i in after.split["val"]]


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda s: lines(s / "COVID" / "valCT_COVID.txt", "nowhere.png"),
         r"valCT_COVID.txt:1 names 'nowhere.png', which matches no image"),
        (lambda s: lines(s / "COVID" / "valCT_COVID.txt", "CT_COVID/nowhere.png"),
         r"names 'CT_COVID/nowhere.png', which matches no image"),
        (lambda s: lines(s / "COVID" / "testCT_COVID.txt", "0.jpg"),
         r"'CT_NonCOVID/0.jpg' is listed as test \(.*testCT_COVID.txt:1\) and as train \(.*trainCT_NonCOVID.txt:1\)"),
        (lambda s: lines(s / "trainval.txt", "0.jpg"), r"trainval.txt' has a name containing train and val"),
        (lambda s: [p.unlink() for p in s.rglob("val*.txt")], r"name no val images"),
    ],
    ids=["unknown name", "unknown path", "in two lists", "ambiguous list name", "no val list"],
)
def test_bad_split_lists(covid_ct, edit, message):
    edit(covid_ct / "Data-split")
    with pytest.raises(DataError, match=message):
        open_dataset(str(covid_ct / "Images-processed"), 16, masks=False, layout="image_folder",
                     split_files="../Data-split")


def test_ambiguous_file_name_in_a_split_list(covid_ct):
    save(covid_ct / "Images-processed" / "CT_COVID" / "0.jpg")  # now in both class folders
    several = r"names '0.jpg', which matches several images: 'CT_COVID/0.jpg', 'CT_NonCOVID/0.jpg'"
    with pytest.raises(DataError, match=several):
        open_dataset(str(covid_ct / "Images-processed"), 16, masks=False, layout="image_folder",
                     split_files="../Data-split")


@pytest.mark.parametrize("split_files, message", [("../Nope", r"resolve to '.*Nope', which is not a folder"),
                                                  ("CT_COVID", r"holds no .txt lists")])
def test_split_files_folder_errors(covid_ct, split_files, message):
    with pytest.raises(DataError, match=message):
        open_dataset(str(covid_ct / "Images-processed"), 16, masks=False, layout="image_folder",
                     split_files=split_files)


# --- busi ----------------------------------------------------------------------------------------


def lesion_mask(path, size, box):
    """A 0/255 mask of `size` with the rectangle `box` (x0, y0, x1, y1) white."""
    mask = np.zeros(size[::-1], np.uint8)
    x0, y0, x1, y1 = box
    mask[y0:y1, x0:x1] = 255
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(mask).save(path)


@pytest.fixture
def busi(tmp_path):
    """Dataset_BUSI_with_GT: "<class> (n).png" beside "<class> (n)_mask.png" and sometimes "_mask_1.png"."""
    root = tmp_path / "Dataset_BUSI_with_GT"
    for cls in ("benign", "malignant", "normal"):
        for n in (1, 2, 3):
            size = (40 + 10 * n, 32)
            save(root / cls / f"{cls} ({n}).png", size, "RGB", (90, 90, 90))
            box = (0, 0, 0, 0) if cls == "normal" else (0, 0, size[0] // 2, 16)
            lesion_mask(root / cls / f"{cls} ({n})_mask.png", size, box)
    lesion_mask(root / "benign" / "benign (2)_mask_1.png", (60, 32), (30, 16, 60, 32))  # second lesion
    return root


def test_busi_merges_masks_and_never_counts_them_as_images(busi):
    ds = open_dataset(str(busi), 16, layout="busi")
    assert ds.classes == ["benign", "malignant", "normal"] and ds.labels.tolist() == [0] * 3 + [1] * 3 + [2] * 3
    assert not any("_mask" in f for f in ds.files) and len(ds.files) == 9
    assert ds.masks.shape == (9, 16, 16) and set(np.unique(ds.masks)) == {0, 1}
    quarter = ds.masks[ds.files.index("benign/benign (1).png")]
    assert quarter[:8, :8].all() and quarter.sum() == 64  # top-left quarter only
    merged = ds.masks[ds.files.index("benign/benign (2).png")]
    assert merged[:8, :8].all() and merged[8:, 8:].all() and merged.sum() == 128  # OR of both mask files
    assert ds.masks[ds.labels == 2].sum() == 0  # normal: empty masks
    assert open_dataset(str(busi), 16, masks=False, layout="busi").fingerprint == ds.fingerprint


@pytest.mark.parametrize("remove", ["malignant (3)_mask.png", None])
def test_busi_image_without_its_mask(busi, remove):
    if remove:
        (busi / "malignant" / remove).unlink()
    else:  # only the second mask is left: the first is still required
        (busi / "benign" / "benign (2)_mask.png").unlink()
    with pytest.raises(DataError) as err:
        open_dataset(str(busi), 16, layout="busi")
    image = "malignant (3).png" if remove else "benign (2).png"
    folder = "malignant" if remove else "benign"
    assert str(busi / folder / image) in str(err.value)
    assert str(busi / folder / image.replace(".png", "_mask.png")) in str(err.value)
    assert len(open_dataset(str(busi), 16, masks=False, layout="busi").files) == 9


def test_busi_class_with_only_masks_has_no_images(busi):
    lesion_mask(busi / "other" / "x_mask.png", (8, 8), (0, 0, 4, 4))
    with pytest.raises(DataError, match=r"'.*other' has no images.*besides the <name>_mask.png files"):
        open_dataset(str(busi), 16, layout="busi")


# --- annotation_list -------------------------------------------------------------------------------


@pytest.fixture
def medfmc(tmp_path):
    """MedFMC-style: images/, classes.txt, a trainval pool with multi-label, empty and odd-whitespace lines."""
    root = tmp_path / "ChestDR"
    for k in range(1, 9):
        save(root / "images" / f"chest_{k:03d}.png", (30 + k, 28), value=20 * k)
    save(root / "images" / "sub" / "chest_009.png", value=180)
    lines(root / "classes.txt", "pleural_effusion", "nodule", "pneumonia", "")
    lines(root / "trainval.txt", "chest_001.png 0,2", "chest_002.png", "sub/chest_009.png 1", "",
          "  chest_004.png   0,1,2  ", "chest_005.png 2", "chest_006.png ")
    lines(root / "test.txt", "chest_007.png 1", "chest_008.png 0")
    return root


def test_annotation_list_multi_label(medfmc):
    ds = open_dataset(str(medfmc), 16, masks=False, layout="annotation_list")
    assert ds.classes == ["pleural_effusion", "nodule", "pneumonia"] and ds.multilabel
    assert ds.files == ["images/chest_001.png", "images/chest_002.png", "images/sub/chest_009.png",
                        "images/chest_004.png", "images/chest_005.png", "images/chest_006.png"]
    assert ds.labels.dtype == np.uint8
    assert ds.labels.tolist() == [[1, 0, 1], [0, 0, 0], [0, 1, 0], [1, 1, 1], [0, 0, 1], [0, 0, 0]]
    assert np.allclose(ds.images.reshape(6, -1).mean(1), [20, 40, 180, 80, 100, 120], atol=1)
    assert ds.variant == "trainval-test0.15"


def test_annotation_list_reads_medfmc_multi_hot_vectors(medfmc):
    lines(medfmc / "chest.txt", "chest_001.png 1,0,1", "chest_002.png 0,0,0", "chest_003.png 0,1,0")
    lines(medfmc / "endo.txt", "chest_001.png 1 0 1", "chest_002.png 0 0 0", "chest_003.png 0 1 1")
    chest = open_dataset(str(medfmc), 16, masks=False, layout="annotation_list", annotations="chest.txt")
    endo = open_dataset(str(medfmc), 16, masks=False, layout="annotation_list", annotations="endo.txt")
    assert chest.labels.tolist() == [[1, 0, 1], [0, 0, 0], [0, 1, 0]]
    assert endo.labels.tolist() == [[1, 0, 1], [0, 0, 0], [0, 1, 1]]
    assert chest.fingerprint != endo.fingerprint  # the list is part of what the set is


def test_annotation_list_with_one_label_per_image_is_single_label(medfmc):
    (medfmc / "classes.txt").unlink()
    lines(medfmc / "colon.txt", "chest_001.png 1", "chest_002.png 0", "chest_003.png 1", "chest_004.png 0")
    ds = open_dataset(str(medfmc), 16, masks=False, layout="annotation_list", annotations="colon.txt")
    assert not ds.multilabel and ds.labels.dtype == np.int64 and ds.labels.tolist() == [1, 0, 1, 0]
    assert ds.classes == ["class_0", "class_1"]


def test_annotation_list_official_val_list(medfmc):
    lines(medfmc / "chest_1-shot_train.txt", "chest_001.png 0,2", "chest_003.png 1")
    lines(medfmc / "chest_1-shot_val.txt", "chest_004.png 0,1,2", "chest_001.png 0,2", "chest_005.png")
    ds = open_dataset(str(medfmc), 16, masks=False, layout="annotation_list",
                      annotations="chest_1-shot_train.txt", split_files="chest_1-shot_val.txt")
    assert ds.files == ["images/chest_001.png", "images/chest_003.png", "images/chest_004.png", "images/chest_005.png"]
    assert ds.split["train"].tolist() == [1] and ds.split["val"].tolist() == [0, 2, 3]
    assert [a.tolist() for a in train_val_split(ds)] == [[1], [0, 2, 3]]
    lines(medfmc / "chest_1-shot_val.txt", "chest_003.png 2")
    with pytest.raises(DataError, match=r"'chest_003.png' is labelled \[1\] at .*train.txt:2 and \[2\] at .*val.txt:1"):
        open_dataset(str(medfmc), 16, masks=False, layout="annotation_list",
                     annotations="chest_1-shot_train.txt", split_files="chest_1-shot_val.txt")


@pytest.mark.parametrize(
    "line, message",
    [
        ("../../etc/passwd 0", r"trainval.txt:8 names '../../etc/passwd', which leaves the images folder"),
        ("/etc/passwd 0", r"trainval.txt:8 names '/etc/passwd', which leaves the images folder"),
        ("sub/../../classes.txt 1", r"names 'sub/../../classes.txt', which leaves the images folder"),
        ("chest_007.png 3", r"trainval.txt:8 has label index 3, outside the class list; accepted: 0 to 2 "
                            r"\(classes.txt: pleural_effusion, nodule, pneumonia\)"),
        ("chest_007.png -1", r"label index -1, outside the class list"),
        ("chest_007.png 0,0", r"repeats a label index"),
        ("chest_007.png 0,1,0,0", r"multi-hot label vector of 4 values; expected one 0/1 value per class, 3"),
        ("chest_007.png pneumonia", r"labels 'pneumonia', which are not integers"),
        ("chest_404.png 1", r"names 'chest_404.png', but '.*images/chest_404.png' is not a file"),
        ("chest_001.png 1", r"lists 'chest_001.png' again \(first at .*trainval.txt:1\)"),
    ],
)
def test_bad_annotation_lines(medfmc, line, message):
    with open(medfmc / "trainval.txt", "a") as f:
        f.write(line + "\n")
    with pytest.raises(DataError, match=message):
        open_dataset(str(medfmc), 16, masks=False, layout="annotation_list")


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"annotations": "train.txt"}, r"Annotation list \(data/annotations\) 'train.txt' is not a file"),
        ({"split_files": "val.txt"}, r"Val list \(data/split_files\) 'val.txt' is not a file"),
        ({"masks": True}, r"annotation_list layout has no masks"),
    ],
)
def test_annotation_list_argument_errors(medfmc, kwargs, message):
    with pytest.raises(DataError, match=message):
        open_dataset(str(medfmc), 16, **{"masks": False, "layout": "annotation_list", **kwargs})


def test_annotation_list_without_images_folder(tmp_path):
    lines(tmp_path / "d" / "trainval.txt", "a.png 0")
    with pytest.raises(DataError, match=r"has no images/ folder"):
        open_dataset(str(tmp_path / "d"), 16, masks=False, layout="annotation_list")


# --- errors common to every layout -----------------------------------------------------------------


@pytest.mark.parametrize("call", [
    lambda: open_dataset(None, 16, layout="coco"),
    lambda: data_fingerprint("/tmp", layout="coco"),
    lambda: synthetic_root("coco"),
    lambda: ensure_synthetic("coco"),
])
def test_unknown_layout_lists_the_layouts(call):
    with pytest.raises(DataError, match=r"Unknown data layout 'coco'.*" + ", ".join(LAYOUTS)):
        call()


@pytest.mark.parametrize("layout", LAYOUTS)
def test_missing_and_empty_data_roots(tmp_path, layout):
    with pytest.raises(DataError, match=rf"'{tmp_path}/gone' does not exist.*{layout}"):
        open_dataset(str(tmp_path / "gone"), 16, masks=False, layout=layout)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match=rf"'{tmp_path}/empty' is empty; expected the {layout} layout"):
        data_fingerprint(str(tmp_path / "empty"), layout)


@pytest.mark.parametrize("value", ["ignore", "", None])
def test_on_bad_image_must_be_fail_or_skip(brain, value):
    with pytest.raises(DataError, match=rf"on_bad_image .*must be one of fail, skip, got {value!r}"):
        open_dataset(str(brain), 16, masks=False, layout="image_folder", on_bad_image=value)


def test_bad_image_fails_by_default_and_is_skipped_on_request(brain, cache):
    truncate(brain / "no tumor" / "N2.JPG")
    (brain / "yes tumor" / "Y3.png").write_text("this is not a PNG")
    with pytest.raises(DataError) as err:
        open_dataset(str(brain), 16, masks=False, layout="image_folder")
    assert str(brain / "no tumor" / "N2.JPG") in str(err.value) and 'on_bad_image="skip"' in str(err.value)
    ds = open_dataset(str(brain), 16, masks=False, layout="image_folder", on_bad_image="skip")
    assert [s.split(": ")[0] for s in ds.skipped] == ["no tumor/N2.JPG", "yes tumor/Y3.png"]
    assert "truncated" in ds.skipped[0] and "cannot identify image file" in ds.skipped[1]
    assert ds.files == ["no tumor/1 no.jpeg", "no tumor/no 3.bmp", "yes tumor/Y1.png", "yes tumor/Y2.tif"]
    assert ds.labels.tolist() == [0, 0, 1, 1] and ds.images.shape == (4, 16, 16, 1)
    assert np.allclose(ds.images.reshape(4, -1).mean(1), [30, 60, 200, 220], atol=2)  # rows stay aligned
    again = open_dataset(str(brain), 16, masks=False, layout="image_folder", on_bad_image="skip")
    assert again.skipped == ds.skipped and again.images.shape == ds.images.shape  # read back from the cache
    assert ds.variant == "test0.15-skip2"
    train, val = train_val_split(ds, 0.5)
    assert (brain / ".medtune" / "split-test0.15-skip2-val0.5-seed0.json").is_file() and len(train) + len(val) == 4
    assert sorted(d for d in os.listdir(cache / "decoded") if not d.endswith(".lock")) == [
        f"{ds.fingerprint}-s16-c1-skip"]  # the failed open left nothing behind


def test_skipped_images_leave_the_official_split(covid_ct):
    truncate(covid_ct / "Images-processed" / "CT_NonCOVID" / "1%0.jpg")
    ds = open_dataset(str(covid_ct / "Images-processed"), 16, masks=False, layout="image_folder",
                      split_files="../Data-split", on_bad_image="skip")
    assert ds.skipped[0].startswith("CT_NonCOVID/1%0.jpg: ") and len(ds.files) == 7
    assert sorted(ds.files[i] for i in ds.split["val"]) == ["CT_COVID/2020.03.12.20034686-p17-91-4.png",
                                                             "CT_NonCOVID/3.png"]
    assert len(ds.split["train"]) == 5 and max(ds.split["train"].max(), ds.split["val"].max()) == 6


def test_corrupt_mask_skips_its_image(busi):
    truncate(busi / "benign" / "benign (2)_mask_1.png")
    ds = open_dataset(str(busi), 16, layout="busi", on_bad_image="skip")
    assert len(ds.skipped) == 1
    assert ds.skipped[0].startswith("benign/benign (2).png: mask 'benign/benign (2)_mask_1.png': ")
    assert "truncated" in ds.skipped[0]
    assert len(ds.files) == len(ds.masks) == 8
    assert len(open_dataset(str(busi), 16, masks=False, layout="busi", on_bad_image="skip").skipped) == 0


def test_nothing_decodable_is_an_error_even_when_skipping(tmp_path):
    for name in ("a/1.png", "b/2.png"):
        (tmp_path / "d" / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "d" / name).write_bytes(b"\x89PNG broken")
    with pytest.raises(DataError, match=r"None of the 2 images could be decoded \(first: a/1.png: "):
        open_dataset(str(tmp_path / "d"), 16, masks=False, layout="image_folder", on_bad_image="skip")


# --- splits and subsets ------------------------------------------------------------------------------


def multilabel_set(root, n=60, seed=0):
    """Multi-hot labels with a long tail: class 4 on 2 images only, class 3 on 5; some rows empty."""
    rng = np.random.default_rng(seed)
    labels = (rng.random((n, 5)) < [0.6, 0.4, 0.25, 0.0, 0.0]).astype(np.uint8)
    labels[[3, 17, 30, 41, 55], 3] = 1
    labels[[17, 44], 4] = 1
    os.makedirs(root, exist_ok=True)
    return ImageSet(np.zeros((n, 1, 1, 1), np.uint8), None, labels, [f"c{c}" for c in range(5)],
                    [f"images/{k}.png" for k in range(n)], "feedfacefeedface", str(root))


def test_multilabel_split_keeps_every_class_in_train_and_is_saved(tmp_path):
    ds = multilabel_set(tmp_path / "d")
    train, val = train_val_split(ds, 0.5, seed=1)
    assert np.array_equal(np.sort(np.concatenate([train, val])), np.arange(60)) and not set(train) & set(val)
    assert ds.labels[train].sum(0).min() >= 1  # every class, even the two-image one, is in train
    assert 20 <= len(val) <= 35
    saved = json.loads((tmp_path / "d" / ".medtune" / "split-val0.5-seed1.json").read_text())
    assert saved["val"] == [ds.files[i] for i in val]
    assert np.array_equal(train_val_split(multilabel_set(tmp_path / "d"), 0.5, seed=1)[1], val)
    other = train_val_split(multilabel_set(tmp_path / "e"), 0.5, seed=2)[1]
    assert not np.array_equal(other, val)


def test_single_image_class_stays_in_train(tmp_path):
    ds = multilabel_set(tmp_path / "d")
    ds.labels[:, 4] = 0
    ds.labels[44, 4] = 1
    for seed in range(5):
        train, _ = train_val_split(ds, 0.9, seed=seed)
        assert 44 in train and ds.labels[train].sum(0).min() >= 1


def test_multilabel_fraction_subset_is_nested_and_inside_train(tmp_path):
    ds = multilabel_set(tmp_path / "d")
    train, _ = train_val_split(ds, 0.2)
    quarter, half = (fraction_subset(train, ds.labels, f, seed=4) for f in (0.25, 0.5))
    assert set(quarter) <= set(half) <= set(train) and len(quarter) < len(half) < len(train)
    assert fraction_subset(train, ds.labels, 1.0) is train
    for fraction in (0.0, 1.01, -0.5):
        with pytest.raises(DataError, match=rf"fraction must be a number in \(0, 1\], got {fraction}"):
            fraction_subset(train, ds.labels, fraction)


def test_shots_single_label_exact_nested_and_seeded():
    labels = np.repeat(np.arange(3), [20, 12, 30])
    train = np.arange(0, 62, 1)[np.arange(62) % 7 != 0]  # a training split without every 7th image
    subsets = {k: shots_subset(train, labels, k, seed=5) for k in (1, 5, 10)}
    for k, subset in subsets.items():
        assert np.bincount(labels[subset]).tolist() == [k, k, k] and set(subset) <= set(train)
        assert np.all(np.diff(subset) > 0)
    assert set(subsets[1]) <= set(subsets[5]) <= set(subsets[10])
    assert np.array_equal(shots_subset(train, labels, 5, seed=5), subsets[5])
    assert not np.array_equal(shots_subset(train, labels, 5, seed=6), subsets[5])
    assert shots_subset(train, labels, 0) is train


def test_shots_multilabel_at_least_k_per_class_rarest_first_and_nested(tmp_path):
    ds = multilabel_set(tmp_path / "d", n=120)
    ds.labels[[3, 17, 30, 41, 55, 70], 4] = 1
    train = np.arange(120)
    subsets = {k: shots_subset(train, ds.labels, k, seed=0) for k in (1, 2, 5)}
    for k, subset in subsets.items():
        assert ds.labels[subset].sum(0).min() >= k
        assert len(subset) <= 5 * k
    assert set(subsets[1]) <= set(subsets[2]) <= set(subsets[5])
    rare = np.flatnonzero(ds.labels[:, 4])  # the rarest class picks first: its 1-shot image is one of its own
    assert set(subsets[1]) & set(rare)


def test_shots_more_than_a_class_has_names_the_class(tmp_path):
    labels = np.repeat(np.arange(3), [20, 4, 30])
    with pytest.raises(DataError, match=r"class 'Viral Pneumonia' has 3 images in the training split, "
                                        r"fewer than the 5 shots requested"):
        shots_subset(np.delete(np.arange(54), 20), labels, 5, classes=["COVID", "Viral Pneumonia", "Normal"])
    ds = multilabel_set(tmp_path / "d")
    with pytest.raises(DataError, match=r"class 4 has 2 images in the training split, fewer than the 3 shots"):
        shots_subset(np.arange(60), ds.labels, 3)


@pytest.mark.parametrize("shots", [-1, 1.5, True, "5"])
def test_shots_must_be_a_non_negative_integer(shots):
    with pytest.raises(DataError, match=rf"shots must be a non-negative integer, got {re.escape(repr(shots))}"):
        shots_subset(np.arange(4), np.zeros(4, np.int64), shots)


# --- generated sets ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    """One node cache for the module, so each layout's synthetic set is generated once."""
    return tmp_path_factory.mktemp("synthetic-cache")


@pytest.fixture
def shared_cache(generated, monkeypatch):
    monkeypatch.setenv("MEDTUNE_CACHE", str(generated))
    return generated


OPEN = {  # how each layout's generated set is opened
    "covid_radiography": {"masks": True},
    "image_folder": {"masks": False, "split_files": "../Data-split"},
    "busi": {"masks": True},
    "annotation_list": {"masks": False, "test_annotations": "test.txt"},
}


@pytest.mark.parametrize("layout", LAYOUTS)
def test_each_synthetic_set_is_generated_once_in_its_layout(shared_cache, monkeypatch, layout):
    folder, generate, data = synthetic.SYNTHETIC[layout]
    existed = (shared_cache / "synthetic" / folder).is_dir()  # generated by an earlier test of this module
    calls = []
    monkeypatch.setitem(synthetic.SYNTHETIC, layout, (folder, lambda root: calls.append(generate(root)), data))
    first = open_dataset(None, 32, layout=layout, **OPEN[layout])
    second = open_dataset("", 32, layout=layout, **OPEN[layout])
    assert len(calls) == (0 if existed else 1)
    assert first.root == second.root == synthetic_root(layout) == ensure_synthetic(layout)
    assert first.fingerprint == data_fingerprint(None, layout, OPEN[layout].get("split_files", ""),
                                                 test_annotations=OPEN[layout].get("test_annotations", ""))
    assert 100 <= len(first.files) <= 400 and first.images.shape[1:] == (32, 32, 1)
    assert sorted(os.listdir(shared_cache / "synthetic")).count(folder) == 1


def image_modes_and_sizes(paths):
    modes, sizes = set(), set()
    for path in paths:
        with Image.open(path) as im:
            modes.add(im.mode)
            sizes.add(im.size)
    return modes, sizes


def test_synthetic_image_folder_mirrors_covid_ct(shared_cache):
    ds = open_dataset(None, 32, layout="image_folder", **OPEN["image_folder"])
    assert synthetic_root("image_folder").endswith(os.path.join("image_folder-v1", "Images-processed"))
    assert ds.classes == ["CT_COVID", "CT_NonCOVID"]
    repo = os.path.dirname(ds.root)
    split_lists = sorted(os.path.relpath(os.path.join(d, n), repo) for d, _, ns in os.walk(repo + "/Data-split")
                         for n in ns)
    assert split_lists == [f"Data-split/{g}/{p}CT_{g}.txt" for g in ("COVID", "NonCOVID")
                           for p in ("test", "train", "val")]
    every = [os.path.join(ds.root, c, n) for c in ds.classes for n in os.listdir(os.path.join(ds.root, c))]
    modes, sizes = image_modes_and_sizes(every)
    assert {os.path.splitext(p)[1] for p in every} == {".png", ".jpg"} and modes == {"L", "RGB"}
    widths, heights = zip(*sizes)
    assert min(widths) <= 60 and max(widths) >= 140 and min(heights) <= 60 and max(heights) >= 140
    assert len(ds.files) < len(every)  # the test lists' images are left out
    assert abs(len(ds.split["val"]) - 0.15 * len(every)) <= 2


def test_synthetic_busi_has_second_masks_and_empty_normal_masks(shared_cache):
    ds = open_dataset(None, 32, layout="busi", **OPEN["busi"])
    assert ds.classes == ["benign", "malignant", "normal"] and np.bincount(ds.labels).tolist() == [68] * 3  # 12 of 80 held out
    names = [n for c in ds.classes for n in os.listdir(os.path.join(ds.root, c))]
    second = [n for n in names if n.endswith("_mask_1.png")]
    assert 10 <= len(second) <= 70 and not any(n.startswith("normal") for n in second)
    assert re.fullmatch(r"benign \(\d+\)\.png", os.path.basename(ds.files[0]))
    assert ds.masks[ds.labels == 2].max() == 0 and ds.masks[ds.labels != 2].reshape(136, -1).max(1).min() == 1
    lesion = ds.masks[ds.labels != 2].mean()
    assert 0.02 < lesion < 0.25


def test_synthetic_annotation_list_has_a_long_tail_and_empty_and_multiple_findings(shared_cache):
    ds = open_dataset(None, 32, layout="annotation_list", **OPEN["annotation_list"])
    counts = ds.labels.sum(0).astype(int)
    assert ds.multilabel and len(ds.classes) == 5 and np.all(np.diff(counts) < 0) and counts[-1] >= 10
    per_image = ds.labels.sum(1)
    assert (per_image == 0).sum() >= 10 and (per_image >= 2).sum() >= 10
    pool = (shared_cache / "synthetic" / "annotation_list-v1" / "trainval.txt").read_text().splitlines()
    assert any(len(line.split()) == 1 for line in pool) and any("," in line for line in pool)
    held_out = (shared_cache / "synthetic" / "annotation_list-v1" / "test.txt").read_text().split()
    assert not {"images/" + held_out[0]} & set(ds.files)


@pytest.mark.parametrize("layout", ["image_folder", "busi", "annotation_list"])
def test_synthetic_set_is_learnable_by_a_tiny_cnn_in_two_epochs(shared_cache, layout):
    import torch
    from sklearn.metrics import accuracy_score, average_precision_score
    from torch import nn

    torch.set_num_threads(1)
    ds = open_dataset(None, 32, layout=layout, **{**OPEN[layout], "masks": False})
    train, val = train_val_split(ds)
    x = torch.tensor(np.asarray(ds.images), dtype=torch.float32).permute(0, 3, 1, 2) / 255
    x = (x - x[train].mean()) / x[train].std()
    y = torch.tensor(ds.labels, dtype=torch.float32 if ds.multilabel else torch.long)
    torch.manual_seed(0)
    blocks = [m for c_in, c_out in ((1, 16), (16, 32)) for m in
              (nn.Conv2d(c_in, c_out, 3, padding=1), nn.BatchNorm2d(c_out), nn.ReLU(), nn.MaxPool2d(2))]
    net = nn.Sequential(*blocks, nn.Conv2d(32, 32, 3, padding=1), nn.ReLU(), nn.AdaptiveMaxPool2d(1), nn.Flatten(),
                        nn.Linear(32, len(ds.classes)))
    optimizer = torch.optim.Adam(net.parameters(), 3e-3)
    loss = nn.BCEWithLogitsLoss() if ds.multilabel else nn.CrossEntropyLoss()
    for _ in range(2):
        for batch in torch.randperm(len(train)).split(16):
            optimizer.zero_grad()
            loss(net(x[train[batch]]), y[train[batch]]).backward()
            optimizer.step()
    with torch.no_grad():
        scores = net.eval()(x[val])
    if ds.multilabel:
        truth = ds.labels[val]
        mean_ap = np.mean([average_precision_score(truth[:, c], scores[:, c]) for c in range(truth.shape[1])])
        assert mean_ap > 0.6 > 2 * truth.mean()  # prevalence is what a guess scores
    else:
        assert accuracy_score(ds.labels[val], scores.argmax(1)) > 0.8


# --- make_synthetic.py ---------------------------------------------------------------------------------


@pytest.mark.parametrize("layout, args, data", [
    ("covid_radiography", ["--per-class", "3", "--image-size", "32", "--mask-size", "24"], ""),
    ("image_folder", ["--per-class", "4", "--image-size", "48"], "Images-processed"),
    ("busi", ["--per-class", "3", "--image-size", "40"], ""),
    ("annotation_list", ["--images", "20", "--image-size", "32"], ""),
])
def test_make_synthetic_writes_any_layout(tmp_path, capsys, layout, args, data):
    make_synthetic.main([str(tmp_path / "out"), "--layout", layout, *args])
    root = str(tmp_path / "out" / data) if data else str(tmp_path / "out")
    assert f"its data root is {root}" in capsys.readouterr().out
    ds = open_dataset(root, 16, layout=layout, **{**OPEN[layout], "masks": False})
    # image_folder keeps train + val: 3 of the 4 images per class; annotation_list: the 4/5 in trainval.txt
    expected = {"covid_radiography": 12, "image_folder": 6, "busi": 9, "annotation_list": 16}[layout]
    assert len(ds.files) == expected


def test_make_synthetic_rejects_options_of_other_layouts(tmp_path, capsys):
    with pytest.raises(SystemExit):
        make_synthetic.main([str(tmp_path / "out"), "--layout", "annotation_list", "--per-class", "3"])
    assert "--per-class does not apply to --layout annotation_list; it accepts --images" in capsys.readouterr().err
