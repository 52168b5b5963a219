"""The triplet trainable (studies D.2-D.4): triplet mining, phase bookkeeping and the parameters each phase
trains. Its three phases on a real local Ray cluster, resumed after a worker is killed in the embedding
phase, are in the trainable contract (tests/test_trainables.py)."""
import pytest
import timm
import torch
from torch import nn

from test_trainables import tiny_config
from trainables.augment import strong_augmentation
from trainables.loop import phase_at
from trainables.mining import MINING, mine, triplet_loss
from trainables.models import train_mode
from trainables.registry import value_problem
from trainables.triplet import EmbeddingNet, check_unfrozen, feature_groups, phase_epochs, phases, set_phase, train

CONFIG = tiny_config("triplet")


def embedder(size: int) -> nn.Module:
    torch.manual_seed(0)
    linear = nn.Sequential(nn.Flatten(), nn.Linear(3 * size * size, 8))
    return lambda images: nn.functional.normalize(linear(images), dim=1)


@pytest.mark.parametrize("strategy", MINING)
def test_mining_gives_valid_triplets_and_loss(strategy):
    images, labels = torch.randn(9, 3, 16, 16), torch.tensor([0, 0, 0, 1, 1, 1, 2, 2, 2])
    embed, augment = embedder(16), strong_augmentation(16, [0.5] * 3, [0.25] * 3)
    torch.manual_seed(1)
    embeddings, mined_labels, (a, p, n) = mine(strategy, embed, images, labels, augment)

    assert len(a) == len(images)  # every image is an anchor: each has a positive and a negative
    assert (mined_labels[a] == mined_labels[p]).all() and (mined_labels[a] != mined_labels[n]).all()
    assert (a != p).all()
    if strategy == "augmented":
        assert (p == a + len(images)).all() and (n < len(images)).all()
        torch.manual_seed(1)  # the same draws: the positive is the embedding of the augmented anchor
        # (a batch of 18 and one of 9 round differently, by ~3e-7 on some CPUs)
        assert torch.allclose(embeddings[len(images):], embed(augment(images)), atol=1e-6)
        assert not torch.allclose(embeddings[len(images):], embeddings[:len(images)])
    if strategy == "batch_hard":  # the farthest positive and the nearest negative of each anchor
        dist = torch.cdist(embeddings, embeddings)
        same = labels[:, None] == labels[None, :]
        assert torch.allclose(dist[a, p], dist.masked_fill(~same, -1).max(1).values[a], atol=1e-5)
        assert torch.allclose(dist[a, n], dist.masked_fill(same, 9).min(1).values[a], atol=1e-5)

    loss = triplet_loss(0.5)(embeddings, mined_labels, (a, p, n))
    expected = nn.functional.triplet_margin_loss(embeddings[a], embeddings[p], embeddings[n], margin=0.5)
    assert loss.item() == pytest.approx(expected.item(), abs=1e-4) and loss.item() > 0
    loss.backward()


@pytest.mark.parametrize("supervised, embedding, total", [(2, 1, 3), (1, 3, 3), (-1, 1, 3), (0, 0, 0)])
def test_impossible_phase_lengths_are_clear_errors(supervised, embedding, total):
    config = {**CONFIG, "triplet/supervised_epochs": supervised, "triplet/embedding_epochs": embedding,
              "train/epochs": total}
    with pytest.raises(ValueError, match=rf"triplet/supervised_epochs={supervised} and "
                                         rf"triplet/embedding_epochs={embedding} do not fit train/epochs={total}"):
        train(config)


def test_unknown_mining_is_a_clear_error():
    with pytest.raises(ValueError, match=r"triplet/mining='hardest' is not known; accepted: random, augmented, batch_hard"):
        train({**CONFIG, "triplet/mining": "hardest"})


@pytest.mark.parametrize("key", ["triplet/knn_k", "triplet/embedding_dim"])
def test_knn_k_and_embedding_size_are_at_least_one(key):
    assert value_problem(key, 0) == f"{key}=0 is out of range; accepted values lie in [1, inf]."


def test_phases_follow_the_epoch_counts():
    cfg = {**CONFIG, "triplet/supervised_epochs": 2, "triplet/embedding_epochs": 0, "train/epochs": 4}
    assert phase_epochs(cfg) == (2, 0, 2)
    assert [phase_at(phases(cfg), e)[0].number for e in range(1, 5)] == [1, 1, 3, 3]
    assert [phase_at(phases(cfg), e)[1] for e in range(1, 5)] == [0, 1, 0, 1]  # the epoch within its phase
    assert [p.lr for p in phases(cfg)] == [cfg["optim/lr"], cfg["triplet/embedding_lr"], cfg["triplet/classifier_lr"]]


def test_each_phase_trains_its_own_parameters():
    cfg = {**CONFIG, "model/pretrained": "", "model/drop_rate": 0.0}
    model = EmbeddingNet(timm.create_model("test_resnet", num_classes=2), 16, 2)
    groups = feature_groups(model.backbone)
    assert [g[0].split(".")[0] for g in groups] == ["conv1", "layer1", "layer2", "layer3", "layer4"]

    def trained(phase):
        set_phase(model, phase, cfg)
        return {name.split(".")[0] + "." + name.split(".")[1] for name, p in model.named_parameters() if p.requires_grad}

    assert "backbone.conv1" not in trained(1) and {"backbone.fc", "backbone.layer4"} <= trained(1)
    assert "projection.0" not in trained(1) and "classifier.weight" not in trained(1)
    assert trained(2) == {"backbone.layer1", "backbone.layer2", "backbone.layer3", "backbone.layer4",
                          "projection.0", "projection.2", "projection.4"}  # the stem frozen, the head unused
    assert trained(3) == {"backbone.layer4", "projection.0", "projection.2", "projection.4",
                          "classifier.weight", "classifier.bias"}
    set_phase(model, 3, {**cfg, "triplet/unfrozen_layers": 0})
    assert {n for n, p in model.named_parameters() if p.requires_grad} == {"classifier.weight", "classifier.bias"}
    with pytest.raises(ValueError, match=r"triplet/unfrozen_layers=6 is out of range for test_resnet: .* 0 to 5"):
        check_unfrozen(model, {**cfg, "triplet/unfrozen_layers": 6})
    embedding = {k: v.clone() for k, v in model.backbone.state_dict().items()}
    train_mode(model)(torch.randn(4, 3, 32, 32))  # phase 3, classifier only: frozen batch norms keep their statistics
    assert all(torch.equal(v, model.backbone.state_dict()[k]) for k, v in embedding.items())
