"""Robust Physical Perturbations, RP2 (Eykholt et al. 2018, "Robust Physical-World Attacks on Deep
Learning Visual Classification"), as BlurNet's threat model (paper ``blurnet`` Section 2.2.1, eq. 2;
docs/methods/blurnet.md).

One sticker (a perturbation ``delta`` confined to a mask ``M`` on the sign) is optimised over a set of
images of the same sign, targeted, with Adam::

    min_delta  lam * ||M * delta||_p  +  NPS(sticker colours)  +  mean_i J(f(T_i(x_i + M * delta)), y*)

where ``T_i`` are synthetic transforms drawn afresh every step (brightness, scale/crop, small rotation,
perspective; the composite is warped as a whole, so the sticker stays aligned with the sign, RP2's
alignment function); ``transforms=False`` feeds the photos as they are (the RP2 authors' LISA run).
Masks: ``"rp2-rectangles"`` (the default: the RP2 authors' hand-made stop-sign mask, ``mask_rect.png``
from their repository via :func:`advguard.data.rp2.rectangles_mask`, 30 pixels = 2.9 % of a 32x32 image,
nearest-neighbour resized for other sizes; it is what the BlurNet paper used), ``"bars"`` (ours: two bars
above and below the sign's centre, 10.9 % of a 32x32 image; called ``"rectangles"`` before issue #22 and
used for the committed GTSRB BlurNet tables), ``"sign"`` (the whole octagon), ``"l1"`` (RP2's two stages:
an L1-regularised run over the whole sign, then a mask of its largest-magnitude regions and an L2 run on
that mask), or any (H, W) array. Several targets are optimised together as independent stickers in one
batch (:meth:`RP2.fit_many`; Adam is element-wise, so this equals separate runs).

``preset="authors"`` reproduces the RP2 authors' LISA-CNN run (evtimovi/robust_physical_perturbations,
``lisa-cnn-attack``: ``gennoise_many_images.py`` with ``run_attack_many.sh``'s flags and the printout of
their ``l1basedmask_uniformrectangles`` run): their rectangles mask, lambda 0.02 on the L2 norm of the
masked perturbation, Adam lr 0.1 (betas 0.9 / 0.999, eps 1e-8), ``delta`` initialised uniform(0, 1), one
step per epoch over all the photos (300 epochs), no synthetic transforms, no printability term, the
perturbation clipped to +-20 (i.e. practically unclipped; the stickered image is clipped to [0, 1]).
Arguments given explicitly override the preset's values (BlurNet's Table 1 states lambda 0.002).
Without a preset the defaults are ours: lambda 0.002, lr 0.05, zero start, one random view per photo per
step, NPS on, ``delta`` kept in [-1, 1].

Deviations, stated: NPS (Sharif et al.) multiplies the distances to every printable colour; we use the
distance to the nearest one (the product's dominant factor, and not vanishingly small for 27+ colours),
averaged over the sticker's pixels (not summed) of the sticker as printed over the images' mean
appearance of the sign, on a 27-colour palette (3 ink levels per RGB channel;
Sharif et al.'s printer-measured palette is not public data we ship). The sign region is an octagon
inscribed in the central 80 % of the image (GTSRB frames show the sign with a ~10 % border; the paper
used the RP2 authors' hand-made mask on LISA). ``delta`` is kept in [-clip, clip] after each step (the
authors clip the value the image sees, not the variable; with their +-20 neither ever binds).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from .._seeding import seeded_global_rngs
from ..classifier import Classifier
from ..errors import unknown_name
from ..validation import ParameterError, ParameterTypeError, as_image_batch, as_labels, check_number
from .base import Attack, register_attack

MASKS = ("rp2-rectangles", "bars", "sign", "l1")
INITS = ("zero", "uniform")
PRESETS = ("authors",)
#: the RP2 authors' LISA-CNN run (see the module docstring)
AUTHORS = dict(
    mask="rp2-rectangles", lam=0.02, lr=0.1, norm_p=2, init="uniform", transforms=False, nps=False, clip=20.0, steps=300
)
#: our defaults, used where neither the preset nor the caller sets a value
OURS = dict(
    mask="rp2-rectangles", lam=0.002, lr=0.05, norm_p=2, init="zero", transforms=True, nps=True, clip=1.0, steps=300
)
#: the settings of the committed GTSRB BlurNet tables (before issue #22): our bars mask and our defaults
LEGACY = dict(OURS, mask="bars")


def palette_cube(levels: int = 3) -> torch.Tensor:
    """``levels``^3 RGB colours on a regular grid of [0, 1]^3 (default 27): the printable set P."""
    v = torch.linspace(0, 1, levels)
    return torch.cartesian_prod(v, v, v)


def sign_mask(h: int, w: int, border: float = 0.1) -> torch.Tensor:
    """(h, w) float mask of a regular octagon inscribed in the image minus ``border`` on each side."""
    from skimage.draw import polygon

    cy, cx = (h - 1) / 2, (w - 1) / 2
    ry, rx = h * (0.5 - border), w * (0.5 - border)
    ang = np.pi / 8 + np.arange(8) * np.pi / 4
    rr, cc = polygon(cy + ry * np.sin(ang) / np.cos(np.pi / 8), cx + rx * np.cos(ang) / np.cos(np.pi / 8), (h, w))
    m = np.zeros((h, w), np.float32)
    m[rr, cc] = 1
    return torch.from_numpy(m) * torch.from_numpy(_box(h, w, border))


def _box(h: int, w: int, border: float) -> np.ndarray:
    m = np.zeros((h, w), np.float32)
    m[int(round(h * border)) : h - int(round(h * border)), int(round(w * border)) : w - int(round(w * border))] = 1
    return m


def bars_mask(h: int, w: int) -> torch.Tensor:
    """Our two horizontal bars above and below the sign's centre (``mask="bars"``): rows 25-36 % and
    64-75 % of the height, columns 28-72 % of the width, 10.9 % of a 32x32 image (112 pixels). Not the RP2
    authors' mask (:func:`authors_mask`: 2.9 %)."""
    m = torch.zeros(h, w)
    c0, c1 = int(round(0.28 * w)), int(round(0.72 * w))
    for r0, r1 in ((0.25, 0.36), (0.64, 0.75)):
        m[int(round(r0 * h)) : int(round(r1 * h)), c0:c1] = 1
    return m


