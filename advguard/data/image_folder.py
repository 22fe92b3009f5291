"""A user's own images: ``root/<class name>/<image files>`` (like torchvision's ImageFolder).

Every file is read with :func:`advguard.data.imageio.read_image` (every mode read correctly or refused, EXIF
orientation applied, strict decoding, decoded-size bound); the first bad file raises an InputError naming it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import DatasetNotFoundError
from .imageio import load_image_files

EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".webp", ".tif", ".tiff"}


def load(
    path: Path,
    size: tuple[int, int] | None = None,
    mode: str = "RGB",
    resize: int | None = None,
    crop: int | None = None,
) -> dict:
    root = Path(path).expanduser()
    if root.exists() and not root.is_dir():
        raise DatasetNotFoundError(f"image folder {root} is a file, not a folder (expected root/<class>/<image>)")
    if not root.is_dir():
        raise DatasetNotFoundError(f"image folder {root} does not exist")
    classes = sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not classes:
        raise DatasetNotFoundError(f"{root} has no class sub-folders (expected root/<class>/<image>)")
    paths, labels = [], []
    for c, name in enumerate(classes):
        files = sorted(p for p in (root / name).iterdir() if p.suffix.lower() in EXTENSIONS)
        paths += files
        labels += [c] * len(files)
    if not paths:
        raise DatasetNotFoundError(f"no image files ({', '.join(sorted(EXTENSIONS))}) under {root}")
    x = load_image_files(paths, mode, size=size, resize=resize, crop=crop, desc=f"read {root.name}")
    return dict(
        x=x,
        y=np.asarray(labels, np.int64),
        classes=classes,
        source=f"image-folder:{root}",
        meta={"files": [str(p) for p in paths]},
    )
