"""advguard: detect, correct and harden against adversarial examples for PyTorch image classifiers.

Types in and out (the convention every public entry point follows)
-------------------------------------------------------------------
**Images in**: float NCHW in [0, 1], as a **numpy array or a torch tensor** alike, anywhere advguard takes images
(the Classifier's calls, attacks, detectors, transforms, defences, metrics' scores). uint8 / 0..255, NHWC, a single
unbatched image, NaN and out-of-range values are refused with an :class:`InputError` naming the problem.
The Classifier's calls and the detectors' ``fit`` / ``calibrate`` / ``score`` / ``predict`` / ``features`` also take
**image files, a folder, PIL images, or a list of them**, read by :func:`load_images` at the model's input size:
an image of another size is refused unless a resize policy is given (``Classifier(..., resize="center-crop")`` or
``load_images(..., resize=...)``), and each resize is reported (:class:`~advguard.images.ImageResizedWarning`).

**Outputs**, whatever the input kind:

- ``Classifier(x)`` / ``Classifier.forward(x)``: the differentiable logits, a float32 tensor on the classifier's
  :attr:`~Classifier.device`.
- ``Classifier.logits`` / ``probs`` / ``predict`` / ``top_k`` / ``activations`` / ``input_gradient`` /
  ``layer_gradient`` / ``gradcam``: **CPU torch tensors** (float32; labels int64); ``accuracy``: a float.
- Attacks: an :class:`~advguard.attacks.AttackResult` of **CPU torch tensors** (``result.numpy()`` for numpy);
  ``Sticker.apply`` and the transforms (``ImageOp(...)(x)``, ``apply_ops``...): a float32 tensor on the input's
  device (the CPU for a numpy array); ``AdversarialPatch.apply``: a tuple ``(patched images, masks)``, a float32
  (N, C, H, W) and a bool (N, H, W) tensor, both on the input's device.
- Detectors: ``score`` float64, ``predict`` bool and ``features`` / ``extract`` float64 (N, d) **numpy arrays**;
  ``LabelCorrection.top_k`` / ``predict``: int64 numpy arrays. Metrics (:mod:`advguard.metrics`) take numpy arrays,
  tensors or lists and return Python floats.
- Data: :func:`load_dataset` returns an :class:`~advguard.data.ImageDataset` of **numpy arrays** (``ds.x``, ``ds.y``),
  which is also a ``torch.utils.data.Dataset`` (``ds[i]`` is a float32 (C, H, W) tensor and an int label: give it
  to a ``DataLoader``); :func:`load_images` returns a float32 numpy array.

Devices
-------
A :class:`Classifier` runs where its model is (``device=`` moves it); attacks and detectors compute on the
classifier's device. A model advguard builds itself (:func:`load_model`, the command line's ``--device``, an
experiment config's ``device`` key, ``advguard train``) goes, when no device is given, to CUDA when PyTorch finds a
GPU, else the CPU (:func:`~advguard.devices.default_device`): one rule for the Python API and the command line.
A device the machine lacks (``device="cuda"`` without a GPU) raises :class:`DeviceError` naming it and the
available ones (:func:`~advguard.devices.available_devices`).

Models that do not return a logits tensor (Hugging Face's ``ImageClassifierOutput``, a dict, a tuple) are wrapped
with ``Classifier(model, ..., output="logits")`` (a name, an index or a function ``output -> logits``).
"""

from .classifier import Classifier
from .data import load_dataset
from .devices import available_devices
from .errors import (
    AdvguardError,
    DatasetNotFoundError,
    DetectorFileError,
    DeviceError,
    ImageTooLargeError,
    InputError,
    ParameterError,
    ParameterTypeError,
    UnknownNameError,
)
from .guard import Guard, GuardResult
from .images import load_images
from .models import load_model

__version__ = "0.2.0"
__all__ = [
    "AdvguardError",
    "Classifier",
    "DatasetNotFoundError",
    "DetectorFileError",
    "DeviceError",
    "Guard",
    "GuardResult",
    "ImageTooLargeError",
    "InputError",
    "ParameterError",
    "ParameterTypeError",
    "UnknownNameError",
    "available_devices",
    "load_dataset",
    "load_images",
    "load_model",
    "__version__",
]
