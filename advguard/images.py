"""Images from outside advguard: files, folders and PIL images as one float32 NCHW batch, sized explicitly.

:func:`load_images` is what :class:`~advguard.Classifier` (``predict``, ``logits``, ``probs``...) and the
detectors' ``fit`` / ``score`` / ``predict`` use when they are given something other than an array: a path
(``str`` or ``pathlib.Path``) to an image file or to a folder of them, a ``PIL.Image.Image``, or a list of
those. Files are read by :func:`advguard.data.read_image`, which refuses with an
:class:`~advguard.errors.InputError` naming the file anything it cannot read *correctly* (missing, empty,
truncated or corrupt files, formats outside :data:`advguard.data.imageio.FORMATS`, decompression bombs: more
than ``max_pixels`` pixels, Pillow's ``Image.MAX_IMAGE_PIXELS`` check, or a decode needing more than
``max_bytes``). Only Pillow's raster decoders for those formats run: no format that executes code (EPS,
which calls Ghostscript) is opened, and nothing is unpickled.

**Sizes are never changed silently.** With ``size=(H, W)``, an image of another size is refused (the error
names the file, its size and the policies) unless a ``resize`` policy is given:

- ``"resize"``: stretched to (H, W), bilinear (Pillow's, antialiased when shrinking); the aspect ratio changes.
- ``"center-crop"``: scaled (bilinear) so that it covers (H, W), then the centre (H, W) cut out
  (torchvision's ``Resize`` + ``CenterCrop`` for a square size); the aspect ratio is kept, the borders lost.

Every image that was resized is reported: an :class:`ImageResizedWarning` names them (``warn=False`` to
silence it) and ``return_info=True`` returns one :class:`ImageInfo` per image. :func:`resize_images` applies
the same policies to an array or tensor batch.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, overload

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from .errors import ImageTooLargeError, InputError, ParameterError, ParameterTypeError
from .validation import as_image_batch

__all__ = [
    "IMAGE_EXTENSIONS",
    "RESIZE_POLICIES",
    "ImageInfo",
    "ImageResizedWarning",
    "decode_image",
    "is_image_source",
    "load_images",
    "resize_images",
]

#: How an image of another size is brought to the model's input size (None: refuse it).
RESIZE_POLICIES = ("resize", "center-crop")
#: File name extensions read from a folder (lower case); other files in the folder are skipped.
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".dib", ".ppm", ".pgm", ".pbm", ".webp", ".tif", ".tiff", ".gif")


class ImageResizedWarning(UserWarning):
    """Some images were resized to the model's input size (the message names them)."""


@dataclass(frozen=True)
class ImageInfo:
    """Where one image of a :func:`load_images` batch came from and what was done to it.

    ``source``: the file path, or ``"<PIL image i>"``; ``original_size``: (H, W) as read (EXIF orientation
    applied); ``resized``: whether the ``resize`` policy changed it.
    """

    source: str
    original_size: tuple[int, int]
    resized: bool


PathLike = str | os.PathLike[str]
ImageSource = PathLike | Image.Image | Sequence[PathLike | Image.Image]


def is_image_source(x: Any) -> bool:
    """True for what :func:`load_images` reads: a path, a PIL image, or a non-empty list/tuple of them."""
    if isinstance(x, (str, os.PathLike, Image.Image)):
        return True
    if isinstance(x, (list, tuple)) and x:
        return all(isinstance(v, (str, os.PathLike, Image.Image)) for v in x)
    return False


def _check_read_args(size: Any, resize: Any, channels: Any) -> tuple[tuple[int, int] | None, str | None]:
    """The checked (size, resize policy) of a read, and its channels (1 or 3): what decode_image and load_images
    both take."""
    size = _check_size(size)
    policy = _check_policy(resize)
    if policy is not None and size is None:
        raise ParameterError(f"resize={policy!r} needs size=(H, W): the size to resize the images to")
    if isinstance(channels, bool) or channels not in (1, 3):
        raise ParameterError(f"channels must be 1 (greyscale) or 3 (RGB) to read image files, got {channels!r}")
    return size, policy


