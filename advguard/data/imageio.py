"""Reading image files safely (size limits, clear errors) and the resizing used by loaders."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from ..errors import InputError

#: Refuse files larger than this many pixels (decompression bombs) unless raised explicitly.
MAX_PIXELS = 64_000_000
MAX_FILE_BYTES = 200 * 1024 * 1024


def read_image(path: str | os.PathLike, mode: str = "RGB", max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Read an image file as an HWC uint8 array in ``mode`` ("RGB" or "L").

    Raises :class:`InputError` naming the file for a missing, unreadable, truncated
    or oversized image instead of a deep Pillow traceback.
    """
    p = Path(path)
    if not p.is_file():
        raise InputError(f"image file not found: {p}")
    size = p.stat().st_size
    if size == 0:
        raise InputError(f"image file is empty: {p}")
    if size > MAX_FILE_BYTES:
        raise InputError(f"image file is too large ({size / 2**20:.0f} MiB > {MAX_FILE_BYTES // 2**20} MiB): {p}")
    try:
        with Image.open(p) as im:
            w, h = im.size
            if w * h > max_pixels:
                raise InputError(
                    f"image is too large ({w}x{h} = {w * h / 1e6:.0f} Mpixel > {max_pixels / 1e6:.0f} Mpixel): {p}"
                )
            arr = np.asarray(im.convert(mode))
    except InputError:
        raise
    except (UnidentifiedImageError, OSError, SyntaxError, Image.DecompressionBombError) as e:
        raise InputError(f"cannot read image {p}: {e}") from e
    return arr if arr.ndim == 3 else arr[:, :, None]


def resize_center_crop(img: np.ndarray, resize: int, crop: int) -> np.ndarray:
    """Resize the short side to ``resize`` (bilinear, Pillow) then take a ``crop`` x ``crop`` centre crop."""
    im = Image.fromarray(img if img.shape[2] == 3 else img[:, :, 0])
    w, h = im.size
    s = resize / min(w, h)
    nw, nh = max(crop, round(w * s)), max(crop, round(h * s))
    im = im.resize((nw, nh), Image.BILINEAR)
    left, top = (nw - crop) // 2, (nh - crop) // 2
    out = np.asarray(im.crop((left, top, left + crop, top + crop)))
    return out if out.ndim == 3 else out[:, :, None]


def resize_exact(img: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize to (height, width) exactly (bilinear, Pillow), keeping HWC layout."""
    im = Image.fromarray(img if img.shape[2] == 3 else img[:, :, 0])
    out = np.asarray(im.resize((size[1], size[0]), Image.BILINEAR))
    return out if out.ndim == 3 else out[:, :, None]


def load_image_files(
    paths: list[Path], mode: str = "RGB", size: tuple[int, int] | None = None,
    resize: int | None = None, crop: int | None = None, desc: str = "read images",
) -> np.ndarray:
    """Read many image files into one NCHW uint8 array (parallel threads; Pillow releases the GIL)."""
    from concurrent.futures import ThreadPoolExecutor

    from tqdm.auto import tqdm

    def one(p: Path) -> np.ndarray:
        a = read_image(p, mode)
        if crop is not None:
            a = resize_center_crop(a, resize or crop, crop)
        elif size is not None and a.shape[:2] != tuple(size):
            a = resize_exact(a, size)
        return a

    with ThreadPoolExecutor(max_workers=max(1, min(8, (os.cpu_count() or 1) * 2))) as ex:
        imgs = list(tqdm(ex.map(one, paths, chunksize=64), total=len(paths), desc=desc, leave=False,
                         disable=len(paths) < 2000))
    shapes = {a.shape for a in imgs}
    if len(shapes) > 1:
        raise InputError(f"images have different sizes {sorted(shapes)[:3]}...; pass size= to resize them.")
    return np.stack(imgs).transpose(0, 3, 1, 2).copy()
