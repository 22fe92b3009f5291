"""Reading image files safely (size limits, every mode, strict decoding, clear errors) and the loaders' resizing.

:func:`read_image` is what ``advguard predict`` and the image-folder loader use. It refuses, with an
:class:`~advguard.errors.InputError` naming the file, anything it cannot read *correctly*: a missing file, a
directory, a special file, an empty or oversized file, a format outside :data:`FORMATS`, an image whose
decoding would need more than :data:`MAX_DECODED_BYTES` of memory (checked from the header, before
decoding), a truncated file, a JPEG whose entropy-coded data libjpeg reports as corrupt, a decoder warning,
and a float image with values outside [0, 1].
"""

from __future__ import annotations

import io
import os
import re
import stat
import struct
import sys
import tempfile
import threading
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

from ..errors import ImageTooLargeError, InputError

#: Refuse files larger than this many pixels (decompression bombs) unless raised explicitly.
MAX_PIXELS = 64_000_000
#: Refuse files larger than this on disk.
MAX_FILE_BYTES = 200 * 1024 * 1024
#: Refuse images whose decoded buffers would exceed this, computed from the header before decoding: the
#: decoded image in Pillow's layout (4 bytes per RGB pixel), a converted copy when the mode changes, and the
#: returned array. 256 MiB admits a 24-Mpixel RGB photo (160 MiB) and refuses an 8000x8000 RGB image
#: (427 MiB). The process's measured peak is about twice this figure (Pillow copies the buffer on its way
#: into numpy): 321 MiB for the 24-Mpixel photo. Override per call (``max_bytes=``) or with
#: ``$ADVGUARD_MAX_IMAGE_MB``.
MAX_DECODED_BYTES = 256 * 2**20
#: Formats read_image opens (Pillow plugin names); anything else (EPS, PSD, ICO, ...) is refused.
FORMATS = ("PNG", "JPEG", "BMP", "DIB", "PPM", "WEBP", "TIFF", "GIF")  # JPEG also opens MPO files
#: libjpeg warnings that mean the compressed data is damaged (the pixels are partly invented).
_JPEG_CORRUPT = re.compile(
    r"Corrupt JPEG data|Premature end of JPEG file|Inconsistent progression sequence|"
    r"Bogus |JPEG datastream contains no image",
    re.IGNORECASE,
)

# Decoding runs under one lock: Pillow's truncated-image switch and Python's warning filters are global state,
# and the JPEG check redirects file descriptor 2 while libjpeg runs.
_DECODE_LOCK = threading.RLock()
_capture_file = None


def max_decoded_bytes() -> int:
    """The decoded-size limit in effect: ``$ADVGUARD_MAX_IMAGE_MB`` (MiB) if set, else :data:`MAX_DECODED_BYTES`."""
    env = os.environ.get("ADVGUARD_MAX_IMAGE_MB")
    if env:
        try:
            mb = float(env)
            if not mb > 0:
                raise ValueError
        except ValueError:
            raise InputError(f"$ADVGUARD_MAX_IMAGE_MB must be a positive number of MiB, got {env!r}") from None
        return int(mb * 2**20)
    return MAX_DECODED_BYTES


def _bytes_per_pixel(mode: str) -> int:
    """Bytes per pixel of a decoded image in Pillow's memory layout (3-band images use 4 bytes)."""
    if mode in ("1", "L", "P"):
        return 1
    if mode.startswith("I;16") or mode.startswith("BGR;1"):
        return 2
    if mode == "BGR;24":
        return 3
    return 4


def _decoded_bytes_estimate(im: Image.Image, mode: str) -> int:
    w, h = im.size
    native = _bytes_per_pixel(im.mode)
    out_ch = 3 if mode == "RGB" else 1
    converted = (
        0
        if im.mode == mode
        else _bytes_per_pixel(mode) + (8 if im.mode in ("I", "F") or im.mode.startswith("I;16") else 0)
    )
    return w * h * (native + converted + out_ch)