def _check_size(size: Any) -> tuple[int, int] | None:
    if size is None:
        return None
    if isinstance(size, (str, bytes)) or not hasattr(size, "__len__") or len(size) != 2:
        raise ParameterTypeError(f"size must be (H, W), two integers >= 1, or None, got {size!r}")
    out = []
    for v in size:
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
            raise ParameterError(f"size must be (H, W), two integers >= 1, or None, got {size!r}")
        out.append(int(v))
    return out[0], out[1]


def _check_policy(resize: Any) -> str | None:
    if resize is None:
        return None
    if not isinstance(resize, str) or resize not in RESIZE_POLICIES:
        raise ParameterError(f"resize must be one of {RESIZE_POLICIES} or None (refuse other sizes), got {resize!r}")
    return resize


def _expand(images: Any) -> list[Path | Image.Image]:
    """The individual images: folders are replaced by their image files (sorted by name)."""
    if isinstance(images, (str, os.PathLike, Image.Image)):
        items: list[Any] = [images]
    elif isinstance(images, (list, tuple)):
        items = list(images)
    else:
        raise InputError(
            "images must be a path (str or pathlib.Path) to an image file or folder, a PIL image, or a list of them, "
            f"got {type(images).__name__}"
        )
    if not items:
        raise InputError("images is an empty list")
    out: list[Path | Image.Image] = []
    for it in items:
        if isinstance(it, Image.Image):
            out.append(it)
        elif isinstance(it, (str, os.PathLike)):
            p = Path(it)
            if p.is_dir():
                files = sorted(
                    f for f in p.iterdir() if f.suffix.lower() in IMAGE_EXTENSIONS and not f.name.startswith(".")
                )
                if not files:
                    raise InputError(f"folder {p} holds no image files ({', '.join(IMAGE_EXTENSIONS)})")
                out.extend(files)
            else:
                out.append(p)
        else:
            raise InputError(f"images[{len(out)}] is a {type(it).__name__}, not a path or a PIL image")
    return out


def _pil_to_array(im: Image.Image, mode: str, label: str, max_pixels: int) -> np.ndarray:
    from .data.imageio import _to_uint8

    w, h = im.size
    if w * h > max_pixels:
        raise ImageTooLargeError(
            f"image is too large ({w}x{h} = {w * h / 1e6:.0f} Mpixel > {max_pixels / 1e6:.0f} Mpixel): {label}"
        )
    if w == 0 or h == 0:
        raise InputError(f"{label} has no pixels ({w}x{h})")
    try:
        return _to_uint8(im, mode, Path(label))
    except InputError:
        raise
    except (OSError, ValueError, TypeError) as e:
        raise InputError(f"cannot convert {label} (mode {im.mode}): {type(e).__name__}: {e}") from e


def _resized(a: np.ndarray, size: tuple[int, int], policy: str) -> np.ndarray:
    from .data.imageio import resize_exact

    if policy == "resize":
        return resize_exact(a, size)
    h, w = a.shape[:2]
    s = max(size[0] / h, size[1] / w)
    nh, nw = max(size[0], round(h * s)), max(size[1], round(w * s))
    b = resize_exact(a, (nh, nw)) if (nh, nw) != (h, w) else a
    top, left = (nh - size[0]) // 2, (nw - size[1]) // 2
    return np.ascontiguousarray(b[top : top + size[0], left : left + size[1]])


