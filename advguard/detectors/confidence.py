"""Softmax confidence / entropy baseline (Hendrycks & Gimpel 2017): low confidence = suspicious.

Unsupervised; features are (1 - max softmax probability, predictive entropy); the score is
the one chosen by ``statistic`` ("max_prob" or "entropy").
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ..classifier import Classifier
from ..validation import check_choice
from .base import Detector, register_detector

STATISTICS = ("max_prob", "entropy")


def _check_statistic(statistic: Any, p: dict[str, Any], det: Detector) -> str:
    return check_choice("statistic", statistic, STATISTICS, where=det.name)


@register_detector()
class ConfidenceDetector(Detector):
    """Parameter ``statistic`` (stored as ``statistic_param``: :meth:`statistic` is the scoring method)."""

    name = "confidence"
    _parameter_constraints = {**Detector._parameter_constraints, "statistic": _check_statistic}
    _param_attributes = {"statistic": "statistic_param"}

    def __init__(self, classifier: Classifier, *, statistic: str = "max_prob", **kw: Any):
        self.statistic_param = statistic
        super().__init__(classifier, **kw)

    def features(self, x: torch.Tensor) -> np.ndarray:
        p = self.classifier.probs(x).double()
        ent = -(p * p.clamp_min(1e-30).log()).sum(1)
        return torch.stack([1 - p.max(1).values, ent], 1).numpy()

    def statistic(self, features: np.ndarray) -> np.ndarray:
        return features[:, STATISTICS.index(self.params["statistic"])]

    def feature_names(self, d: int) -> list[str]:
        return ["one_minus_max_prob", "entropy"]
