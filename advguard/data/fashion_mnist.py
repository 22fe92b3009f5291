"""Fashion-MNIST (Xiao et al. 2017): gzipped IDX files from Debian's package, the data dir, or the official host."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np

from ..errors import DatasetNotFoundError
from .fetch import download

CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")
BASE_URL = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"
FILES = {  # name -> md5 published with the dataset
    "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
    "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
    "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
    "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
}


def read_idx(path: Path) -> np.ndarray:
    """Parse a (gzipped) IDX file of unsigned bytes; raises a clear error on a corrupt file."""
    opener = gzip.open if str(path).endswith(".gz") else open
    try:
        with opener(path, "rb") as f:
            data = f.read()
    except (OSError, EOFError) as e:
        raise DatasetNotFoundError(f"corrupt IDX file {path}: {e}") from e
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 0x08:
        raise DatasetNotFoundError(f"{path} is not an unsigned-byte IDX file (bad magic number)")
    ndim = data[3]
    dims = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    offset = 4 + 4 * ndim
    if len(data) - offset != int(np.prod(dims)):
        raise DatasetNotFoundError(f"{path} is truncated: header says {dims}, found {len(data) - offset} bytes")
    return np.frombuffer(data, dtype=np.uint8, offset=offset).reshape(dims)


def find_files(root: Path, url: str | None = BASE_URL) -> Path:
    """Folder holding the four IDX files: Debian's, then ``root/fashion-mnist``, else download there."""
    for d in (DEBIAN_DIR, root / "fashion-mnist"):
        if all((d / n).exists() for n in FILES):
            return d
    if url is None:
        raise DatasetNotFoundError(
            "Fashion-MNIST not found. Install it with `apt-get install dataset-fashion-mnist` "
            f"or put the four IDX .gz files in {root / 'fashion-mnist'}."
        )
    target = root / "fashion-mnist"
    for n, md5 in FILES.items():
        download(url + n, target / n, md5=md5)
    return target


def load(root: Path, split: str, url: str | None = BASE_URL) -> dict:
    d = find_files(root, url)
    prefix = "train" if split == "train" else "t10k"
    x = read_idx(d / f"{prefix}-images-idx3-ubyte.gz")
    y = read_idx(d / f"{prefix}-labels-idx1-ubyte.gz").astype(np.int64)
    if len(x) != len(y):
        raise DatasetNotFoundError(f"Fashion-MNIST {split}: {len(x)} images but {len(y)} labels in {d}")
    return dict(x=x[:, None], y=y, classes=CLASSES, source="fashion-mnist-idx", meta={"path": str(d)})