def _to_size(
    a: np.ndarray, label: str, size: tuple[int, int] | None, policy: str | None
) -> tuple[np.ndarray, ImageInfo]:
    """An HWC image brought to ``size`` by ``policy`` (refused, naming it, when it has another size and no policy)."""
    h, w = a.shape[:2]
    done = False
    if size is not None and (h, w) != size:
        if policy is None:
            raise InputError(
                f"{label} is {h}x{w} (HxW); the model expects {size[0]}x{size[1]}. Pass resize='resize' "
                "(stretch) or resize='center-crop' (keep the aspect ratio) to resize it explicitly "
                "(Classifier(..., resize=...) or advguard.images.load_images(..., resize=...))."
            )
        a, done = _resized(a, size, policy), True
    return a, ImageInfo(label, (h, w), done)


def decode_image(
    data: bytes,
    label: str,
    size: tuple[int, int] | None = None,
    resize: str | None = None,
    *,
    channels: int = 3,
    max_pixels: int | None = None,
    max_bytes: int | None = None,
    formats: tuple[str, ...] | None = None,
) -> tuple[np.ndarray, ImageInfo]:
    """One image held in memory (an upload's bytes) as a float32 CHW array in [0, 1] and its :class:`ImageInfo`,
    read and sized exactly as :func:`load_images` reads and sizes a file (the same decoder checks, the same
    ``size`` / ``resize`` policy, bit-identical pixels). ``label`` names the image in errors and in the info;
    ``formats`` narrows the Pillow formats opened (default: :data:`advguard.data.imageio.FORMATS`).

    Raises :class:`~advguard.errors.ImageTooLargeError` for too many pixels or decoded bytes (checked from the
    header, before decoding), :class:`~advguard.errors.InputError` for anything else it cannot read correctly or
    of the wrong size without a policy."""
    from .data.imageio import FORMATS, MAX_PIXELS, decode_image_bytes

    size, policy = _check_read_args(size, resize, channels)
    a = decode_image_bytes(
        data,
        label,
        "RGB" if channels == 3 else "L",
        max_pixels=MAX_PIXELS if max_pixels is None else int(max_pixels),
        max_bytes=max_bytes,
        formats=FORMATS if formats is None else tuple(formats),
    )
    a, info = _to_size(a, label, size, policy)
    return a.transpose(2, 0, 1).astype(np.float32) / np.float32(255.0), info


