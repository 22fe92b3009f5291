"""Defences that change what the model sees or is: label correction (Nguyen et al.), BlurNet (Raju & Lipasti)."""

from .blurnet import DepthwiseBlur, TVPenalty, feature_blur, input_blur, linf_penalty, total_variation
from .correction import LabelCorrection, vote

__all__ = [
    "DepthwiseBlur",
    "LabelCorrection",
    "TVPenalty",
    "feature_blur",
    "input_blur",
    "linf_penalty",
    "total_variation",
    "vote",
]
