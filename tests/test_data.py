"""Data package: synthetic generator, COVID-19 Radiography loader, node cache, splits."""

import functools
import json
import multiprocessing
import os
import shutil

import numpy as np
import pytest
from PIL import Image

from trainables.data import (
    DataError,
    ImageSet,
    cache_dir,
    data_fingerprint,
    ensure_synthetic,
    fraction_subset,
    generate_covid_radiography,
    open_dataset,
    synthetic_root,
    train_val_split,
)

CLASSES = ["COVID", "Lung_Opacity", "Normal", "Viral Pneumonia"]
SEARCH = 20  # the `root` fixture's 24 images less the held-out test split, round(0.15 * 6) = 1 per class


pytestmark = pytest.mark.usefixtures("cache")  # every test its own node cache (tests/conftest.py)


@pytest.fixture
def root(tmp_path):
    """A small generated set: 6 images per class, 40 px images, 32 px masks."""
    path = tmp_path / "data"
    generate_covid_radiography(str(path), per_class=6, image_size=40, mask_size=32, seed=0)
    return path


def fake_set(root, counts):
    """An ImageSet with `counts[c]` images of class c (tiny arrays; splits only look at files/labels)."""
    labels = np.repeat(np.arange(len(counts)), counts).astype(np.int64)
    files = [f"C{c}/images/{k}.png" for c, n in enumerate(counts) for k in range(n)]
    os.makedirs(root, exist_ok=True)
    return ImageSet(np.zeros((len(labels), 1, 1, 1), np.uint8), None, labels, [f"C{c}" for c in range(len(counts))],
                    files, "feedfacefeedface", str(root))


# --- generator ---------------------------------------------------------------------------------


def test_generator_writes_the_public_layout(root):
    for cls in CLASSES:
        for sub, size in (("images", 40), ("masks", 32)):
            names = sorted(os.listdir(root / cls / sub))
            assert names == sorted(f"{cls}-{n}.png" for n in range(1, 7))
            with Image.open(root / cls / sub / names[0]) as im:
                assert (im.mode, im.size) == ("L", (size, size))
        mask = np.asarray(Image.open(root / cls / "masks" / f"{cls}-1.png"))
        assert set(np.unique(mask)) == {0, 255}
        assert 0.1 < (mask > 0).mean() < 0.5  # two lungs, not the whole picture
    for extra in ("README.md.txt", "COVID.metadata.xlsx", "Viral Pneumonia.metadata.xlsx"):
        assert (root / extra).is_file()


def test_generator_is_deterministic_in_the_seed(tmp_path, root):
    generate_covid_radiography(str(tmp_path / "same"), per_class=6, image_size=40, mask_size=32, seed=0)
    generate_covid_radiography(str(tmp_path / "other"), per_class=6, image_size=40, mask_size=32, seed=1)
    rel = os.path.join("Viral Pneumonia", "images", "Viral Pneumonia-3.png")
    pixels = {name: np.asarray(Image.open(tmp_path / name / rel)) for name in ("data", "same", "other")}
    assert np.array_equal(pixels["data"], pixels["same"])
    assert not np.array_equal(pixels["data"], pixels["other"])


def test_generator_classes_differ_inside_the_lungs(root):
    """The class pattern brightens the lungs; Normal lungs stay darkest."""
    ds = open_dataset(str(root), 40)
    inside = [ds.images[i, ..., 0][ds.masks[i] == 1].mean() for i in range(len(ds.files))]
    lung_brightness = [np.mean([inside[i] for i in np.flatnonzero(ds.labels == c)]) for c in range(4)]
    assert np.argmin(lung_brightness) == CLASSES.index("Normal")


@pytest.mark.parametrize("kwargs", [{"per_class": 0}, {"image_size": 4}, {"mask_size": 2.5}])
def test_generator_rejects_bad_parameters(tmp_path, kwargs):
    with pytest.raises(DataError, match=f"{next(iter(kwargs))} must be an integer"):
        generate_covid_radiography(str(tmp_path / "x"), **kwargs)


# --- loader -------------------------------------------------------------------------------------


