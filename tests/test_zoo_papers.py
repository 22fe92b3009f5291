"""The papers' models in the zoo (issue #21): akamaster's pretrained CIFAR-10 ResNets, RP2's LISA-CNN,
torchvision's MobileNetV2, and the two declared training recipes (no label smoothing; FC head on a 16x16 map).

Real data throughout: the lossless CIFAR-10 test set, RP2's victim photos, ImageNet validation images.
"""

from __future__ import annotations

import shutil
from dataclasses import asdict

import numpy as np
import pytest
import torch

from advguard import load_model
from advguard.data import load_dataset
from advguard.data.fetch import ChecksumError
from advguard.models import ZOO, architectures, get_spec
from advguard.models.evaluation import EXTERNAL_RECIPES
from advguard.models.registry import AKAMASTER_FILES, akamaster_weights, build_module, mobilenet_v2_weights

PRETRAINED = [f"cifar10-resnet{d}-pretrained" for d in (20, 32, 44, 56)]
NEW = PRETRAINED + ["lisa-cnn", "mobilenet-v2"]
DECLARED = ["cifar10-cnn-ls0", "cifar10-vgg16x16"]


# ------------------------------------------------------------------ akamaster's CIFAR-10 ResNets


def test_resnet20_pretrained_on_500_lossless_test_images():
    clf = load_model("cifar10-resnet20-pretrained", inference="float32")
    ds = load_dataset("cifar10", "test", limit=500, seed=0, source="lossless")
    assert ds.source == "cifar10-lossless"
    assert clf.accuracy(ds.x, ds.y) >= 0.89  # 91.73 % on all 10,000


@pytest.mark.parametrize("depth", [32, 44, 56])
def test_deeper_resnets_load_strictly_and_classify(depth):
    module = build_module(f"cifar10-resnet{depth}-pretrained")  # load_state_dict is strict: every key matches
    assert len(module.stage1) == (depth - 2) // 6
    assert not any(isinstance(m, torch.nn.Conv2d) and m.kernel_size == (1, 1) for m in module.modules())  # option A
    clf = load_model(f"cifar10-resnet{depth}-pretrained", inference="float32")
    ds = load_dataset("cifar10", "test", limit=100, seed=1, source="lossless")
    assert clf.accuracy(ds.x, ds.y) >= 0.86


def test_option_a_shortcut_pads_channels_with_zeros():
    sc = architectures.ZeroPadShortcut(16, 32, 2)
    x = torch.rand(2, 16, 8, 8)
    y = sc(x)
    assert y.shape == (2, 32, 4, 4)
    assert torch.equal(y[:, 8:24], x[:, :, ::2, ::2]) and not y[:, :8].any() and not y[:, 24:].any()
    # our own trained ResNet-20 keeps its 1x1 projections (option B)
    assert "stage2.0.shortcut.0.weight" in architectures.cifar10_resnet20().state_dict()


def test_akamaster_download_from_file_url(tmp_path):
    """The download path (used when the mirror is absent) with a file:// URL on the mirror's own file."""
    name, sha = AKAMASTER_FILES[20]
    mirror = akamaster_weights(20)
    repo = tmp_path / "repo"
    (repo / "pretrained_models").mkdir(parents=True)
    shutil.copyfile(mirror, repo / "pretrained_models" / name)
    shutil.copyfile(mirror.parent / "LICENSE", repo / "LICENSE")
    data = tmp_path / "data"
    got = akamaster_weights(20, base_url=repo.as_uri(), root=data)
    assert got == data / "akamaster-resnets" / name and got.read_bytes() == mirror.read_bytes()
    assert "Redistribution and use" in (got.parent / "LICENSE").read_text()  # BSD-2 notice kept with the weights
    # a corrupt download is refused and not kept
    (repo / "pretrained_models" / name).write_bytes(b"not the weights")
    got.unlink()
    with pytest.raises(ChecksumError, match=sha):
        akamaster_weights(20, base_url=repo.as_uri(), root=data)
    assert not got.exists()


# ------------------------------------------------------------------ RP2's LISA-CNN


def test_lisa_cnn_predicts_stop_on_all_lisa_victims():
    clf = load_model("lisa-cnn")
    ds = load_dataset("rp2-lisa-victims", "test")
    assert len(ds) == 40 and clf.num_classes == 18
    assert (np.asarray(clf.predict(ds.x)) == 14).all()


def test_lisa_cnn_on_gtsrb_victims_and_flatten_order():
    clf = load_model("lisa-cnn")
    ds = load_dataset("rp2-gtsrb-victims", "test", size=32)
    assert int((np.asarray(clf.predict(ds.x)) == 14).sum()) >= 39
    # PyTorch's (C, H, W) flatten order instead of TensorFlow's (H, W, C) loses most of them
    m = clf.model
    with torch.no_grad():
        maps = m.relu3(m.conv3(m.relu2(m.conv2(m.relu1(m.conv1(torch.as_tensor(ds.x)))))))
        wrong = m.fc(torch.flatten(maps, 1)).argmax(1)
    assert int((wrong == 14).sum()) < 39


