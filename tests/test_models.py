"""Model factories, local weights, frozen layers and up-front checks, on tiny models with random weights:
timm 'test_*' models, smp 'tu-test_*' encoders, medtune_cnn, and tiny DINOv2 / BEiT checkpoints saved here."""
import re
import shutil

import huggingface_hub
import pytest
import safetensors.torch
import timm
import torch
from torch import nn

from trainables.models import (check_model_config, count_groups, create_classifier, create_segmenter,
                               freeze_classifier, freeze_encoder, layer_groups, load_encoder_weights)
from trainables.registry import TRAINABLES

CLS = {**TRAINABLES["classification"].defaults, "model/backbone": "test_resnet"}
SEG = {**TRAINABLES["multitask"].defaults, "model/encoder": "tu-test_resnet"}
REVISION = "0123456789abcdef0123456789abcdef01234567"


def frozen_names(model):
    return {n for n, p in model.named_parameters() if not p.requires_grad}


def raises(exc, *needles):
    """pytest.raises whose message must contain every needle verbatim."""
    return pytest.raises(exc, match="(?s)" + "".join(f"(?=.*{re.escape(n)})" for n in needles))


# --- timm backbones and smp encoders --------------------------------------------------------------

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


def test_study_a2_first_8_of_12_vit_blocks_is_frozen_layers_9():
    """DINOv2 ViT-B/14 built on the meta device: stem + 12 blocks are freezable; 9 = stem + blocks 0-7."""
    cfg = {**CLS, "model/backbone": "vit_base_patch14_dinov2", "model/frozen_layers": 9}
    assert count_groups(cfg) == 13
    with torch.device("meta"):
        model = timm.create_model("vit_base_patch14_dinov2", num_classes=4)
    freeze_classifier(model, cfg)
    frozen = frozen_names(model)
    assert "patch_embed.proj.weight" in frozen and "blocks.7.mlp.fc2.weight" in frozen
    assert not any(n.startswith(("blocks.8.", "head.")) for n in frozen)


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
    assert count_groups(cfg) == 5


def test_too_many_frozen_layers_names_the_range():
    cfg = {**CLS, "model/frozen_layers": 9}
    model = create_classifier(cfg, num_classes=4)
    with raises(ValueError, "frozen_layers=9", "0 to 5"):
        freeze_classifier(model, cfg)


def test_bad_segmentation_names():
    with raises(ValueError, "architecture 'unet3'", "unetplusplus"):
        create_segmenter({**SEG, "model/arch": "unet3"})
    with raises(ValueError, "encoder 'resnet35'", "resnet34"):
        create_segmenter({**SEG, "model/encoder": "resnet35"})


# --- medtune_cnn (study C.1) ----------------------------------------------------------------------

def test_medtune_cnn_is_a_timm_model_of_the_study_shape():
    model = timm.create_model("medtune_cnn", num_classes=3, in_chans=1)
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert [(c.kernel_size, c.stride) for c in convs] == [((5, 5), (2, 2))] * 3
    assert sum(isinstance(m, nn.BatchNorm2d) for m in model.modules()) == 3
    assert sum(isinstance(m, nn.MaxPool2d) for m in model.modules()) == 3
    assert [m.out_features for m in model.modules() if isinstance(m, nn.Linear)] == [256, 64, 3]
    for size in (32, 72):  # global pooling before the fully connected layers: any size works
        assert model(torch.randn(2, 1, size, size)).shape == (2, 3)
    features = model.forward_features(torch.randn(2, 1, 64, 64))
    assert features.shape == (2, 128, 1, 1)
    assert model.forward_head(features, pre_logits=True).shape == (2, 64)
    assert model.get_classifier() is model.fc and model.pretrained_cfg["first_conv"] == "stem.conv"
    model.reset_classifier(5)
    assert model(torch.randn(2, 1, 32, 32)).shape == (2, 5)
    model.reset_classifier(0)
    assert model(torch.randn(2, 1, 32, 32)).shape == (2, 64)


