"""Issue #24 (part A), models from other libraries: a forward that returns an output object (Hugging Face's
``ImageClassifierOutput``: a dataclass and a dict at once), a dict or a tuple is read with ``Classifier(...,
output=...)``, everywhere the model's output is used (logits, activations, gradients, Grad-CAM, attacks,
detectors), with the same numbers as the plain model.

Real data: the zoo's cifar10-cnn, wrapped so that it returns such objects, on CIFAR-10 test images. transformers is
not installed (and no weights are downloaded): ``HFStyleOutput`` mirrors its ``ModelOutput`` (an OrderedDict
subclass that is also a dataclass)."""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import numpy as np
import pytest
import torch
from torch import nn

import advguard
from advguard import Classifier, ParameterError
from advguard.attacks import make_attack
from advguard.detectors import make_detector


@dataclass
class Output:
    logits: torch.Tensor
    hidden: torch.Tensor


class HFStyleOutput(OrderedDict):
    """Like transformers' ModelOutput: keys and attributes both give the fields."""

    def __init__(self, **kw: torch.Tensor) -> None:
        super().__init__(**kw)
        self.__dict__.update(kw)


class Wrapped(nn.Module):
    """The zoo CNN (expects normalised input) returning its logits inside another structure."""

    def __init__(self, inner: nn.Module, kind: str) -> None:
        super().__init__()
        self.inner = inner
        self.kind = kind

    def forward(self, x: torch.Tensor):
        z = self.inner(x)
        h = z.detach() * 0  # a second field, so that the logits have to be chosen
        if self.kind == "dataclass":
            return Output(logits=z, hidden=h)
        if self.kind == "hf":
            return HFStyleOutput(logits=z, hidden_states=h)
        if self.kind == "dict":
            return {"logits": z, "features": h}
        return (z, h)


@pytest.fixture(scope="module")
def zoo():
    clf = advguard.load_model("cifar10-cnn", inference="float32")
    ds = advguard.load_dataset("cifar10", "test", limit=12, seed=5)
    return clf, ds.x, ds.y


def _wrap(clf: Classifier, kind: str, output) -> Classifier:
    return Classifier(
        Wrapped(clf.model, kind),
        channels=clf.channels,
        size=clf.size,
        mean=clf.mean,
        std=clf.std,
        gradcam_layer=f"inner.{clf.gradcam_layer}",
        output=output,
    )


ACCESSORS = [
    ("dataclass", "logits"),
    ("dataclass", lambda out: out.logits),
    ("hf", "logits"),
    ("dict", "logits"),
    ("tuple", 0),
    ("tuple", lambda out: out[0]),
]


@pytest.mark.parametrize(
    ("kind", "output"), ACCESSORS, ids=[f"{k}-{o if not callable(o) else 'fn'}" for k, o in ACCESSORS]
)
def test_output_accessor_gives_the_plain_models_numbers_everywhere(zoo, kind, output):
    clf, x, y = zoo
    w = _wrap(clf, kind, output)
    assert w.num_classes == 10  # inferred through the accessor (this used to fail in _infer_num_classes)
    torch.testing.assert_close(w.logits(x), clf.logits(x))
    torch.testing.assert_close(w(x), clf(x))
    torch.testing.assert_close(w.input_gradient(x, y), clf.input_gradient(x, y))
    torch.testing.assert_close(w.gradcam(x, y), clf.gradcam(x, y))
    a_w = w.activations(x, [w.gradcam_layer], include_logits=True)
    a_c = clf.activations(x, [clf.gradcam_layer], include_logits=True)
    torch.testing.assert_close(a_w["logits"], a_c["logits"])
    torch.testing.assert_close(a_w[w.gradcam_layer], a_c[clf.gradcam_layer])


def test_attacks_and_detectors_run_through_the_accessor(zoo):
    clf, x, y = zoo
    w = _wrap(clf, "hf", "logits")
    r_w = make_attack("pgd", w, eps=4 / 255, steps=3, progress=False)(x, y)
    r_c = make_attack("pgd", clf, eps=4 / 255, steps=3, progress=False)(x, y)
    torch.testing.assert_close(r_w.x_adv, r_c.x_adv)
    assert torch.equal(r_w.success, r_c.success)
    det_w = make_detector("confidence", w, fpr=0.25).fit(x)
    det_c = make_detector("confidence", clf, fpr=0.25).fit(x)
    np.testing.assert_allclose(det_w.score(r_w.x_adv), det_c.score(r_c.x_adv), rtol=1e-5)


def test_a_model_without_a_logits_tensor_gets_a_clear_error(zoo):
    clf, _, _ = zoo
    with pytest.raises(
        ParameterError, match=r"returned an object of type Output with fields \['logits', 'hidden'\].*output="
    ):
        _wrap(clf, "dataclass", None)
    with pytest.raises(ParameterError, match=r"keys \['logits', 'features'\].*output="):
        _wrap(clf, "dict", None)
    with pytest.raises(ParameterError, match=r"output='scores': the model returned .*keys \['logits', 'features'\]"):
        _wrap(clf, "dict", "scores")
    with pytest.raises(ParameterError, match=r"output=5: the model returned a tuple of 2 items"):
        _wrap(clf, "tuple", 5)
    with pytest.raises(ParameterError, match="gave a Tensor|not a logits tensor"):
        _wrap(clf, "dataclass", lambda out: out.logits.tolist())
    with pytest.raises(ParameterError, match="output must be"):
        _wrap(clf, "dict", 1.5)


def test_a_torchvision_model_without_weights():
    """torchvision's ResNet-18 built without weights (no download), wrapped as the README shows it. Skipped where
    torchvision cannot be imported (its PyPI wheels need the CUDA build of torch, not the +cpu one)."""
    try:
        import torchvision
    except Exception as e:  # noqa: BLE001 - ImportError, or the RuntimeError of a torchvision built for another torch
        pytest.skip(f"torchvision is not usable here: {type(e).__name__}: {e}")
    model = torchvision.models.resnet18(weights=None, num_classes=10).eval()
    clf = Classifier(model, channels=3, size=(64, 64), mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))
    x = advguard.load_dataset("cifar10", "test", limit=4).x
    from advguard.images import resize_images

    x64 = resize_images(x, (64, 64))
    assert clf.num_classes == 10 and clf.gradcam_layer == "layer4.1.conv2"
    assert clf.predict(x64).shape == (4,) and clf.gradcam(x64, [0, 1, 2, 3]).shape == (4, 2, 2)
