"""Classifier fingerprints: what a saved detector records about the model it was fitted for.

A detector's features and threshold are only meaningful for the exact network they were computed
with; two models of the same class (a ResNet-20 and a retrained ResNet-20) must not silently share a
detector. The fingerprint is the architecture (a hash of the module tree's text), the weights (a hash
of the state dict's names, shapes, dtypes and bytes) and the input spec (channels, size, normalisation,
number of classes).
"""

from __future__ import annotations

import hashlib
from typing import Any

import torch


def weights_hash(module: torch.nn.Module) -> str:
    """sha256 (first 16 hex digits) over a model's state dict: names, shapes and bytes."""
    h = hashlib.sha256()
    for k, v in sorted(module.state_dict().items()):
        h.update(k.encode())
        t = v.detach().cpu().contiguous()
        h.update(str(tuple(t.shape)).encode() + str(t.dtype).encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()[:16]


def architecture_hash(module: torch.nn.Module) -> str:
    """sha256 (first 16 hex digits) of the module tree as PyTorch prints it (layer types and shapes)."""
    return hashlib.sha256(repr(module).encode()).hexdigest()[:16]


def classifier_fingerprint(classifier: Any) -> dict:
    """JSON-able fingerprint of an :class:`advguard.Classifier` (see the module docstring)."""
    return {
        "name": str(classifier.name),
        "architecture": architecture_hash(classifier.model),
        "weights": weights_hash(classifier.model),
        "num_classes": int(classifier.num_classes),
        "channels": int(classifier.channels),
        "size": None if classifier.size is None else [int(s) for s in classifier.size],
        "mean": [float(m) for m in classifier.mean],
        "std": [float(s) for s in classifier.std],
    }


def fingerprint_mismatch(saved: dict, current: dict) -> list[str]:
    """The fields in which two fingerprints differ, as readable lines (empty when they match).

    The display name is informational: a renamed but identical model matches."""
    out = []
    for key in ("architecture", "weights", "num_classes", "channels", "size", "mean", "std"):
        if saved.get(key) != current.get(key):
            out.append(f"{key}: file {saved.get(key)!r}, classifier {current.get(key)!r}")
    return out
