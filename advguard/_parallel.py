"""Running CPU-bound per-image work (Pillow, OpenCV: both release the GIL) on a thread pool."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")


def thread_map(fn: Callable[[T], R], items: Sequence[T], workers: int | None = None) -> list[R]:
    """``[fn(i) for i in items]`` on ``workers`` threads (default: all cores), in order; serial for one."""
    workers = max(1, min(workers or os.cpu_count() or 1, len(items)))
    if workers == 1:
        return [fn(i) for i in items]
    with ThreadPoolExecutor(workers) as pool:
        return list(pool.map(fn, items))
