"""Training augmentation in both places (aug/where): the loader's per-image transforms and the batch's on the
device, from the one rule augmentation_steps; the data path of each, on the generated data set's real files."""
import sys

import pytest
import torch

from test_trainables import tiny_config
from trainables.augment import augmentation_steps, build_transforms, device_augmentation, strong_augmentation
from trainables.registry import value_problem
from trainables.trial_data import prepare_data, trial_loader

MULTITASK = {**tiny_config("multitask"), "aug/where": "loader"}
NONE = {"aug/crop_scale": 1.0, "aug/hflip": 0.0, "aug/vflip": 0.0, "aug/rotation": 0.0, "aug/brightness": 0.0,
        "aug/contrast": 0.0}
MEAN, STD = [0.4], [0.2]


def first_batch(cfg: dict):
    data = prepare_data(cfg, masks=True)
    batch, _ = next(iter(trial_loader(data, cfg, torch.device("cpu")).epoch(1)))
    return data, batch


def test_the_steps_a_config_asks_for_in_the_order_they_run():
    cfg = {**NONE, "aug/rotation": 10.0, "aug/crop_scale": 0.5, "aug/contrast": 0.2, "aug/vflip": 0.7}
    assert augmentation_steps(cfg) == [("crop", 0.5), ("vflip", 0.7), ("rotation", 10.0), ("jitter", (0.0, 0.2))]
    assert augmentation_steps(NONE) == []
    assert [type(t).__name__ for t in build_transforms({**MULTITASK, **cfg}, MEAN, STD, True).transforms] == [
        "RandomResizedCrop", "RandomVerticalFlip", "RandomRotation", "ColorJitter", "ToDtype", "Normalize"]
    assert [type(t).__name__ for t in build_transforms({**MULTITASK, **cfg}, MEAN, STD, False).transforms] == [
        "ToDtype", "Normalize"]  # validation: never augmented


def test_where_takes_loader_or_device():
    assert value_problem("aug/where", "loader") is None and value_problem("aug/where", "device") is None
    assert value_problem("aug/where", "gpu") == ("aug/where='gpu' is not accepted; choose one of: 'loader', "
                                                 "'device'.")


def test_on_the_device_the_loader_hands_over_the_images_as_they_are():
    cfg = {**MULTITASK, **NONE, "aug/hflip": 0.5, "aug/where": "device"}
    data, (images, masks, labels) = first_batch(cfg)
    assert images.dtype == torch.uint8 and masks.dtype == torch.float32  # a quarter of the bytes to move
    plain, (float_images, float_masks, float_labels) = first_batch({**cfg, **NONE, "aug/where": "loader"})
    assert data.augment is not None and plain.augment is None
    assert torch.equal(float_labels, labels) and torch.equal(float_masks, masks)
    augmented = device_augmentation({**cfg, **NONE}, data.mean, data.std)((images, masks, labels))
    assert torch.allclose(augmented[0], float_images, atol=1e-6)  # no steps: the loader's normalised images
    assert torch.equal(augmented[1], masks) and torch.equal(augmented[2], labels)


@pytest.mark.parametrize("step, dims", [("aug/hflip", [3]), ("aug/vflip", [2])])
def test_a_certain_flip_flips_image_and_mask_in_both_places(step, dims):
    cfg = {**MULTITASK, **NONE, step: 1.0}
    _, (plain, plain_masks, _) = first_batch({**cfg, step: 0.0})
    _, (flipped, flipped_masks, _) = first_batch(cfg)
    data, batch = first_batch({**cfg, "aug/where": "device"})
    on_device, device_masks, _ = data.augment(batch)
    for images, masks in ((flipped, flipped_masks), (on_device, device_masks)):
        assert torch.allclose(images, plain.flip(dims), atol=1e-6) and torch.equal(masks, plain_masks.flip(dims))


def test_on_the_device_each_image_draws_its_own_steps_and_its_mask_follows():
    cfg = {**MULTITASK, **NONE, "aug/crop_scale": 0.5, "aug/rotation": 30.0, "aug/hflip": 0.5, "aug/where": "device"}
    augment = device_augmentation(cfg, [0.0], [1.0])
    mask = torch.zeros(1, 1, 32, 32)
    mask[..., 4:20, 6:26] = 1.0
    images = (mask * 255).to(torch.uint8).repeat(8, 1, 1, 1)  # eight copies of one image that is its mask
    labels = torch.arange(8)
    torch.manual_seed(0)
    out, masks, out_labels = augment((images, mask.repeat(8, 1, 1, 1), labels))
    assert torch.equal(out_labels, labels)
    assert len({tuple(m.flatten().tolist()) for m in masks}) == 8  # a crop and angle per image, not per batch
    assert set(masks.unique().tolist()) <= {0.0, 1.0}  # masks resampled nearest: still binary
    agree = ((out > 0.5) == (masks > 0.5)).float().mean(dim=(1, 2, 3))
    assert (agree > 0.95).all()  # the mask moved with its image (they differ only along the edges)
    torch.manual_seed(0)
    assert torch.equal(augment((images, mask.repeat(8, 1, 1, 1), labels))[0], out)  # seeded: the same draws


def test_colour_jitter_on_the_device_scales_each_image_by_its_own_brightness():
    cfg = {**MULTITASK, **NONE, "aug/brightness": 0.5, "aug/where": "device"}
    images = torch.full((16, 1, 8, 8), 100, dtype=torch.uint8)
    torch.manual_seed(0)
    out, labels = device_augmentation(cfg, [0.0], [1.0])((images, torch.zeros(16)))
    factors = out[:, 0, 0, 0] / (100 / 255)
    assert torch.allclose(out, factors.view(-1, 1, 1, 1) * (100 / 255), atol=1e-6)  # uniform within an image
    assert factors.min() >= 0.5 - 1e-6 and factors.max() <= 1.5 + 1e-6 and len(factors.unique()) == 16


def test_strong_augmentation_draws_per_image_and_keeps_normalisation():
    images = torch.linspace(-1, 1, 3 * 16 * 16).view(1, 3, 16, 16).repeat(4, 1, 1, 1)
    torch.manual_seed(0)
    out = strong_augmentation(16, [0.5] * 3, [0.25] * 3)(images)
    assert out.shape == images.shape
    assert len({tuple(x.flatten()[:32].tolist()) for x in out}) == 4
    assert out.min() >= (0 - 0.5) / 0.25 - 1e-5 and out.max() <= (1 - 0.5) / 0.25 + 1e-5  # [0, 1], normalised


def test_the_benchmark_times_both_places(monkeypatch, capsys):
    monkeypatch.syspath_prepend("scripts")
    import bench_augment

    monkeypatch.setattr(sys, "argv", ["bench_augment.py", "--image-size", "32", "--batches", "2", "--rounds", "1",
                                      "--batch", "4"])
    bench_augment.main()
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("CPU: batch 4, 2 batches x 1 rounds")
    px, loader, device, ratio, busy_loader, busy_device = lines[2].replace(",", "").split()
    assert px == "32" and float(loader) > 0 and float(device) > 0
    assert float(ratio) == pytest.approx(float(device) / float(loader), abs=0.02)
    assert float(busy_loader) > 0 and float(busy_device) > 0  # figures, not goals: no timing is asserted
