"""Adaptive attack on the binary CNN detector (Nguyen et al., Section 4): C&W's combined loss through it.

Carlini & Wagner 2017 (Section 4.1) break the detectors that are themselves neural networks (Grosse et al.,
Gong et al., Metzen et al.) by attacking the classifier and the detector network at once: the detector's
"adversarial" logit is one more differentiable output. The detector here scores ``Z_adv - Z_normal`` of its own
network (no softmax at test time), so the loss per image (:class:`~advguard.attacks.adaptive_pgd.AdaptivePGD`) is

    max(margin, -kappa) + weight * max(0, (Z_adv(x') - Z_normal(x')) - threshold)

exact and differentiable, hinged at the calibrated threshold. Deviation, stated: C&W's formulation builds one
(K + 1)-class network G from F and D and minimises the L2 distortion with Adam; this is the equivalent two-term
hinge in a fixed-budget PGD.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

from ..classifier import Classifier
from .adaptive_pgd import AdaptivePGD, DetectorTerm
from .base import register_attack

if TYPE_CHECKING:  # pragma: no cover
    from ..detectors.base import Detector


class CNNTerm(DetectorTerm):
    """The hinge of the detector network's logit difference (adversarial - normal) at its threshold."""

    detector_names = ("cnn",)

    def __init__(self, classifier: Classifier, detector: Detector):
        super().__init__(classifier, detector)
        net = getattr(detector, "net_", None)
        if net is None:
            from ..validation import ParameterError

            raise ParameterError("the CNN detector is not trained: fit(x_clean, x_adv) before attacking it")
        self.net: torch.nn.Module = net.eval()

    def loss(self, x: torch.Tensor, z: torch.Tensor, label: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        d = self.net(x.to(self.classifier.device)).float()
        self.classifier.num_passes += int(x.shape[0])
        out: torch.Tensor = (d[:, 1] - d[:, 0] - self.threshold).clamp_min(0)
        return out


@register_attack()
class AdaptiveCNN(AdaptivePGD):
    """``AdaptiveCNN(clf, detector, eps=8/255, steps=50)(x, y)`` -> :class:`BypassResult` against a fitted
    :class:`~advguard.detectors.CNNDetector`; see the module docstring and :class:`AdaptivePGD`."""

    name = "adaptive-cnn"
    detector_names = CNNTerm.detector_names

    def __init__(self, classifier: Classifier, detector: Detector, **kw: Any):
        super().__init__(classifier, detector, **kw)

    def _make_term(self, detector: Detector) -> DetectorTerm:
        return CNNTerm(self.classifier, detector)
