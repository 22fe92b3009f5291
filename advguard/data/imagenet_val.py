"""1,300 ILSVRC-2012 **validation** images with their labels (``imagenet-val``), centre crop 224 of 227.

The offline mirror's ``imagenet-val1300.tar.gz`` (GitHub VeriSilicon/acuity-dataset; ImageNet's terms
apply) unpacks to ``imagenet-val1300/``: ``images/ILSVRC2012_val_NNNNNNNN.JPEG`` (pre-resized to 227x227),
``dataset.txt`` (``file, label`` per line, standard 0..999 class index) and ``synset_words.txt`` (wnid and
names in index order). Unlike ``imagenet-samples`` these are real validation images.

Preprocessing: the images are already 227x227; the loader takes the **centre 224x224 crop** (1 pixel off
the top and left, 2 off the bottom and right), no resize (``size=224, resize=227``; an image of another
size would first have its short side resized to ``resize``, bilinear). Order: the lines of ``dataset.txt``
(sorted by file name, i.e. by validation image number); ``meta["files"][i]`` is the file of
``indices[i]``. Class names: the first name of each ``synset_words.txt`` line (the same 1,000 names, in
the same order, as ``imagenet-samples``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import DatasetNotFoundError
from .cache import cached_arrays
from .fetch import verify_folder
from .imageio import load_image_files

FOLDER = "imagenet-val1300"
NUM_IMAGES = 1300


def read_synsets(folder: Path) -> list[tuple[str, str]]:
    """``[(wnid, first name), ...]`` in class-index order, from ``synset_words.txt``."""
    path = Path(folder) / "synset_words.txt"
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as e:
        raise DatasetNotFoundError(f"{path} is missing or unreadable ({e}). Run `advguard setup`.") from e
    out = []
    for line in lines:
        wnid, _, names = line.strip().partition(" ")
        out.append((wnid, names.split(",")[0].strip()))
    if len(out) != 1000:
        raise DatasetNotFoundError(f"{path} lists {len(out)} classes, expected 1000. Re-run `advguard setup`.")
    return out


def read_labels(folder: Path) -> list[tuple[str, int]]:
    """``[(file name, label), ...]`` from ``dataset.txt``, in its order."""
    path = Path(folder) / "dataset.txt"
    try:
        lines = [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        rows = [(f.strip(), int(lab)) for f, lab in (line.split(",") for line in lines)]
    except (OSError, ValueError) as e:
        raise DatasetNotFoundError(f"{path} is missing or malformed ({e}). Re-run `advguard setup`.") from e
    if any(not 0 <= lab < 1000 for _, lab in rows):
        raise DatasetNotFoundError(f"{path} has labels outside 0..999. Re-run `advguard setup`.")
    return rows


def load(root: Path, split: str, size: int = 224, resize: int = 227) -> dict:
    folder = Path(root) / FOLDER
    if not folder.exists():
        raise DatasetNotFoundError(
            f"ImageNet validation images not found in {folder}. Run `advguard setup` "
            "to unpack the offline mirror (imagenet-val1300.tar.gz)."
        )
    # A cheap check (file count) on every load; the full one (every file, its size) before decoding.
    marker = verify_folder(folder, full=False)
    classes = [name for _, name in read_synsets(folder)]
    rows = read_labels(folder)

    def build() -> dict[str, np.ndarray]:
        verify_folder(folder, full=True)
        x = load_image_files(
            [folder / "images" / f for f, _ in rows], "RGB", resize=resize, crop=size, desc="decode ImageNet val"
        )
        return {"x": x, "y": np.asarray([lab for _, lab in rows], np.int64)}

    # Named after the verified archive: a cache decoded from another version of the folder is never used.
    arrays = cached_arrays(root / "cache" / f"imagenet-val1300-{resize}-{size}-{marker['sha256'][:12]}.npz", build)
    return dict(
        x=arrays["x"],
        y=arrays["y"],
        classes=classes,
        source="imagenet-val1300",
        meta={"files": [f for f, _ in rows], "crop": f"centre {size} of {resize}"},
    )
