"""TaintRadar: critical-region analysis against localized adversarial examples (paper: ``taintradar``,
Section V; docs/methods/taintradar.md).

For an image x with predicted label c, on the classifier's Grad-CAM layer A (the last conv layer):

1. **Estimated critical region** (Sec. V-A, eq. 1-4): softened Grad-CAM of l = log softmax(Z / T)_c,
   T = 2; heatmap ReLU(sum_k alpha_k A^k) / max, upsampled (bilinear) to the input and binarised at
   ``mask_threshold`` = 0.15 (SentiNet's salient region is binarised the same way, by :func:`binarize_cam`).
2. Fill that region with a filling pattern (random noise, the dataset mean, or a blur of the image),
   re-classify and take the K labels (other than c) whose logits rose most.
3. For each of those labels l, the **negative** Grad-CAM ReLU(-sum_k alpha_k^l A^k) with alpha^l from
   dZ^l / dA (eq. 5-6), normalised, upsampled and binarised at ``mask_threshold``; intersect the K masks (eq. 7).
4. Fill the intersection, re-classify: the score is the rank of c among the new logits (its **rank
   change**, c being top-1 before); adversarial if it exceeds Delta_R.

K and Delta_R are chosen on clean images only (Sec. VI-B): for each K = 1..``k_max`` and each Delta_R the
clean false-positive rate is measured; the smallest Delta_R for which some K reaches the target FPR is
taken, with the smallest such K (a smaller K keeps larger intersections, hence a higher TPR).
:attr:`TaintRadar.fpr_table_` (K x Delta_R) is the paper's Figure 3.

Cost (per image): 3 forward passes (x, the filled estimate, the filled intersection) and, through the
part of the network *after* A only, 1 + K vector-Jacobian products taken together in one batched backward
(``is_grads_batched``); the part before A is never differentiated. For a global-pool + linear head
the K gradients reduce to the labels' weight rows. Calibration runs k_max final passes instead of one.

Deviations, stated: the negative Grad-CAMs use the activations of the original image x (the paper's
Figure 2 computes them in the same backward pass as the estimate); labels whose logits rose are ranked
excluding c itself; the ``blur`` pattern is a Gaussian blur (sigma = 1/16 of the image side), our reading
of "blur" as a filling pattern.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from ..classifier import Classifier, ImageInput, gradcam_from_gradients
from ..errors import InputError, ParameterError, ParameterTypeError, unknown_name
from ..layers import LayerCapture, layer_module
from ..transforms import gaussian_blur
from ..validation import check_bool
from ._seeding import per_image_rand
from .base import Detector, NotFittedError, check_count, check_rate, register_detector

if TYPE_CHECKING:  # pragma: no cover
    from typing_extensions import Self

FILLS = ("noise", "mean", "blur")


def upsampled_cam(cam: torch.Tensor, size: tuple[int, ...]) -> torch.Tensor:
    """(..., h, w) non-negative maps -> (..., H, W): scaled to max 1 per map, upsampled bilinearly to ``size``
    (differentiable; all-zero maps stay zero)."""
    lead = cam.shape[:-2]
    flat = cam.reshape(-1, 1, *cam.shape[-2:]).float()
    peak = flat.flatten(1).amax(1).clamp_min(1e-12)
    up = F.interpolate(flat / peak[:, None, None, None], size=size, mode="bilinear", align_corners=False)
    return up[:, 0].reshape(*lead, *size)


def binarize_cam(cam: torch.Tensor, size: tuple[int, ...], threshold: float) -> torch.Tensor:
    """(..., h, w) non-negative maps -> boolean masks (..., H, W): :func:`upsampled_cam` ``>= threshold``.
    All-zero maps give empty masks."""
    return upsampled_cam(cam, size) >= threshold


@dataclass
class RegionAnalysis:
    """What TaintRadar saw for a batch of images (CPU tensors).

    ``ks`` lists the K values evaluated; ``rank_change`` (N, len(ks)) the original label's rank after
    filling each intersection; ``final_masks`` (N, len(ks), H, W); ``est_mask`` (N, H, W); ``labels`` (N, k_max)
    the labels whose logits rose most, best first; with ``keep`` also ``sub_masks`` (N, k_max, H, W), the
    intermediate input ``x_est`` and the final inputs ``x_final`` (N, len(ks), C, H, W).
    """

    ks: list[int]
    pred: torch.Tensor
    est_mask: torch.Tensor
    labels: torch.Tensor
    final_masks: torch.Tensor
    rank_change: torch.Tensor
    sub_masks: torch.Tensor | None = None
    x_est: torch.Tensor | None = None
    x_final: torch.Tensor | None = None


def _unsupervised(value: Any, p: dict[str, Any], det: Detector) -> None:
    if value is not None:
        raise InputError(f"{det.name} is unsupervised (K and Delta_R are calibrated on clean images)")
    return None


def _choice(value: Any, allowed: Sequence[str], kind: str) -> str:
    if not isinstance(value, str) or value not in allowed:
        raise unknown_name(kind, value, list(allowed))
    return value


def _check_layer(layer: Any, p: dict[str, Any], det: Detector) -> str:
    name: str | None = layer or det.classifier.gradcam_layer
    if name is None:
        raise InputError("the classifier has no Conv2d layer; pass layer= (the Grad-CAM layer)")
    layer_module(det.classifier, name)  # unknown names raise here, listing the model's layers
    return name


def _check_k_max(k_max: int | None, p: dict[str, Any], det: Detector) -> int:
    limit = det.classifier.num_classes - 1
    k_max = int(check_count("k_max", k_max if k_max is not None else min(20, limit), low=1, high=limit))
    if p["k"] is not None and p["k"] > k_max:
        raise ParameterError(f"k must be in 1..k_max={k_max}, got {p['k']}")
    return k_max


@register_detector()
class TaintRadar(Detector):
    """Unsupervised detector of localized (patch) attacks; ``fit(x_clean)`` picks K and Delta_R.

    Parameters: ``k`` / ``delta_r`` (fix either or both instead of choosing them), ``k_max`` (largest K
    tried, default min(20, classes - 1)), ``temperature`` (T = 2), ``mask_threshold`` (where the normalised Grad-CAM
    maps are binarised, 0.15: SentiNet's parameter of the same name; ``threshold=`` is its deprecated name, renamed
    because ``threshold_`` is every detector's calibrated decision threshold),
    ``fill`` (``"noise"``, ``"mean"`` or ``"blur"``), ``fill_image`` (a (C, H, W) [0, 1] image for the
    ``"mean"`` pattern, e.g. the dataset's mean image; default the classifier's per-channel mean),
    ``layer`` (default the classifier's Grad-CAM layer; ``"name:input"`` takes the input of module ``name``,
    e.g. ``"_avg_pooling:input"`` for EfficientNet, whose last activation is a shared functional module),
    ``batch_size``, ``fpr`` (the paper: 6 %).
    """

    name = "taintradar"
    _parameter_constraints = {
        "fpr": Detector._parameter_constraints["fpr"],
        "seed": Detector._parameter_constraints["seed"],
        "decision_model": _unsupervised,
        "fill": lambda v, p, det: _choice(v, FILLS, "filling pattern"),
        "temperature": lambda v, p, det: float(check_rate("temperature", v, low=0.0, high=float("inf"))),
        "mask_threshold": lambda v, p, det: float(check_rate("mask_threshold", v, low=0.0, high=1.0, closed=True)),
        "k": lambda v, p, det: check_count("k", v, low=1, optional=True),
        "delta_r": lambda v, p, det: check_count(
            "delta_r", v, low=0, high=det.classifier.num_classes - 1, optional=True
        ),
        "batch_size": lambda v, p, det: check_count("batch_size", v, low=1, optional=True),
        "layer": _check_layer,
        "k_max": _check_k_max,
        "fill_image": lambda v, p, det: (
            None
            if v is None
            else det.classifier.validate(
                torch.as_tensor(np.asarray(v))[None] if np.ndim(v) == 3 else v, name="fill_image"
            )[0]
        ),
        "progress": lambda v, p, det: check_bool("progress", v, where=det.name),
    }
    #: the fill image is saved as an array; fpr goes in the file too
    _unsaved_params = ("fill_image",)
    #: ``threshold`` (advguard 0.1) is now ``mask_threshold``, SentiNet's name for the same binarisation
    _renamed_params = {"threshold": "mask_threshold"}

    def __init__(
        self,
        classifier: Classifier,
        *,
        k: int | None = None,
        delta_r: int | None = None,
        k_max: int | None = None,
        temperature: float = 2.0,
        mask_threshold: float = 0.15,
        fill: str = "noise",
        fill_image: np.ndarray | torch.Tensor | None = None,
        layer: str | None = None,
        batch_size: int | None = None,
        fpr: float = 0.06,
        seed: int = 0,
        decision_model: None = None,
        progress: bool = True,
    ):
        self.k, self.delta_r, self.k_max, self.temperature = k, delta_r, k_max, temperature
        self.mask_threshold = mask_threshold
        self.fill, self.fill_image, self.layer, self.batch_size, self.progress = (
            fill,
            fill_image,
            layer,
            batch_size,
            progress,
        )
        super().__init__(classifier, fpr=fpr, seed=seed, decision_model=decision_model)
        p = self._checked_params()
        #: K and Delta_R in use: the fixed ``k`` / ``delta_r``, or the ones :meth:`fit` chose
        self.k_: int | None = p["k"]
        self.delta_r_: int | None = p["delta_r"]
        self.fpr_table_: np.ndarray | None = None

    # ------------------------------------------------------------------ filling patterns
    def fill_pattern(self, x: torch.Tensor, stream: int | torch.Generator | None = 0) -> torch.Tensor:
        """The filling pattern for images ``x`` (same shape): uniform noise, the blurred images, or the fill image /
        per-channel mean (``fill``). Image i's noise is seeded by (seed, ``stream``, the image's bytes), so it
        does not depend on the batch; an attack may pass its own ``torch.Generator`` instead."""
        p = self._checked_params()
        fill = p["fill"]
        if fill == "noise":
            if isinstance(stream, torch.Generator):
                return torch.rand(x.shape, generator=stream).to(x)
            return per_image_rand(x.detach(), p["seed"], 0 if stream is None else int(stream))
        if fill == "blur":
            return gaussian_blur(x, sigma=max(x.shape[-2:]) / 16)
        if p["fill_image"] is not None:
            fill_image: torch.Tensor = p["fill_image"]
            return fill_image.to(x).expand_as(x)
        return torch.tensor(self.classifier.mean, dtype=x.dtype, device=x.device).view(1, -1, 1, 1).expand_as(x)

    @staticmethod
    def _filled(x: torch.Tensor, pattern: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        m = mask[:, None].to(x)
        return x * (1 - m) + pattern * m

    def layer_shape(self) -> list[int]:
        """(C, H, W) of the Grad-CAM layer's map (``layer``; ``"name:input"`` too), from one grey image."""
        clf = self.classifier
        assert clf.size is not None  # a TaintRadar classifier has a fixed input size
        grey = clf.validate(np.full((1, clf.channels, *clf.size), 0.5, np.float32)).to(clf.device)
        return list(self._gradients(grey)[0].shape[1:])

    # ------------------------------------------------------------------ the algorithm
    def _gradients(
        self, x: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, Callable[[torch.Tensor], torch.Tensor]]:
        """One forward pass with the Grad-CAM layer's output as a leaf: returns (A, Z, pred, vjp) where
        ``vjp(V)`` gives dZ/dA^T V for a stack of output cotangents V (m, N, classes) in one batched backward."""
        clf = self.classifier
        name = self.params["layer"]
        with LayerCapture(clf, [name], leaf=True) as cap, torch.enable_grad(), clf.frozen():
            z = clf._forward(clf._prep(x))  # the inference memory layout (float32; no autocast here)
        a = cap[name]

        def vjp(v: torch.Tensor) -> torch.Tensor:
            with torch.enable_grad():
                try:
                    (g,) = torch.autograd.grad(z, a, v, retain_graph=True, is_grads_batched=True)
                except RuntimeError:  # an op without a batching rule: one backward per cotangent
                    g = torch.stack([torch.autograd.grad(z, a, vi, retain_graph=True)[0] for vi in v])
            return g

        return a.detach(), z.detach(), z.detach().argmax(1), vjp

    def _analyse_batch(self, x: torch.Tensor, ks: list[int], stream: int, keep: bool) -> RegionAnalysis:
        clf = self.classifier
        p = self.params
        n, size = x.shape[0], tuple(x.shape[-2:])
        k_max = max(ks)
        a, z, pred, vjp = self._gradients(x)
        eye = torch.eye(clf.num_classes, device=z.device)
        # 1. softened Grad-CAM: dl/dZ = (onehot(c) - softmax(Z / T)) / T
        t = p["temperature"]
        v_loss = (eye[pred] - F.softmax(z / t, dim=1)) / t
        g_loss = vjp(v_loss[None])[0]
        est = binarize_cam(gradcam_from_gradients(g_loss, a), size, p["mask_threshold"])
        pattern = self.fill_pattern(x, stream)
        x_est = self._filled(x, pattern, est)
        # 2. labels whose logits rose most when the estimated region is filled
        z_est = clf.logits(x_est, validate=False, batch_size=n).to(z.device)
        rise = z_est - z
        rise[torch.arange(n), pred] = -torch.inf
        labels = rise.topk(k_max, dim=1).indices  # (n, k_max)
        # 3. negative Grad-CAM of each label: one-hot cotangents (k_max, n, classes) in one batched backward
        g_lab = vjp(eye[labels.T])  # (k_max, n, C', h, w)
        neg = gradcam_from_gradients(-g_lab, a[None])  # (k_max, n, h, w)
        sub = binarize_cam(neg, size, p["mask_threshold"]).transpose(0, 1)  # (n, k_max, H, W)
        inter = torch.cummin(sub.to(torch.uint8), dim=1).values.bool()  # intersection of the first K
        finals = inter[:, [k - 1 for k in ks]]  # (n, len(ks), H, W)
        # 4. fill each intersection, re-classify, rank of the original label
        xf = self._filled(x.repeat_interleave(len(ks), 0), pattern.repeat_interleave(len(ks), 0), finals.flatten(0, 1))
        zf = clf.logits(xf, validate=False).to(z.device).view(n, len(ks), -1)
        own = zf.gather(2, pred.view(n, 1, 1).expand(n, len(ks), 1))
        rank = (zf > own).sum(2)
        return RegionAnalysis(
            ks=list(ks),
            pred=pred.cpu(),
            est_mask=est.cpu(),
            labels=labels.cpu(),
            final_masks=finals.cpu(),
            rank_change=rank.cpu(),
            sub_masks=sub.cpu() if keep else None,
            x_est=x_est.cpu() if keep else None,
            x_final=xf.view(n, len(ks), *x.shape[1:]).cpu() if keep else None,
        )

    def analyse(
        self, x: ImageInput, ks: list[int] | None = None, keep: bool = False, stream: int | None = None
    ) -> RegionAnalysis:
        """Run TaintRadar on images ``x`` for each K in ``ks`` (default: the fitted K).

        Each image's noise filling pattern is drawn from a generator seeded by ``seed``, ``stream`` (default 0) and
        the image's bytes: the same image gets the same draw in any batch and on every call; another ``stream``
        gives an independent draw."""
        clf = self.classifier
        t = clf.validate(x)
        if ks is None:
            if self.k_ is None:
                raise NotFittedError("taintradar has no K yet: call fit(x_clean) or pass k=")
            ks = [self.k_]
        ks = sorted({int(k) for k in ks})
        if not 1 <= ks[0] <= ks[-1] <= self.params["k_max"]:
            raise ParameterError(f"{self.name}.analyse: K values must be in 1..{self.params['k_max']}, got {ks}")
        stream = 0 if stream is None else int(stream)
        bs = self.params["batch_size"] or clf.batch_size
        clf.module.eval()
        parts = []
        bar = tqdm(
            range(0, t.shape[0], bs),
            desc="taintradar",
            leave=False,
            disable=not self.params["progress"] or t.shape[0] <= bs,
        )
        for i in bar:
            parts.append(self._analyse_batch(t[i : i + bs].to(clf.device), ks, stream, keep))
        first = parts[0]
        cat: dict[str, Any] = {
            f: torch.cat([getattr(r, f) for r in parts]) if getattr(first, f) is not None else None
            for f in ("pred", "est_mask", "labels", "final_masks", "rank_change", "sub_masks", "x_est", "x_final")
        }
        return RegionAnalysis(ks=ks, **cat)

    def rank_changes(self, x: ImageInput, stream: int | None = None) -> np.ndarray:
        """(N, k_max): the original label's rank change for every K = 1..k_max (calibration features)."""
        return self.analyse(x, list(range(1, self.params["k_max"] + 1)), stream=stream).rank_change.numpy()

    # ------------------------------------------------------------------ protocol
    def features(self, x: torch.Tensor) -> np.ndarray:
        return self.analyse(x).rank_change.numpy().astype(np.float64)

    def statistic(self, features: np.ndarray) -> np.ndarray:
        return np.asarray(features, dtype=np.float64)[:, 0]

    def feature_names(self, d: int) -> list[str]:
        return ["rank_change"]

    def _fit_images(self, x_clean: ImageInput, x_adv: ImageInput | None = None, **fit_params: Any) -> Self:
        """Choose K and Delta_R on clean images only for the target FPR (Section VI-B). ``fit(x, fpr=...)`` is
        deprecated: give ``fpr`` to the constructor (or ``set_params(fpr=...)``) like every other detector."""
        fpr = fit_params.pop("fpr", None)
        if fit_params:
            raise ParameterTypeError(f"{self.name}.fit takes no keyword {', '.join(map(repr, fit_params))}")
        if x_adv is not None:
            raise InputError("taintradar is unsupervised: fit on clean images only (x_adv must be None)")
        if fpr is not None:
            import warnings

            warnings.warn(
                "TaintRadar.fit(x, fpr=...) is deprecated: pass fpr to the constructor or use set_params(fpr=...)",
                DeprecationWarning,
                stacklevel=3,
            )
            self.set_params(fpr=fpr)
        self._check_fit_size(len(self.classifier.validate(x_clean)))
        return self.fit_features(self.rank_changes(x_clean))

    def fit_features(self, f_clean: np.ndarray, f_adv: np.ndarray | None = None) -> Self:
        """:meth:`fit` on a precomputed (N, k_max) matrix from :meth:`rank_changes`."""
        r = np.asarray(f_clean)
        k_max = self.params["k_max"]
        if r.ndim != 2 or r.shape[1] != k_max:
            raise InputError(f"taintradar calibration needs rank changes (N, k_max={k_max}), got {r.shape}")
        self._check_fit_size(len(r))
        n_dr = self.classifier.num_classes
        # fpr_table[K - 1, dR] = share of clean images whose rank change exceeds dR at this K
        self.fpr_table_ = (r[:, :, None] > np.arange(n_dr)[None, None, :]).mean(0)
        ok = self.fpr_table_ <= self._checked_params()["fpr"] + 1e-12
        k_fixed, dr_fixed = self.params["k"], self.params["delta_r"]
        if k_fixed is not None and dr_fixed is not None:
            k, dr = int(k_fixed), int(dr_fixed)
        elif k_fixed is not None:
            k, dr = int(k_fixed), int(np.argmax(ok[int(k_fixed) - 1]))
        elif dr_fixed is not None:
            col = ok[:, int(dr_fixed)]
            k, dr = (int(np.argmax(col)) + 1 if col.any() else k_max), int(dr_fixed)
        else:
            dr = int(np.argmax(ok.any(0)))
            k = int(np.argmax(ok[:, dr])) + 1
        self.k_, self.delta_r_ = k, dr
        self.threshold_ = float(dr)
        self.calibration_ = {"n": int(len(r)), "min": 0.0, "max": float(n_dr - 1)}  # the rank-change domain
        return self

    def explain(self, x: ImageInput) -> list[dict[str, Any]]:
        """Per image: prediction, rank change, verdict, the labels used, and the estimated / final masks."""
        r = self.analyse(x, keep=False)
        out = []
        for i in range(len(r.pred)):
            rc = int(r.rank_change[i, 0])
            out.append(
                {
                    "score": float(rc),
                    "threshold": self.threshold_,
                    "pred": int(r.pred[i]),
                    "adversarial": None if self.threshold_ is None else rc > self.threshold_,
                    "rank_change": rc,
                    "k": r.ks[0],
                    "labels": r.labels[i, : r.ks[0]].tolist(),
                    "estimated_region_share": float(r.est_mask[i].float().mean()),
                    "final_region_share": float(r.final_masks[i, 0].float().mean()),
                    "estimated_mask": r.est_mask[i].numpy(),
                    "final_mask": r.final_masks[i, 0].numpy(),
                }
            )
        return out

    def _state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        arrays = {} if self.fpr_table_ is None else {"fpr_table": self.fpr_table_}
        fill_image = self._checked_params()["fill_image"]
        if fill_image is not None:
            arrays["fill_image"] = fill_image.numpy()
        return {"k": self.k_, "delta_r": self.delta_r_}, arrays

    def _set_state(self, meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
        self.k_, self.delta_r_ = meta.get("k"), meta.get("delta_r")
        self.fpr_table_ = arrays.get("fpr_table")
        if "fill_image" in arrays:
            self.fill_image = torch.as_tensor(arrays["fill_image"])
