"""Decoded-array cache: loaders decode image files once and keep an uncompressed .npz beside the data."""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np

from .._atomic import atomic_path


def cached_arrays(path: Path, build: Callable[[], dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Return the arrays stored at ``path``; build and store them (atomically) if absent or unreadable."""
    if path.exists():
        try:
            with np.load(path, allow_pickle=False) as f:
                return {k: f[k] for k in f.files}
        except (OSError, ValueError):
            path.unlink(missing_ok=True)  # corrupt cache: rebuild below
    arrays = build()
    with atomic_path(path) as tmp:
        np.savez(tmp, **arrays)
    return arrays
