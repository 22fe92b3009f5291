"""Progress bars for long detector calls: shown only when the work takes more than a couple of seconds."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TypeVar

from tqdm.auto import tqdm

T = TypeVar("T")

#: seconds of work before a bar appears (short calls print nothing)
DELAY_S = 2.0


def progress_bar(items: Iterable[T], *, desc: str, total: int | None = None, enabled: bool = True) -> Iterable[T]:
    """``items`` wrapped in a tqdm bar that appears after :data:`DELAY_S` seconds (never, with ``enabled=False``),
    and clears itself when done."""
    bar: Iterable[T] = tqdm(items, desc=desc, total=total, leave=False, delay=DELAY_S, disable=not enabled)
    return bar
