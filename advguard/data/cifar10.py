"""CIFAR-10 (Krizhevsky 2009): official python-pickle batches, or the public JPEG copy from the mirror.

Source order (``source="auto"``): official pickles if present in the data dir, else the
JPEG copy if unpacked there, else download the official pickles. The JPEG copy is
quality ~75, so pixels differ from the pickles by ~7/255 on average; the result's
``source`` says which one was loaded ("cifar10-pickle" or "cifar10-jpeg").
"""
from __future__ import annotations

import pickle
import tarfile
from pathlib import Path

import numpy as np

from ..errors import DatasetNotFoundError
from .cache import cached_arrays
from .fetch import _safe_extract, download, verify_folder
from .imageio import load_image_files

CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
MD5 = "c58f30108f718f92721af3b95e74349a"
PICKLE_DIR = "cifar-10-batches-py"
JPEG_DIR = "cifar10-jpeg"


def _read_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Read one official batch file. The format is a pickled dict of numpy arrays and lists.

    The official batches are pickles; we load them with a restricted unpickler that only
    allows the numpy types the files contain, so a tampered file cannot run code.
    """

    class _Restricted(pickle.Unpickler):
        ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
                   ("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "scalar"),
                   ("numpy._core.multiarray", "scalar"), ("_codecs", "encode")}

        def find_class(self, module: str, name: str):  # type: ignore[override]
            if (module, name) in self.ALLOWED:
                return super().find_class(module, name)
            raise pickle.UnpicklingError(f"forbidden global {module}.{name} in {path}")

    try:
        with open(path, "rb") as f:
            d = _Restricted(f, encoding="bytes").load()
        x = np.asarray(d[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32)
        y = np.asarray(d[b"labels"], dtype=np.int64)
    except (OSError, EOFError, KeyError, ValueError, pickle.UnpicklingError) as e:
        raise DatasetNotFoundError(f"corrupt CIFAR-10 batch {path}: {e}") from e
    return x, y


def _load_pickles(d: Path, split: str) -> dict[str, np.ndarray]:
    names = [f"data_batch_{i}" for i in range(1, 6)] if split == "train" else ["test_batch"]
    parts = [_read_batch(d / n) for n in names]
    return {"x": np.concatenate([p[0] for p in parts]), "y": np.concatenate([p[1] for p in parts])}


def _load_jpegs(d: Path, split: str) -> dict[str, np.ndarray]:
    paths, labels = [], []
    for c, name in enumerate(CLASSES):
        folder = d / split / name
        if not folder.is_dir():
            raise DatasetNotFoundError(f"CIFAR-10 JPEG copy is incomplete: {folder} is missing. Re-run `advguard setup`.")
        files = sorted(folder.glob("*.jpg"), key=lambda p: (len(p.stem), p.stem))
        paths += files
        labels += [c] * len(files)
    return {"x": load_image_files(paths, "RGB", size=(32, 32), desc=f"decode CIFAR-10 JPEG {split}"),
            "y": np.asarray(labels, dtype=np.int64)}


def load(root: Path, split: str, source: str = "auto", url: str | None = URL, md5: str | None = MD5) -> dict:
    pickles, jpegs = root / PICKLE_DIR, root / JPEG_DIR
    if source == "auto":
        source = "pickle" if (pickles / "test_batch").exists() else "jpeg" if jpegs.is_dir() else "pickle"
    if source == "pickle":
        if not (pickles / "test_batch").exists():
            if url is None:
                raise DatasetNotFoundError(f"CIFAR-10 pickles not found in {pickles}.")
            archive = download(url, root / "cifar-10-python.tar.gz", md5=md5)
            with tarfile.open(archive) as tar:
                _safe_extract(tar, root)
        arrays = _load_pickles(pickles, split)
    elif source == "jpeg":
        if not jpegs.is_dir():
            raise DatasetNotFoundError(
                f"CIFAR-10 JPEG copy not found in {jpegs}. Run `advguard setup` to unpack the offline mirror."
            )
        # A cheap check (file count) on every load; the full one (every file, its size) before decoding.
        marker = verify_folder(jpegs, full=False)

        def build() -> dict[str, np.ndarray]:
            verify_folder(jpegs, full=True)
            return _load_jpegs(jpegs, split)

        # The decoded cache is named after the verified archive: caches decoded from a folder before it
        # was verified (possibly incomplete) are never used again.
        for legacy in (f"cifar10-jpeg-{split}.npz", f"cifar10-jpeg-{split}.npz.sha256"):
            (root / "cache" / legacy).unlink(missing_ok=True)
        arrays = cached_arrays(root / "cache" / f"cifar10-jpeg-{split}-{marker['sha256'][:12]}.npz", build)
    else:
        raise ValueError(f"unknown CIFAR-10 source {source!r}; use 'auto', 'pickle' or 'jpeg'")
    return dict(x=arrays["x"], y=arrays["y"], classes=CLASSES, source=f"cifar10-{source}")
