"""Issue #24 (part A), devices: a Classifier runs where its model is, an absent device is a clear advguard error,
and every tensor detectors and attacks build lives on the classifier's device.

No GPU is needed. The placement tests run every registered detector (fit, score, predict) and attack on real
CIFAR-10 images with the classifier on a *fake* accelerator (tests/_fake_device.py: a TorchFunctionMode that treats
``cpu:0`` as a separate device and fails an operation that mixes its tensors with CPU tensors, as CUDA would). They
prove that no torch operation in those code paths combines a CPU-built tensor with the model's tensors; they do not
run CUDA kernels (see that module's docstring for what is and is not covered)."""

from __future__ import annotations

import warnings

import pytest
import torch
from _fake_device import FAKE, DeviceMix, FakeDevice
from test_contract import ATTACK_SETTINGS, DETECTOR_SETTINGS, EVADED, GUARD_DETECTORS
from torch import nn

import advguard
from advguard import Classifier, DeviceError, Guard, ParameterError
from advguard.attacks import ATTACKS, make_attack, shifted_targets
from advguard.detectors import DETECTORS, make_detector
from advguard.devices import available_devices, module_device, resolve_device


class Small(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.fc = nn.Linear(4, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.conv(x).relu().mean((2, 3)))


def test_classifier_defaults_to_the_models_device():
    """The meta device stands in for a GPU: a model there stays there (it used to be moved to the CPU)."""
    model = Small().to("meta")
    clf = Classifier(model, channels=3, size=(8, 8))
    assert clf.device == torch.device("meta") and next(clf.model.parameters()).device.type == "meta"
    assert clf(torch.zeros(2, 3, 8, 8, device="meta")).device.type == "meta"
    assert clf.num_classes == 10  # inferred with a forward pass on the model's own device
    assert Classifier(Small(), channels=3, size=(8, 8)).device == torch.device("cpu")
    assert Classifier(nn.Flatten(), channels=3, size=(2, 5), num_classes=30).device == torch.device("cpu")
    moved = Classifier(Small(), channels=3, size=(8, 8), device="meta")  # device= still moves it
    assert moved.device.type == "meta" and next(moved.model.parameters()).device.type == "meta"


def test_a_model_on_two_devices_must_be_given_one():
    model = Small()
    model.fc.to("meta")
    with pytest.raises(ParameterError, match=r"several devices \(cpu, meta\).*pass device="):
        module_device(model)


def test_absent_devices_are_clear_advguard_errors(monkeypatch):
    """``load_model(device="cuda")`` without a GPU: an advguard DeviceError naming the device and the available ones,
    before any weight is read (monkeypatched so that the test means the same on a machine with a GPU)."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(DeviceError, match=r"device 'cuda' is not available: .*Available devices: cpu"):
        advguard.load_model("cifar10-cnn", device="cuda")
    with pytest.raises(DeviceError, match=r"'cuda:1' is not available"):
        Classifier(Small(), channels=3, size=(8, 8), device="cuda:1")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(DeviceError, match=r"'cuda:3' is not available: this machine has 1 CUDA GPU \(cuda:0..cuda:0\)"):
        resolve_device("cuda:3")
    monkeypatch.undo()
    if not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        with pytest.raises(DeviceError, match="'mps' is not available"):
            resolve_device("mps")
    for bad in ("gpu", "cuda:x", 1.5, ["cpu"]):
        with pytest.raises(ParameterError, match="device"):
            resolve_device(bad)
    assert available_devices()[0] == "cpu"
    assert isinstance(DeviceError("x"), ParameterError) and isinstance(DeviceError("x"), ValueError)


def test_one_default_device_rule_for_the_python_api_and_the_command_line(monkeypatch, tmp_path, capsys):
    """device=None: a model advguard builds goes to CUDA when PyTorch finds a GPU, else the CPU, whether it comes
    from load_model, evaluate, `advguard predict` / `evaluate` / `reproduce` (a config without `device`) or
    `advguard train`; a wrapped model stays where it is. No GPU here: torch.cuda.is_available is monkeypatched, and
    where CUDA is "available" a spy in place of the Classifier records the device it would be moved to."""
    from pathlib import Path

    from advguard.cli import main
    from advguard.devices import default_device
    from advguard.models.evaluation import evaluate
    from advguard.training import train

    root = Path(__file__).resolve().parents[1]
    photo = next((advguard.data.data_dir() / "imagenet-samples" / "images").glob("*.jpg"))

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert default_device() == torch.device("cpu")
    assert advguard.load_model("cifar10-cnn").device == torch.device("cpu")
    with pytest.raises(DeviceError, match="'cuda:7' is not available"):  # train: an advguard error, nothing written
        train("cifar10-cnn", device="cuda:7", out_dir=tmp_path / "t", progress=False)
    assert not (tmp_path / "t").exists()

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert default_device() == torch.device("cuda")

    def spy(self, model, **kw):
        raise DeviceError(f"spy: the classifier would run on {kw.get('device')}")

    monkeypatch.setattr(advguard.classifier.Classifier, "__init__", spy)
    with pytest.raises(DeviceError, match="would run on cuda$"):
        advguard.load_model("cifar10-cnn")
    with pytest.raises(DeviceError, match="would run on cuda$"):
        evaluate("cifar10-cnn", limit=2)
    with pytest.raises(DeviceError, match="would run on cpu$"):  # a named device wins
        advguard.load_model("cifar10-cnn", device="cpu")
    for argv in (
        ["predict", str(photo), "-m", "cifar10-cnn"],
        ["evaluate", "cifar10-cnn", "--limit", "2"],
        ["reproduce", str(root / "configs" / "smoke.toml"), "--out", str(tmp_path / "o")],
    ):
        assert main(argv) == 2, argv
        assert "would run on cuda" in capsys.readouterr().err, argv
    monkeypatch.undo()
    assert Classifier(Small(), channels=3, size=(8, 8)).device == torch.device("cpu")  # a wrapped model stays


# ------------------------------------------------------------------------------------------------ placement
@pytest.fixture(scope="module")
def fake_data(correct_images):
    """A zoo classifier on the fake accelerator, and correctly classified real CIFAR-10 test images (CPU)."""
    _, x, y = correct_images(40, 21)
    clf = advguard.load_model("cifar10-cnn", device=FAKE)
    assert clf.device == FAKE
    adv = make_attack("fgsm", clf, eps=8 / 255, progress=False)(x[:16], y[:16]).x_adv
    return clf, x, y, adv


def _on_fake(clf: Classifier) -> FakeDevice:
    fd = FakeDevice()
    fd.put(clf.module)
    return fd


def test_the_fake_device_catches_a_cpu_tensor_mixed_with_the_models():
    """The checker itself: the mistakes it exists to catch are caught, correct code passes."""
    clf = Classifier(Small(), channels=3, size=(8, 8), device=FAKE)
    x = torch.rand(2, 3, 8, 8)
    with _on_fake(clf):
        logits = clf(x)  # forward moves x to the device
        ok = logits + torch.zeros(2, 10, device=logits.device)  # built on the input's device: fine
        ok = ok * torch.tensor(2.0)  # a 0-dim CPU tensor mixes with CUDA tensors in PyTorch too
        ok[torch.tensor([0])] = 1.0  # a CPU index into a device tensor: allowed by PyTorch
        with pytest.raises(DeviceMix):
            logits + torch.zeros(2, 10)  # a CPU tensor mixed with the model's output
        with pytest.raises(DeviceMix):
            clf.module(x)  # the CPU input reaching the model's device weights
        with pytest.raises(DeviceMix, match="numpy"):
            logits.numpy()
        assert logits.detach().cpu().numpy().shape == (2, 10)  # the user's parameters keep requires_grad


@pytest.mark.parametrize("name", list(DETECTORS))
def test_detectors_build_their_tensors_on_the_classifiers_device(name, fake_data):
    clf, x, _, adv = fake_data
    det = make_detector(name, clf, **DETECTOR_SETTINGS[name])
    needs_adv = det.supervised
    with _on_fake(clf) as fd, warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # 16 clean images cannot resolve FPR 0.05
        det.fit(x[:16], adv if needs_adv else None)
        scores = det.score(x[16:20])
        det.predict(adv[:4])
    assert scores.shape == (4,) and fd.tracked_ops > 0  # the checker did see the model's tensors


@pytest.mark.parametrize("name", list(ATTACKS))
def test_attacks_build_their_tensors_on_the_classifiers_device(name, fake_data):
    clf, x, y, _ = fake_data
    cls = ATTACKS[name]
    settings = dict(ATTACK_SETTINGS[name])
    x, y = x[:4], y[:4]
    if name in ("region-misleading-patch", "sentinet-patch"):
        settings["target"] = next(c for c in range(clf.num_classes) if c not in set(y.tolist()))
    targets = shifted_targets(y, clf.num_classes) if cls.targets_required else None
    with _on_fake(clf) as fd:
        if cls.requires:  # fitted on the device too: a detector network (the CNN detector's) lives there
            names = GUARD_DETECTORS if EVADED[name] == "guard" else (EVADED[name],)
            dets = [make_detector(n, clf, **DETECTOR_SETTINGS[n]) for n in names]
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)
                for det in dets:
                    det.fit(fake_data[1][20:36], fake_data[3] if det.supervised else None)
                guard = Guard(clf, dets).fit(fake_data[1][20:36]) if EVADED[name] == "guard" else None
            settings["detector"] = guard if guard is not None else dets[0]
        attack = make_attack(name, clf, progress=False, **settings)
        if cls.needs_fit:
            attack.fit(x, y)
        r = attack(x, y, targets=targets)
    assert r.x_adv.shape == x.shape and r.x_adv.device.type == "cpu" and fd.tracked_ops > 0