def _jpeg_warnings(data: bytes) -> list[str]:
    """libjpeg's warnings for ``data``: decoded by OpenCV's libjpeg-turbo (reduced to 1/8 scale, grey: the
    entropy-coded data is still read in full) with file descriptor 2 captured, because Pillow silences them.
    The caller holds ``_DECODE_LOCK``. Text other than libjpeg's is passed on to the real stderr."""
    import cv2

    global _capture_file
    if _capture_file is None:
        import atexit

        _capture_file = tempfile.TemporaryFile()
        atexit.register(_capture_file.close)
    cap = _capture_file
    cap.seek(0)
    cap.truncate()
    try:
        sys.stderr.flush()
    except (AttributeError, OSError, ValueError):
        pass
    try:
        saved = os.dup(2)
    except OSError:  # no stderr to redirect: decode without the check
        return []
    decoded = None
    try:
        os.dup2(cap.fileno(), 2)
        try:
            decoded = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_REDUCED_GRAYSCALE_8)
        finally:
            os.dup2(saved, 2)
    finally:
        os.close(saved)
    cap.seek(0)
    text = cap.read().decode("utf-8", "replace")
    found, other = [], []
    for line in text.splitlines():
        (found if _JPEG_CORRUPT.search(line) else other).append(line)
    if other:
        try:
            os.write(2, ("\n".join(other) + "\n").encode())
        except OSError:
            pass
    if decoded is None and not found:
        found.append("libjpeg could not decode the image data")
    return found


def _to_uint8(im: Image.Image, mode: str, p: str | Path) -> np.ndarray:
    """Convert a decoded image to an HxWxC uint8 array in ``mode`` ("RGB" or "L")."""
    if im.mode in ("I", "F") or im.mode.startswith("I;16"):
        a = np.asarray(im)
        if im.mode == "F":
            a = a.astype(np.float32, copy=False)
            if not np.isfinite(a).all() or a.min() < 0 or a.max() > 1:
                lo, hi = np.nanmin(a), np.nanmax(a)
                raise InputError(
                    f"cannot read image {p}: 32-bit float image with values outside [0, 1] "
                    f"(min {lo:.4g}, max {hi:.4g}{', NaN/inf present' if not np.isfinite(a).all() else ''}); "
                    "advguard reads float images only as [0, 1] intensities. Convert it to 8 or 16 bits."
                )
            g = np.rint(a * 255)
        else:  # 16-bit (I;16*) or 32-bit integer ("I", which Pillow also uses for 16-bit PNG/TIFF)
            if a.min() < 0 or a.max() > 65535:
                raise InputError(
                    f"cannot read image {p}: 32-bit integer image with values outside 0..65535 "
                    f"(min {a.min()}, max {a.max()}); only 8- and 16-bit intensities are read."
                )
            g = (a.astype(np.uint32) * 255 + 32767) // 65535  # round(v * 255 / 65535)
        g = g.astype(np.uint8)
        return np.repeat(g[:, :, None], 3, axis=2) if mode == "RGB" else g[:, :, None]
    if im.mode != mode:
        im = im.convert(mode)
    arr = np.asarray(im)
    return arr if arr.ndim == 3 else arr[:, :, None]


