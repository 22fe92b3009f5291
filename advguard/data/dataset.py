"""The in-memory dataset container returned by every loader, and deterministic subsetting."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import numpy as np
import torch
from torch.utils.data import Dataset

from ..errors import InputError


@dataclass
class ImageDataset(Dataset[tuple[torch.Tensor, int]]):
    """Images as NCHW arrays (uint8 0..255 or float32 in [0, 1]) with int64 labels.

    It is also a ``torch.utils.data.Dataset`` (map-style): ``ds[i]`` is ``(image, label)``, the image a float32
    (C, H, W) tensor in [0, 1] and the label an ``int``, so ``DataLoader(ds, batch_size=64)`` yields float32
    (B, C, H, W) batches and int64 labels. ``ds.x`` / ``ds.y`` stay numpy arrays (the whole set at once), and
    :meth:`tensors` gives both as tensors.

    ``source`` records where the pixels came from (e.g. ``"cifar10-jpeg"`` for the
    public JPEG copy), so reports can say exactly what was evaluated.
    ``indices`` are the positions in the full split, ``groups`` optional group ids
    (e.g. GTSRB physical-sign tracks) that must not straddle a train/validation split.
    """

    x: np.ndarray
    y: np.ndarray
    classes: list[str]
    name: str
    split: str
    source: str
    indices: np.ndarray
    groups: np.ndarray | None = None
    meta: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.x.shape[0])

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        """``(image, label)`` of position ``i`` (negative counts from the end): a float32 (C, H, W) tensor in
        [0, 1] and an ``int``. Use :meth:`take` for a subset."""
        if isinstance(i, (bool, np.bool_)) or not isinstance(i, (int, np.integer)):
            raise TypeError(
                f"an ImageDataset is indexed by one integer position, got {type(i).__name__}; use ds.take(indices) "
                "for a subset, or ds.x / ds.y for the arrays"
            )
        n = len(self)
        if not -n <= int(i) < n:
            raise IndexError(f"index {int(i)} is out of range for a dataset of {n} images")
        img = self.x[int(i)]
        t = torch.from_numpy(np.ascontiguousarray(img))
        t = t.float().div_(255.0) if t.dtype == torch.uint8 else t.to(torch.float32)
        return t, int(self.y[int(i)])

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def take(self, idx: np.ndarray | torch.Tensor | Sequence[int] | Sequence[bool]) -> ImageDataset:
        """A new dataset holding the rows ``idx``: integer positions in this dataset (negative count from the end),
        or a boolean mask of one value per image (``ds.take(ds.y == 3)``). Other dtypes (floats, strings) and
        positions out of range raise an :class:`~advguard.errors.InputError`."""
        idx = _positions(idx, len(self))
        return replace(
            self,
            x=self.x[idx],
            y=self.y[idx],
            indices=self.indices[idx],
            groups=None if self.groups is None else self.groups[idx],
        )

    def as_float(self) -> ImageDataset:
        """float32 copy in [0, 1] (no-op if already float)."""
        if self.x.dtype == np.float32:
            return self
        return replace(self, x=self.x.astype(np.float32) / 255.0)

    def tensors(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(x, y)`` as torch tensors, x float32 in [0, 1]."""
        return torch.from_numpy(np.ascontiguousarray(self.as_float().x)), torch.from_numpy(self.y)

    def __repr__(self) -> str:
        return (
            f"ImageDataset(name={self.name!r}, split={self.split!r}, source={self.source!r}, "
            f"n={len(self)}, shape={tuple(self.x.shape[1:])}, dtype={self.x.dtype}, classes={self.num_classes})"
        )


def _positions(idx: object, n: int) -> np.ndarray:
    """``idx`` (integer positions or a boolean mask of length ``n``) as int64 positions, checked."""
    if isinstance(idx, torch.Tensor):
        idx = idx.detach().cpu().numpy()
    try:
        a = np.asarray(idx)
    except (ValueError, TypeError) as e:  # ragged lists
        raise InputError(
            f"take: indices must be a flat sequence of integer positions or a boolean mask ({e})"
        ) from None
    if a.ndim != 1 and not (a.ndim == 0 and a.dtype.kind in "iu"):
        raise InputError(f"take: indices must be one-dimensional, got shape {a.shape}")
    if a.dtype.kind == "b":
        if a.shape != (n,):
            raise InputError(f"take: a boolean mask needs one value per image ({n}), got {a.shape[0]}")
        return np.flatnonzero(a)
    if a.size == 0:
        return np.zeros(0, dtype=np.int64)
    if a.dtype.kind not in "iu":
        raise InputError(
            f"take: indices must be integer positions or a boolean mask, got dtype {a.dtype} "
            "(floats are not truncated: convert them explicitly)"
        )
    a = a.astype(np.int64).reshape(-1)
    bad = a[(a < -n) | (a >= n)]
    if bad.size:
        raise InputError(f"take: positions {bad[:5].tolist()} are out of range for a dataset of {n} images")
    return a


def subset_indices(y: np.ndarray, limit: int | None, seed: int = 0, stratified: bool = True) -> np.ndarray:
    """Deterministic subset of ``limit`` positions, sorted.

    Stratified: classes are represented in proportion to their frequency (each
    class's samples are shuffled with ``seed`` and interleaved by relative rank).
    Not stratified: a seeded uniform random sample.
    """
    n = len(y)
    if limit is None or limit >= n:
        return np.arange(n)
    if limit <= 0:
        raise ValueError(f"limit must be positive, got {limit}")
    rng = np.random.default_rng(seed)
    perm = rng.permutation(n)
    if not stratified:
        return np.sort(perm[:limit])
    y_perm = y[perm]
    rank = np.empty(n, dtype=np.float64)
    for c in np.unique(y):
        pos = np.nonzero(y_perm == c)[0]
        rank[pos] = (np.arange(len(pos)) + 0.5) / len(pos)
    order = np.argsort(rank, kind="stable")
    return np.sort(perm[order[:limit]])
