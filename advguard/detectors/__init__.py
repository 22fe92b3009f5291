"""Detectors: one protocol (fit / score / calibrate / predict / save / load), chosen by name."""
from __future__ import annotations

from ..errors import unknown_name
from .base import Detector, NotFittedError
from .cnn import CNNDetector
from .confidence import ConfidenceDetector
from .decision import DECISION_MODELS, decision_scores, make_decision_model
from .erase_restore import EraseRestore, EraseRestoreDistance
from .imageops import ImageOps
from .loo import LeaveOneOut
from .sentinet import SentiNet
from .squeezing import FeatureSqueezing
from .taintradar import TaintRadar

DETECTORS: dict[str, type[Detector]] = {
    "feature-squeezing": FeatureSqueezing,
    "confidence": ConfidenceDetector,
    "image-ops": ImageOps,
    "cnn": CNNDetector,
    "erase-restore": EraseRestore,
    "erase-restore-distance": EraseRestoreDistance,
    "loo": LeaveOneOut,
    "taintradar": TaintRadar,
    "sentinet": SentiNet,
}


def make_detector(name: str, classifier, **params) -> Detector:
    """Build detector ``name`` (see :data:`DETECTORS`) around ``classifier``."""
    if name not in DETECTORS:
        raise unknown_name("detector", name, list(DETECTORS))
    return DETECTORS[name](classifier, **params)


__all__ = ["DECISION_MODELS", "DETECTORS", "CNNDetector", "ConfidenceDetector", "EraseRestore", "EraseRestoreDistance",
           "ImageOps", "LeaveOneOut", "Detector", "FeatureSqueezing", "NotFittedError", "SentiNet", "TaintRadar",
           "decision_scores", "make_decision_model", "make_detector"]