def test_medtune_cnn_groups_and_freezing():
    cfg = {**CLS, "model/backbone": "medtune_cnn", "model/frozen_layers": 2}
    model = create_classifier(cfg, num_classes=3)
    groups = layer_groups(model)
    assert [{n.split(".")[0] + ("." + n.split(".")[1] if n.startswith("blocks") else "") for n in g}
            for g in groups] == [{"stem"}, {"blocks.0"}, {"blocks.1"}, {"pre_logits", "fc"}]
    assert count_groups(cfg) == 3
    freeze_classifier(model, cfg)
    assert frozen_names(model) == set(groups[0] + groups[1])
    nn.functional.cross_entropy(model(torch.randn(4, 1, 32, 32)), torch.tensor([0, 1, 2, 0])).backward()
    assert all((p.grad is None) == (not p.requires_grad) for p in model.parameters())


def test_medtune_cnn_loads_a_checkpoint_of_an_earlier_run(tmp_path):
    source = timm.create_model("medtune_cnn", num_classes=3, in_chans=1)
    torch.save({"model": source.state_dict(), "optimizer": {}}, tmp_path / "trial.pt")  # a trial checkpoint
    cfg = {**CLS, "model/backbone": "medtune_cnn", "model/pretrained": str(tmp_path / "trial.pt")}
    same = create_classifier(cfg, num_classes=3)
    assert torch.equal(same.fc.weight, source.fc.weight)  # same head size: the head is kept
    other = create_classifier(cfg, num_classes=2)
    assert torch.equal(other.blocks[1].conv.weight, source.blocks[1].conv.weight)
    assert other.fc.out_features == 2


# --- local weights: files, timm directories, the local Hugging Face cache -------------------------

@pytest.fixture(scope="module")
def resnet_source():
    return timm.create_model("test_resnet", num_classes=10)


@pytest.fixture(scope="module")
def resnet_dir(tmp_path_factory, resnet_source):
    """A timm save_pretrained-style directory: model.safetensors + config.json."""
    path = tmp_path_factory.mktemp("timm_dir")
    timm.models.save_for_hf(resnet_source, str(path), safe_serialization=True)
    return path


