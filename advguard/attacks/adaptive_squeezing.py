"""Adaptive attack on Feature Squeezing (Xu et al., NDSS 2018) with BPDA through the squeezers.

Xu et al.'s Section 5.3 ("adaptive adversary") and He et al. 2017 attack the joint system; Athalye et al. 2018
(Section 4.1) show that the squeezers' zero / undefined gradients (rounding in bit-depth reduction, the rank
selection of the median filter, non-local means) are no defence once the backward pass uses the identity (BPDA).
Loss per image (:class:`~advguard.attacks.adaptive_pgd.AdaptivePGD`):

    max(margin, -kappa) + weight * sum_s max(0, ||softmax(x') - softmax(squeeze_s(x'))||_1 - threshold)

over the detector's own squeezers ``s`` (forward: exactly the detector's squeezer; backward: identity), hinged at
the detector's calibrated threshold: the sum is 0 exactly when the max over squeezers, the detector's score, is at
or below it. Deviations, stated: the paper's adaptive adversary (Section 5.3, He et al.'s) used CW-L2 with
randomised squeezers; this is PGD with the detector's fixed squeezers (the detector we ship is not randomised),
and the surrogate is the detector's score itself, so no approximation enters the forward pass.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

from ..classifier import Classifier
from ..detectors.squeezing import apply_squeezer
from .adaptive_pgd import AdaptivePGD, DetectorTerm, straight_through
from .base import register_attack

if TYPE_CHECKING:  # pragma: no cover
    from ..detectors.base import Detector


class SqueezingTerm(DetectorTerm):
    """Sum over the detector's squeezers of the hinge of the softmax L1 gap at its threshold (BPDA identity)."""

    detector_names = ("feature-squeezing",)

    def __init__(self, classifier: Classifier, detector: Detector):
        super().__init__(classifier, detector)
        self.squeezers: list[str] = list(detector.params["squeezers"])

    def gaps(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """(N, n_squeezers) L1 distances between the softmax of ``x`` and of each squeezed ``x`` (differentiable,
        straight through the squeezers)."""
        p0 = z.softmax(1)
        cols = []
        for s in self.squeezers:
            with torch.no_grad():
                exact = apply_squeezer(s, x.detach().cpu()).clamp(0, 1)
            ps = self.classifier.forward(straight_through(x, exact)).softmax(1)
            cols.append((p0 - ps).abs().sum(1))
        return torch.stack(cols, 1)

    def loss(self, x: torch.Tensor, z: torch.Tensor, label: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        return (self.gaps(x, z) - self.threshold).clamp_min(0).sum(1)


@register_attack()
class AdaptiveSqueezing(AdaptivePGD):
    """``AdaptiveSqueezing(clf, detector, eps=8/255, steps=50)(x, y)`` -> :class:`BypassResult` against a fitted
    :class:`~advguard.detectors.FeatureSqueezing`; see the module docstring and :class:`AdaptivePGD`."""

    name = "adaptive-squeezing"
    detector_names = SqueezingTerm.detector_names

    def __init__(self, classifier: Classifier, detector: Detector, **kw: Any):
        super().__init__(classifier, detector, **kw)

    def _make_term(self, detector: Detector) -> DetectorTerm:
        return SqueezingTerm(self.classifier, detector)