def test_open_dataset_shapes_labels_and_masks(root):
    ds = open_dataset(str(root), 24)
    assert ds.images.shape == (SEARCH, 24, 24, 1) and ds.images.dtype == np.uint8
    assert ds.masks.shape == (SEARCH, 24, 24) and ds.masks.dtype == np.uint8
    assert set(np.unique(ds.masks)) == {0, 1}
    assert ds.labels.dtype == np.int64 and list(ds.labels) == [c for c in range(4) for _ in range(5)]
    assert ds.classes == CLASSES
    assert ds.root == str(root) and ds.fingerprint == data_fingerprint(str(root))
    for f, label in zip(ds.files, ds.labels):
        assert f.startswith(os.path.join(CLASSES[label], "images", "")) and (root / f).is_file()
    # The 32 px mask was resized onto the 24 px grid, keeping the lung area.
    i = ds.files.index(os.path.join("Normal", "images", "Normal-1.png"))  # Normal-2 is held out as test
    source = np.asarray(Image.open(root / "Normal" / "masks" / "Normal-1.png")) > 127
    assert abs(ds.masks[i].mean() - source.mean()) < 0.03


def test_open_dataset_rgb_and_without_masks(root):
    ds = open_dataset(str(root), 16, channels=3, masks=False)
    assert ds.images.shape == (SEARCH, 16, 16, 3) and ds.masks is None
    assert np.array_equal(ds.images[..., 0], ds.images[..., 2])  # grayscale source


def test_masks_false_needs_no_masks(root):
    shutil.rmtree(root / "COVID" / "masks")
    assert len(open_dataset(str(root), 16, masks=False).files) == SEARCH


def test_files_beside_class_folders_are_ignored(root):
    before = data_fingerprint(str(root))
    (root / "notes").mkdir()
    Image.new("L", (8, 8)).save(root / "notes" / "stray.png")
    Image.new("L", (8, 8)).save(root / "stray.png")
    ds = open_dataset(str(root), 16)
    assert ds.classes == CLASSES and len(ds.files) == SEARCH
    assert data_fingerprint(str(root)) == before


def test_fingerprint_tracks_files_not_image_size(root):
    assert open_dataset(str(root), 16).fingerprint == open_dataset(str(root), 24).fingerprint
    before = data_fingerprint(str(root))
    with open(root / "Normal" / "images" / "Normal-1.png", "ab") as f:
        f.write(b"\0")  # one byte more: still a decodable PNG, different size
    assert data_fingerprint(str(root)) != before


def test_second_open_memory_maps_the_cache_without_decoding(root, cache, decodes):
    first = open_dataset(str(root), 24)
    assert len(decodes) == 2 * SEARCH  # the search part's images and masks, never a test image
    folder = cache / "decoded" / f"{first.fingerprint}-s24-c1-m"
    assert sorted(os.listdir(folder)) == ["images.npy", "labels.npy", "masks.npy", "meta.json"]
    decodes.clear()
    second = open_dataset(str(root), 24)
    assert decodes == []
    assert isinstance(second.images, np.memmap) and isinstance(second.masks, np.memmap)
    assert not second.images.flags.writeable
    assert np.array_equal(first.images, second.images) and second.files == first.files
    open_dataset(str(root), 24, masks=False)  # another key: decoded once more, images only
    assert len(decodes) == SEARCH


def test_open_none_means_the_embedded_synthetic_set(cache):
    assert cache_dir() == str(cache)
    ds = open_dataset(None, 32)
    assert ds.root == synthetic_root() == str(cache / "synthetic" / "covid_radiography-v2")
    assert ds.classes == CLASSES and ds.images.shape == (4 * (96 - 14), 32, 32, 1)  # 14 of 96 held out per class
    assert open_dataset("", 32).fingerprint == ds.fingerprint == data_fingerprint(None)


def test_cache_dir_defaults_to_home(monkeypatch, tmp_path):
    monkeypatch.delenv("MEDTUNE_CACHE")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert cache_dir() == str(tmp_path / ".cache" / "medtune")


def test_concurrent_ensure_synthetic_builds_one_complete_set(tmp_path):
    target = str(tmp_path / "shared" / "synthetic")
    with multiprocessing.get_context("spawn").Pool(4) as pool:
        assert pool.map(functools.partial(ensure_synthetic, "covid_radiography"), [target] * 4) == [target] * 4
    assert sorted(os.listdir(tmp_path / "shared")) == ["synthetic", "synthetic.lock"]  # no half-built leftovers
    assert all(len(os.listdir(os.path.join(target, c, "images"))) == 96 for c in CLASSES)


# --- loader errors --------------------------------------------------------------------------------


def test_missing_root(tmp_path):
    with pytest.raises(DataError, match="nowhere.*does not exist"):
        open_dataset(str(tmp_path / "nowhere"), 16)


