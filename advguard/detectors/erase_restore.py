"""Erase-and-Restore / THEMIS (paper: ``erase-and-restore-themis``; docs/methods/themis.md).

For an image x: n times (default 11) erase a random share lambda (default 10 %) of its pixels and
restore them by inpainting (OpenCV Telea, radius 3; Navier-Stokes and a 3x3 median baseline are
options), then classify. Clean images keep their softmax output under erase-and-restore,
adversarial ones (whose perturbation is fragile) do not.

- :class:`EraseRestore` (supervised): feature = the n + 1 softmax vectors concatenated
  (original first), each reduced to ``pca_dim`` dimensions by a PCA **fitted once on the
  training features** when the model has many classes (the released code fitted one per image);
  decision model ``svc`` (RBF, the paper's) or ``adaboost``, or any shared one.
- :class:`EraseRestoreDistance` (unsupervised): mean KL divergence or Wasserstein distance between
  f(x) and f(E&R(x)) over the n draws (paper Section 7, Table 6), thresholded on clean images.

Deviation (``align``, on by default): the classes of all n + 1 vectors of an image are reordered by the
original image's probabilities (column 0 = the class the model gave x, column 1 = its runner-up, ...), before
the PCA where there is one. The paper feeds raw vectors; ``align=False`` does that.
On CIFAR-10 (issue #22, docs/results/themis/cifar10-gap): aligned, the SVM reaches AUC 98-99 % on CW-L2
and DeepFool from 25 clean + 25 adversarial training images (raw: 62-91 %), and at its own decision flags
3.9-5.5 % of clean test images instead of 7-13 % at the same detection; the cost: an attack it was not
trained on (FGSM) is caught less often on one of two models (16 vs 28 %).
On the PCA path it is what makes the detector work at all: a PCA fitted once over raw 1,000-class vectors only spans
the classes seen in training: with one ImageNet photo per class, test images belong to other classes,
project to ~0 and the detector fails (measured: AUC 41 % without, 99 % with alignment on the sample
photos). Aligned, the components describe how probability mass leaves the original prediction, which
is class-agnostic.

Each image's masks come from a generator seeded by (seed, a hash of the image's bytes), so they differ
across images and draws but an image's score never depends on its batch or on earlier calls (the released
code drew 11 masks once and reused them for every image, and they covered ~6 % instead of 10 %);
``fixed_masks=True`` uses the same n masks for every image, as the released code did.
``mask="pixels"`` erases exactly round(lambda * H * W) pixel positions (all channels);
``mask="blobs"`` erases ``blob`` x ``blob`` squares at random centres until lambda is covered.

Deviation: the 3x3 median baseline (paper Figure 5) replaces each erased pixel by the 3x3 median of the
image around it (our reading of "a median filter instead of inpainting").

Cost: 1 + n model passes per image; inpainting runs on a thread pool (OpenCV releases the GIL).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from .._parallel import thread_map
from .._progress import progress_bar
from ..classifier import Classifier
from ..errors import ParameterError, unknown_name
from ..validation import check_bool
from ._seeding import image_seeds
from .base import Detector, check_count, check_rate, register_detector

if TYPE_CHECKING:  # pragma: no cover
    from typing_extensions import Self

RESTORERS = ("telea", "ns", "median")
MASKS = ("pixels", "blobs")
DISTANCES = ("kl", "wd")


def mean_kl_wd(probs: np.ndarray) -> np.ndarray:
    """(N, 2) from softmax stacks (N, 1 + n, C): mean KL(f(x) || f(E&R(x))) and mean Wasserstein-1 distance
    over the n draws. The Wasserstein distance treats the class indices as points on a line (the L1 distance
    of the two CDFs), the paper's Table 6 setting."""
    p = np.clip(np.asarray(probs, dtype=np.float64), 1e-12, 1.0)
    p0, pr = p[:, :1, :], p[:, 1:, :]
    kl = (p0 * (np.log(p0) - np.log(pr))).sum(-1).mean(1)
    wd = np.abs(np.cumsum(p0, -1) - np.cumsum(pr, -1)).sum(-1).mean(1)
    return np.stack([kl, wd], 1)