@pytest.fixture
def hub_cache(tmp_path, monkeypatch, resnet_source):
    """A local Hugging Face cache holding timm/test_resnet.r160_in1k, laid out as the hub client writes it."""
    cache = tmp_path / "hub"
    repo = cache / "models--timm--test_resnet.r160_in1k"
    timm.models.save_for_hf(resnet_source, str(repo / "snapshots" / REVISION), safe_serialization=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(REVISION)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    return cache


def test_local_weights_load_into_classifier_and_encoder(tmp_path, resnet_source):
    path = tmp_path / "test_resnet.pth"
    torch.save(resnet_source.state_dict(), path)
    model = create_classifier({**CLS, "model/pretrained": str(path), "data/channels": 3}, num_classes=4)
    assert torch.equal(model.layer1[0].conv1.weight, resnet_source.layer1[0].conv1.weight)
    assert model.fc.out_features == 4
    seg = create_segmenter({**SEG, "data/channels": 3})
    load_encoder_weights(seg.encoder, "tu-test_resnet", str(path))
    assert torch.equal(seg.encoder.model.layer1[0].conv1.weight, resnet_source.layer1[0].conv1.weight)
    torch.save({"unrelated.weight": torch.zeros(1)}, tmp_path / "bad.pth")
    with raises(ValueError, "bad.pth", "do not fit encoder 'tu-test_resnet'"):
        load_encoder_weights(seg.encoder, "tu-test_resnet", str(tmp_path / "bad.pth"))


def test_rgb_weights_are_adapted_to_grayscale(tmp_path, resnet_source):
    path = tmp_path / "test_resnet.safetensors"
    safetensors.torch.save_file(resnet_source.state_dict(), str(path))
    gray = resnet_source.conv1[0].weight.sum(dim=1, keepdim=True)
    model = create_classifier({**CLS, "model/pretrained": str(path), "data/channels": 1}, num_classes=4)
    assert torch.allclose(model.conv1[0].weight, gray)
    seg = create_segmenter({**SEG, "model/pretrained": str(path), "data/channels": 1})
    assert torch.allclose(seg.encoder.model.conv1[0].weight, gray)


def test_fixed_size_models_are_built_for_the_image_size_and_weights_resampled(tmp_path):
    source = timm.create_model("test_vit", num_classes=10)  # position embeddings for 160 px
    path = tmp_path / "test_vit.pth"
    torch.save(source.state_dict(), path)
    cfg = {**CLS, "model/backbone": "test_vit", "model/pretrained": str(path), "data/channels": 3,
           "data/image_size": 48}
    model = create_classifier(cfg, num_classes=4)
    assert model.patch_embed.img_size == (48, 48) and model.pos_embed.shape[1] < source.pos_embed.shape[1]
    assert torch.equal(model.blocks[0].attn.qkv.weight, source.blocks[0].attn.qkv.weight)
    assert model(torch.randn(2, 3, 48, 48)).shape == (2, 4)


def test_weights_of_another_model_are_an_error_not_a_silent_random_init(tmp_path, resnet_source):
    path = tmp_path / "test_resnet.pth"
    torch.save(resnet_source.state_dict(), path)
    with raises(ValueError, str(path), "does not fit timm model 'test_vit'"):
        create_classifier({**CLS, "model/backbone": "test_vit", "model/pretrained": str(path)}, num_classes=4)


def test_timm_checkpoint_directory(resnet_dir, resnet_source, tmp_path):
    model = create_classifier({**CLS, "model/pretrained": str(resnet_dir), "data/channels": 3}, num_classes=4)
    assert torch.equal(model.layer2[0].conv2.weight, resnet_source.layer2[0].conv2.weight)
    with raises(ValueError, "timm model 'test_resnet'", "model/backbone is 'test_vit'"):
        check_model_config({"model/backbone": "test_vit", "model/pretrained": str(resnet_dir)}, "classification")
    with raises(ValueError, "timm model 'test_resnet'", "model/encoder is 'tu-test_efficientnet'"):
        check_model_config({"model/encoder": "tu-test_efficientnet", "model/pretrained": str(resnet_dir)}, "multitask")
    seg = create_segmenter({**SEG, "model/pretrained": str(resnet_dir), "data/channels": 3})
    assert torch.equal(seg.encoder.model.layer2[0].conv2.weight, resnet_source.layer2[0].conv2.weight)
    (tmp_path / "empty").mkdir()
    with raises(FileNotFoundError, str(tmp_path / "empty"), "model.safetensors"):
        create_classifier({**CLS, "model/pretrained": str(tmp_path / "empty")}, num_classes=4)


def test_hf_hub_weights_come_from_the_local_cache(hub_cache, resnet_source):
    weights = "hf-hub:timm/test_resnet.r160_in1k"
    model = create_classifier({**CLS, "model/pretrained": weights, "data/channels": 3}, num_classes=4)
    assert torch.equal(model.layer3[0].conv1.weight, resnet_source.layer3[0].conv1.weight)
    seg = create_segmenter({**SEG, "model/pretrained": weights, "data/channels": 3})
    assert torch.equal(seg.encoder.model.layer3[0].conv1.weight, resnet_source.layer3[0].conv1.weight)
    check_model_config({"model/backbone": "test_resnet", "model/pretrained": weights}, "classification")
    with raises(FileNotFoundError, "'hf-hub:timm/test_nope'", "'timm/test_nope'", str(hub_cache), "hf download"):
        check_model_config({"model/pretrained": "hf-hub:timm/test_nope"}, "classification")
    with raises(FileNotFoundError, "hf-hub:timm/test_resnet.r160_in1k@v2", "'v2'"):
        create_segmenter({**SEG, "model/pretrained": "hf-hub:timm/test_resnet.r160_in1k@v2"})


# --- Hugging Face transformers checkpoints ("hf:<dir>") --------------------------------------------

def _tiny_config(kind: str):
    from transformers import BeitConfig, Dinov2Config

    shape = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                 image_size=32, patch_size=8)
    if kind == "dinov2":
        return Dinov2Config(**shape)
    return BeitConfig(**shape, use_shared_relative_position_bias=True)  # as BEiT(v2) pre-training checkpoints


