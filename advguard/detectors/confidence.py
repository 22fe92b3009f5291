"""Softmax confidence / entropy baseline (Hendrycks & Gimpel 2017): low confidence = suspicious.

Unsupervised; features are (1 - max softmax probability, predictive entropy); the score is
the one chosen by ``statistic`` ("max_prob" or "entropy").
"""
from __future__ import annotations

import numpy as np
import torch

from .base import Detector

STATISTICS = ("max_prob", "entropy")


class ConfidenceDetector(Detector):
    name = "confidence"

    def __init__(self, classifier, *, statistic: str = "max_prob", **kw):
        if statistic not in STATISTICS:
            raise ValueError(f"statistic must be one of {STATISTICS}, got {statistic!r}")
        super().__init__(classifier, statistic=statistic, **kw)

    def features(self, x: torch.Tensor) -> np.ndarray:
        p = self.classifier.probs(x).double()
        ent = -(p * p.clamp_min(1e-30).log()).sum(1)
        return torch.stack([1 - p.max(1).values, ent], 1).numpy()

    def statistic(self, features: np.ndarray) -> np.ndarray:
        return features[:, STATISTICS.index(self.params["statistic"])]

    def feature_names(self, d: int) -> list[str]:
        return ["one_minus_max_prob", "entropy"]