@overload
def load_images(
    images: ImageSource,
    size: tuple[int, int] | None = None,
    resize: str | None = None,
    *,
    channels: int = 3,
    return_info: Literal[False] = False,
    warn: bool = True,
    max_pixels: int | None = None,
    max_bytes: int | None = None,
) -> np.ndarray: ...
@overload
def load_images(
    images: ImageSource,
    size: tuple[int, int] | None = None,
    resize: str | None = None,
    *,
    channels: int = 3,
    return_info: Literal[True],
    warn: bool = True,
    max_pixels: int | None = None,
    max_bytes: int | None = None,
) -> tuple[np.ndarray, list[ImageInfo]]: ...
def load_images(
    images: ImageSource,
    size: tuple[int, int] | None = None,
    resize: str | None = None,
    *,
    channels: int = 3,
    return_info: bool = False,
    warn: bool = True,
    max_pixels: int | None = None,
    max_bytes: int | None = None,
) -> np.ndarray | tuple[np.ndarray, list[ImageInfo]]:
    """Read image files, folders or PIL images into one float32 NCHW numpy array in [0, 1].

    ``images``: a path (``str`` / ``pathlib.Path``) to an image file or a folder (its files with an
    :data:`IMAGE_EXTENSIONS` extension, sorted by name, not recursive), a ``PIL.Image.Image``, or a list mixing
    them. ``size``: the (H, W) every image must have (a Classifier passes its input size); None keeps the
    images' own size, which must then be the same for all. ``resize``: None refuses an image of another size;
    ``"resize"`` / ``"center-crop"`` (see the module docstring) bring it to ``size`` and an
    :class:`ImageResizedWarning` names the resized images (``warn=False`` silences it). ``channels``: 3 reads
    RGB, 1 greyscale (alpha is dropped, not composited). ``max_pixels`` / ``max_bytes``: the decompression-bomb
    limits of :func:`advguard.data.read_image` (default its own). With ``return_info`` also returns one
    :class:`ImageInfo` per image.

    Raises :class:`~advguard.errors.InputError` naming the file (or ``<PIL image i>``) for an unreadable,
    truncated, oversized or wrongly sized image, and :class:`~advguard.errors.ParameterError` for a bad
    argument.

    Example::

        x = load_images("photos/", size=(224, 224), resize="center-crop")   # (N, 3, 224, 224) float32
        x, info = load_images(["a.jpg", pil_img], size=(32, 32), resize="resize", return_info=True)
    """
    from .data.imageio import MAX_PIXELS, read_image

    size, policy = _check_read_args(size, resize, channels)
    mode = "RGB" if channels == 3 else "L"
    limit = MAX_PIXELS if max_pixels is None else int(max_pixels)
    arrays: list[np.ndarray] = []
    infos: list[ImageInfo] = []
    n_pil = 0
    for it in _expand(images):
        if isinstance(it, Image.Image):
            label = f"<PIL image {n_pil}>"
            n_pil += 1
            a = _pil_to_array(it, mode, label, limit)
        else:
            label = str(it)
            a = read_image(it, mode, max_pixels=limit, max_bytes=max_bytes)
        a, info = _to_size(a, label, size, policy)
        arrays.append(a)
        infos.append(info)
    shapes = sorted({a.shape[:2] for a in arrays})
    if len(shapes) > 1:
        first = {s: next(i.source for i, a in zip(infos, arrays, strict=True) if a.shape[:2] == s) for s in shapes}
        listed = ", ".join(f"{s[0]}x{s[1]} ({first[s]})" for s in shapes[:3])
        raise InputError(
            f"the images have different sizes: {listed}{', ...' if len(shapes) > 3 else ''}; pass size=(H, W) "
            "and resize='resize' or 'center-crop' to bring them to one size."
        )
    resized = [i for i in infos if i.resized]
    if resized and warn:
        assert size is not None and policy is not None
        names = ", ".join(f"{i.source} ({i.original_size[0]}x{i.original_size[1]})" for i in resized[:5])
        more = f" and {len(resized) - 5} more" if len(resized) > 5 else ""
        warnings.warn(
            ImageResizedWarning(
                f"{len(resized)} of {len(infos)} images resized to {size[0]}x{size[1]} ({policy}): {names}{more}"
            ),
            stacklevel=2,
        )
    x = np.stack(arrays).transpose(0, 3, 1, 2).astype(np.float32) / np.float32(255.0)
    return (x, infos) if return_info else x


def resize_images(
    x: np.ndarray | torch.Tensor, size: tuple[int, int], resize: str = "resize"
) -> np.ndarray | torch.Tensor:
    """Bring a float NCHW batch in [0, 1] to ``size`` (H, W) with a :data:`RESIZE_POLICIES` policy (bilinear,
    antialiased when shrinking); returns the input's type (numpy array or tensor on the input's device)."""
    size_ok = _check_size(size)
    if size_ok is None:
        raise ParameterError("resize_images needs size=(H, W)")
    policy = _check_policy(resize) or "resize"
    t = as_image_batch(x)  # a tensor stays on its device
    h, w = t.shape[-2:]
    th, tw = size_ok
    if policy == "resize":
        out = F.interpolate(t, size=size_ok, mode="bilinear", align_corners=False, antialias=True)
    else:
        s = max(th / h, tw / w)
        nh, nw = max(th, round(h * s)), max(tw, round(w * s))
        out = F.interpolate(t, size=(nh, nw), mode="bilinear", align_corners=False, antialias=True)
        top, left = (nh - th) // 2, (nw - tw) // 2
        out = out[:, :, top : top + th, left : left + tw]
    out = out.clamp(0, 1)
    return out.contiguous() if isinstance(x, torch.Tensor) else out.cpu().numpy()