def read_image(
    path: str | os.PathLike, mode: str = "RGB", max_pixels: int = MAX_PIXELS, max_bytes: int | None = None
) -> np.ndarray:
    """Read an image file as an HWC uint8 array in ``mode`` ("RGB" or "L"), EXIF orientation applied.

    Modes: 8-bit grey, RGB, palette ("P", "PA"), 1-bit, CMYK and YCbCr are converted with Pillow; 16-bit
    ("I;16*", and "I" holding 0..65535) is scaled by 255/65535 with rounding; 32-bit float ("F") is read as
    intensities in [0, 1] (x 255, rounded) and refused when any value is outside [0, 1] or not finite.
    **Alpha** ("RGBA", "LA", "PA", palette transparency) is dropped: the colour channels are returned as
    stored, not composited onto a background (what Pillow's ``convert`` and torchvision's loaders do);
    composite the image yourself first if its transparent pixels matter. Multi-frame files give the first frame.

    Raises :class:`InputError` naming the file for: a missing file, a directory, a special file, an empty
    file or one larger than :data:`MAX_FILE_BYTES`, a format outside :data:`FORMATS`, more than
    ``max_pixels`` pixels, a decode needing more than ``max_bytes`` (default :func:`max_decoded_bytes`,
    checked from the header before decoding), a truncated or corrupt file (libjpeg's "corrupt data"
    warnings count: such a JPEG decodes to partly invented pixels), any warning Pillow emits while decoding,
    and the out-of-range float/integer images above.
    """
    if mode not in ("RGB", "L"):
        raise ValueError(f"mode must be 'RGB' or 'L', got {mode!r}")
    p = Path(path)
    try:
        st = p.stat()
    except FileNotFoundError:
        raise InputError(f"image file not found: {p}") from None
    except OSError as e:
        raise InputError(f"cannot read image {p}: {e.strerror or e}") from e
    if stat.S_ISDIR(st.st_mode):
        raise InputError(f"{p} is a directory, not an image file")
    if not stat.S_ISREG(st.st_mode):
        raise InputError(f"{p} is not a regular file (a device, FIFO or socket), not an image file")
    if st.st_size == 0:
        raise InputError(f"image file is empty: {p}")
    if st.st_size > MAX_FILE_BYTES:
        raise ImageTooLargeError(
            f"image file is too large ({st.st_size / 2**20:.0f} MiB > {MAX_FILE_BYTES // 2**20} MiB): {p}"
        )
    try:
        with open(p, "rb") as f:
            data = f.read(MAX_FILE_BYTES + 1)
    except OSError as e:
        raise InputError(f"cannot read image {p}: {e.strerror or e}") from e
    return decode_image_bytes(data, str(p), mode, max_pixels=max_pixels, max_bytes=max_bytes)


def decode_image_bytes(
    data: bytes,
    label: str,
    mode: str = "RGB",
    *,
    max_pixels: int = MAX_PIXELS,
    max_bytes: int | None = None,
    formats: tuple[str, ...] = FORMATS,
) -> np.ndarray:
    """Decode an image held in memory (an upload) exactly as :func:`read_image` decodes a file: the same checks,
    the same conversions, an HWC uint8 array in ``mode``. ``label`` names the image in error messages;
    ``formats`` (a subset of :data:`FORMATS`) narrows the formats opened. Too many pixels, or a decode needing
    more than ``max_bytes``, raise :class:`~advguard.errors.ImageTooLargeError` (an :class:`InputError`) before
    anything is decoded."""
    if mode not in ("RGB", "L"):
        raise ValueError(f"mode must be 'RGB' or 'L', got {mode!r}")
    unknown = sorted(set(formats) - set(FORMATS))
    if unknown or not formats:
        raise ValueError(f"formats must be a non-empty subset of {FORMATS}, got {formats!r}")
    p = label
    if len(data) == 0:
        raise InputError(f"image is empty: {p}")
    limit = max_decoded_bytes() if max_bytes is None else int(max_bytes)

    with _DECODE_LOCK:
        truncated_before = ImageFile.LOAD_TRUNCATED_IMAGES
        ImageFile.LOAD_TRUNCATED_IMAGES = False
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                arr, fmt = _decode(data, p, mode, max_pixels, limit, formats)
            pil_warnings = [w for w in caught if _from_pillow(w)]
            for w in caught:  # somebody else's warnings (another thread) go on as usual
                if w not in pil_warnings:
                    warnings.warn_explicit(w.message, w.category, w.filename, w.lineno, source=w.source)
            if pil_warnings:
                w = pil_warnings[0]
                if issubclass(w.category, Image.DecompressionBombWarning):
                    raise ImageTooLargeError(f"image is too large: {p} ({w.message})")
                raise InputError(f"cannot read image {p}: decoder warning: {w.message}")
            if fmt in ("JPEG", "MPO"):
                bad = _jpeg_warnings(data)
                if bad:
                    raise InputError(f"cannot read image {p}: corrupt JPEG data ({'; '.join(bad[:3])})")
        finally:
            ImageFile.LOAD_TRUNCATED_IMAGES = truncated_before
    return arr


