"""Per-image randomness: a detector's score must depend on the image, the fitted detector and the seed only.

Detectors that draw random patterns (Erase-and-Restore's masks, TaintRadar's noise filling, SentiNet's
inert noise) seed one generator per image from a hash of the image's float32 bytes and the detector's
seed, never from the image's position in the batch, the batch's other images or a call counter. So a
shuffled, split or repeated batch gives every image the same score.
"""

from __future__ import annotations

import hashlib

import numpy as np
import torch


def image_seeds(x: torch.Tensor | np.ndarray, *salt: int) -> list[int]:
    """One 63-bit seed per image of ``x`` (N, ...): sha256 of the ``salt`` integers and the image's float32 bytes."""
    arr = (
        x.detach().cpu().float().contiguous().numpy()
        if isinstance(x, torch.Tensor)
        else np.ascontiguousarray(x, dtype=np.float32)
    )
    prefix = np.asarray([int(s) % 2**63 for s in salt], dtype=np.int64).tobytes()
    return [int.from_bytes(hashlib.sha256(prefix + a.tobytes()).digest()[:8], "little") >> 1 for a in arr]


def per_image_rand(
    x: torch.Tensor, *salt: int, shape: tuple[int, ...] | None = None, normal: bool = False
) -> torch.Tensor:
    """(N, *shape) uniform [0, 1) (or standard normal) draws, image i's from a generator seeded by
    :func:`image_seeds`; ``shape`` defaults to one image's shape."""
    shape = tuple(x.shape[1:]) if shape is None else tuple(shape)
    draw = torch.randn if normal else torch.rand
    out = [draw(shape, generator=torch.Generator().manual_seed(s)) for s in image_seeds(x, *salt)]
    return torch.stack(out).to(device=x.device, dtype=x.dtype if x.is_floating_point() else torch.float32)
