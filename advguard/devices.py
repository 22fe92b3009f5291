"""Torch devices: which ones this machine has, the device a model is on, and a clear error for an absent one.

**The rule for ``device=None``.** A model you wrap yourself stays where it is: ``Classifier(model)`` runs on the
device ``model`` is on (:func:`module_device`); ``device=`` moves it. A model advguard builds (``load_model``, the
command line's ``--device``, an experiment config's ``device`` key, ``advguard train``) goes to
:func:`default_device`: CUDA when PyTorch finds a GPU, else the CPU. A device
the machine does not have (``"cuda"`` on a CPU-only machine or PyTorch build, ``"cuda:3"`` with one GPU,
``"mps"`` off Apple silicon) is refused by :func:`resolve_device` with a :class:`~advguard.errors.DeviceError`
naming it and listing :func:`available_devices`, before any weight is moved (rather than torch's driver error
from deep inside ``.to()``).
"""

from __future__ import annotations

import itertools
from typing import Any

import torch
from torch import nn

from .errors import DeviceError, ParameterError

__all__ = ["available_devices", "default_device", "module_device", "resolve_device"]


def available_devices() -> list[str]:
    """The devices this process can use: ``"cpu"``, then ``"cuda:0"``... and ``"mps"`` where present."""
    out = ["cpu"]
    if torch.cuda.is_available():
        out += [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        out.append("mps")
    return out


def default_device() -> torch.device:
    """Where a model advguard builds runs when no device is given: ``cuda`` (PyTorch's current GPU) when
    ``torch.cuda.is_available()``, else ``cpu``. Apple's MPS is never chosen by default (pass ``device="mps"``)."""
    return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")


def _absent(d: torch.device, why: str) -> DeviceError:
    return DeviceError(
        f"device {str(d)!r} is not available: {why}. Available devices: {', '.join(available_devices())}."
    )


def resolve_device(device: Any, where: str = "Classifier") -> torch.device:
    """``device`` (a ``torch.device`` or a string such as ``"cuda:0"``) as a ``torch.device`` this machine has.

    Raises :class:`~advguard.errors.ParameterError` when it is not a device at all and
    :class:`~advguard.errors.DeviceError` (a ParameterError) when this machine or PyTorch build lacks it. ``"meta"``
    (shapes only, no data) is accepted.
    """
    if isinstance(device, bool) or not isinstance(device, (str, torch.device, int)):
        raise ParameterError(
            f"{where}: device must be a torch.device or a string such as 'cpu' or 'cuda', got {device!r}"
        )
    try:
        d = torch.device(device)
    except (RuntimeError, TypeError, ValueError) as e:
        raise ParameterError(f"{where}: device={device!r} is not a torch device ({e})") from None
    if d.type == "cuda":
        if not torch.cuda.is_available():
            if torch.version.cuda is None:
                why = f"this PyTorch build ({torch.__version__}) has no CUDA support"
            else:
                why = "PyTorch finds no CUDA GPU (no GPU, no driver, or CUDA_VISIBLE_DEVICES hides them)"
            raise _absent(d, why)
        n = torch.cuda.device_count()
        if d.index is not None and d.index >= n:
            raise _absent(d, f"this machine has {n} CUDA GPU{'s' if n != 1 else ''} (cuda:0..cuda:{n - 1})")
    elif d.type == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            raise _absent(d, "Apple's Metal (MPS) backend is not available on this machine")
    elif d.type not in ("cpu", "meta"):
        backend = getattr(torch, d.type, None)
        is_available = getattr(backend, "is_available", None)
        if callable(is_available) and not is_available():
            raise _absent(d, f"torch.{d.type}.is_available() is False")
    return d


def indexed(device: torch.device) -> torch.device:
    """``cuda`` as ``cuda:N`` (PyTorch's current GPU), the device tensors put there report; any other device as
    it is. It initialises CUDA: call it once a model is on the GPU, not to check a device name."""
    if device.type == "cuda" and device.index is None:
        return torch.device("cuda", torch.cuda.current_device())
    return device


def module_device(model: nn.Module) -> torch.device:
    """The device ``model``'s parameters and buffers are on (CPU for a model without any). A model spread over
    several devices is refused: pass ``device=`` to the Classifier to put all of it on one."""
    devices = {t.device for t in itertools.chain(model.parameters(), model.buffers())}
    if not devices:
        return torch.device("cpu")
    if len(devices) > 1:
        raise ParameterError(
            f"the model's parameters are on several devices ({', '.join(sorted(map(str, devices)))}); "
            "pass device= to the Classifier to move all of it to one"
        )
    return devices.pop()