def make_masks(
    rng: np.random.Generator,
    n_images: int,
    n: int,
    size: tuple[int, ...],
    share: float,
    kind: str = "pixels",
    blob: int = 3,
) -> np.ndarray:
    """Boolean masks (n_images, n, H, W), True = erased, each covering ``share`` of the pixels."""
    h, w = size
    if kind not in MASKS:
        raise unknown_name("mask kind", kind, list(MASKS))
    k = int(round(share * h * w))
    if kind == "pixels":
        m = np.zeros((n_images * n, h * w), dtype=bool)
        for row in m:  # k distinct positions per mask (Generator.choice: ~10x faster than sorting randoms)
            row[rng.choice(h * w, k, replace=False)] = True
        return m.reshape(n_images, n, h, w)
    m = np.zeros((n_images, n, h, w), dtype=bool)
    r = blob // 2
    for i in range(n_images):
        for j in range(n):
            mm = m[i, j]
            while mm.sum() < k:
                cy, cx = rng.integers(0, h), rng.integers(0, w)
                mm[max(0, cy - r) : cy - r + blob, max(0, cx - r) : cx - r + blob] = True
    return m


def restore(
    images: np.ndarray, masks: np.ndarray, method: str = "telea", radius: int = 3, workers: int | None = None
) -> np.ndarray:
    """Inpaint uint8 images (N, H, W, C) under masks (N, n, H, W) -> uint8 (N, n, H, W, C).

    Unmasked pixels are returned unchanged. Runs on a thread pool across images.
    """
    import cv2

    if method not in RESTORERS:
        raise unknown_name("restoration method", method, list(RESTORERS))
    flag = cv2.INPAINT_TELEA if method == "telea" else cv2.INPAINT_NS
    n_img, n = masks.shape[:2]
    out = np.empty((n_img, n, *images.shape[1:]), dtype=np.uint8)

    def one(i: int) -> None:
        img = images[i]
        med = None
        if method == "median":
            med = cv2.medianBlur(img, 3)
            med = med[:, :, None] if med.ndim == 2 else med
        for j in range(n):
            m = masks[i, j]
            if method == "median":
                assert med is not None  # computed above for the median
                r = img.copy()
                r[m] = med[m]
            else:
                r = cv2.inpaint(img, m.astype(np.uint8), radius, flag)
                r = r[:, :, None] if r.ndim == 2 else r
            out[i, j] = r

    thread_map(one, range(n_img), workers)
    return out


def _unused(det: Detector, name: str, value: Any, what: str) -> int | bool:
    """An :class:`EraseRestore` parameter the distance detector has no use for (``pca_dim``, ``align``): None or
    the value older versions' files record (0 / False) pass, as that value; anything else is refused, naming why."""
    if value is None:
        ok = True
    elif name == "align":
        ok = not check_bool(name, value, where=det.name)
    else:
        ok = isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_)) and value == 0
    if not ok:
        raise ParameterError(
            f"{det.name}: {name}={value!r} has no effect: {name} {what} of EraseRestore (supervised), while the "
            "distances compare the softmax vectors as they are. Leave it out, or use EraseRestore"
        )
    return False if name == "align" else 0


def _check_choice(value: Any, allowed: Sequence[str], kind: str) -> str:
    if not isinstance(value, str) or value not in allowed:
        raise unknown_name(kind, value, list(allowed))
    return value


