"""``load_dataset(name, split, ...)``: the one entry point to every dataset advguard knows."""

from __future__ import annotations

import inspect
import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from ..errors import ParameterError, ParameterTypeError, unknown_name
from ..validation import check_choice, check_keywords, check_number
from . import cifar10, fashion_mnist, gtsrb, image_folder, imagenet_samples, imagenet_val, rp2
from .dataset import ImageDataset, subset_indices
from .paths import data_dir as _data_dir


@dataclass(frozen=True)
class DatasetInfo:
    name: str
    splits: tuple[str, ...]
    shape: tuple[int, int, int]
    num_classes: int
    description: str
    loader: Callable[..., dict]


DATASETS: dict[str, DatasetInfo] = {
    d.name: d
    for d in [
        DatasetInfo(
            "fashion-mnist",
            ("train", "test"),
            (1, 28, 28),
            10,
            "Fashion-MNIST, 60k/10k grey 28x28 (Debian package or official IDX files)",
            fashion_mnist.load,
        ),
        DatasetInfo(
            "cifar10",
            ("train", "test"),
            (3, 32, 32),
            10,
            "CIFAR-10, 50k/10k RGB 32x32 (official pickles; offline: lossless test set, JPEG copy for train)",
            cifar10.load,
        ),
        DatasetInfo(
            "gtsrb",
            ("train", "val", "trainval", "test"),
            (3, 32, 32),
            43,
            "GTSRB traffic signs at 32x32, validation split by physical-sign track",
            gtsrb.load,
        ),
        DatasetInfo(
            "imagenet-samples",
            ("test",),
            (3, 224, 224),
            1000,
            "1,000 ImageNet photos, one per class, resize 256 + centre crop 224",
            imagenet_samples.load,
        ),
        DatasetInfo(
            "imagenet-val",
            ("test",),
            (3, 224, 224),
            1000,
            "1,300 ILSVRC-2012 validation images with labels, 227 px, centre crop 224",
            imagenet_val.load,
        ),
        DatasetInfo(
            "rp2-lisa-victims",
            ("test",),
            (3, 32, 32),
            18,
            "RP2's 40 LISA stop signs (label 14 of LISA-CNN's 18 outputs)",
            rp2.load_lisa_victims,
        ),
        DatasetInfo(
            "rp2-gtsrb-victims",
            ("test",),
            (3, 256, 256),
            43,
            "RP2's 40 GTSRB-attack stop signs at 256 px (label 14, GTSRB Stop)",
            rp2.load_gtsrb_victims,
        ),
        DatasetInfo(
            "image-folder",
            ("all",),
            (3, 0, 0),
            0,
            "your own images: root/<class>/<file>; pass path=...",
            image_folder.load,
        ),
    ]
}


def load_dataset(
    name: str,
    split: str = "test",
    *,
    limit: int | None = None,
    seed: int = 0,
    stratified: bool = True,
    dtype: str = "float32",
    data_dir: str | os.PathLike | None = None,
    **kwargs,
) -> ImageDataset:
    """Load a dataset split as NCHW images in [0, 1] (``dtype="float32"``) or 0..255 (``"uint8"``).

    ``limit`` takes a deterministic (``seed``), by default class-stratified subset. ``data_dir``: the data
    directory to read from (default: :func:`advguard.data.data_dir`; ``data_dir_`` is its deprecated old name).
    Extra keyword arguments go to the dataset's loader (e.g. ``source="lossless"`` / ``"jpeg"`` /
    ``"pickle"`` for CIFAR-10, ``path=...`` for ``image-folder``, ``size=32`` for ``rp2-gtsrb-victims``); a keyword
    neither this function nor the loader takes raises a :class:`~advguard.ParameterTypeError` naming the closest
    valid one (``sorce=``: did you mean ``source``?).
    """
    if not isinstance(name, str) or name not in DATASETS:
        raise unknown_name("dataset", str(name), list(DATASETS))
    info = DATASETS[name]
    if "data_dir_" in kwargs:  # the old name (``data_dir`` was taken by the function)
        if data_dir is not None:
            raise ParameterTypeError("load_dataset: pass data_dir= only (data_dir_ is its deprecated old name)")
        warnings.warn("load_dataset(data_dir_=...) is deprecated: use data_dir=", DeprecationWarning, stacklevel=2)
        data_dir = kwargs.pop("data_dir_")
    own = ("split", "limit", "seed", "stratified", "dtype", "data_dir")
    check_keywords(f"load_dataset({name!r})", kwargs, [*own, *_loader_keywords(info)])
    check_choice("dtype", dtype, ("float32", "uint8"), where="load_dataset")
    if limit is not None:
        limit = check_number("limit", limit, lo=1, integer=True, where="load_dataset")
    if name == "image-folder":
        if "path" not in kwargs:
            raise ParameterError("image-folder needs path=<folder with one sub-folder per class>")
        split = "all"
        raw = info.loader(kwargs.pop("path"), **kwargs)
    else:
        if not isinstance(split, str) or split not in info.splits:
            import difflib

            close = difflib.get_close_matches(str(split), info.splits, n=1)
            raise ParameterError(
                f"dataset {name!r} has no split {split!r}; splits: {', '.join(info.splits)}."
                + (f" Did you mean {close[0]!r}?" if close else "")
            )
        raw = info.loader(_data_dir(data_dir), split, **kwargs)
    positions = raw.get("positions", np.arange(len(raw["y"])))
    ds = ImageDataset(
        x=raw["x"],
        y=raw["y"],
        classes=list(raw["classes"]),
        name=name,
        split=split,
        source=raw["source"],
        indices=np.asarray(positions, np.int64),
        groups=raw.get("groups"),
        meta=raw.get("meta", {}),
    )
    if limit is not None:
        ds = ds.take(subset_indices(ds.y, limit, seed=seed, stratified=stratified))
    return ds.as_float() if dtype == "float32" else ds


def _loader_keywords(info: DatasetInfo) -> list[str]:
    """The keyword arguments ``info``'s loader takes beyond the data directory and the split (``path`` too for
    ``image-folder``)."""
    params = list(inspect.signature(info.loader).parameters.values())
    skip = {"root", "split"}
    return [p.name for p in params if p.name not in skip and p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)]