def authors_mask(h: int, w: int) -> torch.Tensor:
    """The RP2 authors' "rectangles" stop-sign mask (``mask="rp2-rectangles"``) as a float (h, w) tensor of
    0 and 1: :func:`advguard.data.rp2.rectangles_mask` (needs ``advguard setup``'s ``rp2-lisa`` folder)."""
    from ..data.rp2 import rectangles_mask

    return torch.from_numpy(rectangles_mask((h, w)).astype(np.float32))


def mask_share(mask: str | np.ndarray | torch.Tensor, h: int, w: int) -> float:
    """The share of an h x w image a named RP2 mask (or an array) covers (``"l1"``: its region, the sign)."""
    if isinstance(mask, str):
        m = {"rp2-rectangles": authors_mask, "bars": bars_mask}.get(mask, sign_mask)(h, w)
    else:
        m = torch.as_tensor(np.asarray(mask), dtype=torch.float32)
    return float(m.mean())


def mask_from_perturbation(delta: torch.Tensor, region: torch.Tensor, share: float) -> torch.Tensor:
    """RP2's second-stage mask: the ``share`` of the image area (inside ``region``) where the L1 stage's
    perturbation (C, H, W) is largest, after a 3x3 box smoothing of its channel-summed magnitude."""
    mag = delta.abs().sum(0, keepdim=True)[None]
    mag = F.avg_pool2d(mag, 3, stride=1, padding=1, count_include_pad=False)[0, 0] * region
    k = max(1, int(round(share * region.numel())))
    thr = mag.flatten().topk(k).values[-1]
    return ((mag >= thr) & (region > 0)).float()


def nps(pixels: torch.Tensor, mask: torch.Tensor, palette: torch.Tensor) -> torch.Tensor:
    """Non-printability: mean over the masked pixels of the distance to the nearest palette colour.

    pixels (N, 3, H, W), mask (N or 1, 1, H, W) in {0, 1}, palette (P, 3) -> scalar per image (N,)."""
    d = (pixels[:, None] - palette[None, :, :, None, None]).norm(dim=2)  # N, P, H, W
    near = d.amin(1, keepdim=True)  # N, 1, H, W
    m = mask.expand_as(near)
    nps: torch.Tensor = (near * m).flatten(1).sum(1) / m.flatten(1).sum(1).clamp_min(1)
    return nps


