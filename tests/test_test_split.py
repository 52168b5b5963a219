"""The held-out test split: official test lists where a layout has them, else drawn once, stratified,
saved with the data and never moved by split seeds or val fractions; a search's set never holds a test image.

Trees are real image files in the public layouts, written into tmp folders.
"""

import json
import os

import numpy as np
import pytest

from search.preflight import check_data
from search.spacefile import load_space
from trainables.data import DataError, data_fingerprint, open_dataset, train_val_split
from tests.files import lines, save
from trainables.registry import COMMON_DEFAULTS

COUNTS = {"benign": 20, "malignant": 14, "normal": 7}  # round(0.15 * n): 3, 2, 1 test images


pytestmark = pytest.mark.usefixtures("cache")  # every test its own node cache (tests/conftest.py)


@pytest.fixture
def folders(tmp_path):
    """An image_folder tree: 20 / 14 / 7 images per class, each of its own grey value."""
    root = tmp_path / "scans"
    for c, (cls, n) in enumerate(COUNTS.items()):
        for k in range(n):
            save(root / cls / f"{cls} {k}.png", value=c * 80 + k)
    return root


def open_folders(root, **kwargs):
    return open_dataset(str(root), 16, masks=False, layout="image_folder", **kwargs)


def saved_test(root, name="test-frac0.15.json"):
    return json.loads((root / ".medtune" / name).read_text())


# --- drawn once, stratified, saved ------------------------------------------------------------------


def test_drawn_test_split_is_stratified_disjoint_and_saved(folders):
    search, test = open_folders(folders), open_folders(folders, part="test")
    assert test.split is None and test.part == "test" and search.part == "search"
    assert not set(search.files) & set(test.files)
    assert sorted(search.files + test.files) == sorted(f"{c}/{c} {k}.png" for c, n in COUNTS.items() for k in range(n))
    assert np.bincount(test.labels).tolist() == [3, 2, 1] and test.classes == search.classes
    assert saved_test(folders)["test"] == test.files and len(saved_test(folders)["rest"]) == len(search.files)
    assert search.fingerprint != test.fingerprint
    assert data_fingerprint(str(folders), "image_folder", part="test") == test.fingerprint
    means = test.images.reshape(len(test.files), -1).mean(1)  # the rows are the test images' own pixels
    assert [round(m) for m in means] == [80 * test.labels[i] + int(f.split()[-1][:-4]) for i, f in
                                         enumerate(test.files)]


def test_split_seeds_and_val_fractions_never_move_the_test_split(folders):
    test = open_folders(folders, part="test").files
    search = open_folders(folders)
    for val_fraction in (0.2, 0.3):
        for seed in range(4):
            train, val = train_val_split(search, val_fraction, seed)
            named = {search.files[i] for i in np.concatenate([train, val])}
            assert named == set(search.files) and not named & set(test)
    assert open_folders(folders, part="test").files == test
    (folders / ".medtune" / "test-frac0.15.json").unlink()  # the draw is seeded by a fixed stream: drawn again alike
    assert open_folders(folders, part="test").files == test


def test_the_saved_test_split_is_what_later_opens_use(folders, decodes):
    first = open_folders(folders)
    saved = saved_test(folders)
    moved = saved["rest"][0]
    saved["test"], saved["rest"] = saved["test"] + [moved], saved["rest"][1:]
    (folders / ".medtune" / "test-frac0.15.json").write_text(json.dumps(saved))
    decodes.clear()
    search = open_folders(folders)  # another set: decoded anew, without the moved image
    assert moved not in search.files and moved not in decodes and len(search.files) == len(first.files) - 1
    assert search.fingerprint != first.fingerprint and moved in open_folders(folders, part="test").files