def test_root_without_class_folders(tmp_path):
    (tmp_path / "flat").mkdir()
    Image.new("L", (8, 8)).save(tmp_path / "flat" / "a.png")
    with pytest.raises(DataError, match=r"flat.*has no class folders.*<Class>/images/"):
        data_fingerprint(str(tmp_path / "flat"))


def test_class_folder_without_images(root):
    (root / "Empty" / "images").mkdir(parents=True)
    (root / "Empty" / "images" / "notes.txt").write_text("not an image")
    with pytest.raises(DataError, match=r"Empty.*has no images"):
        open_dataset(str(root), 16)


def test_image_without_mask_names_both_paths(root):
    os.remove(root / "Lung_Opacity" / "masks" / "Lung_Opacity-4.png")
    with pytest.raises(DataError) as err:
        open_dataset(str(root), 16)
    assert str(root / "Lung_Opacity" / "images" / "Lung_Opacity-4.png") in str(err.value)
    assert str(root / "Lung_Opacity" / "masks" / "Lung_Opacity-4.png") in str(err.value)


@pytest.mark.parametrize("sub", ["images", "masks"])
def test_corrupt_file_is_named_and_leaves_no_cache(root, cache, sub):
    path = root / "Viral Pneumonia" / sub / "Viral Pneumonia-5.png"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError) as err:
        open_dataset(str(root), 16)
    assert str(path) in str(err.value)
    assert [d for d in os.listdir(cache / "decoded") if not d.endswith(".lock")] == []
    path.write_bytes(data)
    assert open_dataset(str(root), 16).images.shape[0] == SEARCH


@pytest.mark.parametrize(
    "kwargs, message", [({"image_size": 0}, "image_size"), ({"image_size": 16, "channels": 2}, "channels")]
)
def test_bad_open_parameters(root, kwargs, message):
    with pytest.raises(DataError, match=f"{message} must be .*got"):
        open_dataset(str(root), **kwargs)


# --- split ----------------------------------------------------------------------------------------

COUNTS = [30, 50, 100, 12]


def test_split_is_stratified_disjoint_and_covers_everything(tmp_path):
    ds = fake_set(tmp_path / "d", COUNTS)
    train, val = train_val_split(ds, 0.2, seed=0)
    assert np.array_equal(np.sort(np.concatenate([train, val])), np.arange(sum(COUNTS)))
    assert np.all(np.diff(train) > 0) and np.all(np.diff(val) > 0)
    for c, n in enumerate(COUNTS):
        assert abs((ds.labels[val] == c).sum() - 0.2 * n) <= 1


def test_split_is_deterministic_and_seeded(tmp_path):
    a, b = fake_set(tmp_path / "a", COUNTS), fake_set(tmp_path / "b", COUNTS)
    assert np.array_equal(train_val_split(a, 0.2, 3)[1], train_val_split(b, 0.2, 3)[1])
    assert not np.array_equal(train_val_split(a, 0.2, 3)[1], train_val_split(a, 0.2, 4)[1])


def test_split_is_saved_and_reused(tmp_path):
    ds = fake_set(tmp_path / "d", COUNTS)
    train, val = train_val_split(ds, 0.25, seed=1)
    path = tmp_path / "d" / ".medtune" / "split-val0.25-seed1.json"
    saved = json.loads(path.read_text())
    assert saved["val"] == [ds.files[i] for i in val] and saved["train"] == [ds.files[i] for i in train]
    # Swap one image between train and val in the file: the next call must follow the file.
    saved["train"][0], saved["val"][0] = saved["val"][0], saved["train"][0]
    path.write_text(json.dumps(saved))
    train2, val2 = train_val_split(ds, 0.25, seed=1)
    assert ds.files.index(saved["val"][0]) in val2 and ds.files.index(saved["val"][0]) not in val
    assert len(val2) == len(val) and len(train2) == len(train)


def test_split_file_naming_unknown_files_is_an_error(tmp_path):
    ds = fake_set(tmp_path / "d", COUNTS)
    train_val_split(ds)
    path = tmp_path / "d" / ".medtune" / "split-val0.2-seed0.json"
    saved = json.loads(path.read_text())
    saved["val"][0] = "C9/images/gone.png"
    path.write_text(json.dumps(saved))
    with pytest.raises(DataError, match=r"split-val0.2-seed0.json.*C9/images/gone.png"):
        train_val_split(ds)