# ------------------------------------------------------------------ MobileNetV2


def test_mobilenet_v2_loads_key_for_key_and_classifies_imagenet_val():
    state = torch.load(mobilenet_v2_weights(), map_location="cpu", weights_only=True)
    assert set(state) == set(architectures.MobileNetV2().state_dict())
    clf = load_model("mobilenet-v2")
    ds = load_dataset("imagenet-val", "test", limit=100, seed=0)
    assert 0.6 <= clf.accuracy(ds.x, ds.y) <= 0.9  # torchvision: 71.9 % top-1 on all 50,000
    assert clf.gradcam_layer == "features.13"
    assert clf.gradcam(ds.x[:1], ds.y[:1]).shape == (1, 14, 14)  # 14x14 at 224 px (TaintRadar, THEMIS)


# ------------------------------------------------------------------ declared recipes


def test_declared_recipes_are_untrained_and_differ_as_stated():
    from advguard.training import RECIPES

    for n in DECLARED:
        assert not get_spec(n).available or get_spec(n).card(), n  # no weights until `advguard train` has run
        assert n in RECIPES
    a, b = asdict(RECIPES["cifar10-cnn"]), asdict(RECIPES["cifar10-cnn-ls0"])
    assert a.pop("label_smoothing") == 0.1 and b.pop("label_smoothing") == 0.0 and a == b
    net = get_spec("cifar10-vgg16x16").build()
    assert not any(isinstance(m, (torch.nn.AdaptiveAvgPool2d, torch.nn.AvgPool2d)) for m in net.modules())
    maps = {}
    net.block6.register_forward_hook(lambda mod, i, o: maps.update(last=o.shape))
    net.eval()(torch.rand(1, 3, 32, 32))
    assert maps["last"][-2:] == (16, 16)


@pytest.mark.parametrize("name", DECLARED)
def test_declared_recipe_trains_one_step(name):
    """One optimisation step with the recipe's loss and augmentation on real training images."""
    import torch.nn.functional as F

    from advguard.training import RECIPES, augment

    spec, cfg = get_spec(name), RECIPES[name]
    torch.manual_seed(0)
    net = spec.build().train()
    ds = load_dataset("cifar10", "train", limit=32, dtype="uint8", **spec.dataset_kwargs)
    x = augment(torch.from_numpy(ds.x.copy()).float() / 255, cfg, torch.Generator().manual_seed(0))
    x = (x - torch.tensor(spec.mean).view(1, 3, 1, 1)) / torch.tensor(spec.std).view(1, 3, 1, 1)
    opt = torch.optim.SGD(net.parameters(), lr=cfg.lr, momentum=0.9)
    loss = F.cross_entropy(net(x), torch.from_numpy(ds.y), label_smoothing=cfg.label_smoothing)
    opt.zero_grad()
    loss.backward()
    opt.step()
    assert torch.isfinite(loss) and all(p.grad is not None for p in net.parameters())


# ------------------------------------------------------------------ cards and listing


@pytest.mark.parametrize("name", NEW)
def test_new_cards_have_figures_licence_and_recipe(name):
    card = get_spec(name).card()
    for key in (
        "test_accuracy",
        "check_subset",
        "data_source",
        "eval_split",
        "weights",
        "command",
        "machine",
        "commit",
        "recipe",
    ):
        assert key in card, f"{name} card lacks {key}"
    assert "label_smoothing" in card["recipe"] and card["recipe"] == EXTERNAL_RECIPES[name]
    assert any(lic in card["weights"] for lic in ("BSD-2", "MIT"))
    if name in PRETRAINED:
        assert card["data_source"] == "cifar10-lossless" and card["test_accuracy"] >= 0.91
    if name == "lisa-cnn":
        assert card["victims"]["rp2-lisa-victims"]["predicted_stop"] == 40 and card["classes"][14] == "stop"


def test_every_card_states_its_label_smoothing():
    for name, spec in ZOO.items():
        card = spec.card()
        if card:
            assert "label_smoothing" in card.get("recipe", {}), name


def test_own_cifar10_cards_give_lossless_and_jpeg_figures():
    for name in ("cifar10-cnn", "cifar10-resnet20"):
        card = get_spec(name).card()
        assert card["data_source"] == "cifar10-lossless"
        assert set(card["test_accuracies"]) == {"cifar10-lossless", "cifar10-jpeg"}


def test_models_command_lists_the_new_models(capsys):
    from advguard.cli import main

    assert main(["models"]) == 0
    out = capsys.readouterr().out
    for name in NEW + DECLARED:
        assert name in out
    assert "untrained" in out