def random_warps(
    n: int,
    h: int,
    w: int,
    generator: torch.Generator,
    *,
    rotation: float = 10.0,
    scale: tuple[float, float] = (0.85, 1.05),
    perspective: float = 0.08,
    shift: float = 0.05,
) -> torch.Tensor:
    """Sampling grids (n, h, w, 2) of random homographies: rotation +-``rotation`` degrees, zoom in
    ``scale`` (> 1 crops in), shift +-``shift`` and each corner moved +-``perspective`` (in units of the
    half-size) for a perspective change. Grid coordinates follow ``grid_sample(align_corners=False)``."""
    g = generator
    ang = (torch.rand(n, generator=g) * 2 - 1) * np.deg2rad(rotation)
    zoom = scale[0] + torch.rand(n, generator=g) * (scale[1] - scale[0])
    t = (torch.rand(n, 1, 2, generator=g) * 2 - 1) * shift * 2
    corners = torch.tensor([[-1.0, -1.0], [1.0, -1.0], [1.0, 1.0], [-1.0, 1.0]])  # output image corners
    cos, sin = torch.cos(ang), torch.sin(ang)
    rot = torch.stack([torch.stack([cos, -sin], 1), torch.stack([sin, cos], 1)], 1)  # n, 2, 2
    src = corners[None] @ rot.transpose(1, 2) / zoom[:, None, None] + t
    src = src + (torch.rand(n, 4, 2, generator=g) * 2 - 1) * perspective
    H = _homography(corners.expand(n, 4, 2), src)  # output coords -> input sampling coords
    ys = (torch.arange(h, dtype=torch.float32) * 2 + 1) / h - 1
    xs = (torch.arange(w, dtype=torch.float32) * 2 + 1) / w - 1
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")
    pts = torch.stack([gx, gy, torch.ones_like(gx)], -1).view(1, -1, 3)  # 1, HW, 3
    mapped = pts @ H.transpose(1, 2)
    return (mapped[..., :2] / mapped[..., 2:]).view(n, h, w, 2)


