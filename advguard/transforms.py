"""Nguyen et al.'s 38 image-processing operations as named, batched, reusable transforms.

Every function here takes float NCHW images in [0, 1] as a numpy array or a torch tensor and returns a float32
torch tensor on the input's device (the CPU for a numpy array).

Paper, Section 3.1 (Pillow 6.1.0): JPEG compression with quality 100..25 (step 5, 16 ops),
Gaussian blur with "kernel size" 2..5 (4 ops), clockwise rotation by 1..8 degrees (8 ops) and
scaling by 0.75..1.25 (10 ops), the rotation and scaling *not* undone. Each op here follows
Pillow's semantics on the 8-bit image (``x`` is quantised to uint8 first, as saving an image
would) and returns float32 NCHW in [0, 1] **of the input's size**:

- ``jpeg:Q``: ``Image.save(format="JPEG", quality=Q)`` with Pillow's defaults (4:2:0 chroma
  subsampling for colour images), decoded again.
- ``blur:R``: ``ImageFilter.GaussianBlur(radius=R)``; the paper's "kernel size" is Pillow's only
  parameter, the radius (standard deviation), so R is used as is. On 32x32 images this is a
  strong blur; the paper (224 px) already found blur the worst family.
- ``rotate:D``: ``Image.rotate(-D)`` (clockwise), Pillow's default nearest-neighbour resampling,
  ``expand=False``: the canvas keeps its size and the uncovered corners are black.
- ``scale:S``: ``Image.resize(round(S * size))`` with bicubic resampling (today's Pillow default;
  Pillow 6.1 defaulted to nearest), then **brought back to the input size without undoing the
  scaling**: centre crop for S > 1, centred on a black canvas for S < 1 (the same fill as
  rotation). The paper fed the resized image itself to ImageNet CNNs that accept any size; a
  fixed canvas keeps every op usable with fixed-input models (e.g. the GTSRB CNN) and batchable.

Each op also has :meth:`ImageOp.approx`, a differentiable PyTorch approximation (identity for
JPEG, or kornia's differentiable JPEG with ``jpeg="kornia"``; separable Gaussian, ``grid_sample`` rotation and
bicubic resizing for the others), and
:meth:`ImageOp.bpda`, which returns the exact Pillow output in the forward pass and takes the
approximation's gradient in the backward pass (BPDA, Athalye et al. 2018) for adaptive attacks.

Pillow releases the GIL in its codecs, filters and resamplers, so :func:`apply_ops` runs the
per-image work on a thread pool across all cores.
"""

from __future__ import annotations

import io
import math
import numbers
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageFilter

from ._parallel import thread_map
from .errors import InputError, ParameterError, ParameterTypeError, unknown_name
from .validation import as_image_batch

#: The paper's parameters per family (Section 3.1), in its order.
FAMILIES: dict[str, tuple[float, ...]] = {
    "jpeg": tuple(range(100, 24, -5)),
    "blur": (2, 3, 4, 5),
    "rotate": tuple(range(1, 9)),
    "scale": (0.75, 0.8, 0.85, 0.9, 0.95, 1.05, 1.1, 1.15, 1.2, 1.25),
}
#: Named family combinations used in the paper's Table 4.
FAMILY_SETS: dict[str, tuple[str, ...]] = {
    "jpeg": ("jpeg",),
    "scale": ("scale",),
    "blur": ("blur",),
    "rotate": ("rotate",),
    "jpeg+scale": ("jpeg", "scale"),
    "all": ("jpeg", "blur", "rotate", "scale"),
}


