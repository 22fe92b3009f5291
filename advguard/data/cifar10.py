"""CIFAR-10 (Krizhevsky 2009): official python-pickle batches, the lossless test set, or the public JPEG copy.

Sources (``source=``; the result's ``source`` field records which one was loaded):

* ``"pickle"`` -> ``"cifar10-pickle"``: the official batches (both splits, official order), downloaded
  on first use when the machine has internet.
* ``"lossless"`` -> ``"cifar10-lossless"``: the official CIFAR-10 **test** set with its original pixels,
  ``cifar10-test.npz`` of the offline mirror (issue #21; copied into the data dir by ``advguard setup``).
  Test split only: there is no lossless train split offline (asking for one is a
  :class:`~advguard.errors.ParameterError`). **Order:** the official order of the test batch is lost; the
  10,000 images are sorted by class, then by their source file name (:func:`lossless_filenames`), so
  position ``i`` is *not* official test image ``i``. Subsets (``limit=``) are still deterministic (they
  depend on the labels and the seed only) but differ from subsets of the pickles.
* ``"jpeg"`` -> ``"cifar10-jpeg"``: the public JPEG copy (quality ~75, pixels differ from the official
  ones by ~7/255 on average), both splits; the offline train split.
* ``"auto"`` (default): the official pickles if present in the data dir; else, for the test split, the
  lossless test set if set up; else the JPEG copy if unpacked; else download the official pickles.
"""

from __future__ import annotations

import pickle
import tarfile
from pathlib import Path

import numpy as np

from ..errors import DatasetNotFoundError, ParameterError
from .cache import cached_arrays
from .fetch import _safe_extract, download, verify_copy, verify_folder
from .imageio import load_image_files

CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
MD5 = "c58f30108f718f92721af3b95e74349a"
PICKLE_DIR = "cifar-10-batches-py"
JPEG_DIR = "cifar10-jpeg"
LOSSLESS_FILE = "cifar10-test.npz"
SOURCES = ("auto", "pickle", "lossless", "jpeg")


def _read_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Read one official batch file. The format is a pickled dict of numpy arrays and lists.

    The official batches are pickles; we load them with a restricted unpickler that only
    allows the numpy types the files contain, so a tampered file cannot run code.
    """

    class _Restricted(pickle.Unpickler):
        ALLOWED = {
            ("numpy.core.multiarray", "_reconstruct"),
            ("numpy._core.multiarray", "_reconstruct"),
            ("numpy", "ndarray"),
            ("numpy", "dtype"),
            ("numpy.core.multiarray", "scalar"),
            ("numpy._core.multiarray", "scalar"),
            ("_codecs", "encode"),
        }

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
            raise DatasetNotFoundError(
                f"CIFAR-10 JPEG copy is incomplete: {folder} is missing. Re-run `advguard setup`."
            )
        files = sorted(folder.glob("*.jpg"), key=lambda p: (len(p.stem), p.stem))
        paths += files
        labels += [c] * len(files)
    return {
        "x": load_image_files(paths, "RGB", size=(32, 32), desc=f"decode CIFAR-10 JPEG {split}"),
        "y": np.asarray(labels, dtype=np.int64),
    }


def _read_lossless(path: Path, keys: tuple[str, ...]) -> dict[str, np.ndarray]:
    import zipfile
    import zlib

    verify_copy(path, full=False)  # marker and size; the zip's CRC-32 checks every member as it is read
    try:
        with np.load(path, allow_pickle=False) as f:
            out = {k: f[k] for k in keys}
    except (OSError, KeyError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as e:
        raise DatasetNotFoundError(
            f"corrupt CIFAR-10 test file {path} ({type(e).__name__}: {e}); re-run `advguard setup` to repair it."
        ) from e
    if "x" in out and (out["x"].shape != (10000, 32, 32, 3) or out["x"].dtype != np.uint8):
        raise DatasetNotFoundError(
            f"{path} holds x of shape {out['x'].shape} {out['x'].dtype}, expected "
            "(10000, 32, 32, 3) uint8; re-run `advguard setup`."
        )
    return out


def lossless_filenames(root: Path) -> list[str]:
    """The source file name of every image of the lossless test set, in its order (class, then file name)."""
    return [str(n) for n in _read_lossless(Path(root) / LOSSLESS_FILE, ("filenames",))["filenames"]]


def auto_source(root: Path, split: str) -> str:
    """What ``source="auto"`` loads for ``split``: "pickle" if the official batches are in ``root``, else
    "lossless" for the test split if ``cifar10-test.npz`` is there, else "jpeg" if the JPEG copy is unpacked,
    else "pickle" (downloaded on first use)."""
    root = Path(root)
    if (root / PICKLE_DIR / "test_batch").exists():
        return "pickle"
    if split == "test" and (root / LOSSLESS_FILE).exists():
        return "lossless"
    return "jpeg" if (root / JPEG_DIR).is_dir() else "pickle"


def load(root: Path, split: str, source: str = "auto", url: str | None = URL, md5: str | None = MD5) -> dict:
    pickles, jpegs, lossless = root / PICKLE_DIR, root / JPEG_DIR, root / LOSSLESS_FILE
    if source not in SOURCES:
        raise ParameterError(f"unknown CIFAR-10 source {source!r}; use one of {', '.join(SOURCES)}")
    if source == "auto":
        source = auto_source(root, split)
    if source == "pickle":
        if not (pickles / "test_batch").exists():
            if url is None:
                raise DatasetNotFoundError(f"CIFAR-10 pickles not found in {pickles}.")
            archive = download(url, root / "cifar-10-python.tar.gz", md5=md5)
            with tarfile.open(archive) as tar:
                _safe_extract(tar, root)
        arrays = _load_pickles(pickles, split)
    elif source == "lossless":
        if split != "test":
            raise ParameterError(
                f"CIFAR-10 has no lossless {split!r} split offline: {LOSSLESS_FILE} holds the test set only. "
                "Use source='jpeg' (the JPEG copy) or source='pickle' (official batches, needs internet) for "
                "the train split."
            )
        a = _read_lossless(lossless, ("x", "y"))
        arrays = {"x": a["x"].transpose(0, 3, 1, 2).copy(), "y": a["y"].astype(np.int64)}
    else:
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
    return dict(x=arrays["x"], y=arrays["y"], classes=CLASSES, source=f"cifar10-{source}")
