"""Local patching of one-pixel occlusions (ML-LOO's fast path) equals the plain forward pass."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from advguard.classifier import Classifier
from advguard.detectors import LeaveOneOut
from advguard.detectors.occlusion_patch import LocalOcclusion


def _mixed() -> Classifier:
    """Strided and dilated convolutions, grouped convolution, batch norm, pools, then a dense head."""
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.BatchNorm2d(8),
        nn.LeakyReLU(0.1),
        nn.Conv2d(8, 8, 3, stride=2, padding=1, groups=2),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(8, 6, 3, padding=2, dilation=2),
        nn.AvgPool2d(2),
        nn.Tanh(),
        nn.Flatten(),
        nn.Linear(6 * 4 * 4, 7),
    )
    for m in net:
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    return Classifier(net, channels=3, size=(32, 32), num_classes=7, mean=(0.4, 0.5, 0.6), std=(0.2, 0.25, 0.3))


def _occluded(x, values, rows, cols):
    xb = x.repeat(len(rows), 1, 1, 1)
    xb[torch.arange(len(rows)), :, rows, cols] = values
    return xb


@pytest.mark.parametrize("max_fraction", [0.3, 1.0])
def test_patched_logits_and_captured_units_equal_the_plain_pass(max_fraction):
    clf = _mixed()
    lo = LocalOcclusion.build(clf, max_fraction=max_fraction)
    assert lo is not None and lo.layer_names[:3] == ["0", "1", "2"]
    g = torch.Generator().manual_seed(0)
    x = torch.rand(1, 3, 32, 32, generator=g)
    rows, cols = torch.randint(0, 32, (300,), generator=g), torch.randint(0, 32, (300,), generator=g)
    rows[:4], cols[:4] = torch.tensor([0, 0, 31, 31]), torch.tensor([0, 31, 0, 31])  # corners
    values = torch.rand(300, 3, generator=g)
    lo.prepare(x)
    name = lo.layer_names[-1]
    idx = torch.arange(0, int(np.prod(lo.outputs[-1].shape)), 5)
    with torch.inference_mode():
        logits, got = lo.logits(values, rows, cols, capture={name: idx})
        xb = _occluded(x, values, rows, cols)
        ref = clf.logits(xb, validate=False)
        act = clf.activations(xb, [name])[name].flatten(1)[:, idx]
    torch.testing.assert_close(logits, ref, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(got[name], act, atol=1e-5, rtol=1e-5)


def test_unpatchable_models_fall_back_to_the_plain_path():
    dense = Classifier(nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 4)), channels=3, size=(8, 8), num_classes=4)
    assert LocalOcclusion.build(dense) is None
    padded_pool = Classifier(
        nn.Sequential(nn.MaxPool2d(3, 1, padding=1), nn.Flatten(), nn.Linear(3 * 8 * 8, 4)),
        channels=3,
        size=(8, 8),
        num_classes=4,
    )
    assert LocalOcclusion.build(padded_pool) is None  # the only spatial layer has padding: not patchable
    x = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    a = LeaveOneOut(dense, unit="pixel", feature="10d").extract(x)
    b = LeaveOneOut(dense, unit="pixel", feature="10d", patch=False).extract(x)
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("unit, feature", [("pixel", "multilayer"), ("channel-pixel", "10d")])
def test_detector_features_with_and_without_patching_agree(correct_images, unit, feature):
    clf, x, _ = correct_images(2, 0)
    fast = LeaveOneOut(clf, unit=unit, feature=feature, layers=20, units_per_layer=50, batch_size=512)
    f_fast = fast.extract(x)
    assert fast._patcher() is not None
    slow = LeaveOneOut(clf, unit=unit, feature=feature, layers=20, units_per_layer=50, batch_size=512, patch=False)
    f_slow = slow.extract(x)
    assert fast.hidden_ is None or [n for n, _ in fast.hidden_] == [n for n, _ in slow.hidden_]
    np.testing.assert_allclose(f_fast, f_slow, atol=2e-5, rtol=1e-3)
