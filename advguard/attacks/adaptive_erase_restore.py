"""White-box adaptive attack on Erase-and-Restore / THEMIS: EOT over erasing masks, BPDA through inpainting.

THEMIS (paper ``erase-and-restore-themis``) erases a random 10 % of the pixels n times, restores them by inpainting
and compares the classifier's outputs (an SVM on the n + 1 softmax vectors, or their mean KL / Wasserstein
distance). Its own adaptive attack (Section 6, :class:`~advguard.attacks.DetectorAwareCW`) only queries the detector.
This one differentiates it, following Athalye et al. 2018: the random masks are averaged over (EOT, Section 4.3) and
the inpainting, not differentiable, is the identity in the backward pass (BPDA, Section 4.1; its forward pass is the
detector's own OpenCV restoration). Every step simulates ``runs`` runs of the detector, each with its n masks drawn
afresh as the detector draws them, and the loss per image (:class:`~advguard.attacks.adaptive_pgd.AdaptivePGD`) is

    max(margin, -kappa) + weight * gate * mean_{draws j} [ KL(f(x') || f(ER_j(x'))) + max(margin_a(ER_j(x')), 0) ]

(``margin_a``: the adversarial label's logit margin on the restored image, so that the wrong label survives
restoration), where ``gate`` is 1 while the detector's own decision model, applied to the simulated runs' features,
flags the image (any run) and 0 once none does. The real detector is queried at the check steps.

Deviation, stated: the simulated masks are fresh random draws, not the detector's (which are seeded by the image's
bytes and so change with every perturbation anyway); the KL term is the distance detector's statistic, used for the
supervised SVM too (whose decision is only applied, through the gate).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from ..classifier import Classifier
from ..detectors.erase_restore import make_masks, mean_kl_wd, restore
from ..validation import check_number
from .adaptive_pgd import AdaptivePGD, DetectorTerm, logit_margin, straight_through
from .base import register_attack

if TYPE_CHECKING:  # pragma: no cover
    from ..detectors.base import Detector


class EraseRestoreTerm(DetectorTerm):
    """EOT over simulated detector runs of restored images (BPDA identity through inpainting), gated by the
    detector's decision on the simulated runs' features."""

    detector_names = ("erase-restore", "erase-restore-distance")

    def __init__(self, classifier: Classifier, detector: Detector, *, runs: int = 1):
        super().__init__(classifier, detector)
        self.runs = int(runs)

    def restored(self, x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        """(N, runs * n, C, H, W) erased-and-restored images: exact forward (OpenCV), identity backward."""
        p = self.detector.params
        rng = np.random.default_rng(int(torch.randint(0, 2**62, (1,), generator=g)))
        n_draws = self.runs * p["n"]
        masks = make_masks(rng, x.shape[0], n_draws, tuple(x.shape[-2:]), p["erase"], p["mask"], p["blob"])
        arr = (x.detach().cpu().clamp(0, 1).numpy() * 255).round().astype(np.uint8).transpose(0, 2, 3, 1)
        out = restore(np.ascontiguousarray(arr), masks, p["restore"], p["radius"])
        exact = torch.from_numpy(out.transpose(0, 1, 4, 2, 3).astype(np.float32) / 255.0)
        return straight_through(x.unsqueeze(1).expand(-1, n_draws, -1, -1, -1), exact)

    def loss(self, x: torch.Tensor, z: torch.Tensor, label: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        det = self.detector
        n_img, n = x.shape[0], det.params["n"]
        v = self.restored(x, g)
        zr = self.classifier.forward(v.flatten(0, 1)).view(n_img, self.runs * n, -1)
        logp0, logpr = z.log_softmax(1), zr.log_softmax(2)
        kl = (logp0.exp()[:, None] * (logp0[:, None] - logpr)).sum(2).mean(1)
        keep = logit_margin(zr.flatten(0, 1), label.repeat_interleave(self.runs * n), True).clamp_min(0)
        with torch.no_grad():  # the detector's decision on each simulated run
            p0 = logp0.exp().double().cpu().numpy()
            pr = logpr.exp().double().cpu().numpy().reshape(n_img, self.runs, n, -1)
            flagged = np.zeros(n_img, dtype=bool)
            for r in range(self.runs):
                probs = np.concatenate([p0[:, None], pr[:, r]], 1)
                f = mean_kl_wd(probs) if det.name == "erase-restore-distance" else probs.reshape(n_img, -1)
                flagged |= det.score_features(f) > self.threshold
        gate = torch.from_numpy(flagged).to(x.device, x.dtype)
        return gate * (kl + keep.view(n_img, -1).mean(1))


@register_attack()
class AdaptiveEraseRestore(AdaptivePGD):
    """``AdaptiveEraseRestore(clf, detector, eps=8/255, runs=1)(x, y)`` -> :class:`BypassResult` against a fitted
    :class:`~advguard.detectors.EraseRestore` or :class:`~advguard.detectors.EraseRestoreDistance`; see the module
    docstring and :class:`AdaptivePGD`."""

    name = "adaptive-erase-restore"
    detector_names = EraseRestoreTerm.detector_names

    def __init__(self, classifier: Classifier, detector: Detector, *, runs: int = 1, **kw: Any):
        self.term_params = {"runs": int(check_number("runs", runs, lo=1, hi=1_000, integer=True, where=self.name))}
        super().__init__(classifier, detector, **kw)

    def _make_term(self, detector: Detector) -> DetectorTerm:
        return EraseRestoreTerm(self.classifier, detector, **self.term_params)
