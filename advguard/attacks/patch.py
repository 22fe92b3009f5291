"""Adversarial patch (Brown et al. 2017, "Adversarial Patch"), as TaintRadar's threat model (paper:
``taintradar`` Section VI-C, Table II; docs/methods/taintradar.md).

One patch is trained over a set of images (1 image = the paper's *partial* attack, 4 or 16 = *universal*)
by expectation over transformations: every step pastes the patch on every training image at a random
position, rotation and (with ``multi_size``) scale, and Adam lowers the cross-entropy to the target
label (targeted; the paper's target is ImageNet's "toaster", 859) or raises it for the true label
(untargeted). The patch stays in [0, 1] by clipping after each step.

``size`` is the area of the patch's bounding square as a share of the image (0.2, 0.3, 0.4 in the
paper); ``shape`` cuts the square with a mask (square, circle, star, lightning). Applying the trained
patch (:meth:`AdversarialPatch.__call__`) uses a fixed corner or a random position and no rotation;
``n_patches = 2`` pastes it twice (bottom-left and bottom-right corners, the paper's multiple patches).
:attr:`AdversarialPatch.last_masks_` holds where the patch landed, for IoU with a detector's region.

Deviations, stated: ``multi_size`` draws the area share uniformly in ``size_range`` (default 0.1-0.5;
the paper does not give its range); training rotations are uniform in +-``max_rotation`` degrees
(default 22.5, the cleverhans/ART default the paper's code used).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from ..classifier import Classifier
from ..detectors.base import NotFittedError
from ..errors import unknown_name
from ..validation import ParameterError, ParameterTypeError, as_labels, check_bool, check_number
from .base import Attack, AttackResult, register_attack

SHAPES = ("square", "circle", "star", "lightning")
POSITIONS = ("bottom-right", "bottom-left", "top-left", "top-right", "random")


class NotTrainedError(NotFittedError, RuntimeError):
    """The patch (or sticker) must be trained with ``fit`` before it is applied or saved. A
    :class:`~advguard.detectors.NotFittedError` (hence also scikit-learn's), and a ``RuntimeError`` as before."""


def check_patch_params(
    where: str,
    classifier: Classifier,
    *,
    target: Any,
    size: Any,
    shape: Any,
    multi_size: Any,
    size_range: Any,
    steps: Any,
    lr: Any,
    max_rotation: Any,
    eot: Any,
    position: Any,
    n_patches: Any,
) -> dict[str, Any]:  # the values as given, checked here
    """The checked and converted parameters of a patch attack (shared with the region-misleading patch)."""
    if target is not None:
        target = int(check_number("target", target, lo=0, hi=classifier.num_classes - 1, integer=True, where=where))
    size = float(check_number("size", size, lo=0, hi=1, lo_open=True, hi_open=True, where=where))
    if not isinstance(shape, str):
        raise ParameterTypeError(f"{where}: shape must be one of {list(SHAPES)}, got {shape!r}")
    if shape not in SHAPES:
        raise unknown_name("patch shape", shape, list(SHAPES))
    if not isinstance(position, str):
        raise ParameterTypeError(f"{where}: position must be one of {list(POSITIONS)}, got {position!r}")
    if position not in POSITIONS:
        raise unknown_name("patch position", position, list(POSITIONS))
    if isinstance(size_range, (str, bytes)) or not hasattr(size_range, "__len__") or len(size_range) != 2:
        raise ParameterTypeError(
            f"{where}: size_range must be (low, high), two area shares in (0, 1), got {size_range!r}"
        )
    rng = tuple(
        float(check_number("size_range", v, lo=0, hi=1, lo_open=True, hi_open=True, where=where)) for v in size_range
    )
    if not rng[0] <= rng[1]:
        raise ParameterError(f"{where}: size_range must be (low, high) with low <= high, got {size_range!r}")
    n_patches = int(check_number("n_patches", n_patches, lo=1, hi=2, integer=True, where=where))
    return dict(
        target=target,
        size=size,
        shape=shape,
        multi_size=check_bool("multi_size", multi_size, where=where),
        size_range=rng,
        steps=int(check_number("steps", steps, lo=1, hi=1_000_000, integer=True, where=where)),
        lr=float(check_number("lr", lr, lo=0, lo_open=True, where=where)),
        max_rotation=float(check_number("max_rotation", max_rotation, lo=0, hi=180, where=where)),
        eot=int(check_number("eot", eot, lo=1, hi=10_000, integer=True, where=where)),
        position=position,
        n_patches=n_patches,
    )


def shape_mask(shape: str, side: int) -> torch.Tensor:
    """Float mask (side, side) in {0, 1}: 1 where the patch is (a square, a disc, a five-pointed star, a bolt)."""
    if shape not in SHAPES:
        raise unknown_name("patch shape", shape, list(SHAPES))
    if shape == "square":
        return torch.ones(side, side)
    from skimage.draw import disk, polygon

    m = np.zeros((side, side), dtype=np.float32)
    c = (side - 1) / 2
    if shape == "circle":
        rr, cc = disk((c, c), side / 2, shape=m.shape)
    elif shape == "star":
        ang = -np.pi / 2 + np.arange(10) * np.pi / 5
        rad = np.where(np.arange(10) % 2 == 0, side / 2, side / 5)
        rr, cc = polygon(c + rad * np.sin(ang), c + rad * np.cos(ang), shape=m.shape)
    else:  # lightning bolt: a zig-zag polygon inside the unit square
        pts = np.array([[0.0, 0.55], [0.0, 0.95], [0.45, 0.62], [0.45, 0.80], [1.0, 0.05], [0.55, 0.40], [0.55, 0.22]])
        rr, cc = polygon(pts[:, 0] * (side - 1), pts[:, 1] * (side - 1), shape=m.shape)
    m[rr, cc] = 1.0
    return torch.from_numpy(m)


def place(
    patch: torch.Tensor,
    mask: torch.Tensor,
    size: tuple[int, int],
    sides: torch.Tensor,
    centers: torch.Tensor,
    angles: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Differentiably paste ``patch`` (C, p, p) with ``mask`` (p, p) onto canvases of ``size`` (H, W).

    ``sides`` (N,) in pixels, ``centers`` (N, 2) as (row, col) pixel coordinates, ``angles`` (N,) in radians.
    Returns the patch canvases (N, C, H, W) and the soft masks (N, 1, H, W), by an affine grid sample.
    """
    h, w = size
    n = sides.shape[0]
    cos, sin = torch.cos(angles), torch.sin(angles)
    # output pixel u (normalised to [-1, 1]) -> patch coordinate: R(-angle) (u_px - c_px) / (side / 2)
    sx, sy = (w / 2) / (sides / 2), (h / 2) / (sides / 2)
    theta = torch.zeros(n, 2, 3, dtype=patch.dtype, device=patch.device)
    theta[:, 0, 0], theta[:, 0, 1] = cos * sx, sin * sy
    theta[:, 1, 0], theta[:, 1, 1] = -sin * sx, cos * sy
    cx = (centers[:, 1] + 0.5) / (w / 2) - 1  # align_corners=False pixel centres
    cy = (centers[:, 0] + 0.5) / (h / 2) - 1
    theta[:, 0, 2] = -(theta[:, 0, 0] * cx + theta[:, 0, 1] * cy)
    theta[:, 1, 2] = -(theta[:, 1, 0] * cx + theta[:, 1, 1] * cy)
    grid = F.affine_grid(theta, [n, 1, h, w], align_corners=False)
    src = torch.cat([patch, mask[None].to(patch)], 0)[None].expand(n, -1, -1, -1)
    out = F.grid_sample(src, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return out[:, :-1], out[:, -1:]


@register_attack()
class AdversarialPatch(Attack):
    """Train a patch with :meth:`fit`, then apply it with ``attack(x, y)`` (targets default to ``target``).

    Parameters: ``target`` (None = untargeted), ``size`` (area share of the bounding square), ``shape``,
    ``multi_size``/``size_range``, ``steps`` (Adam steps over the training set), ``lr``, ``max_rotation``
    (degrees), ``eot`` (random placements per training image and step), ``position`` and ``n_patches`` for
    application.
    """

    name = "patch"
    norm = "l0"
    needs_fit = True

    def __init__(
        self,
        classifier: Classifier,
        *,
        target: int | None = None,
        size: float = 0.3,
        shape: str = "square",
        multi_size: bool = False,
        size_range: tuple[float, float] = (0.1, 0.5),
        steps: int = 500,
        lr: float = 0.05,
        max_rotation: float = 22.5,
        eot: int = 1,
        position: str = "bottom-right",
        n_patches: int = 1,
        batch_size: int = 32,
        seed: int = 0,
        progress: bool = True,
    ):
        if not isinstance(classifier, Classifier):
            raise ParameterTypeError(
                f"{self.name}: classifier must be an advguard.Classifier, got {type(classifier).__name__}"
            )
        c = check_patch_params(
            self.name,
            classifier,
            target=target,
            size=size,
            shape=shape,
            multi_size=multi_size,
            size_range=size_range,
            steps=steps,
            lr=lr,
            max_rotation=max_rotation,
            eot=eot,
            position=position,
            n_patches=n_patches,
        )
        target, size, steps, lr, max_rotation, eot, n_patches, size_range, multi_size = (
            c["target"],
            c["size"],
            c["steps"],
            c["lr"],
            c["max_rotation"],
            c["eot"],
            c["n_patches"],
            c["size_range"],
            c["multi_size"],
        )
        super().__init__(
            classifier,
            batch_size=batch_size,
            seed=seed,
            progress=progress,
            target=target,
            size=size,
            shape=shape,
            multi_size=multi_size,
            steps=steps,
            lr=lr,
            max_rotation=max_rotation,
            eot=eot,
            position=position,
            n_patches=n_patches,
        )
        self.target = None if target is None else int(target)
        self.size, self.shape, self.multi_size = float(size), shape, bool(multi_size)
        self.size_range = (float(size_range[0]), float(size_range[1]))
        self.steps, self.lr, self.max_rotation, self.eot = int(steps), float(lr), float(max_rotation), int(eot)
        self.position, self.n_patches = position, int(n_patches)
        self.patch_: torch.Tensor | None = None
        self.loss_history_: list[float] = []
        self.last_masks_: torch.Tensor | None = None

    # ------------------------------------------------------------------ geometry
    def _image_size(self, x: torch.Tensor) -> tuple[int, int]:
        return int(x.shape[-2]), int(x.shape[-1])

    def side(self, size: float, hw: tuple[int, int]) -> int:
        """Side in pixels of the bounding square covering ``size`` of an H x W image."""
        return max(2, min(min(hw), int(round(math.sqrt(size * hw[0] * hw[1])))))

    def _resolution(self, hw: tuple[int, int]) -> int:
        top = max(self.size_range[1], self.size) if self.multi_size else self.size
        return self.side(top, hw)

    # ------------------------------------------------------------------ training
    def fit(self, x: np.ndarray | torch.Tensor, y: np.ndarray | torch.Tensor | None = None) -> AdversarialPatch:
        """Train the patch over the images ``x`` (labels ``y`` needed when untargeted)."""
        clf = self.classifier
        xt = clf.validate(x).to(clf.device)
        if self.target is None:
            if y is None:
                raise ParameterError("an untargeted patch needs the true labels: fit(x, y)")
            yt = as_labels(y, xt.shape[0], clf.num_classes).to(clf.device)
        elif y is not None:
            as_labels(y, xt.shape[0], clf.num_classes)
        hw = self._image_size(xt)
        p = self._resolution(hw)
        g = torch.Generator().manual_seed(self.seed)
        patch = torch.rand(clf.channels, p, p, generator=g).to(clf.device).requires_grad_(True)
        mask = shape_mask(self.shape, p).to(clf.device)
        opt = torch.optim.Adam([patch], lr=self.lr)
        clf.module.eval()
        self.loss_history_ = []
        reps = xt.repeat(self.eot, 1, 1, 1)
        labels = (
            torch.full((reps.shape[0],), self.target, device=clf.device)
            if self.target is not None
            else yt.repeat(self.eot)
        )
        bar = tqdm(range(self.steps), desc=f"patch {self.shape} {self.size:g}", leave=False, disable=not self.progress)
        for _ in bar:
            sides, centers, angles = self._random_placements(reps.shape[0], hw, g, training=True)
            total = 0.0
            opt.zero_grad()
            for i in range(0, reps.shape[0], self.batch_size):
                sl = slice(i, i + self.batch_size)
                with torch.enable_grad(), clf.frozen():  # no gradient for (or into) the model's parameters
                    canvas, m = place(
                        patch, mask, hw, sides[sl].to(clf.device), centers[sl].to(clf.device), angles[sl].to(clf.device)
                    )
                    adv = reps[sl] * (1 - m) + canvas * m
                    loss = self._loss(adv, labels[sl], m) / reps.shape[0]
                    loss.backward()
                total += float(loss.detach())
            opt.step()
            with torch.no_grad():
                patch.clamp_(0, 1)
            self.loss_history_.append(total)
            bar.set_postfix(loss=f"{total:.3f}")
        self.patch_ = patch.detach().cpu()
        return self

    def _loss(self, adv: torch.Tensor, labels: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        """The training loss summed over a batch of patched images (``masks``: where the patch is, (b, 1, H, W)):
        cross-entropy to the target, or minus the cross-entropy of the true label when untargeted."""
        ce = F.cross_entropy(self.classifier._forward(adv), labels, reduction="sum")
        return ce if self.target is not None else -ce

    def _random_placements(
        self, n: int, hw: tuple[int, int], g: torch.Generator, training: bool
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        h, w = hw
        if training and self.multi_size:
            lo, hi = self.size_range
            shares = lo + (hi - lo) * torch.rand(n, generator=g)
            sides = torch.tensor([float(self.side(float(s), hw)) for s in shares])
        else:
            sides = torch.full((n,), float(self.side(self.size, hw)))
        # keep the bounding square inside the image
        half = sides / 2
        rows = half + torch.rand(n, generator=g) * (h - sides).clamp_min(0) - 0.5
        cols = half + torch.rand(n, generator=g) * (w - sides).clamp_min(0) - 0.5
        angles = (torch.rand(n, generator=g) * 2 - 1) * math.radians(self.max_rotation) if training else torch.zeros(n)
        return sides, torch.stack([rows, cols], 1), angles

    # ------------------------------------------------------------------ application
    def apply(
        self, x: np.ndarray | torch.Tensor, position: str | None = None, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Paste the trained patch on images ``x`` (float NCHW in [0, 1], a numpy array or a tensor); returns
        (patched images, float32, and binary masks (N, H, W), bool), both tensors on ``x``'s device (the CPU for
        numpy). Tensors for either input kind, like :meth:`Sticker.apply`, the transforms and every attack's result
        (the table in ``advguard/__init__.py``)."""
        if self.patch_ is None:
            raise NotTrainedError("the patch is not trained: call fit(x_train) first")
        position = position or self.position
        if not isinstance(position, str):
            raise ParameterTypeError(f"position must be one of {list(POSITIONS)}, got {position!r}")
        if position not in POSITIONS:
            raise unknown_name("patch position", position, list(POSITIONS))
        x = self.classifier.validate(x)
        hw = self._image_size(x)
        n = x.shape[0]
        s = self.side(self.size, hw)
        g = generator or torch.Generator().manual_seed(self.seed + 1)
        spots = ["bottom-left", "bottom-right"] if self.n_patches == 2 else [position]
        out = x.clone()
        masks = torch.zeros(n, *hw, dtype=torch.bool, device=x.device)
        # exact placement: the patch resized to s x s once, a binary mask, integer offsets
        mask = shape_mask(self.shape, self.patch_.shape[-1])
        pimg = F.interpolate(self.patch_[None], size=(s, s), mode="bilinear", antialias=True, align_corners=False)[
            0
        ].clamp(0, 1)
        pm = F.interpolate(mask[None, None], size=(s, s), mode="bilinear", align_corners=False)[0, 0] > 0.5
        pimg, pm = pimg.to(x.device), pm.to(x.device)
        for spot in spots:
            if spot == "random":
                _, centers, _ = self._random_placements(n, hw, g, training=False)
                rows, cols = (centers[:, 0] - (s - 1) / 2).round().long(), (centers[:, 1] - (s - 1) / 2).round().long()
            else:
                r0 = 0 if spot.startswith("top") else hw[0] - s
                c0 = 0 if spot.endswith("left") else hw[1] - s
                rows, cols = torch.full((n,), r0), torch.full((n,), c0)
            for i in range(n):
                r, c = int(rows[i].clamp(0, hw[0] - s)), int(cols[i].clamp(0, hw[1] - s))
                region = out[i, :, r : r + s, c : c + s]
                region[:, pm] = pimg[:, pm]
                masks[i, r : r + s, c : c + s] |= pm
        return out, masks

    # ------------------------------------------------------------------ the attack protocol (Attack.__call__)
    # ``attack(x, y, targets=None)`` applies the trained patch; success = target reached (targeted) or label
    # changed (untargeted). Targets default to ``target``; images whose label is already the target are refused
    # (they would count as successes without the patch doing anything): leave the target class out.
    def _default_targets(self, n: int) -> torch.Tensor | None:
        return None if self.target is None else torch.full((n,), self.target, dtype=torch.long)

    def _start(self, x: torch.Tensor, y: torch.Tensor, targets: torch.Tensor | None) -> None:
        if self.patch_ is None:
            raise NotTrainedError("the patch is not trained: call fit(x_train) first")

    def _batch_slices(self, n: int) -> list[slice]:
        return [slice(0, n)]  # pasting is cheap: one batch, so random positions do not depend on batch_size

    def _run(
        self, x: torch.Tensor, y: torch.Tensor, targets: torch.Tensor | None
    ) -> tuple[torch.Tensor, dict[str, np.ndarray]]:
        """Paste the patch; the masks of where it landed go to :meth:`_finish` (they become :attr:`last_masks_`)."""
        x_adv, masks = self.apply(x)
        return x_adv, {"masks": masks.cpu().numpy()}

    def _finish(self, result: AttackResult, extras: dict[str, np.ndarray]) -> AttackResult:
        #: where the patch landed in the last call, (N, H, W) bool, for IoU with a detector's region
        self.last_masks_ = torch.from_numpy(extras["masks"])
        return result

    def save_png(self, path: str | Path) -> Path:
        """Write the trained patch as an RGB/grey PNG (masked-out pixels transparent for non-square shapes)."""
        from PIL import Image

        from .._atomic import atomic_path

        if self.patch_ is None:
            raise NotTrainedError("the patch is not trained: call fit(x_train) first")
        arr = (self.patch_.clamp(0, 1).permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
        if arr.shape[2] == 1:
            arr = arr[:, :, 0]
        img = Image.fromarray(arr)
        if self.shape != "square":
            alpha = (shape_mask(self.shape, arr.shape[0]).numpy() * 255).astype(np.uint8)
            img = img.convert("RGBA")
            img.putalpha(Image.fromarray(alpha))
        with atomic_path(path, suffix=".png") as tmp:
            img.save(tmp, format="PNG")
        return Path(path)
