"""Detectors: one protocol (fit / score / calibrate / predict / save / load), chosen by name."""

from __future__ import annotations

from typing import Any

from ..classifier import Classifier
from ..errors import unknown_name
from .base import DETECTORS, Detector, NotFittedError, register_detector
from .decision import DECISION_MODELS, decision_scores, make_decision_model

# Importing each module registers its detectors (``@register_detector``) in DETECTORS, in this order.
# isort: off
from .squeezing import FeatureSqueezing
from .confidence import ConfidenceDetector
from .imageops import ImageOps
from .cnn import CNNDetector
from .erase_restore import EraseRestore, EraseRestoreDistance
from .loo import LeaveOneOut
from .taintradar import TaintRadar
from .sentinet import SentiNet
# isort: on


def make_detector(name: str, classifier: Classifier, **params: Any) -> Detector:
    """Build detector ``name`` (see :data:`DETECTORS`) around ``classifier``."""
    if name not in DETECTORS:
        raise unknown_name("detector", name, list(DETECTORS))
    return DETECTORS[name](classifier, **params)


__all__ = [
    "DECISION_MODELS",
    "DETECTORS",
    "CNNDetector",
    "ConfidenceDetector",
    "EraseRestore",
    "EraseRestoreDistance",
    "ImageOps",
    "LeaveOneOut",
    "Detector",
    "FeatureSqueezing",
    "NotFittedError",
    "SentiNet",
    "TaintRadar",
    "decision_scores",
    "make_decision_model",
    "make_detector",
    "register_detector",
]
