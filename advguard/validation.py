"""Validation of image batches (float32 NCHW in [0, 1], finite, right shape), of labels, and of the numeric,
boolean and keyword parameters of attacks and classifiers (issue #20: every bad argument fails early with an
advguard error that names the parameter and its allowed range, never later inside a dependency)."""

from __future__ import annotations

import difflib
import inspect
import math
import numbers
from collections.abc import Iterable, Sequence
from typing import Any, Literal, overload

import numpy as np
import torch

from .errors import InputError, ParameterError, ParameterTypeError

__all__ = [
    "ParameterError",
    "ParameterTypeError",
    "as_image_batch",
    "as_labels",
    "check_batch_size",
    "check_bool",
    "check_choice",
    "check_image_tensor",
    "check_keywords",
    "check_number",
    "init_keywords",
]


def _interval(lo: float | None, hi: float | None, lo_open: bool, hi_open: bool) -> str:
    def fmt(v: float) -> str:
        return str(int(v)) if float(v).is_integer() else f"{v:g}"

    a = "-inf" if lo is None else fmt(lo)
    b = "inf" if hi is None else fmt(hi)
    return f"{'(' if lo_open or lo is None else '['}{a}, {b}{')' if hi_open or hi is None else ']'}"


@overload
def check_number(
    name: str,
    value: Any,
    *,
    lo: float | None = None,
    hi: float | None = None,
    lo_open: bool = False,
    hi_open: bool = False,
    integer: Literal[True],
    where: str = "",
) -> int: ...
@overload
def check_number(
    name: str,
    value: Any,
    *,
    lo: float | None = None,
    hi: float | None = None,
    lo_open: bool = False,
    hi_open: bool = False,
    integer: Literal[False] = False,
    where: str = "",
) -> float: ...
@overload
def check_number(
    name: str,
    value: Any,
    *,
    lo: float | None = None,
    hi: float | None = None,
    lo_open: bool = False,
    hi_open: bool = False,
    integer: bool = False,
    where: str = "",
) -> int | float: ...
def check_number(
    name: str,
    value: Any,
    *,
    lo: float | None = None,
    hi: float | None = None,
    lo_open: bool = False,
    hi_open: bool = False,
    integer: bool = False,
    where: str = "",
) -> int | float:
    """Return ``value`` as an int (``integer``) or a finite float inside the interval ``lo``..``hi`` (open ends
    with ``lo_open`` / ``hi_open``); otherwise raise :class:`ParameterTypeError` (not a real number, a bool,
    a non-integral value where an integer is needed) or :class:`ParameterError` (NaN, Inf, out of range)."""
    pre = f"{where}: " if where else ""
    kind = "an integer" if integer else "a number"
    rng = _interval(lo, hi, lo_open, hi_open)
    if isinstance(value, torch.Tensor) and value.numel() == 1 and not value.is_complex():
        value = value.item()
    if isinstance(value, np.ndarray) and value.ndim == 0:
        value = value.item()
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise ParameterTypeError(f"{pre}{name} must be {kind} in {rng}, got {value!r} ({type(value).__name__})")
    if integer:
        if not isinstance(value, numbers.Integral):
            if isinstance(value, float) and math.isfinite(value) and value == int(value):
                value = int(value)
            else:
                raise ParameterTypeError(f"{pre}{name} must be {kind} in {rng}, got {value!r}")
        v: int | float = int(value)
    else:
        v = float(value)
        if not math.isfinite(v):
            raise ParameterError(f"{pre}{name} must be a finite number in {rng}, got {value!r}")
    if (lo is not None and (v < lo or (lo_open and v == lo))) or (hi is not None and (v > hi or (hi_open and v == hi))):
        raise ParameterError(f"{pre}{name}={value!r} is outside the allowed range {rng}")
    return v


def check_bool(name: str, value: Any, where: str = "") -> bool:
    """``value`` must be a bool (numpy bools too): ``steps=True`` or ``progress="no"`` are mistakes."""
    if not isinstance(value, (bool, np.bool_)):
        pre = f"{where}: " if where else ""
        raise ParameterTypeError(f"{pre}{name} must be True or False, got {value!r} ({type(value).__name__})")
    return bool(value)