@pytest.fixture(scope="module", params=["dinov2", "beit"])
def hf_checkpoint(request, tmp_path_factory):
    """(directory, source model) of a tiny DINOv2 or BEiT saved with save_pretrained."""
    from transformers import AutoModel

    torch.manual_seed(0)
    source = AutoModel.from_config(_tiny_config(request.param))
    path = tmp_path_factory.mktemp(request.param)
    source.save_pretrained(path)
    return path, source.eval()


@pytest.mark.parametrize("channels", [1, 3])
def test_hf_backbone_loads_weights_and_runs_any_size(hf_checkpoint, channels):
    path, source = hf_checkpoint
    model = create_classifier({**CLS, "model/backbone": f"hf:{path}", "data/channels": channels}, num_classes=4)
    for name, tensor in source.state_dict().items():
        assert torch.equal(model.backbone.state_dict()[name], tensor), name
    model.eval()
    for size in (32, 48):  # 48: position embeddings / relative position bias interpolated
        assert model(torch.randn(2, channels, size, size)).shape == (2, 4)
    gray = torch.rand(1, 1, 32, 32)
    if channels == 1:  # grayscale is the same image repeated over the checkpoint's 3 channels
        assert torch.allclose(model(gray), model.head(source(pixel_values=gray.expand(-1, 3, -1, -1),
                                                            **model.forward_kwargs).pooler_output), atol=1e-5)
    assert model.head_hidden_size == 32 and model.get_classifier() is model.head


def test_hf_backbone_freezes_embeddings_then_layers_in_order(hf_checkpoint):
    path, _ = hf_checkpoint
    cfg = {**CLS, "model/backbone": f"hf:{path}", "data/channels": 1, "model/frozen_layers": 2}
    model = create_classifier(cfg, num_classes=3)
    groups = layer_groups(model)
    assert len(groups) == 4 and count_groups(cfg) == 3
    assert "backbone.embeddings.cls_token" in groups[0]
    assert all(n.startswith(model.blocks_prefix + "0.") for n in groups[1])
    assert all(n.startswith(model.blocks_prefix + "1.") for n in groups[2])
    assert "head.weight" in groups[3] and not any(n.startswith(model.blocks_prefix) for n in groups[3])
    if "shared_position_bias" in str(groups):  # BEiT's shared relative position bias goes with the stem
        assert "backbone.shared_position_bias.relative_position_bias_table" in groups[0]
    freeze_classifier(model, cfg)
    assert frozen_names(model) == set(groups[0] + groups[1])
    nn.functional.cross_entropy(model(torch.randn(2, 1, 32, 32)), torch.tensor([0, 2])).backward()
    assert all(p.grad is None for n, p in model.named_parameters() if n in groups[1])
    assert all(p.grad is not None for n, p in model.named_parameters() if n in groups[2])
    with raises(ValueError, "frozen_layers=4", "0 to 3"):
        check_model_config({**cfg, "model/frozen_layers": 4}, "classification")


def test_hf_checkpoint_missing_a_layer_tensor_is_an_error(hf_checkpoint, tmp_path):
    path, _ = hf_checkpoint
    broken = tmp_path / "broken"
    shutil.copytree(path, broken)
    state = safetensors.torch.load_file(broken / "model.safetensors")
    dropped = next(k for k in state if ".1." in k and k.endswith("weight"))  # a tensor of layer 1
    safetensors.torch.save_file({k: v for k, v in state.items() if k != dropped}, broken / "model.safetensors",
                                metadata={"format": "pt"})
    with raises(ValueError, f"'hf:{broken}'", "lack 1 tensors", "below the head"):
        create_classifier({**CLS, "model/backbone": f"hf:{broken}"}, num_classes=3)


