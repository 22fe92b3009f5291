"""Classifier wrapper: hooks on non-Sequential models, Grad-CAM, gradients, pass accounting, input checks."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from advguard import Classifier, InputError, UnknownNameError


class TwoBranch(nn.Module):
    """A non-Sequential model: two conv branches joined by addition, then a head."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.stem = nn.Conv2d(3, 4, 3, padding=1)
        self.left = nn.Conv2d(4, 6, 3, padding=1)
        self.right = nn.Conv2d(4, 6, 1)
        self.head = nn.Linear(6, 5)

    def forward(self, x):
        h = F.relu(self.stem(x))
        h = F.relu(self.left(h) + self.right(h))
        return self.head(h.mean(dim=(2, 3)))


@pytest.fixture
def clf():
    return Classifier(TwoBranch(), channels=3, size=(8, 8), mean=(0.5, 0.4, 0.3), std=(0.2, 0.3, 0.4))


@pytest.fixture
def x():
    return torch.rand(7, 3, 8, 8, generator=torch.Generator().manual_seed(1))


def test_normalisation_is_inside(clf, x):
    mean, std = torch.tensor([0.5, 0.4, 0.3]).view(1, 3, 1, 1), torch.tensor([0.2, 0.3, 0.4]).view(1, 3, 1, 1)
    raw = clf.model((x - mean) / std)
    assert torch.allclose(clf.logits(x), raw, atol=1e-5)
    assert clf.num_classes == 5


def test_batched_inference_and_pass_count(clf, x):
    clf.reset_passes()
    full = clf.logits(x)
    small = clf.logits(x, batch_size=2)
    assert torch.allclose(full, small, atol=1e-5)
    assert clf.num_passes == 14
    p, labels = clf.top_k(x, k=3)
    assert p.shape == (7, 3) and torch.all(p[:, 0] >= p[:, 1])
    assert torch.equal(labels[:, 0], clf.predict(x))
    assert torch.allclose(clf.probs(x).sum(1), torch.ones(7))


def test_activation_hooks_on_non_sequential_model(clf, x):
    acts = clf.activations(x, ["left", "right", "head"], batch_size=3, include_logits=True)
    assert acts["left"].shape == (7, 6, 8, 8) and acts["right"].shape == (7, 6, 8, 8)
    assert torch.allclose(acts["head"], acts["logits"])
    # A reduce function bounds memory: keep two units of each layer.
    red = clf.activations(x, ["left"], reduce=lambda n, a: a.flatten(1)[:, :2])
    assert torch.allclose(red["left"], acts["left"].flatten(1)[:, :2])
    with pytest.raises(UnknownNameError, match="unknown layer 'lefty'.*Did you mean 'left'"):
        clf.activations(x, ["lefty"])


def test_gradcam_layer_found_and_matches_direct_computation(clf, x):
    assert clf.gradcam_layer == "right"  # last nn.Conv2d registered
    c2 = Classifier(TwoBranch(), channels=3, size=(8, 8), gradcam_layer="left")
    y = [0, 1, 2, 3, 4, 0, 1]
    cam = c2.gradcam(x, y)
    # Direct: activation of `left`, gradient of the class logit by hand.
    m = c2.model
    for i in range(len(y)):
        xi = x[i : i + 1]
        h = F.relu(m.stem(xi))
        a = m.left(h).detach().requires_grad_(True)
        z = m.head(F.relu(a + m.right(h)).mean(dim=(2, 3)))
        (g,) = torch.autograd.grad(z[0, y[i]], a)
        ref = F.relu((g.mean(dim=(2, 3), keepdim=True) * a).sum(1))[0]
        ref = ref / ref.max().clamp_min(1e-12)
        assert torch.allclose(cam[i], ref.detach(), atol=1e-5)


def test_input_gradient_matches_autograd(clf, x):
    y = torch.tensor([0, 1, 2, 3, 4, 0, 1])
    g = clf.input_gradient(x, y, batch_size=3)
    xx = x.clone().requires_grad_(True)
    F.cross_entropy(clf.module(xx), y, reduction="sum").backward()
    assert torch.allclose(g, xx.grad, atol=1e-6)


def test_layer_gradient_with_softened_log_softmax(clf, x):
    y = [1] * 7
    a, g = clf.layer_gradient(x, "left", y, score="log_softmax", temperature=2.0)
    assert a.shape == g.shape == (7, 6, 8, 8)
    assert torch.isfinite(g).all() and g.abs().sum() > 0


@pytest.mark.parametrize(
    "bad, message",
    [
        (np.zeros((2, 3, 8, 8), np.uint8), "uint8"),
        (torch.rand(2, 8, 8, 3), "NHWC"),
        (torch.rand(3, 8, 8), "single image"),
        (torch.rand(2, 3, 9, 9), "spatial size"),
        (torch.rand(2, 3, 8, 8) * 255, "divide by 255"),
        (torch.full((2, 3, 8, 8), float("nan")), "NaN"),
        (torch.zeros(0, 3, 8, 8), "empty"),
        (torch.zeros(2, 3, 8, 8, dtype=torch.int64), "floating"),
        ([[0.0]], "numpy array or torch tensor"),
    ],
)
def test_bad_inputs_are_rejected_with_a_clear_message(clf, bad, message):
    with pytest.raises(InputError, match=message):
        clf.logits(bad)


def test_bad_labels_rejected(clf, x):
    with pytest.raises(InputError, match="labels outside"):
        clf.input_gradient(x, [9] * 7)
    with pytest.raises(InputError, match="one per image"):
        clf.input_gradient(x, [0, 1])


@pytest.mark.parametrize("variant", ["channels-last", "bf16", "channels-last+bf16"])
def test_inference_variants_keep_logits_close(x, variant):
    model = TwoBranch()
    ref = Classifier(model, channels=3, size=(8, 8)).logits(x)
    out = Classifier(model, channels=3, size=(8, 8), inference=variant).logits(x)
    assert out.dtype == torch.float32
    assert torch.allclose(ref, out, atol=1e-5 if variant == "channels-last" else 0.05)
    with pytest.raises(ValueError, match="inference must be"):
        Classifier(model, channels=3, size=(8, 8), inference="fp16")


def test_float64_numpy_input_accepted(clf):
    out = clf.logits(np.random.default_rng(0).random((2, 3, 8, 8)))
    assert out.dtype == torch.float32 and out.shape == (2, 5)


def test_exact_block_switches_to_float32_and_restores(x):
    clf = Classifier(TwoBranch(), channels=3, size=(8, 8), inference="channels-last+bf16")
    ref = Classifier(TwoBranch(), channels=3, size=(8, 8)).logits(x)
    with clf.exact():
        assert clf.inference == "float32"
        assert torch.allclose(clf.logits(x), ref, atol=1e-6)
    assert clf.inference == "channels-last+bf16"