def _from_pillow(w: warnings.WarningMessage) -> bool:
    fn = (w.filename or "").replace("\\", "/")
    return "/PIL/" in fn or issubclass(w.category, Image.DecompressionBombWarning)


def _decode(
    data: bytes, p: str, mode: str, max_pixels: int, limit: int, formats: tuple[str, ...] = FORMATS
) -> tuple[np.ndarray, str]:
    if not all(f in Image.OPEN for f in FORMATS):  # noqa: SIM102
        Image.init()  # register every plugin (MPO, WEBP, TIFF... are not pre-loaded)
    try:
        with Image.open(io.BytesIO(data), formats=formats) as im:
            fmt = im.format or ""
            w, h = im.size
            if w * h > max_pixels:
                raise ImageTooLargeError(
                    f"image is too large ({w}x{h} = {w * h / 1e6:.0f} Mpixel > {max_pixels / 1e6:.0f} Mpixel): {p}"
                )
            need = _decoded_bytes_estimate(im, mode)
            if need > limit:
                raise ImageTooLargeError(
                    f"image is too large to decode: {p} is {w}x{h} {im.mode} ({len(data) / 2**10:.0f} KiB on "
                    f"disk) and needs ~{need / 2**20:.0f} MiB decoded > the limit of {limit / 2**20:.0f} MiB "
                    "(raise it with max_bytes= or $ADVGUARD_MAX_IMAGE_MB)"
                )
            im.load()
            im = ImageOps.exif_transpose(im)
            return _to_uint8(im, mode, p), fmt
    except InputError:
        raise
    except UnidentifiedImageError:
        raise InputError(
            f"cannot read image {p}: not a {', '.join(formats[:-1])}{' or ' if len(formats) > 1 else ''}"
            f"{formats[-1]} file (or a damaged one)"
        ) from None
    except Image.DecompressionBombError as e:
        raise ImageTooLargeError(f"image is too large: {p} ({e})") from e
    except MemoryError as e:
        raise InputError(f"cannot read image {p}: out of memory while decoding") from e
    except (
        OSError,
        SyntaxError,
        ValueError,
        TypeError,
        IndexError,
        KeyError,
        struct.error,
        ZeroDivisionError,
        OverflowError,
        EOFError,
        AttributeError,
        RuntimeError,
    ) as e:
        # Pillow's plugins raise all of these on damaged files; none of them is a bug in the caller.
        raise InputError(f"cannot read image {p}: {type(e).__name__}: {e}") from e


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
    paths: list[Path],
    mode: str = "RGB",
    size: tuple[int, int] | None = None,
    resize: int | None = None,
    crop: int | None = None,
    desc: str = "read images",
) -> np.ndarray:
    """Read many image files into one NCHW uint8 array (threads: file reading and resizing run in parallel;
    decoding itself is serialised, see :func:`read_image`)."""
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
        imgs = list(
            tqdm(ex.map(one, paths, chunksize=64), total=len(paths), desc=desc, leave=False, disable=len(paths) < 2000)
        )
    shapes = {a.shape for a in imgs}
    if len(shapes) > 1:
        raise InputError(f"images have different sizes {sorted(shapes)[:3]}...; pass size= to resize them.")
    return np.stack(imgs).transpose(0, 3, 1, 2).copy()
