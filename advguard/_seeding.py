"""Seeded runs that leave the caller's random generators alone.

An attack (and a detector that trains a network) seeds torch's global generators so that its result depends only
on its ``seed``: Foolbox's random starts draw from them, and so do ``nn.Module`` initialisers. Seeding them with
``torch.manual_seed`` in the middle of a user's program reset the user's own stream (issue #24); here the seeding
happens inside ``torch.random.fork_rng``, which restores the states on exit, so the results are the same
bit for bit and the caller's next ``torch.rand`` / ``np.random.rand`` are what they would have been.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import numpy as np
import torch


@contextlib.contextmanager
def seeded_global_rngs(seed: int, device: torch.device, *, numpy: bool = False) -> Iterator[None]:
    """Inside the block torch's global generator on the CPU and on ``device`` (a GPU's own generator) are seeded
    with ``seed`` exactly as ``torch.manual_seed(seed)`` seeds them (and numpy's global one as
    ``np.random.seed(seed % 2**32)`` with ``numpy``, for third-party code that draws from it); on exit every state
    is what it was before. Other devices' generators are not touched (``torch.manual_seed`` seeded every GPU)."""
    forked = [device] if device.type not in ("cpu", "meta") else []
    kwargs = {"device_type": device.type} if forked else {}
    np_state = np.random.get_state() if numpy else None
    with torch.random.fork_rng(devices=forked, **kwargs):
        torch.default_generator.manual_seed(int(seed))
        if forked:
            mod = getattr(torch, device.type)
            if device.index is not None and hasattr(mod, "device"):
                with mod.device(device):
                    mod.manual_seed(int(seed))
            else:
                mod.manual_seed(int(seed))
        try:
            if numpy:
                np.random.seed(int(seed) % 2**32)
            yield
        finally:
            if np_state is not None:
                np.random.set_state(np_state)