@dataclass(frozen=True)
class ImageOp:
    """One operation: ``family`` in :data:`FAMILIES` and its parameter ``value``."""

    family: str
    value: float

    def __post_init__(self) -> None:
        if not isinstance(self.family, str):
            raise ParameterTypeError(f"image operation family must be a name (str), got {self.family!r}")
        if self.family not in FAMILIES:
            raise unknown_name("image operation family", self.family, list(FAMILIES))
        allowed = {
            "jpeg": "an integer quality in 1..100",
            "blur": "a radius > 0",
            "rotate": "a finite angle in degrees",
            "scale": "a factor in [0.05, 20]",
        }[self.family]
        if isinstance(self.value, (bool, np.bool_)) or not isinstance(self.value, numbers.Real):
            raise ParameterTypeError(
                f"image operation {self.family!r} needs {allowed} (a number), got {self.value!r} "
                f"({type(self.value).__name__}); parse_op reads names like '{self.family}:{FAMILIES[self.family][0]:g}'"
            )
        v = float(self.value)
        ok = (
            math.isfinite(v)
            and {"jpeg": 1 <= v <= 100 and v == int(v), "blur": v > 0, "rotate": True, "scale": 0.05 <= v <= 20}[
                self.family
            ]
        )
        if not ok:
            raise ParameterError(f"image operation {self.family!r} needs {allowed}, got {self.value!r}")

    @property
    def name(self) -> str:
        return f"{self.family}:{self.value:g}"

    def __str__(self) -> str:
        return self.name

    # ------------------------------------------------------------------ exact (Pillow)
    def pil(self, img: Image.Image) -> Image.Image:
        """Apply the op to one Pillow image; the result has the input's size and mode."""
        f, v = self.family, self.value
        if f == "jpeg":
            buf = io.BytesIO()
            img.save(buf, format="JPEG", quality=int(v))
            buf.seek(0)
            out = Image.open(buf)
            out.load()
            return out
        if f == "blur":
            return img.filter(ImageFilter.GaussianBlur(radius=float(v)))
        if f == "rotate":
            return img.rotate(-float(v))
        w, h = img.size
        nw, nh = max(1, round(w * v)), max(1, round(h * v))
        small = img.resize((nw, nh), Image.BICUBIC)
        if v >= 1:
            left, top = (nw - w) // 2, (nh - h) // 2
            return small.crop((left, top, left + w, top + h))
        canvas = Image.new(img.mode, (w, h))
        canvas.paste(small, ((w - nw) // 2, (h - nh) // 2))
        return canvas

    def __call__(self, x: np.ndarray | torch.Tensor, workers: int | None = None) -> torch.Tensor:
        """Apply to a float NCHW batch in [0, 1], a numpy array or a tensor (exact Pillow semantics, parallel across
        cores): a float32 tensor on ``x``'s device (the CPU for numpy)."""
        return apply_ops(x, [self], workers=workers)[0]

    # ------------------------------------------------------------------ differentiable
    def approx(self, x: np.ndarray | torch.Tensor, jpeg: str = "identity") -> torch.Tensor:
        """Differentiable approximation of the op (for BPDA). A tensor on ``x``'s device. JPEG's is the identity
        (straight-through), or with ``jpeg="kornia"`` :func:`differentiable_jpeg` at the op's quality."""
        x = _tensor(x)
        f, v = self.family, float(self.value)
        jpeg = check_jpeg_approx(jpeg)  # every op checks it, so a wrong name fails whatever the op list holds
        if f == "jpeg":
            return differentiable_jpeg(x, v) if jpeg == "kornia" else x
        if f == "blur":
            return gaussian_blur(x, v)
        if f == "rotate":
            return rotate(x, v)
        return scale_on_canvas(x, v)

    def bpda(self, x: np.ndarray | torch.Tensor, jpeg: str = "identity") -> torch.Tensor:
        """Forward: the exact op; backward: the gradient of :meth:`approx` (``jpeg``: its JPEG stand-in,
        straight-through by default). A tensor on ``x``'s device."""
        x = _tensor(x)
        a = self.approx(x, jpeg)  # checks ``jpeg`` before the exact op runs
        with torch.no_grad():
            exact = self(x.detach()).to(x.device, x.dtype)
        return a + (exact - a).detach()


#: the differentiable stand-ins for JPEG that :meth:`ImageOp.approx` offers
JPEG_APPROX = ("identity", "kornia")
KORNIA_MISSING = "jpeg='kornia' needs kornia: pip install advguard[kornia] (or pip install 'kornia>=0.7.1')"


def check_jpeg_approx(jpeg: object) -> str:
    """``jpeg`` if it names one of :data:`JPEG_APPROX`; a :class:`ParameterError` naming them otherwise."""
    if not isinstance(jpeg, str) or jpeg not in JPEG_APPROX:
        raise ParameterError(f"the JPEG approximation must be one of {', '.join(JPEG_APPROX)}, got {jpeg!r}")
    return jpeg


def differentiable_jpeg(x: np.ndarray | torch.Tensor, quality: float) -> torch.Tensor:
    """JPEG at ``quality`` as a differentiable function: kornia's ``jpeg_codec_differentiable`` (Reich et al.
    2024, "Differentiable JPEG: the devil is in the details"; standard IJG tables, 4:2:0 chroma, rounding and
    quantisation replaced by smooth surrogates). It stays within ~0.007 mean absolute error of Pillow's encoder on
    CIFAR-10 at quality 25-100, where the identity is 0.007-0.033 away, so its gradient is the closer BPDA
    surrogate. Grey images (C = 1) are coded as grey RGB and read back as the channel mean (Pillow codes their
    luminance only). A tensor on ``x``'s device; kornia is optional (``pip install advguard[kornia]``)."""
    try:
        from kornia.enhance import jpeg_codec_differentiable
    except ImportError as err:  # pragma: no cover - kornia is in the test extras
        raise ImportError(KORNIA_MISSING) from err
    x = _tensor(x)
    if x.ndim != 4 or x.shape[1] not in (1, 3):
        raise InputError(f"differentiable_jpeg takes NCHW images with 1 or 3 channels, got shape {tuple(x.shape)}")
    q = torch.tensor([float(quality)], device=x.device, dtype=torch.float32)
    if x.shape[1] == 1:
        return jpeg_codec_differentiable(x.expand(-1, 3, -1, -1), q).mean(1, keepdim=True)
    return jpeg_codec_differentiable(x, q)


# ---------------------------------------------------------------------------- op lists
def paper_ops(families: str | Iterable[str] = "all") -> list[ImageOp]:
    """The paper's operations of the named families (or family set, e.g. ``"jpeg+scale"``), in its order."""
    fams = _families(families)
    return [ImageOp(f, v) for f in FAMILIES if f in fams for v in FAMILIES[f]]


def _families(families: str | Iterable[str]) -> tuple[str, ...]:
    if isinstance(families, str):
        if families in FAMILY_SETS:
            return FAMILY_SETS[families]
        families = families.split("+")
    out = []
    for f in families:
        if f in FAMILY_SETS:
            out.extend(FAMILY_SETS[f])
        elif f in FAMILIES:
            out.append(f)
        else:
            raise unknown_name("image operation family", f, list(FAMILY_SETS))
    return tuple(dict.fromkeys(out))


def parse_op(spec: str | ImageOp) -> ImageOp:
    """``"jpeg:80"``, ``"blur:2"``, ``"rotate:5"``, ``"scale:0.9"`` -> :class:`ImageOp`."""
    if isinstance(spec, ImageOp):
        return spec
    if not isinstance(spec, str):
        raise ParameterTypeError(f"an image operation is an ImageOp or a name like 'jpeg:80', got {spec!r}")
    fam, sep, val = spec.partition(":")
    if not sep:
        raise ParameterError(f"image operation {spec!r} must look like 'family:value', e.g. 'jpeg:80'")
    try:
        value = float(val)
    except ValueError:
        raise ParameterError(f"image operation {spec!r}: {val!r} is not a number") from None
    return ImageOp(fam, int(value) if value == int(value) else value)


def parse_ops(spec: str | ImageOp | Sequence[str | ImageOp]) -> list[ImageOp]:
    """Family names / sets (``"all"``, ``"jpeg+scale"``) or explicit op names, in order, without repeats."""
    items = [spec] if isinstance(spec, (str, ImageOp)) else list(spec)
    ops: list[ImageOp] = []
    for it in items:
        if isinstance(it, str) and ":" not in it:
            ops.extend(paper_ops(it))
        else:
            ops.append(parse_op(it))
    if not ops:
        raise ParameterError("no image operations selected")
    return list(dict.fromkeys(ops))


# ---------------------------------------------------------------------------- batched application
def _to_uint8_hwc(x: torch.Tensor) -> np.ndarray:
    return (x.detach().float().clamp(0, 1).cpu().numpy() * 255).round().astype(np.uint8).transpose(0, 2, 3, 1)


def _apply_chunk(arr: np.ndarray, ops: Sequence[ImageOp]) -> np.ndarray:
    """uint8 (n, H, W, C) -> uint8 (len(ops), n, H, W, C)."""
    n, h, w, c = arr.shape
    out = np.empty((len(ops), n, h, w, c), dtype=np.uint8)
    for i in range(n):
        img = Image.fromarray(arr[i, :, :, 0] if c == 1 else arr[i])
        for j, op in enumerate(ops):
            r = np.asarray(op.pil(img))
            out[j, i] = r[:, :, None] if r.ndim == 2 else r
    return out


def _op_list(ops: str | ImageOp | Sequence[str | ImageOp]) -> list[ImageOp]:
    """``apply_ops``' ``ops`` as a list of :class:`ImageOp` in the order given (repeats kept: one output each):
    an op, an op name (``"jpeg:75"``), a family or family set (``"jpeg"``, ``"all"``), or a list of them."""
    if isinstance(ops, (str, ImageOp)):
        return parse_ops(ops)
    if not isinstance(ops, Iterable):
        raise ParameterTypeError(f"ops must be image operations or their names (e.g. 'jpeg:75'), got {ops!r}")
    out: list[ImageOp] = []
    for op in ops:
        if isinstance(op, ImageOp):
            out.append(op)
        elif isinstance(op, str):
            out.extend(parse_ops(op))
        else:
            raise ParameterTypeError(
                f"ops must be image operations or their names (e.g. 'jpeg:75'), got {op!r} ({type(op).__name__})"
            )
    return out


def apply_ops(
    x: np.ndarray | torch.Tensor, ops: str | ImageOp | Sequence[str | ImageOp], workers: int | None = None
) -> torch.Tensor:
    """All ``ops`` on all images ``x`` (float NCHW in [0, 1], a numpy array or a tensor): a float32 tensor
    (len(ops), N, C, H, W) in [0, 1] on ``x``'s device (the CPU for numpy). ``ops``: :class:`ImageOp` objects or
    names as :func:`parse_ops` reads them (``"jpeg:75"``, ``["jpeg:75", "blur:2"]``, a family ``"jpeg"``), in
    order.

    Images are quantised to uint8 once, split into chunks and processed on ``workers`` threads
    (default: all cores).
    """
    ops = _op_list(ops)  # names parsed here, not as an AttributeError in a worker thread
    device = x.device if isinstance(x, torch.Tensor) else torch.device("cpu")
    x = as_image_batch(x)  # float NCHW in [0, 1], finite (numpy arrays too); NaN or 0..255 input is refused
    if x.shape[1] not in (1, 3):
        raise InputError(f"image operations need NCHW images with 1 or 3 channels, got shape {tuple(x.shape)}")
    arr = _to_uint8_hwc(x)
    n = arr.shape[0]
    workers = max(1, min(workers or os.cpu_count() or 1, n))
    bounds = np.linspace(0, n, workers * 2 + 1).round().astype(int)  # two chunks a thread evens out the load
    chunks = [arr[a:b] for a, b in zip(bounds[:-1], bounds[1:], strict=True) if b > a] or [arr]
    out = np.concatenate(thread_map(lambda c: _apply_chunk(c, ops), chunks, workers), axis=1)
    return torch.from_numpy(out.transpose(0, 1, 4, 2, 3).astype(np.float32) / 255.0).to(device)


# ---------------------------------------------------------------------------- torch approximations
def _tensor(x: np.ndarray | torch.Tensor) -> torch.Tensor:
    """A tensor as it is (differentiable); a numpy image batch validated into a float32 CPU tensor."""
    return x if isinstance(x, torch.Tensor) else as_image_batch(x)


def gaussian_blur(x: np.ndarray | torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur with edge replication (Pillow extends the border the same way). Differentiable;
    on ``x``'s device (a numpy batch gives a CPU tensor), like :func:`rotate` and :func:`scale_on_canvas`."""
    x = _tensor(x)
    r = max(1, int(math.ceil(3 * sigma)))
    t = torch.arange(-r, r + 1, dtype=x.dtype, device=x.device)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    k = k / k.sum()
    c = x.shape[1]
    y = F.pad(x, (r, r, 0, 0), mode="replicate")
    y = F.conv2d(y, k.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    y = F.pad(y, (0, 0, r, r), mode="replicate")
    return F.conv2d(y, k.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)


def rotate(x: np.ndarray | torch.Tensor, degrees_clockwise: float) -> torch.Tensor:
    """Rotation about the centre, same canvas, black outside (bilinear, differentiable)."""
    x = _tensor(x)
    a = math.radians(degrees_clockwise)
    n, _, h, w = x.shape
    # output (u, v) samples input at R(-a) (u, v) in pixel units; clockwise on screen (y down)
    theta = torch.tensor(
        [[math.cos(a), math.sin(a) * h / w, 0.0], [-math.sin(a) * w / h, math.cos(a), 0.0]],
        dtype=x.dtype,
        device=x.device,
    )
    grid = F.affine_grid(theta.expand(n, 2, 3), list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def scale_on_canvas(x: np.ndarray | torch.Tensor, s: float) -> torch.Tensor:
    """Bicubic resize by ``s`` then centre crop / centre on a black canvas of the input size."""
    x = _tensor(x)
    _, _, h, w = x.shape
    nh, nw = max(1, round(h * s)), max(1, round(w * s))
    y = F.interpolate(x, size=(nh, nw), mode="bicubic", align_corners=False, antialias=s < 1).clamp(0, 1)
    if s >= 1:
        top, left = (nh - h) // 2, (nw - w) // 2
        return y[:, :, top : top + h, left : left + w]
    top, left = (h - nh) // 2, (w - nw) // 2
    return F.pad(y, (left, w - nw - left, top, h - nh - top))
