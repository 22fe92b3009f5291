"""advguard: detect, correct and harden against adversarial examples for PyTorch image classifiers."""

from .classifier import Classifier
from .data import load_dataset
from .errors import (
    AdvguardError,
    DatasetNotFoundError,
    DetectorFileError,
    InputError,
    ParameterError,
    ParameterTypeError,
    UnknownNameError,
)
from .guard import Guard, GuardResult
from .models import load_model

__version__ = "0.2.0"
__all__ = [
    "AdvguardError",
    "Classifier",
    "DatasetNotFoundError",
    "DetectorFileError",
    "Guard",
    "GuardResult",
    "InputError",
    "ParameterError",
    "ParameterTypeError",
    "UnknownNameError",
    "load_dataset",
    "load_model",
    "__version__",
]
