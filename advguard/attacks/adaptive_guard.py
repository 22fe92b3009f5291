"""Adaptive attack on a :class:`~advguard.guard.Guard`: every detector's term at once (issue #26).

A guard flags an image when any of its detectors does (``combine="any"``, at jointly chosen thresholds) or when a
meta-model on their scores does (``"stacked"``). Carlini & Wagner 2017 (Section 5, "combining detectors" is no
defence) and Tramer et al. 2020 (Section 5.13's ensemble) attack such a combination with the sum of the individual
losses. Loss per image (:class:`~advguard.attacks.adaptive_pgd.AdaptivePGD`):

    max(margin, -kappa) + weight * sum_k term_k(x')

with ``term_k`` the term of the adaptive attack on the guard's k-th detector (:data:`GUARD_TERMS`: BPDA through
Feature Squeezing, the confidence statistic, the CNN detector's network, EOT over the image operations, the
leave-one-out features, EOT over Erase-and-Restore), each hinged (or gated) at that detector's threshold *in the
guard*: the joint thresholds of the ``any`` rule (:meth:`Guard.detector_thresholds`). A bypass is checked on the
guard itself (its combined score at its threshold).

Deviation, stated: for a ``stacked`` guard each term is hinged at its detector's own calibrated threshold, a
stand-in for the meta-model's decision (which is only queried); TaintRadar and SentiNet have no term (their adaptive
attacks are patches), so a guard holding them is refused.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

from ..classifier import Classifier
from ..validation import ParameterError, ParameterTypeError, check_number
from .adaptive_cnn import CNNTerm
from .adaptive_confidence import ConfidenceTerm
from .adaptive_erase_restore import EraseRestoreTerm
from .adaptive_imageops import ImageOpsTerm
from .adaptive_loo import LOOTerm
from .adaptive_pgd import AdaptivePGD, DetectorTerm
from .adaptive_squeezing import SqueezingTerm
from .base import register_attack

if TYPE_CHECKING:  # pragma: no cover
    from ..detectors.base import Detector
    from ..guard import Guard

#: the detector term of each detector a guard may hold, by detector name
GUARD_TERMS: dict[str, type[DetectorTerm]] = {
    name: term
    for term in (SqueezingTerm, ConfidenceTerm, CNNTerm, ImageOpsTerm, LOOTerm, EraseRestoreTerm)
    for name in term.detector_names
}


class GuardTerm(DetectorTerm):
    """The sum of the guard's detectors' terms, each at its threshold in the guard."""

    def __init__(self, classifier: Classifier, guard: Guard, **options: Any):
        super().__init__(classifier, guard)  # type: ignore[arg-type]  # a guard has the score / threshold_ protocol
        missing = [d.name for d in guard.detectors if d.name not in GUARD_TERMS]
        if missing:
            raise ParameterError(
                f"adaptive-guard has no detector term for {', '.join(missing)} (terms exist for "
                f"{', '.join(GUARD_TERMS)}); attack that detector with its own adaptive attack"
            )
        accepted = {ImageOpsTerm: ("eot_samples", "kappa_ops"), LOOTerm: ("max_units",), EraseRestoreTerm: ("runs",)}
        self.terms: list[DetectorTerm] = []
        for det, thr in zip(guard.detectors, guard.detector_thresholds(), strict=True):
            cls = GUARD_TERMS[det.name]
            mine = {k: v for k, v in options.items() if k in accepted.get(cls, ())}
            term = cls(classifier, det, **mine)
            term.threshold = float(thr)
            self.terms.append(term)

    def prepare(self, x: torch.Tensor, y: torch.Tensor) -> None:
        for t in self.terms:
            t.prepare(x, y)

    def restrict(self, rows: torch.Tensor) -> None:
        for t in self.terms:
            t.restrict(rows)

    def loss(self, x: torch.Tensor, z: torch.Tensor, label: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        out = torch.zeros(x.shape[0], device=x.device)
        for t in self.terms:
            out = out + t.loss(x, z, label, g)
        return out


@register_attack()
class AdaptiveGuard(AdaptivePGD):
    """``AdaptiveGuard(clf, guard, eps=8/255, steps=50)(x, y)`` -> :class:`BypassResult` against a fitted
    :class:`~advguard.guard.Guard` (passed as ``detector=``); ``eot_samples`` / ``kappa_ops`` (image-ops),
    ``max_units`` (LOO) and ``runs`` (Erase-and-Restore) go to those detectors' terms."""

    name = "adaptive-guard"

    def __init__(
        self,
        classifier: Classifier,
        detector: Guard,
        *,
        eot_samples: int | None = None,
        kappa_ops: float = 0.0,
        max_units: int = 256,
        runs: int = 1,
        **kw: Any,
    ):
        from ..guard import Guard

        where = self.name
        if not isinstance(detector, Guard):
            raise ParameterTypeError(
                f"{where}: detector must be a fitted advguard Guard, got {type(detector).__name__}"
            )
        if detector.threshold_ is None:
            raise ParameterError("the guard is not fitted: fit it (or Guard.load it) before attacking it")
        count: dict[str, Any] = dict(lo=1, hi=1_000_000, integer=True, where=where)
        self.term_params = {
            "eot_samples": None if eot_samples is None else int(check_number("eot_samples", eot_samples, **count)),
            "kappa_ops": float(check_number("kappa_ops (in logits)", kappa_ops, lo=0, where=where)),
            "max_units": int(check_number("max_units", max_units, **{**count, "lo": 4})),
            "runs": int(check_number("runs", runs, **count)),
        }
        super().__init__(classifier, detector, **kw)  # type: ignore[arg-type]  # the guard is the detector here

    def _make_term(self, detector: Detector) -> DetectorTerm:
        return GuardTerm(self.classifier, detector, **self.term_params)  # type: ignore[arg-type]