def test_another_test_fraction_is_another_saved_split_and_another_search_set(folders):
    small, large = open_folders(folders), open_folders(folders, test_fraction=0.3)
    assert len(open_folders(folders, test_fraction=0.3, part="test").files) == 6 + 4 + 2
    assert small.variant == "test0.15" and large.variant == "test0.3" and small.fingerprint != large.fingerprint
    assert (folders / ".medtune" / "test-frac0.3.json").is_file()
    train_val_split(large)
    assert (folders / ".medtune" / "split-test0.3-val0.2-seed0.json").is_file()  # train/val saved per test split


def test_multilabel_test_split_is_stratified_by_rarest_label(tmp_path):
    root = tmp_path / "ChestDR"
    rng = np.random.default_rng(0)
    labels = (rng.random((80, 4)) < [0.5, 0.3, 0.0, 0.0]).astype(int)
    labels[:6, 2] = 1  # rare: six images
    labels[10, 3] = 1  # a class on one image stays out of test
    rows = []
    for k, row in enumerate(labels):
        save(root / "images" / f"c{k:03d}.png", value=k)
        rows.append(f"c{k:03d}.png {','.join(str(c) for c in np.flatnonzero(row))}")
    lines(root / "trainval.txt", *rows)
    search = open_dataset(str(root), 16, masks=False, layout="annotation_list")
    test = open_dataset(str(root), 16, masks=False, layout="annotation_list", part="test")
    assert test.multilabel and test.labels.shape[1] == 4 and not set(search.files) & set(test.files)
    assert test.labels[:, 2].sum() == 1 and test.labels[:, 3].sum() == 0  # round(0.15 * 6) of the rare class
    assert 8 <= len(test.files) <= 16 and search.labels.sum(0).min() >= 1
    assert (root / ".medtune" / "test-trainval-frac0.15.json").is_file()


# --- a search never holds a test image ---------------------------------------------------------------


def test_search_part_neither_decodes_nor_holds_a_test_image(folders, cache, decodes):
    search = open_folders(folders)
    test = set(saved_test(folders)["test"])
    assert decodes and not test & set(decodes) and not test & set(search.files)
    assert search.images.shape[0] == len(search.files) == sum(COUNTS.values()) - len(test)
    entries = sorted(d for d in os.listdir(cache / "decoded") if not d.endswith(".lock"))
    assert entries == [f"{search.fingerprint}-s16-c1"]
    meta = json.loads((cache / "decoded" / entries[0] / "meta.json").read_text())
    assert not test & set(meta["files"])
    decodes.clear()
    held_out = open_folders(folders, part="test")
    assert sorted(decodes) == sorted(test) == sorted(held_out.files)  # its own entry, decoded once
    assert f"{held_out.fingerprint}-s16-c1-test" in os.listdir(cache / "decoded")


def test_preflight_forms_the_test_split_without_decoding_it(folders, tmp_path, decodes):
    path = tmp_path / "space.py"
    path.write_text(f'TRAINABLE = "classification"\nOBJECTIVES = {{"val/f1_macro": "max"}}\n'
                    f'DEFAULTS = {{"data/root": {str(folders)!r}, "data/layout": "image_folder"}}\n'
                    "SMOKE = {}\n\ndef space(trial):\n    pass\n")
    space = load_space(str(path))
    check_data(space.trainable, [dict(space.defaults)], {})
    test = set(saved_test(folders)["test"])
    assert len(test) == 6 and decodes and not test & set(decodes)


def test_loop_open_data_passes_the_test_keys(folders):
    from trainables.trial_data import open_data

    cfg = {**COMMON_DEFAULTS, "data/root": str(folders), "data/layout": "image_folder", "data/image_size": 16,
           "data/test_fraction": 0.3}
    search, test = open_data(cfg, False), open_data(cfg, False, part="test")
    assert len(test.files) == 12 and len(search.files) == 29 and test.part == "test"


# --- official test lists -------------------------------------------------------------------------------


