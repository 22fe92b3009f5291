"""Validation of image batches: float32 NCHW in [0, 1], finite, right shape."""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from .errors import InputError



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
        t = torch.from_numpy(np.ascontiguousarray(x))
    elif isinstance(x, torch.Tensor):
        t = x
        if t.dtype == torch.uint8:
            raise InputError(
                f"{name} has dtype torch.uint8; advguard expects float32 images in [0, 1]. "
                "Convert with x.float() / 255."
            )
        if not t.is_floating_point():
            raise InputError(f"{name} has dtype {t.dtype}; expected a floating dtype (float32) in [0, 1].")
    else:
        raise InputError(f"{name} must be a numpy array or torch tensor, got {type(x).__name__}.")

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
            "Resize the images first (advguard.data.resize_images)."
        )
    if t.shape[0] == 0:
        raise InputError(f"{name} is an empty batch (N = 0).")
    if t.dtype != torch.float32:
        t = t.float()
    if not bool(torch.isfinite(t).all()):
        n_bad = int((~torch.isfinite(t)).flatten(1).any(1).sum())
        raise InputError(f"{name} contains NaN or Inf values in {n_bad} of {t.shape[0]} images.")
    lo, hi = float(t.min()), float(t.max())
    if lo < bounds[0] - atol or hi > bounds[1] + atol:
        hint = " It looks like 0..255 pixel values; divide by 255." if hi > 2.0 and bounds[1] <= 1.0 else ""
        raise InputError(
            f"{name} has values in [{lo:.4g}, {hi:.4g}], outside the bounds {bounds}.{hint}"
        )
    return t


def as_labels(y: np.ndarray | torch.Tensor | Sequence[int], n: int, num_classes: int, name: str = "y") -> torch.Tensor:
    """Check integer class labels for a batch of ``n`` images and return an int64 tensor."""
    t = torch.as_tensor(np.asarray(y) if not isinstance(y, torch.Tensor) else y)
    if t.ndim != 1 or t.shape[0] != n:
        raise InputError(f"{name} has shape {tuple(t.shape)}; expected ({n},) labels, one per image.")
    if t.is_floating_point():
        raise InputError(f"{name} must hold integer class labels, got dtype {t.dtype}.")
    t = t.long()
    if n and (int(t.min()) < 0 or int(t.max()) >= num_classes):
        raise InputError(f"{name} has labels outside 0..{num_classes - 1}.")
    return t
