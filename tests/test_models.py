"""Model factories and frozen-layer counting on tiny timm and smp models with random weights."""
import pytest
import torch

from trainables.models import (create_classifier, create_segmenter, freeze_classifier, freeze_encoder,
                               layer_groups, load_encoder_weights)
from trainables.registry import TRAINABLES

CLS = {**TRAINABLES["classification"].defaults, "model/backbone": "test_resnet"}
SEG = {**TRAINABLES["multitask"].defaults, "model/encoder": "tu-test_resnet"}


def frozen_names(model):
    return {n for n, p in model.named_parameters() if not p.requires_grad}


@pytest.mark.parametrize("n", [0, 1, 3])
def test_classifier_freezes_first_n_timm_groups(n):
    model = create_classifier({**CLS, "model/frozen_layers": n}, num_classes=4)
    groups = layer_groups(model)
    assert [len(g) for g in groups][:1] == [9]  # test_resnet's stem: conv1 (3 convs + 2 norms)
    freeze_classifier(model, {**CLS, "model/frozen_layers": n})
    assert frozen_names(model) == {name for g in groups[:n] for name in g}
    assert not any(name.startswith("fc.") for name in frozen_names(model))  # the head always trains


def test_vit_groups_follow_timm_group_matcher():
    model = create_classifier({**CLS, "model/backbone": "test_vit"}, num_classes=4)
    groups = layer_groups(model)
    assert "cls_token" in groups[0] and "patch_embed.proj.weight" in groups[0]
    assert all(name.startswith("blocks.0.") for name in groups[1])


@pytest.mark.parametrize("encoder, stem", [("tu-test_resnet", "encoder.model.conv1.0.weight"),
                                           ("resnet18", "encoder.conv1.weight")])
def test_encoder_freezing_counts_stem_then_stages(encoder, stem):
    cfg = {**SEG, "model/encoder": encoder, "model/frozen_layers": 2}
    model = create_segmenter(cfg, num_classes=4)
    freeze_encoder(model, cfg)
    frozen = frozen_names(model)
    assert stem in frozen
    assert any(".layer1." in n for n in frozen) and not any(".layer2." in n for n in frozen)
    assert all(n.startswith("encoder.") for n in frozen)  # decoder and heads train
    mask, logits = model(torch.randn(2, 1, 64, 64))
    assert mask.shape == (2, 1, 64, 64) and logits.shape == (2, 4)


def test_too_many_frozen_layers_names_the_range():
    cfg = {**CLS, "model/frozen_layers": 9}
    model = create_classifier(cfg, num_classes=4)
    with pytest.raises(ValueError, match=r"frozen_layers=9 .* 0 to 5"):
        freeze_classifier(model, cfg)


@pytest.mark.parametrize("key, value, needle", [
    ("model/backbone", "resnet_nope", "Unknown timm model 'resnet_nope'"),
    ("model/pretrained", "/nowhere/weights.pth", "'/nowhere/weights.pth' does not exist"),
])
def test_bad_classifier_names_and_missing_weights(key, value, needle):
    with pytest.raises((ValueError, FileNotFoundError), match=needle.replace("(", r"\(")):
        create_classifier({**CLS, key: value}, num_classes=4)


def test_bad_segmentation_names():
    with pytest.raises(ValueError, match="architecture 'unet3'.*unetplusplus"):
        create_segmenter({**SEG, "model/arch": "unet3"})
    with pytest.raises(ValueError, match="encoder 'resnet35'.*resnet34"):
        create_segmenter({**SEG, "model/encoder": "resnet35"})


def test_local_weights_load_into_classifier_and_encoder(tmp_path):
    import timm

    source = timm.create_model("test_resnet", num_classes=10)
    path = tmp_path / "test_resnet.pth"
    torch.save(source.state_dict(), path)
    model = create_classifier({**CLS, "model/pretrained": str(path), "data/channels": 3}, num_classes=4)
    assert torch.equal(model.layer1[0].conv1.weight, source.layer1[0].conv1.weight)
    seg = create_segmenter({**SEG, "data/channels": 3})
    load_encoder_weights(seg.encoder, "tu-test_resnet", str(path))
    assert torch.equal(seg.encoder.model.layer1[0].conv1.weight, source.layer1[0].conv1.weight)
    torch.save({"unrelated.weight": torch.zeros(1)}, tmp_path / "bad.pth")
    with pytest.raises(ValueError, match="does not fit encoder 'tu-test_resnet'"):
        load_encoder_weights(seg.encoder, "tu-test_resnet", str(tmp_path / "bad.pth"))