@pytest.fixture
def covid_ct(tmp_path):
    """COVID-CT: Images-processed/ beside Data-split/ with per-class train/val/test lists (one image in none)."""
    repo = tmp_path / "COVID-CT"
    names = {"CT_COVID": [f"2020.0{k}.1{k}-p{k}.png" for k in range(1, 9)],
             "CT_NonCOVID": [f"{k}%0.jpg" for k in range(8)]}
    for cls, files in names.items():
        for k, name in enumerate(files):
            save(repo / "Images-processed" / cls / name, value=10 * k)
        group = cls[3:]
        lines(repo / "Data-split" / group / f"train{cls}.txt", *files[:4])
        lines(repo / "Data-split" / group / f"val{cls}.txt", *files[4:6])
        lines(repo / "Data-split" / group / f"test{cls}.txt", files[6])
    return repo, names


def open_ct(repo, **kwargs):
    return open_dataset(str(repo / "Images-processed"), 16, masks=False, layout="image_folder",
                        split_files="../Data-split", **kwargs)


def test_official_test_lists_are_the_test_part(covid_ct):
    repo, names = covid_ct
    search, test = open_ct(repo), open_ct(repo, part="test")
    assert test.files == [f"{cls}/{files[6]}" for cls, files in names.items()] and test.split is None
    assert test.labels.tolist() == [0, 1]
    assert len(search.files) == 12 and not set(search.files) & set(test.files)
    assert sorted(search.files[i] for i in search.split["val"]) == sorted(
        f"{cls}/{f}" for cls, files in names.items() for f in files[4:6])
    assert not (repo / "Images-processed" / ".medtune").exists()  # nothing drawn, nothing saved
    assert open_ct(repo, test_fraction=0.5).fingerprint == search.fingerprint  # the fraction is not used


def test_without_test_lists_the_test_split_is_drawn_from_the_official_train_images(covid_ct):
    repo, names = covid_ct
    for path in (repo / "Data-split").rglob("test*.txt"):
        path.unlink()
    search, test = open_ct(repo, test_fraction=0.25), open_ct(repo, test_fraction=0.25, part="test")
    train = {f"{cls}/{f}" for cls, files in names.items() for f in files[:4]}
    val = {f"{cls}/{f}" for cls, files in names.items() for f in files[4:6]}
    assert set(test.files) <= train and np.bincount(test.labels).tolist() == [1, 1]
    assert {search.files[i] for i in search.split["val"]} == val  # the official val split stays whole
    assert {search.files[i] for i in search.split["train"]} == train - set(test.files)
    saved = json.loads((repo / "Images-processed" / ".medtune" / "test-Data-split-frac0.25.json").read_text())
    assert saved["test"] == test.files and sorted(saved["test"] + saved["rest"]) == sorted(train)


@pytest.fixture
def medfmc(tmp_path):
    root = tmp_path / "Endo"
    for k in range(1, 13):
        save(root / "images" / f"endo_{k:02d}.png", value=10 * k)
    lines(root / "classes.txt", "ulcer", "erosion", "polyp", "tumor")
    lines(root / "endo_trainval.txt", *[f"endo_{k:02d}.png {k % 3}" for k in range(1, 9)])
    lines(root / "endo_test.txt", "endo_09.png 0 1 0 1", "endo_10.png 1,2", "endo_11.png")  # a MedFMC vector too
    return root


def open_medfmc(root, **kwargs):
    return open_dataset(str(root), 16, masks=False, layout="annotation_list", annotations="endo_trainval.txt",
                        test_annotations="endo_test.txt", **kwargs)


def test_official_test_annotation_list_is_the_test_part(medfmc):
    search, test = open_medfmc(medfmc), open_medfmc(medfmc, part="test")
    assert test.files == ["images/endo_09.png", "images/endo_10.png", "images/endo_11.png"]
    assert test.labels.tolist() == [[0, 1, 0, 1], [0, 1, 1, 0], [0, 0, 0, 0]]
    assert search.multilabel and search.labels.shape == (8, 4) and search.classes == test.classes
    assert search.variant == "endo_trainval-endo_test" and search.split is None
    assert "images/endo_12.png" not in search.files + test.files  # listed nowhere
    assert not (medfmc / ".medtune").exists()
    plain = open_dataset(str(medfmc), 16, masks=False, layout="annotation_list", annotations="endo_trainval.txt")
    assert plain.fingerprint != search.fingerprint  # the test list is part of what the set is


