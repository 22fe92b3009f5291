"""High-confidence adaptive attack on the softmax-confidence baseline (Hendrycks & Gimpel 2017).

Carlini & Wagner 2017 (Section 4, "adversarial examples are not easily detected") defeat confidence-based
detection with high-confidence adversarial examples: their loss f_6 with a large confidence ``kappa`` keeps
pushing the wrong class's logit above the rest until the softmax is as peaked as a clean image's. Here, in PGD form
(:class:`~advguard.attacks.adaptive_pgd.AdaptivePGD`), the loss per image is

    max(margin, -kappa) + weight * max(0, score(x') - threshold)

with ``score`` the detector's own statistic (1 - max softmax probability, or the predictive entropy), exact and
differentiable, hinged at its calibrated threshold. Default ``kappa`` 10 (logits): C&W's "high confidence"
setting without a binary search over c. Deviation, stated: C&W minimise the L2 distortion with Adam in tanh space;
this is a fixed-budget PGD (L-inf or L2), the budget the security table compares attacks at.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

from ..classifier import Classifier
from .adaptive_pgd import AdaptivePGD, DetectorTerm
from .base import register_attack

if TYPE_CHECKING:  # pragma: no cover
    from ..detectors.base import Detector


class ConfidenceTerm(DetectorTerm):
    """The hinge of the detector's own statistic (1 - max probability, or entropy) at its threshold."""

    detector_names = ("confidence",)

    def __init__(self, classifier: Classifier, detector: Detector):
        super().__init__(classifier, detector)
        self.statistic: str = detector.params["statistic"]

    def score(self, z: torch.Tensor) -> torch.Tensor:
        """The detector's score from logits ``z``, differentiable."""
        if self.statistic == "max_prob":
            return 1 - z.softmax(1).amax(1)
        logp = z.log_softmax(1)
        return -(logp.exp() * logp).sum(1)

    def loss(self, x: torch.Tensor, z: torch.Tensor, label: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        return (self.score(z) - self.threshold).clamp_min(0)


@register_attack()
class AdaptiveConfidence(AdaptivePGD):
    """``AdaptiveConfidence(clf, detector, eps=8/255, kappa=10)(x, y)`` -> :class:`BypassResult` against a fitted
    :class:`~advguard.detectors.ConfidenceDetector`; see the module docstring and :class:`AdaptivePGD`."""

    name = "adaptive-confidence"
    detector_names = ConfidenceTerm.detector_names

    def __init__(self, classifier: Classifier, detector: Detector, *, kappa: float = 10.0, **kw: Any):
        super().__init__(classifier, detector, kappa=kappa, **kw)

    def _make_term(self, detector: Detector) -> DetectorTerm:
        return ConfidenceTerm(self.classifier, detector)
