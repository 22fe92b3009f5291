"""The RP2 authors' material (Eykholt et al. 2018, "Robust Physical-World Attacks on Deep Learning Models").

The offline mirror's ``rp2-lisa.tar.gz`` (GitHub evtimovi/robust_physical_perturbations, MIT; the licence
stays in the unpacked folder as ``LICENSE``) unpacks to ``rp2-lisa/`` (:func:`rp2_dir`):

* ``lisa-victim-32/<n>.png``: the 40 stop-sign photos attacked on LISA-CNN, 32x32 RGB
  -> dataset ``rp2-lisa-victims`` (label :data:`LISA_STOP` = 14 of LISA-CNN's 18 outputs, classes
  :func:`lisa_classes`);
* ``gtsrb-victim-256/<n>.png``: the 40 stop-sign photos attacked on GTSRB-CNN, 256x256 RGB
  -> dataset ``rp2-gtsrb-victims`` (label :data:`GTSRB_STOP` = 14, GTSRB's 43 classes);
* ``mask_rect.png``: the "rectangles" sticker mask, 32x32 RGB -> :func:`rectangles_mask`;
* ``lisa-classes.txt`` (17 names: output i >= 1 of LISA-CNN is line i; output 0 has no name),
  ``lisa-cnn.npz`` (LISA-CNN's weights, laid out for PyTorch; loaded by the model zoo from
  :func:`rp2_dir`) and ``tf-checkpoint/`` (the original).

Both victim sets hold files ``1.png`` .. ``41.png`` (no ``14.png``), loaded in numeric order;
``meta["files"][i]`` is the file of ``indices[i]``. Their one split is ``test``. ``size=(h, w)`` (or an
int) resizes the images on load (bilinear, Pillow), e.g. ``size=32`` for the GTSRB victims.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image

from ..errors import DatasetNotFoundError, ParameterError
from . import gtsrb
from .fetch import verify_folder
from .imageio import load_image_files
from .paths import unpacked

FOLDER = "rp2-lisa"
LISA_VICTIMS = "lisa-victim-32"
GTSRB_VICTIMS = "gtsrb-victim-256"
MASK_RECT = "mask_rect.png"
#: LISA-CNN's output for "stop" (line 14 of lisa-classes.txt) and GTSRB's Stop class.
LISA_STOP = 14
GTSRB_STOP = gtsrb.STOP
#: the name given to LISA-CNN's output 0, which lisa-classes.txt does not name
UNNAMED = "(output 0, unnamed)"


def rp2_dir(root: str | os.PathLike | None = None, full: bool = False) -> Path:
    """The unpacked ``rp2-lisa`` folder (victims, mask, ``lisa-cnn.npz``, ``lisa-classes.txt``, ``LICENSE``).

    Verified against its manifest (``full=False``: file count; ``full=True``: every file's size); raises
    :class:`~advguard.errors.DatasetNotFoundError` naming ``advguard setup`` when absent or incomplete.
    ``root``: the data directory (default: :func:`advguard.data.data_dir`)."""
    return unpacked(FOLDER, root, full=full)


def lisa_classes(root: str | os.PathLike | None = None) -> list[str]:
    """LISA-CNN's 18 class names by output index: ``[UNNAMED] + lines of lisa-classes.txt``."""
    path = rp2_dir(root) / "lisa-classes.txt"
    names = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if len(names) != 17 or names[LISA_STOP - 1] != "stop":
        raise DatasetNotFoundError(
            f"{path} does not hold the 17 LISA class names with 'stop' on line {LISA_STOP}. Re-run `advguard setup`."
        )
    return [UNNAMED] + names


def _size(size) -> tuple[int, int] | None:
    if size is None:
        return None
    if isinstance(size, (int, np.integer)) and not isinstance(size, bool):
        size = (int(size), int(size))
    if (
        not isinstance(size, (tuple, list))
        or len(size) != 2
        or not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) and v > 0 for v in size)
    ):
        raise ParameterError(f"size must be a positive int or (height, width), got {size!r}")
    return int(size[0]), int(size[1])


def rectangles_mask(size: tuple[int, int] | int = (32, 32), root: str | os.PathLike | None = None) -> np.ndarray:
    """The RP2 "rectangles" sticker mask as a boolean ``(H, W)`` array (True where the sticker goes).

    ``mask_rect.png`` is 32x32 RGB: 30 pixels at 255 (2.9 % of the image) and a few stray pixels at 1 or 2,
    so it is thresholded at 128 (on the grey level). Other sizes are resized from the thresholded 32x32
    mask with **nearest neighbour** (Pillow), so the mask stays binary and scales with the image."""
    hw = _size(size)
    path = rp2_dir(root) / MASK_RECT
    try:
        with Image.open(path) as im:
            grey = np.asarray(im.convert("L"))
    except OSError as e:
        raise DatasetNotFoundError(f"cannot read {path} ({e}). Re-run `advguard setup`.") from e
    mask = grey >= 128
    if hw is not None and hw != mask.shape:
        mask = np.asarray(Image.fromarray(mask.astype(np.uint8) * 255).resize((hw[1], hw[0]), Image.NEAREST)) >= 128
    return mask


def _victims(root: Path, sub: str, label: int, classes: list[str], source: str, size) -> dict:
    folder = rp2_dir(root)
    verify_folder(folder, full=True)  # 86 files: cheap enough on every load (nothing is cached)
    files = sorted((folder / sub).glob("*.png"), key=lambda p: (len(p.stem), p.stem))
    if len(files) != 40:
        raise DatasetNotFoundError(f"{folder / sub} holds {len(files)} images, expected 40. Re-run `advguard setup`.")
    x = load_image_files(files, "RGB", size=_size(size), desc=f"read {sub}")
    return dict(
        x=x,
        y=np.full(len(files), label, np.int64),
        classes=classes,
        source=source,
        meta={"files": [p.name for p in files]},
    )


def load_lisa_victims(root: Path, split: str, size=None) -> dict:
    """``rp2-lisa-victims``: the 40 LISA stop signs of RP2 (32x32), label 14 of LISA-CNN's 18 outputs."""
    return _victims(root, LISA_VICTIMS, LISA_STOP, lisa_classes(root), "rp2-lisa-victim-32", size)


def load_gtsrb_victims(root: Path, split: str, size=None) -> dict:
    """``rp2-gtsrb-victims``: the 40 GTSRB-attack stop signs of RP2 (256x256), label 14 (GTSRB Stop)."""
    return _victims(root, GTSRB_VICTIMS, GTSRB_STOP, list(gtsrb.CLASSES), "rp2-gtsrb-victim-256", size)