def test_unreadable_split_file_is_an_error(tmp_path):
    ds = fake_set(tmp_path / "d", COUNTS)
    (tmp_path / "d" / ".medtune").mkdir()
    (tmp_path / "d" / ".medtune" / "split-val0.2-seed0.json").write_text('{"train": [')
    with pytest.raises(DataError, match=r"split-val0.2-seed0.json.*is not a split"):
        train_val_split(ds)


def test_split_file_missing_images_is_an_error(tmp_path):
    ds = fake_set(tmp_path / "d", COUNTS)
    train_val_split(ds)
    grown = fake_set(tmp_path / "d", [c + 1 for c in COUNTS[:-1]] + COUNTS[-1:])  # same root, more images
    with pytest.raises(DataError, match="exactly once"):
        train_val_split(grown)


def test_split_falls_back_to_the_cache_when_root_is_not_writable(tmp_path, cache):
    ds = fake_set(tmp_path / "d", COUNTS)
    (tmp_path / "d" / ".medtune").write_text("a file where the split folder would go")  # root unusable
    train, val = train_val_split(ds, 0.2, seed=0)
    path = cache / "splits" / "feedfacefeedface-val0.2-seed0.json"
    saved = json.loads(path.read_text())
    assert saved["val"] == [ds.files[i] for i in val]
    saved["train"], saved["val"] = saved["train"][1:], saved["val"] + saved["train"][:1]
    path.write_text(json.dumps(saved))
    assert len(train_val_split(ds, 0.2, seed=0)[1]) == len(val) + 1  # read back from the cache


@pytest.mark.parametrize("fraction", [0, 1, 1.5, "0.2"])
def test_split_rejects_bad_val_fraction(tmp_path, fraction):
    with pytest.raises(DataError, match=f"val_fraction .*got {fraction!r}"):
        train_val_split(fake_set(tmp_path / "d", COUNTS), fraction)


def test_split_too_small_to_stratify(tmp_path):
    with pytest.raises(DataError, match="stratified"):
        train_val_split(fake_set(tmp_path / "d", [5, 1]), 0.2)


def test_split_of_a_real_opened_set(root):
    ds = open_dataset(str(root), 16)
    train, val = train_val_split(ds, 0.4)
    assert np.bincount(ds.labels[val]).tolist() == [2, 2, 2, 2] and len(train) == 12
    assert (root / ".medtune" / "split-test0.15-val0.4-seed0.json").is_file()
    assert data_fingerprint(str(root)) == ds.fingerprint  # the split file is not data


# --- fraction subset -----------------------------------------------------------------------------


def test_fraction_subset_is_stratified_nested_and_inside_train(tmp_path):
    ds = fake_set(tmp_path / "d", COUNTS)
    train, val = train_val_split(ds)
    subsets = {f: fraction_subset(train, ds.labels, f, seed=2) for f in (0.25, 0.5, 0.75)}
    for f, subset in subsets.items():
        assert np.all(np.diff(subset) > 0) and set(subset) <= set(train)
        for c in range(len(COUNTS)):
            assert (ds.labels[subset] == c).sum() == max(1, round(f * (ds.labels[train] == c).sum()))
    assert set(subsets[0.25]) <= set(subsets[0.5]) <= set(subsets[0.75])
    assert not set(subsets[0.5]) & set(val)


def test_fraction_subset_is_seeded(tmp_path):
    ds = fake_set(tmp_path / "d", COUNTS)
    train, _ = train_val_split(ds)
    assert np.array_equal(fraction_subset(train, ds.labels, 0.5, 7), fraction_subset(train, ds.labels, 0.5, 7))
    assert not np.array_equal(fraction_subset(train, ds.labels, 0.5, 7), fraction_subset(train, ds.labels, 0.5, 8))


def test_fraction_subset_edges(tmp_path):
    ds = fake_set(tmp_path / "d", COUNTS)
    train, _ = train_val_split(ds)
    assert fraction_subset(train, ds.labels, 1.0) is train
    assert np.bincount(ds.labels[fraction_subset(train, ds.labels, 0.001)]).tolist() == [1, 1, 1, 1]


@pytest.mark.parametrize("fraction", [0, -0.5, 1.5, True])
def test_fraction_subset_rejects_bad_fraction(fraction):
    with pytest.raises(DataError, match=rf"fraction must be a number in \(0, 1\], got {fraction!r}"):
        fraction_subset(np.arange(4), np.zeros(4, np.int64), fraction)