def test_official_test_annotation_list_with_an_official_val_list(medfmc):
    lines(medfmc / "endo_val.txt", "endo_07.png 1", "endo_08.png 2")
    search = open_medfmc(medfmc, split_files="endo_val.txt")
    assert [search.files[i] for i in search.split["val"]] == ["images/endo_07.png", "images/endo_08.png"]
    assert len(search.split["train"]) == 6 and len(search.files) == 8


@pytest.mark.parametrize("listed_in", ["endo_trainval.txt", "endo_val.txt"])
def test_test_image_in_another_list_is_an_error(medfmc, listed_in):
    with open(medfmc / listed_in, "a") as f:
        f.write("endo_10.png 1,2\n")
    with pytest.raises(DataError, match=rf"Image 'endo_10.png' is in the test list at .*endo_test.txt:2 and also at "
                                        rf".*{listed_in}:\d+; a held-out test image may be in neither"):
        open_medfmc(medfmc, split_files="endo_val.txt" if listed_in == "endo_val.txt" else "")


# --- errors ------------------------------------------------------------------------------------------


def test_saved_test_file_naming_images_that_are_gone_says_to_delete_it(folders):
    open_folders(folders)
    gone = saved_test(folders)["test"][0]
    os.remove(folders / gone)
    with pytest.raises(DataError, match=rf"test-frac0.15.json' names 1 files that are not in the data set .*"
                                        rf"first: '{gone}'\); delete the file"):
        open_folders(folders)


def test_saved_test_file_missing_new_images_says_to_delete_it(folders):
    open_folders(folders)
    save(folders / "normal" / "normal new.png")
    with pytest.raises(DataError, match=r"test-frac0.15.json' does not list each of the 42 images .* exactly once.*"
                                        r"delete the file"):
        open_folders(folders, part="test")


def test_test_split_falls_back_to_the_node_cache_when_root_is_not_writable(folders, cache):
    (folders / ".medtune").write_text("a file where the split folder would go")
    test = open_folders(folders, part="test")
    saved = list((cache / "splits").glob("*-frac0.15.json"))
    assert len(saved) == 1 and json.loads(saved[0].read_text())["test"] == test.files
    assert open_folders(folders, part="test").files == test.files


@pytest.mark.parametrize("kwargs, message", [
    ({"test_fraction": 0}, r"test_fraction \(data/test_fraction\) must be between 0 and 1 \(exclusive\), got 0"),
    ({"test_fraction": 1.0}, r"got 1.0"),
    ({"test_fraction": "0.2"}, r"got '0.2'"),
    ({"part": "train"}, r"part must be one of search, test, got 'train'"),
    ({"test_annotations": "test.txt"}, r"test_annotations='test.txt' applies to the annotation_list layout only"),
])
def test_bad_test_arguments(folders, kwargs, message):
    with pytest.raises(DataError, match=message):
        open_folders(folders, **kwargs)


def test_missing_test_annotation_list(medfmc):
    with pytest.raises(DataError, match=r"Test list \(data/test_annotations\) 'nope.txt' is not a file"):
        open_dataset(str(medfmc), 16, masks=False, layout="annotation_list", annotations="endo_trainval.txt",
                     test_annotations="nope.txt")


def test_empty_test_split_fails_only_the_test_part(tmp_path):
    for cls in ("yes", "no"):
        for k in range(3):  # round(0.15 * 3) = 0 per class
            save(tmp_path / "d" / cls / f"{k}.png")
    assert len(open_folders(tmp_path / "d").files) == 6
    with pytest.raises(DataError, match=r"held-out test split of '.*d' is empty: data/test_fraction=0.15 .*larger"):
        open_folders(tmp_path / "d", part="test")


def test_the_test_part_is_never_split(folders):
    with pytest.raises(DataError, match=r"never split into train and val"):
        train_val_split(open_folders(folders, part="test"))