def test_bad_hf_directories(tmp_path, resnet_dir):
    no_config, no_weights, text_model = tmp_path / "no_config", tmp_path / "no_weights", tmp_path / "bert"
    foreign = tmp_path / "foreign"
    for path in (no_config, no_weights, text_model, foreign):
        path.mkdir()
    (foreign / "config.json").write_text('{"arch": "unet"}')
    (foreign / "pytorch_model.bin").write_bytes(b"")
    (no_config / "model.safetensors").write_bytes(b"")
    (no_weights / "config.json").write_text('{"model_type": "dinov2"}')
    (text_model / "config.json").write_text('{"model_type": "bert"}')
    (text_model / "model.safetensors").write_bytes(b"")
    cases = [(tmp_path / "missing", FileNotFoundError, ["does not exist", "hf download facebook/dinov2-base"]),
             (no_config, FileNotFoundError, ["no config.json"]),
             (no_weights, FileNotFoundError, ["no weights", "model.safetensors"]),
             (resnet_dir, ValueError, ["timm checkpoint of 'test_resnet'", "model/backbone='test_resnet'"]),
             (foreign, ValueError, ["not a transformers model config", "model_type"]),
             (text_model, ValueError, ["'bert'", "not an image model"])]
    for path, exc, needles in cases:
        with raises(exc, f"'hf:{path}'", *needles):
            check_model_config({"model/backbone": f"hf:{path}"}, "classification")


# --- up-front checks (the driver calls check_model_config once per distinct model) ---------------

@pytest.mark.parametrize("trainable, cfg, exc, needles", [
    ("classification", {"model/backbone": "resnet_nope"}, ValueError,
     ["Unknown timm model 'resnet_nope' in model/backbone", "Did you mean"]),
    ("triplet", {"model/backbone": "test_resnet", "model/frozen_layers": 6}, ValueError,
     ["frozen_layers=6", "test_resnet", "0 to 5"]),
    ("classification", {"model/backbone": "test_resnet", "model/pretrained": "/nowhere/w.pth"}, FileNotFoundError,
     ["'/nowhere/w.pth' do not exist", "hf download"]),
    ("classification", {"model/backbone": "hf:/nowhere/dinov2", "model/pretrained": "/x.pth"}, ValueError,
     ["model/pretrained='/x.pth' must be empty"]),
    ("segmentation", {"model/arch": "unet3"}, ValueError, ["architecture 'unet3'", "unetplusplus"]),
    ("multitask", {"model/encoder": "resnet35"}, ValueError, ["encoder 'resnet35'", "resnet34"]),
    ("segmentation", {"model/encoder": "tu-test_nope"}, ValueError, ["'test_nope' in model/encoder"]),
    ("segmentation", {"model/arch": "dpt", "model/encoder": "resnet18"}, ValueError,
     ["model/arch='dpt' with model/encoder='resnet18'"]),
    ("segmentation", {"model/encoder": "tu-test_vit"}, ValueError,  # no feature pyramid for smp
     ["model/encoder='tu-test_vit' cannot be built"]),
    ("segmentation", {"model/encoder": "tu-test_resnet", "model/pretrained": "/nowhere/enc.safetensors"},
     FileNotFoundError, ["'/nowhere/enc.safetensors'"]),
    ("multitask", {"model/encoder": "tu-test_resnet", "model/frozen_layers": 6}, ValueError,
     ["frozen_layers=6", "tu-test_resnet", "0 to 5"]),
    ("segmentation", {"model/encoder": "tu-test_resnet", "gate/class": "normal", "gate/backbone": "resnet_nope"},
     ValueError, ["'resnet_nope' in gate/backbone"]),
])
def test_check_model_config_errors_name_the_value(trainable, cfg, exc, needles):
    with raises(exc, *needles):
        check_model_config(cfg, trainable)


@pytest.mark.parametrize("trainable, cfg", [
    ("classification", {"model/backbone": "medtune_cnn", "model/frozen_layers": 3}),
    ("classification", {"model/backbone": "vit_large_patch14_dinov2", "model/frozen_layers": 25}),
    ("segmentation", {"model/encoder": "tu-test_resnet", "gate/backbone": "resnet_nope"}),  # no gate/class: unused
    ("multitask", {"model/arch": "unetplusplus", "model/encoder": "resnet34", "model/frozen_layers": 5}),
    ("zeroshot", {}),
])
def test_check_model_config_accepts_valid_configs(trainable, cfg):
    check_model_config(cfg, trainable)
