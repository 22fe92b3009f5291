"""SentiNet (Chou et al. 2018, "SentiNet: Detecting Localized Universal Attacks Against Deep Learning
Systems"), the baseline TaintRadar compares with (paper: ``taintradar`` Section VI-C, Table II).

For an input x with predicted label y:

1. **Salient region**: Grad-CAM of y on the classifier's Grad-CAM layer, upsampled to the input and
   binarised at ``mask_threshold`` of its maximum.
2. **Fooled rate**: the region cut from x is pasted onto each of ``n_test`` held-out clean images; the share
   of them then classified as y.
3. **Inert confidence**: the same region of each clean image is instead filled with Gaussian noise (an
   inert pattern of the same size); the mean of the model's top-1 confidence on them.
4. **Decision boundary**: on clean fitting images, the points (inert confidence, fooled rate) are binned
   by confidence; the highest fooled rate in each bin is fitted with a quadratic curve (Chou et al.'s
   estimated boundary). The score is the point's height above the curve; the threshold is the clean
   fitting images' (1 - fpr) quantile of that height (the paper: "the same estimated curve and benign
   test set" for SentiNet and TaintRadar).

Deviations, stated: no class proposals by selective search (the mask comes from the predicted class
only, as in the TaintRadar authors' reproduction for single-object images); the score is the vertical
distance to the curve instead of the Euclidean one (same ordering of points above the curve, simpler to
calibrate). Cost: 1 Grad-CAM pass + 2 x ``n_test`` forward passes per image (the paper: 7.7 s per image).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from ..classifier import Classifier, ImageInput
from ..errors import InputError
from ..validation import check_bool
from ._seeding import image_seeds
from .base import Detector, check_count, check_rate, register_detector
from .taintradar import binarize_cam

if TYPE_CHECKING:  # pragma: no cover
    from typing_extensions import Self


def _unsupervised(value: Any, p: dict[str, Any], det: Detector) -> None:
    if value is not None:
        raise InputError("sentinet is unsupervised (its boundary is fitted on clean images)")
    return None


@register_detector()
class SentiNet(Detector):
    """Unsupervised; ``fit(x_clean)`` keeps ``n_test`` of them as the overlay test set, fits the boundary
    on the rest. Parameters: ``n_test`` (default 100), ``mask_threshold`` (0.15), ``noise_std`` (0.5 around
    0.5, clipped), ``n_bins`` (20), ``batch_size``."""

    name = "sentinet"
    _parameter_constraints = {
        "fpr": Detector._parameter_constraints["fpr"],
        "seed": Detector._parameter_constraints["seed"],
        "decision_model": _unsupervised,
        "n_test": lambda v, p, det: int(check_count("n_test", v, low=1)),
        "mask_threshold": lambda v, p, det: float(check_rate("mask_threshold", v, low=0.0, high=1.0, closed=True)),
        "noise_std": lambda v, p, det: float(check_rate("noise_std", v, low=0.0, high=float("inf"), closed=True)),
        "n_bins": lambda v, p, det: int(check_count("n_bins", v, low=1)),
        "batch_size": lambda v, p, det: check_count("batch_size", v, low=1, optional=True),
        "progress": lambda v, p, det: check_bool("progress", v, where=det.name),
    }

    def __init__(
        self,
        classifier: Classifier,
        *,
        n_test: int = 100,
        mask_threshold: float = 0.15,
        noise_std: float = 0.5,
        n_bins: int = 20,
        batch_size: int | None = None,
        fpr: float = 0.06,
        seed: int = 0,
        decision_model: None = None,
        progress: bool = True,
    ):
        self.n_test, self.mask_threshold, self.noise_std, self.n_bins = n_test, mask_threshold, noise_std, n_bins
        self.batch_size, self.progress = batch_size, progress
        super().__init__(classifier, fpr=fpr, seed=seed, decision_model=decision_model)
        self.test_images_: torch.Tensor | None = None
        self.curve_: np.ndarray | None = None

    def masks(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(predicted labels, boolean salient masks (N, H, W))."""
        clf = self.classifier
        pred = clf.predict(x, batch_size=self.params["batch_size"])
        cam = clf.gradcam(x, pred, batch_size=self.params["batch_size"])
        return pred, binarize_cam(cam, tuple(x.shape[-2:]), self.params["mask_threshold"])

    def points(self, x: ImageInput) -> np.ndarray:
        """(N, 2): inert-pattern confidence and fooled rate of each image against the test set."""
        if self.test_images_ is None:
            raise InputError("sentinet has no test images: call fit(x_clean) first")
        clf = self.classifier
        t = clf.validate(x)
        pred, masks = self.masks(t)
        tests = self.test_images_
        seeds = image_seeds(t, self._checked_params()["seed"])
        out = np.zeros((t.shape[0], 2))
        bs = self.params["batch_size"] or clf.batch_size
        for i in tqdm(
            range(t.shape[0]), desc="sentinet", leave=False, disable=not self.params["progress"] or t.shape[0] < 8
        ):
            m = masks[i][None, None].float()
            pasted = tests * (1 - m) + t[i][None] * m
            g = torch.Generator().manual_seed(seeds[i])  # per image: the score does not depend on the batch
            noise = (0.5 + self.params["noise_std"] * torch.randn(tests.shape, generator=g)).clamp(0, 1)
            inert = tests * (1 - m) + noise * m
            logits = clf.logits(torch.cat([pasted, inert]), validate=False, batch_size=bs)
            fooled = (logits[: len(tests)].argmax(1) == pred[i]).float().mean()
            conf = F.softmax(logits[len(tests) :], 1).amax(1).mean()
            out[i] = float(conf), float(fooled)
        return out

    def features(self, x: torch.Tensor) -> np.ndarray:
        return self.points(x)

    def _fit_features(self, f_clean: np.ndarray) -> None:
        conf, fooled = f_clean[:, 0], f_clean[:, 1]
        edges = np.linspace(conf.min(), conf.max() + 1e-9, self.params["n_bins"] + 1)
        which = np.digitize(conf, edges) - 1
        xs, ys = [], []
        for b in np.unique(which):
            sel = which == b
            j = np.argmax(fooled[sel])
            xs.append(conf[sel][j])
            ys.append(fooled[sel][j])
        deg = min(2, len(xs) - 1)
        self.curve_ = np.polyfit(xs, ys, deg) if deg >= 1 else np.array([ys[0]])

    def statistic(self, features: np.ndarray) -> np.ndarray:
        if self.curve_ is None:
            raise InputError("sentinet has no boundary: call fit(x_clean) first")
        f = np.asarray(features, dtype=np.float64)
        return f[:, 1] - np.polyval(self.curve_, f[:, 0])

    def _fit_images(self, x_clean: ImageInput, x_adv: ImageInput | None = None, **fit_params: Any) -> Self:
        """The first ``n_test`` clean images become the overlay test set; the rest fit the boundary."""
        if fit_params:
            from ..errors import ParameterTypeError

            raise ParameterTypeError(f"{self.name}.fit takes no keyword {', '.join(map(repr, fit_params))}")
        if x_adv is not None:
            raise InputError("sentinet is unsupervised: fit on clean images only (x_adv must be None)")
        t = self.classifier.validate(x_clean)
        n = self.params["n_test"]
        if t.shape[0] < n + 10:
            raise InputError(f"sentinet needs n_test={n} + at least 10 clean images to fit, got {t.shape[0]}")
        self.test_images_ = t[:n].clone()
        return self.fit_features(self.extract(t[n:]))

    def feature_names(self, d: int) -> list[str]:
        return ["inert_confidence", "fooled_rate"]

    def _state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        arrays = {}
        if self.test_images_ is not None:
            arrays["test_images"] = self.test_images_.numpy()
        if self.curve_ is not None:
            arrays["curve"] = self.curve_
        return {}, arrays

    def _set_state(self, meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
        if "test_images" in arrays:
            self.test_images_ = torch.as_tensor(arrays["test_images"])
        self.curve_ = arrays.get("curve")