def check_choice(name: str, value: Any, choices: Iterable[str], where: str = "") -> str:
    """``value`` must be one of the strings ``choices``; the error suggests the closest one."""
    choices = list(choices)
    pre = f"{where}: " if where else ""
    if not isinstance(value, str):
        raise ParameterTypeError(f"{pre}{name} must be one of {choices}, got {value!r} ({type(value).__name__})")
    if value not in choices:
        close = difflib.get_close_matches(value, choices, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ParameterError(f"{pre}{name}={value!r} is not one of {choices}.{hint}")
    return value


def check_keywords(where: str, given: Iterable[str], allowed: Iterable[str]) -> None:
    """Refuse keywords not in ``allowed`` with the closest valid parameter named (difflib); where nothing is allowed,
    say that ``where`` takes no parameters."""
    allowed = sorted(set(allowed))
    bad = [k for k in given if k not in allowed]
    if not bad:
        return
    if not allowed:  # "Valid parameters: ." says nothing
        raise ParameterTypeError(f"{where} takes no parameters, got {', '.join(map(repr, bad))}.")
    parts = []
    for k in bad:
        close = difflib.get_close_matches(str(k), allowed, n=1)
        parts.append(f"{k!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
    raise ParameterTypeError(
        f"{where}: unknown parameter{'s' if len(bad) > 1 else ''} {', '.join(parts)}. "
        f"Valid parameters: {', '.join(allowed)}."
    )


def init_keywords(cls: type, root: type, exclude: Iterable[str] = ()) -> set[str]:
    """The keyword parameters ``cls(...)`` accepts: its ``__init__``'s and, as far as each ``__init__`` passes
    ``**kwargs`` on, those of its bases up to ``root`` (inclusive); ``self`` and ``exclude`` left out."""
    skip = {"self", *exclude}
    names: set[str] = set()
    for klass in cls.__mro__:
        init = vars(klass).get("__init__")
        if init is None:
            continue
        params = inspect.signature(init).parameters.values()
        names |= {p.name for p in params if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD) and p.name not in skip}
        if klass is root or not any(p.kind is p.VAR_KEYWORD for p in params):
            break
    return names


def check_batch_size(value: Any, where: str = "", name: str = "batch_size") -> int:
    """A batch size: an integer >= 1."""
    return int(check_number(name, value, lo=1, integer=True, where=where))


def _check_tensor_dtype(t: torch.Tensor, name: str) -> None:
    if t.layout != torch.strided:
        raise InputError(f"{name} is a {t.layout} tensor; expected a dense (strided) tensor.")
    if t.dtype == torch.uint8:
        raise InputError(
            f"{name} has dtype torch.uint8; advguard expects float32 images in [0, 1]. Convert with x.float() / 255."
        )
    if not t.is_floating_point():
        raise InputError(f"{name} has dtype {t.dtype}; expected a floating dtype (float32) in [0, 1].")


def _check_batch_shape(t: torch.Tensor, channels: int | None, size: Sequence[int] | None, name: str) -> None:
    """(N, C, H, W) with N >= 1, ``channels`` channels and spatial ``size`` (each when given)."""
    if t.ndim == 3:
        raise InputError(
            f"{name} has shape {tuple(t.shape)}: a single image. advguard expects a batch (N, C, H, W); "
            "use x[None] to add the batch dimension."
        )
    if t.ndim != 4:
        raise InputError(f"{name} has shape {tuple(t.shape)}; expected 4 dimensions (N, C, H, W).")
    if channels is not None and t.shape[1] != channels:
        hint = ""
        if t.shape[-1] == channels:
            hint = " It looks like NHWC; use x.permute(0, 3, 1, 2) (torch) or x.transpose(0, 3, 1, 2) (numpy)."
        raise InputError(
            f"{name} has {t.shape[1]} channels (shape {tuple(t.shape)}); the model expects {channels}.{hint}"
        )
    if size is not None and tuple(t.shape[2:]) != tuple(size):
        raise InputError(
            f"{name} has spatial size {tuple(t.shape[2:])}; the model expects {tuple(size)}. "
            'Resize them first (advguard.images.resize_images(x, size, resize="resize" or "center-crop")).'
        )
    if t.shape[0] == 0:
        raise InputError(f"{name} is an empty batch (N = 0).")
    if 0 in t.shape[1:]:
        raise InputError(f"{name} has shape {tuple(t.shape)}: an image with no channels or no pixels.")


def check_image_tensor(
    t: torch.Tensor,
    *,
    channels: int | None = None,
    size: Sequence[int] | None = None,
    bounds: tuple[float, float] = (0.0, 1.0),
    name: str = "x",
    atol: float = 1e-5,
) -> None:
    """The cheap checks of a tensor given straight to a model (``Classifier.forward``, ``Detector.features``),
    without copying, casting or detaching it (a gradient may flow back to it): a dense floating tensor of shape
    (N, C, H, W) with ``channels`` and ``size``, its values finite and within ``bounds`` (one ``aminmax``
    reduction; skipped on the data-less ``meta`` device). Raises an :class:`InputError` naming the problem,
    with the messages of :func:`as_image_batch`."""
    if not isinstance(t, torch.Tensor):
        raise InputError(f"{name} must be a torch tensor here, got {type(t).__name__}")
    _check_tensor_dtype(t, name)
    _check_batch_shape(t, channels, size, name)
    if t.device.type == "meta":
        return
    with torch.no_grad():
        lo_t, hi_t = torch.aminmax(t.detach())
    lo, hi = float(lo_t), float(hi_t)
    if not (math.isfinite(lo) and math.isfinite(hi)):
        n_bad = int((~torch.isfinite(t.detach())).flatten(1).any(1).sum())
        raise InputError(f"{name} contains NaN or Inf values in {n_bad} of {t.shape[0]} images.")
    if lo < bounds[0] - atol or hi > bounds[1] + atol:
        hint = " It looks like 0..255 pixel values; divide by 255." if hi > 2.0 and bounds[1] <= 1.0 else ""
        raise InputError(f"{name} has values in [{lo:.4g}, {hi:.4g}], outside the bounds {bounds}.{hint}")


def as_image_batch(
    x: np.ndarray | torch.Tensor,
    *,
    channels: int | None = None,
    size: Sequence[int] | None = None,
    bounds: tuple[float, float] = (0.0, 1.0),
    name: str = "x",
    atol: float = 1e-5,
) -> torch.Tensor:
    """Check an image batch and return it as a float32 torch tensor (no copy when possible).

    Accepts a numpy array or tensor of shape (N, C, H, W) (or a single (C, H, W) image,
    which is rejected with a hint: callers must batch explicitly). uint8 input is
    rejected rather than silently rescaled, because a 0..255 image passed where
    [0, 1] is expected is the most common silent bug in adversarial-ML code.
    """
    if isinstance(x, np.ndarray):
        if x.dtype == np.uint8:
            raise InputError(
                f"{name} has dtype uint8; advguard expects float32 images in [0, 1]. "
                "Convert with x.astype(np.float32) / 255."
            )
        if not np.issubdtype(x.dtype, np.floating):
            raise InputError(f"{name} has dtype {x.dtype}; expected a floating dtype (float32) in [0, 1].")
        if x.dtype not in (np.float16, np.float32, np.float64) or not x.dtype.isnative:
            x = x.astype(np.float64)  # float128, big-endian...: torch cannot wrap them
        t = torch.from_numpy(np.ascontiguousarray(x))
    elif isinstance(x, torch.Tensor):
        t = x.detach()  # an input that requires grad would otherwise break Foolbox / inference mode
        _check_tensor_dtype(t, name)
    else:
        raise InputError(
            f"{name} must be a numpy array or torch tensor, got {type(x).__name__}. Image files, folders and PIL "
            "images are read by advguard.load_images(...) (and by a Classifier's or a detector's calls)."
        )

    _check_batch_shape(t, channels, size, name)
    if not bool(torch.isfinite(t).all()):
        n_bad = int((~torch.isfinite(t)).flatten(1).any(1).sum())
        raise InputError(f"{name} contains NaN or Inf values in {n_bad} of {t.shape[0]} images.")
    lo, hi = float(t.min()), float(t.max())
    if lo < bounds[0] - atol or hi > bounds[1] + atol:
        hint = " It looks like 0..255 pixel values; divide by 255." if hi > 2.0 and bounds[1] <= 1.0 else ""
        raise InputError(f"{name} has values in [{lo:.4g}, {hi:.4g}], outside the bounds {bounds}.{hint}")
    if t.dtype != torch.float32:  # after the checks: float64 values too large for float32 are out of range anyway
        t = t.float()
    return t


def as_labels(y: np.ndarray | torch.Tensor | Sequence[int], n: int, num_classes: int, name: str = "y") -> torch.Tensor:
    """Check integer class labels for a batch of ``n`` images and return an int64 tensor (on ``y``'s device
    for a tensor). Floats, bools, strings, objects, wrong shapes and labels outside 0..num_classes-1 are
    refused with an :class:`InputError` naming the problem."""
    if isinstance(y, torch.Tensor):
        t = y.detach()
        if t.is_floating_point() or t.is_complex():
            raise InputError(f"{name} must hold integer class labels, got dtype {t.dtype}.")
        if t.dtype == torch.bool:
            raise InputError(f"{name} must hold integer class labels, got dtype torch.bool.")
    else:
        if y is None or isinstance(y, (str, bytes)):
            raise InputError(f"{name} must be a sequence of integer class labels, one per image, got {y!r}.")
        try:
            a = np.asarray(y)
        except (ValueError, TypeError) as e:  # ragged lists
            raise InputError(f"{name} must be a flat sequence of integer class labels, one per image ({e}).") from None
        if a.dtype.kind == "f" or a.dtype.kind == "c":
            raise InputError(f"{name} must hold integer class labels, got dtype {a.dtype}.")
        if a.dtype.kind not in "iu":
            raise InputError(
                f"{name} must hold integer class labels, got dtype {a.dtype} "
                f"({'booleans' if a.dtype.kind == 'b' else 'not integers'})."
            )
        if a.dtype == np.uint64 and a.size and int(a.max()) > np.iinfo(np.int64).max:
            raise InputError(f"{name} has labels outside 0..{num_classes - 1}.")
        t = torch.as_tensor(a.astype(np.int64))  # (np.ascontiguousarray would make a scalar 1-D)
    if t.ndim != 1 or t.shape[0] != n:
        raise InputError(f"{name} has shape {tuple(t.shape)}; expected ({n},) labels, one per image.")
    t = t.long()
    if n and (int(t.min()) < 0 or int(t.max()) >= num_classes):
        bad = torch.nonzero((t < 0) | (t >= num_classes)).flatten()[:10].tolist()
        raise InputError(f"{name} has labels outside 0..{num_classes - 1} (at positions {bad}).")
    return t
