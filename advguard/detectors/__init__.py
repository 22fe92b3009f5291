"""Detectors: one protocol (fit / score / calibrate / predict / save / load), chosen by name."""
from __future__ import annotations

from typing import Any

from ..classifier import Classifier
from ..errors import unknown_name
from .base import DETECTORS, Detector, NotFittedError, register_detector
from .decision import DECISION_MODELS, decision_scores, make_decision_model

# Importing each module registers its detectors (``@register_detector``) in DETECTORS, in this order.
from .squeezing import FeatureSqueezing  # noqa: E402  (isort: skip)
from .cnn import CNNDetector  # noqa: E402
from .confidence import ConfidenceDetector  # noqa: E402
from .erase_restore import EraseRestore, EraseRestoreDistance  # noqa: E402
from .imageops import ImageOps  # noqa: E402
from .loo import LeaveOneOut  # noqa: E402
from .sentinet import SentiNet  # noqa: E402
from .taintradar import TaintRadar  # noqa: E402


def make_detector(name: str, classifier: Classifier, **params: Any) -> Detector:
    """Build detector ``name`` (see :data:`DETECTORS`) around ``classifier``."""
    if name not in DETECTORS:
        raise unknown_name("detector", name, list(DETECTORS))
    return DETECTORS[name](classifier, **params)


__all__ = ["DECISION_MODELS", "DETECTORS", "CNNDetector", "ConfidenceDetector", "EraseRestore", "EraseRestoreDistance",
           "ImageOps", "LeaveOneOut", "Detector", "FeatureSqueezing", "NotFittedError", "SentiNet", "TaintRadar",
           "decision_scores", "make_decision_model", "make_detector", "register_detector"]
