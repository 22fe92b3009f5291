"""Defences that change what the model sees or is: label correction (Nguyen et al.)."""
from .correction import LabelCorrection, vote

__all__ = ["LabelCorrection", "vote"]