def _homography(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """(n, 3, 3) homographies mapping the 4 points ``a`` (n, 4, 2) onto ``b`` (direct linear transform)."""
    n = a.shape[0]
    x, y = a[..., 0], a[..., 1]
    u, v = b[..., 0], b[..., 1]
    z, o = torch.zeros_like(x), torch.ones_like(x)
    rows_u = torch.stack([x, y, o, z, z, z, -u * x, -u * y], -1)
    rows_v = torch.stack([z, z, z, x, y, o, -v * x, -v * y], -1)
    A = torch.cat([rows_u, rows_v], 1)  # n, 8, 8
    rhs = torch.cat([u, v], 1)[..., None]
    h = torch.linalg.solve(A, rhs)[..., 0]
    return torch.cat([h, torch.ones(n, 1)], 1).view(n, 3, 3)


@dataclass
class Sticker:
    """One RP2 result: the perturbation (C, H, W), its mask (H, W), the target and the loss history."""

    delta: torch.Tensor
    mask: torch.Tensor
    target: int
    history: list[float] = field(default_factory=list)

    @property
    def masked(self) -> torch.Tensor:
        return self.delta * self.mask

    def apply(self, x: np.ndarray | torch.Tensor) -> torch.Tensor:
        """Paste the sticker on images ``x`` (float NCHW in [0, 1], a numpy array or a tensor, the sticker's size):
        float32 tensor on ``x``'s device (the CPU for numpy), clipped to [0, 1]. A tensor for either input kind, as
        every call that makes images returns (attacks, transforms: the table in ``advguard/__init__.py``), so the
        result goes straight to a classifier or a detector; ``.numpy()`` gives an array."""
        t = as_image_batch(x, channels=int(self.delta.shape[0]), size=tuple(self.delta.shape[1:]), name="x")
        return (t + self.masked.to(t.device, t.dtype)).clamp(0, 1)


@register_attack()
class RP2(Attack):
    """Targeted RP2 sticker attack; ``targets`` are required. Each distinct target in a call gets one
    sticker fitted on all images of the call that carry it (keep one sign's images in one batch: the
    default ``batch_size`` is large). Fitted stickers are kept in :attr:`stickers_` by target."""

    name = "rp2"
    norm = "l2"
    targeted_ok = True
    targets_required = True

    def __init__(
        self,
        classifier: Classifier,
        *,
        mask: str | np.ndarray | torch.Tensor | None = None,
        lam: float | None = None,
        steps: int | None = None,
        l1_steps: int | None = None,
        lr: float | None = None,
        norm_p: int | None = None,
        nps_weight: float = 1.0,
        n_transforms: int = 1,
        brightness: float = 0.3,
        rotation: float = 10.0,
        scale: tuple[float, float] = (0.85, 1.05),
        perspective: float = 0.08,
        l1_share: float = 0.1,
        palette_levels: int = 3,
        init: str | None = None,
        transforms: bool | None = None,
        nps: bool | None = None,
        clip: float | None = None,
        preset: str | None = None,
        batch_size: int = 4096,
        seed: int = 0,
        progress: bool = True,
    ):
        w = self.name
        if preset is not None and preset not in PRESETS:
            raise unknown_name("RP2 preset", preset, list(PRESETS))
        base = AUTHORS if preset == "authors" else OURS
        given = dict(
            mask=mask, lam=lam, steps=steps, lr=lr, norm_p=norm_p, init=init, transforms=transforms, nps=nps, clip=clip
        )
        r: dict[str, Any] = {k: (base[k] if v is None else v) for k, v in given.items()}
        mask, lam, steps, lr, norm_p = r["mask"], r["lam"], r["steps"], r["lr"], r["norm_p"]
        if isinstance(mask, str):
            if mask == "rectangles":
                raise ParameterError(
                    f"{w}: mask 'rectangles' was renamed (issue #22): use 'bars' for our two-bar "
                    "mask (10.9 % of the image, the old 'rectangles') or 'rp2-rectangles' for the "
                    "RP2 authors' mask (2.9 %, the default)"
                )
            if mask not in MASKS:
                raise unknown_name("RP2 mask", mask, list(MASKS))
        elif isinstance(mask, (np.ndarray, torch.Tensor)):
            m = torch.as_tensor(np.asarray(mask.detach().cpu() if isinstance(mask, torch.Tensor) else mask))
            if m.ndim != 2 or not bool(((m == 0) | (m == 1)).all()):
                raise ParameterError(
                    f"{w}: a custom mask must be an (H, W) array of 0 and 1, got shape {tuple(m.shape)}"
                )
        else:
            raise ParameterTypeError(
                f"{w}: mask must be one of {list(MASKS)} or an (H, W) array of 0 and 1, got {mask!r}"
            )
        if r["init"] not in INITS:
            raise unknown_name("RP2 init", r["init"], list(INITS))
        for k in ("transforms", "nps"):
            if not isinstance(r[k], (bool, np.bool_)):
                raise ParameterTypeError(f"{w}: {k} must be True or False, got {r[k]!r}")
        clip = check_number("clip", r["clip"], lo=0, lo_open=True, where=w)
        norm_p = check_number("norm_p", norm_p, lo=1, hi=2, integer=True, where=w)
        lam = check_number("lam", lam, lo=0, where=w)
        steps = check_number("steps", steps, lo=1, hi=1_000_000, integer=True, where=w)
        if l1_steps is not None:
            l1_steps = check_number("l1_steps", l1_steps, lo=1, hi=1_000_000, integer=True, where=w)
        lr = check_number("lr", lr, lo=0, lo_open=True, where=w)
        nps_weight = check_number("nps_weight", nps_weight, lo=0, where=w)
        n_transforms = check_number("n_transforms", n_transforms, lo=1, hi=10_000, integer=True, where=w)
        brightness = check_number("brightness", brightness, lo=0, hi=1, where=w)
        rotation = check_number("rotation", rotation, lo=0, hi=180, where=w)
        if isinstance(scale, (str, bytes)) or not hasattr(scale, "__len__") or len(scale) != 2:
            raise ParameterTypeError(f"{w}: scale must be (low, high) zoom factors > 0, got {scale!r}")
        zoom_lo, zoom_hi = (float(check_number("scale", v, lo=0, lo_open=True, hi=10, where=w)) for v in scale)
        scale = (zoom_lo, zoom_hi)
        if scale[0] > scale[1]:
            raise ParameterError(f"{w}: scale must be (low, high) with low <= high, got {scale}")
        perspective = check_number("perspective", perspective, lo=0, hi=1, where=w)
        l1_share = check_number("l1_share", l1_share, lo=0, hi=1, lo_open=True, where=w)
        palette_levels = check_number("palette_levels", palette_levels, lo=2, hi=256, integer=True, where=w)
        params: dict[str, Any] = dict(
            mask=mask if isinstance(mask, str) else "custom",
            lam=lam,
            steps=steps,
            lr=lr,
            norm_p=norm_p,
            nps_weight=nps_weight,
            n_transforms=n_transforms,
            init=r["init"],
            transforms=bool(r["transforms"]),
            nps=bool(r["nps"]),
            clip=float(clip),
            preset=preset,
        )
        super().__init__(classifier, batch_size=batch_size, seed=seed, progress=progress, **params)
        self.mask, self.lam, self.steps, self.lr, self.norm_p = mask, float(lam), int(steps), float(lr), int(norm_p)
        self.l1_steps = int(l1_steps if l1_steps is not None else steps)
        self.nps_weight, self.n_transforms = float(nps_weight), int(n_transforms)
        self.init, self.transforms = r["init"], bool(r["transforms"])
        self.use_nps, self.clip = bool(r["nps"]), float(clip)
        self.preset = preset
        self.brightness, self.rotation, self.scale, self.perspective = (
            float(brightness),
            float(rotation),
            scale,
            float(perspective),
        )
        self.l1_share, self.palette = float(l1_share), palette_cube(palette_levels)
        self.stickers_: dict[int, Sticker] = {}

    def settings(self) -> dict[str, Any]:
        """The resolved optimisation settings (after the preset and the caller's arguments)."""
        return dict(
            preset=self.preset,
            mask=self.mask if isinstance(self.mask, str) else "custom",
            lam=self.lam,
            steps=self.steps,
            lr=self.lr,
            norm_p=self.norm_p,
            init=self.init,
            transforms=self.transforms,
            n_transforms=self.n_transforms if self.transforms else None,
            nps=self.use_nps,
            nps_weight=self.nps_weight if self.use_nps else 0.0,
            clip=self.clip,
        )

    # ---- masks ----
    def base_mask(self, h: int, w: int) -> torch.Tensor:
        """The mask the (final) stage optimises under, before an ``"l1"`` stage refines it."""
        if isinstance(self.mask, str):
            if self.mask == "rp2-rectangles":
                return authors_mask(h, w)
            return bars_mask(h, w) if self.mask == "bars" else sign_mask(h, w)
        m = torch.as_tensor(np.asarray(self.mask), dtype=torch.float32)
        if m.shape != (h, w) or not bool(((m == 0) | (m == 1)).all()):
            raise ParameterError(f"a custom RP2 mask must be a {h}x{w} array of 0 and 1, got shape {tuple(m.shape)}")
        return m

    # ---- optimisation ----
    def _stage(
        self, x: torch.Tensor, targets: list[int], masks: torch.Tensor, p: int, steps: int, desc: str
    ) -> tuple[torch.Tensor, list[list[float]]]:
        """Optimise one sticker per target over all of ``x``; masks (T, 1, H, W) -> deltas (T, C, H, W)."""
        clf = self.classifier
        dev = x.device
        t_n, (n, c, h, w) = len(targets), x.shape
        g = torch.Generator().manual_seed(self.seed)
        if self.init == "uniform":  # the RP2 authors' start: uniform(0, 1) everywhere (the mask selects)
            delta = torch.rand(t_n, c, h, w, generator=g).to(dev).requires_grad_(True)
        else:
            delta = torch.zeros(t_n, c, h, w, device=dev, requires_grad=True)
        opt = torch.optim.Adam([delta], lr=self.lr, betas=(0.9, 0.999), eps=1e-8)
        views = self.n_transforms if self.transforms else 1
        tgt = torch.as_tensor(targets, device=dev).repeat_interleave(n * views)
        palette = self.palette.to(dev)
        masks = masks.to(dev)
        x_mean = x.mean(0, keepdim=True)
        hist: list[list[float]] = [[] for _ in targets]
        for _ in tqdm(range(steps), desc=desc, leave=False, disable=not self.progress):
            md = delta * masks  # T, C, H, W
            comp = (x[None] + md[:, None]).clamp(0, 1)  # T, N, C, H, W
            if self.transforms:
                batch = comp.repeat_interleave(views, 1).reshape(-1, c, h, w)
                grid = random_warps(
                    batch.shape[0], h, w, g, rotation=self.rotation, scale=self.scale, perspective=self.perspective
                ).to(dev)
                bright = 1 + (torch.rand(batch.shape[0], 1, 1, 1, generator=g) * 2 - 1).to(dev) * self.brightness
                seen = (F.grid_sample(batch, grid, padding_mode="border", align_corners=False) * bright).clamp(0, 1)
            else:  # the photos as they are (the RP2 authors' LISA run)
                seen = comp.reshape(-1, c, h, w)
            ce = F.cross_entropy(clf.module(seen), tgt, reduction="none").view(t_n, -1).mean(1)
            size = md.flatten(1).abs().sum(1) if p == 1 else md.flatten(1).norm(dim=1)
            if self.use_nps:  # (summed in the pre-#22 order, so the committed GTSRB stickers are unchanged)
                col = nps((x_mean + md).clamp(0, 1), masks, palette)  # the sticker as printed over the sign
                loss = self.lam * size + self.nps_weight * col + ce
            else:
                loss = self.lam * size + ce
            opt.zero_grad(set_to_none=True)
            loss.sum().backward()
            opt.step()
            with torch.no_grad():
                delta.clamp_(-self.clip, self.clip)
            for i, v in enumerate(loss.detach().cpu().tolist()):
                hist[i].append(v)
        return delta.detach(), hist

    def fit_many(self, x: np.ndarray | torch.Tensor, targets: list[int]) -> list[Sticker]:
        """One sticker per target, each fitted on all images ``x`` (one sign's views)."""
        clf = self.classifier
        xt = clf.validate(x).to(clf.device)
        if isinstance(targets, (int, np.integer)) or not hasattr(targets, "__len__"):
            raise ParameterTypeError(f"targets must be a list of target classes, got {targets!r}")
        if len(targets) == 0:
            return []
        targets = [int(t) for t in as_labels(targets, len(targets), clf.num_classes, name="targets")]
        if not targets:
            return []
        h, w = xt.shape[-2:]
        clf.module.eval()
        with seeded_global_rngs(self.seed, clf.device), clf.frozen():  # the caller's generators left as they were
            masks = self.base_mask(h, w)[None, None].expand(len(targets), 1, h, w).clone()
            history: list[list[float]] = [[] for _ in targets]
            if isinstance(self.mask, str) and self.mask == "l1":  # RP2's first stage: where does L1 put it?
                d1, history = self._stage(xt, targets, masks, 1, self.l1_steps, "RP2 L1 stage")
                masks = torch.stack([mask_from_perturbation(d.cpu(), masks[0, 0], self.l1_share) for d in d1])[:, None]
            delta, h2 = self._stage(xt, targets, masks, self.norm_p, self.steps, f"RP2 L{self.norm_p} stage")
        out = []
        for i, t in enumerate(targets):
            st = Sticker(delta[i].cpu(), masks[i, 0].cpu(), t, history[i] + h2[i])
            self.stickers_[t] = st
            out.append(st)
        return out

    def fit(self, x: np.ndarray | torch.Tensor, target: int) -> Sticker:
        target = check_number("target", target, lo=0, hi=self.classifier.num_classes - 1, integer=True, where=self.name)
        return self.fit_many(x, [target])[0]

    def _run(self, x: torch.Tensor, y: torch.Tensor, targets: torch.Tensor | None) -> torch.Tensor:
        out = x.clone()  # targets given: __call__ refuses a call without them
        assert targets is not None
        uniq = sorted(set(targets.tolist()))
        for st in self.fit_many(x, uniq):
            sel = targets == st.target
            out[sel] = st.apply(x[sel])
        return out


def l2_dissimilarity(x: torch.Tensor, x_adv: torch.Tensor) -> torch.Tensor:
    """BlurNet's eq. 1 per image (p = 2): ||x - x_adv||_2 / ||x_adv||_2."""
    d: torch.Tensor = (x - x_adv).flatten(1).norm(dim=1) / x_adv.flatten(1).norm(dim=1).clamp_min(1e-12)
    return d


def save_sticker_png(sticker: Sticker, path: str | Path, over: torch.Tensor | None = None, scale: int = 8) -> Path:
    """The sticker as a PNG: on ``over`` (an image (C, H, W) in [0, 1]) if given, else on mid-grey, with
    transparent pixels outside the mask; enlarged ``scale`` times (nearest neighbour) to be visible."""
    from PIL import Image

    from .._atomic import atomic_path

    base = over if over is not None else torch.full_like(sticker.delta, 0.5)
    img = (base + sticker.masked).clamp(0, 1)
    rgba = torch.cat([img, sticker.mask[None] if over is None else torch.ones_like(sticker.mask)[None]], 0)
    arr = (rgba.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    im = Image.fromarray(arr, "RGBA").resize((arr.shape[1] * scale, arr.shape[0] * scale), Image.Resampling.NEAREST)
    with atomic_path(path) as tmp:
        im.save(tmp, format="PNG")
    return Path(path)