@register_detector()
class EraseRestore(Detector):
    """``EraseRestore(clf, n=11, erase=0.1, restore="telea", decision_model="svc")``; see the module docstring."""

    name = "erase-restore"
    default_decision_model: str | None = "svc"
    _parameter_constraints = {
        **Detector._parameter_constraints,
        "n": lambda v, p, det: int(check_count("n (erase-and-restore draws)", v, low=1, high=1000)),
        "erase": lambda v, p, det: float(check_rate("erase (share of pixels)", v)),
        "mask": lambda v, p, det: _check_choice(v, MASKS, "mask kind"),
        "blob": lambda v, p, det: int(check_count("blob", v, low=1)),
        "restore": lambda v, p, det: _check_choice(v, RESTORERS, "restoration method"),
        "radius": lambda v, p, det: int(check_count("radius", v, low=1)),
        # None: the paper's PCA to 10 dimensions for many classes (ImageNet's 1,000), none for few
        "pca_dim": lambda v, p, det: int(
            check_count("pca_dim", v, low=0) if v is not None else (10 if det.classifier.num_classes > 50 else 0)
        ),
        "fixed_masks": lambda v, p, det: check_bool("fixed_masks", v, where=det.name),
        # None: class-aligned features, see the module docstring (was: only with PCA)
        "align": lambda v, p, det: True if v is None else check_bool("align", v, where=det.name),
        "progress": lambda v, p, det: check_bool("progress", v, where=det.name),
    }
    _unsaved_params = ("progress",)
    #: images per step of :meth:`features` (each image's masks come from its own seed: chunks change nothing)
    chunk = 256

    def __init__(
        self,
        classifier: Classifier,
        *,
        n: int = 11,
        erase: float = 0.10,
        mask: str = "pixels",
        blob: int = 3,
        restore: str = "telea",
        radius: int = 3,
        pca_dim: int | None = None,
        fixed_masks: bool = False,
        align: bool | None = None,
        decision_model: str | None = "svc",
        progress: bool = True,
        **kw: Any,
    ):
        self.n, self.erase, self.mask, self.blob, self.restore, self.radius = n, erase, mask, blob, restore, radius
        self.pca_dim, self.fixed_masks, self.align, self.progress = pca_dim, fixed_masks, align, progress
        super().__init__(classifier, decision_model=decision_model, **kw)
        self.pca_: tuple[np.ndarray, np.ndarray] | None = None  # (mean, components)

    # ------------------------------------------------------------------ erase and restore
    def masks_for(self, x: torch.Tensor) -> np.ndarray:
        """(N, n, H, W) erasing masks of images ``x``: each image's from a generator seeded by the detector's seed
        and the image's bytes (so a score does not depend on the batch or on earlier calls); with
        ``fixed_masks`` the same n masks for every image."""
        p = self.params
        size = tuple(x.shape[-2:])
        seed = self._checked_params()["seed"]
        if p["fixed_masks"]:
            one = make_masks(
                np.random.default_rng(self._checked_params()["seed"]), 1, p["n"], size, p["erase"], p["mask"], p["blob"]
            )
            return np.repeat(one, x.shape[0], axis=0)
        return np.concatenate(
            [
                make_masks(np.random.default_rng([seed, s]), 1, p["n"], size, p["erase"], p["mask"], p["blob"])
                for s in image_seeds(x)
            ]
        )

    def variants(self, x: torch.Tensor) -> torch.Tensor:
        """(N, n, C, H, W) erased-and-restored versions of validated images ``x``."""
        p = self.params
        arr = (x.detach().cpu().clamp(0, 1).numpy() * 255).round().astype(np.uint8).transpose(0, 2, 3, 1)
        masks = self.masks_for(x)
        out = restore(np.ascontiguousarray(arr), masks, p["restore"], p["radius"])
        return torch.from_numpy(out.transpose(0, 1, 4, 2, 3).astype(np.float32) / 255.0)

    def probs(self, x: torch.Tensor) -> np.ndarray:
        """(N, 1 + n, C) softmax outputs: the image, then its n restored variants (one model batch)."""
        v = self.variants(x)
        n_img, n = v.shape[:2]
        allx = torch.cat([x.cpu().unsqueeze(1).float(), v], 1).flatten(0, 1)
        # x is validated and the variants are decoded from uint8: skip re-validating 1 + n copies
        return self.classifier.logits(allx, validate=False).softmax(1).view(n_img, 1 + n, -1).double().numpy()

    def features(self, x: torch.Tensor) -> np.ndarray:
        """Raw feature: the (1 + n) softmax vectors concatenated, (N, (1 + n) * C); PCA comes in the decision."""
        p = self.chunked_probs(x)
        return p.reshape(len(p), -1)

    def chunked_probs(self, x: torch.Tensor) -> np.ndarray:
        """:meth:`probs` :attr:`chunk` images at a time (bounded memory; a bar after a few seconds,
        ``progress=False`` silences it)."""
        steps = range(0, x.shape[0], self.chunk)
        parts = [
            self.probs(x[i : i + self.chunk])
            for i in progress_bar(steps, desc=self.name, enabled=self._checked_params()["progress"])
        ]
        return np.concatenate(parts) if parts else np.zeros((0, 1 + self.params["n"], self.classifier.num_classes))

    # ------------------------------------------------------------------ PCA per vector, fitted once
    def _aligned(self, f: np.ndarray) -> np.ndarray:
        """(N, 1 + n, C) vectors, classes reordered by the original image's probabilities if ``align``."""
        vec = f.reshape(len(f), -1, self.classifier.num_classes)
        if not self.params.get("align"):
            return vec
        order = np.argsort(-vec[:, 0, :], axis=1, kind="stable")
        return np.take_along_axis(vec, order[:, None, :], axis=2)

    def _reduce(self, f: np.ndarray) -> np.ndarray:
        if not self.params["pca_dim"]:
            return self._aligned(f).reshape(len(f), -1) if self.params.get("align") else f
        if self.pca_ is None:
            raise RuntimeError("the PCA is not fitted")
        mean, comp = self.pca_
        reduced: np.ndarray = ((self._aligned(f) - mean) @ comp.T).reshape(len(f), -1)
        return reduced

    def fit_features(self, f_clean: np.ndarray, f_adv: np.ndarray | None = None) -> Self:
        d = self.params["pca_dim"]  # 0 (no PCA) for the unsupervised distance subclass
        if d:
            from sklearn.decomposition import PCA

            c = self.classifier.num_classes
            train = self._aligned(np.concatenate([f_clean] + ([f_adv] if f_adv is not None else []))).reshape(-1, c)
            pca = PCA(n_components=min(d, c), random_state=self._checked_params()["seed"]).fit(train)
            self.pca_ = (pca.mean_, pca.components_)
        return super().fit_features(
            self._reduce(np.asarray(f_clean, dtype=np.float64)),
            None if f_adv is None else self._reduce(np.asarray(f_adv, dtype=np.float64)),
        )

    def score_features(self, f: np.ndarray) -> np.ndarray:
        return super().score_features(self._reduce(np.asarray(f, dtype=np.float64)))

    def _state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        if self.pca_ is None:
            return {}, {}
        return {}, {"pca_mean": self.pca_[0], "pca_components": self.pca_[1]}

    def _set_state(self, meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
        if "pca_mean" in arrays:
            self.pca_ = (np.asarray(arrays["pca_mean"]), np.asarray(arrays["pca_components"]))

    def feature_names(self, d: int) -> list[str]:
        c = self.classifier.num_classes
        return [f"{'x' if i == 0 else f'er{i}'}_p{k}" for i in range(d // c) for k in range(c)]


@register_detector()
class EraseRestoreDistance(EraseRestore):
    """Unsupervised THEMIS scores: mean KL(f(x) || f(E&R(x))) or mean Wasserstein-1 distance over the n draws.

    The Wasserstein distance treats the class indices as points on a line (the paper's Table 6 setting;
    scipy's ``wasserstein_distance`` on label positions weighted by the two probability vectors).
    """

    name = "erase-restore-distance"
    default_decision_model = None
    _parameter_constraints = {
        **EraseRestore._parameter_constraints,
        # the distances use neither: only the values older versions' files record (0 / False) or None pass
        "pca_dim": lambda v, p, det: _unused(det, "pca_dim", v, "reduces the feature vectors"),
        "align": lambda v, p, det: _unused(det, "align", v, "reorders the classes in the feature vectors"),
        "statistic": lambda v, p, det: _check_choice(v, DISTANCES, "distance"),
    }
    _param_attributes = {"statistic": "statistic_param"}

    def __init__(self, classifier: Classifier, *, statistic: str = "kl", decision_model: str | None = None, **kw: Any):
        """``statistic`` is stored as ``statistic_param`` (:meth:`statistic` is the scoring method). ``pca_dim``
        and ``align`` are :class:`EraseRestore`'s: the distances use neither, so a value (other than the
        ``0`` / ``False`` older files record) raises a :class:`~advguard.ParameterError`."""
        self.statistic_param = statistic
        super().__init__(classifier, decision_model=decision_model, **kw)

    def features(self, x: torch.Tensor) -> np.ndarray:
        """(N, 2): mean KL divergence and mean Wasserstein distance between f(x) and its restored versions."""
        return mean_kl_wd(self.chunked_probs(x))

    def statistic(self, features: np.ndarray) -> np.ndarray:
        return features[:, DISTANCES.index(self.params["statistic"])]

    def feature_names(self, d: int) -> list[str]:
        return ["mean_kl", "mean_wasserstein"]
