"""A guard in front of a model: several detectors, one decision at one clean false-positive rate (issue #25).

``Guard(clf, detectors=[...], combine="any" | "stacked", fpr=0.05, correct=None)``:

- ``combine="any"`` flags an image when any detector does, with the detectors' thresholds chosen *jointly* so
  that the OR rule flags a share ``fpr`` of clean images (not each detector at ``fpr``, which would add their
  false positives up). Each detector's score is mapped to its rank among the clean calibration images (a
  continuous empirical CDF); the combined score is the largest rank; one threshold on it, set on leave-one-out
  ranks (each calibration image ranked against the others, as a new image is), is one threshold per detector.
- ``combine="stacked"`` learns how to weigh the detectors: a scikit-learn meta-model (default: scaled logistic
  regression) trained on the detectors' out-of-fold scores of clean and adversarial images (stacking: each
  score comes from detectors that did not see that image), thresholded at ``fpr`` on the clean images'
  out-of-fold meta scores. This is the hybrid detector of Zuo & Zeng (THEMIS), Table 7, with a learned
  combination instead of their fixed rule.
- ``correct=LabelCorrection(clf)`` answers a corrected label for flagged images (Nguyen et al.) instead of a
  refusal.

Calling the guard on a batch returns one :class:`GuardResult` per image: the classifier's label and
probability, the verdict (``"clean"``, ``"adversarial"`` or ``"corrected"``), each detector's score and
threshold, and explanations where a detector has one (TaintRadar's region, Erase-and-Restore's label flips).
``save`` / ``load`` use one zip file holding JSON, arrays and the detectors' own safe files: nothing in it can
run code.
"""

from __future__ import annotations

import io
import json
import math
import tempfile
import zipfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import torch

from ._atomic import atomic_path
from .classifier import Classifier
from .errors import DetectorFileError, InputError, ParameterError
from .metrics import threshold_at_fpr, warn_unresolved_fpr
from .validation import ParameterTypeError, check_bool, check_choice, check_number

if TYPE_CHECKING:  # pragma: no cover
    from sklearn.base import BaseEstimator

    from .defenses.correction import LabelCorrection
    from .detectors.base import Detector

COMBINES = ("any", "stacked")
#: 2: continuous clean ranks and out-of-fold calibration of the any rule (format 1's thresholds meant other ranks).
#: Still 2 with leave-one-out calibration: the saved threshold is a threshold on the same ranks (only how it is
#: chosen changed), so a guard saved before decides exactly as it did.
GUARD_FORMAT = 2
#: what a guard file may unpack to (bytes) unless load(max_bytes=) says otherwise
MAX_GUARD_BYTES = 2 * 2**30
#: the largest guard.json read (bytes)
_MAX_GUARD_JSON = 16 * 2**20


@dataclass
class GuardResult:
    """The guard's answer for one image."""

    label: int
    probability: float
    verdict: Literal["clean", "adversarial", "corrected"]
    #: the guard's combined score (``any``: the largest clean rank; ``stacked``: the meta-model's score)
    score: float
    threshold: float
    #: per detector: its score, its threshold in the guard's decision, and whether it flags the image
    detectors: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: the corrected label (``verdict == "corrected"``), else None
    corrected_label: int | None = None
    #: flagged images only: per detector that has one, what made it decide (JSON-able; masks as bounding boxes and
    #: shares), and ``"grad-cam"``: the classifier's Grad-CAM map for its label (where it looked; a low-resolution
    #: grid, 3 decimals, max 1) when the classifier has a Grad-CAM layer
    explanations: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able (strict JSON: an infinite threshold, i.e. a detector that flags nothing alone, is None)."""
        return _finite(asdict(self))  # type: ignore[no-any-return]

    def to_record(self, path: str, resized_from: tuple[int, int] | None = None) -> dict[str, Any]:
        """One image's answer as ``advguard detect`` prints it and ``advguard serve`` returns it: ``path`` (the
        file, or the upload's name), the keys of :meth:`to_dict`, and ``resized_from``: the image's (H, W) before a
        resize policy brought it to the model's size, else None."""
        return {"path": path, **self.to_dict(), "resized_from": None if resized_from is None else list(resized_from)}


def _knots(c: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """Sorted clean scores ``c`` -> their distinct values, each value's mid-rank (the share of clean scores below it
    plus half the share equal to it) and the extrapolation unit past both ends (their range)."""
    u, first, counts = np.unique(c, return_index=True, return_counts=True)
    return u, (first + counts / 2.0) / len(c), max(float(c[-1] - c[0]), 1e-12)


def clean_ranks(clean_sorted: Sequence[np.ndarray], scores: np.ndarray) -> np.ndarray:
    """Per detector ``j``: where each score ``scores[:, j]`` falls among its sorted clean calibration scores
    ``clean_sorted[j]``, as a continuous empirical CDF: at a clean value its mid-rank (the share of clean scores
    below it plus half the share equal to it, so that a value many clean images share, such as TaintRadar's rank
    change 0, sits in the middle of its block rather than at its top), linear between distinct clean values, and
    continued linearly past the lowest and highest (in units of their range), so that scores above every clean one
    stay ordered. The ``any`` rule's combined score is the row maximum."""
    out = []
    for j, c in enumerate(clean_sorted):
        s = scores[:, j]
        u, mid, span = _knots(c)
        r = np.interp(s, u, mid)
        r = np.where(s > u[-1], mid[-1] + (s - u[-1]) / span, r)
        out.append(np.where(s < u[0], mid[0] + (s - u[0]) / span, r))
    return np.stack(out, 1)


def leave_one_out_ranks(clean_scores: np.ndarray) -> np.ndarray:
    """Each clean image's :func:`clean_ranks` rank per detector against the *other* clean images (N, detectors):
    exactly the rank a new image with the same scores gets against those N - 1 images, ties included (a value
    that k clean images share is ranked among the other k - 1). O(N log N) per detector."""
    n = len(clean_scores)
    out = []
    for j in range(clean_scores.shape[1]):
        v = clean_scores[:, j]
        u, inv, counts = np.unique(v, return_inverse=True, return_counts=True)
        first = np.r_[0, np.cumsum(counts)[:-1]]  # clean scores below each distinct value
        m = n - 1
        # a value shared with others stays a knot of the other images' CDF: its mid-rank among them
        r = (first[inv] + (counts[inv] - 1) / 2.0) / m
        single = counts[inv] == 1
        if single.any():  # a value no other image has: between (or past) its neighbours among the others
            q = inv[single]
            lo, hi = np.maximum(q - 1, 0), np.minimum(q + 1, len(u) - 1)
            mid_lo = (first[lo] + counts[lo] / 2.0) / m  # the lower neighbour: below the removed value
            mid_hi = (first[hi] - 1 + counts[hi] / 2.0) / m  # the upper one: one image fewer below it
            x = u[q]
            # the others' range: the removed value is an end of it only when it is the lowest or highest
            o_lo = np.where(q == 0, u[np.minimum(1, len(u) - 1)], u[0])
            o_hi = np.where(q == len(u) - 1, u[max(len(u) - 2, 0)], u[-1])
            span = np.maximum(o_hi - o_lo, 1e-12)
            inner = (q > 0) & (q < len(u) - 1)
            w = np.divide(x - u[lo], u[hi] - u[lo], out=np.zeros_like(x), where=inner)
            r[single] = np.where(
                inner,
                mid_lo + w * (mid_hi - mid_lo),
                np.where(q == 0, mid_hi + (x - u[hi]) / span, mid_lo + (x - u[lo]) / span),
            )
        out.append(r)
    return np.stack(out, 1)


def any_threshold(clean_scores: np.ndarray, fpr: float, rule: str = "empirical") -> tuple[list[np.ndarray], float]:
    """The ``any`` rule calibrated on clean scores (N, detectors): each detector's sorted clean scores (its ranks
    are taken against them) and the one threshold on the largest rank that flags a share ``fpr`` of clean images
    (jointly, not each detector at ``fpr``).

    The threshold is :func:`advguard.metrics.threshold_at_fpr` (at most ``floor(fpr * N)`` images above, the
    convention of every single detector's threshold) of the *leave-one-out* ranks' row maxima
    (:func:`leave_one_out_ranks`: each image ranked against the other N - 1 exactly as a new image is ranked
    against the N). A new clean image exchangeable with the calibration images is then flagged with probability
    about ``(floor(fpr * N) + 1) / (N + 1)``, as a single detector's threshold flags it (5.3 % for 227 images at
    5 %, 7.3 % for 40).

    Why not in-sample or k-fold ranks: in-sample ranks never put an image above itself, so with several detectors
    the joint FPR overshoots (simulated: 18 % instead of 10 % with 4 detectors and 40 images); k-fold ranks depend
    on how the fold draw splits a block of tied values (guard-cifar10: five of fold M's 227 clean images have
    TaintRadar's rank change 1; the 5-fold draw put four of them, and the only 3, in one fold, so each was ranked
    as the top of its fold's rest, 0.997 instead of the 0.985 a new image with rank change 1 gets; the threshold
    rose and the rule flagged 1.4 % of the test fold's clean images; 22 % of fold draws gave under 3 %).
    Leave-one-out ranks involve no draw.

    ``rule="conformal"`` leaves ``floor(fpr * (N + 1)) - 1`` images above instead (an expected FPR of at most
    ``fpr``), as :func:`advguard.metrics.threshold_at_fpr` explains.

    Fewer than ``1 / fpr`` images cannot resolve ``fpr``: the threshold is then the largest leave-one-out rank,
    with a warning (as a detector's calibration warns)."""
    x = np.asarray(clean_scores, dtype=np.float64)
    if x.ndim != 2:
        raise InputError(f"any_threshold: clean scores must be (images, detectors), got shape {x.shape}")
    n = len(x)
    if n < 2:
        raise InputError(f"the any rule needs at least 2 clean calibration images, got {n}")
    if not np.isfinite(x).all():
        raise InputError(f"any_threshold: {int((~np.isfinite(x)).sum())} clean calibration scores are NaN or Inf")
    warn_unresolved_fpr("the any rule", n, fpr, what="calibration rank", stacklevel=2)
    clean_sorted = [np.sort(x[:, j]) for j in range(x.shape[1])]
    return clean_sorted, float(threshold_at_fpr(leave_one_out_ranks(x).max(1), fpr, rule))


def _rank_inverse(c: np.ndarray, t: float) -> float:
    """The largest score whose :func:`clean_ranks` rank among sorted clean scores ``c`` is at most ``t`` (a score
    flags under the ``any`` rule iff it exceeds this)."""
    u, mid, span = _knots(c)
    if t >= mid[-1]:
        return float(u[-1] + (t - mid[-1]) * span)
    if t < mid[0]:
        return float(u[0] + (t - mid[0]) * span)
    k = int(np.searchsorted(mid, t, side="right")) - 1  # mid[k] <= t < mid[k + 1]
    return float(u[k] + (t - mid[k]) / (mid[k + 1] - mid[k]) * (u[k + 1] - u[k]))


def fit_meta_model(
    scores: np.ndarray,
    y: np.ndarray,
    meta_model: str | BaseEstimator = "logreg",
    *,
    fpr: float = 0.05,
    folds: int = 5,
    seed: int = 0,
    rule: str = "empirical",
) -> tuple[BaseEstimator, float]:
    """The ``stacked`` rule: a meta-model (a decision model name or a scikit-learn estimator, cloned) fitted on the
    detectors' scores (N, detectors) of clean (``y == 0``) and adversarial (``y == 1``) images, and its threshold
    at ``fpr`` of the clean images' out-of-fold meta scores (``folds`` stratified folds; ``rule`` as
    :func:`advguard.metrics.threshold_at_fpr`)."""
    from sklearn.base import clone
    from sklearn.model_selection import StratifiedKFold, cross_val_predict

    from .detectors.decision import make_decision_model

    meta = make_decision_model(meta_model, seed=seed) if isinstance(meta_model, str) else clone(meta_model)
    cv = StratifiedKFold(folds, shuffle=True, random_state=seed + 1)
    method = "decision_function" if hasattr(meta, "decision_function") else "predict_proba"
    meta_oof = cross_val_predict(meta, scores, y, cv=cv, method=method)
    meta_oof = meta_oof[:, 1] if meta_oof.ndim == 2 else meta_oof
    return meta.fit(scores, y), float(threshold_at_fpr(meta_oof[y == 0], fpr, rule))


def _finite(o: Any) -> Any:
    if isinstance(o, float) and not math.isfinite(o):
        return None
    if isinstance(o, dict):
        return {k: _finite(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_finite(v) for v in o]
    return o


class Guard:
    """Detectors in front of ``classifier`` with one decision at clean false-positive rate ``fpr``.

    ``detectors``: fitted or unfitted :class:`~advguard.detectors.Detector` objects for the same classifier.
    ``calibration``: the share of ``fit``'s clean images held out from fitting the detectors to calibrate the
    joint threshold (``any``; all of them when every detector is already fitted). ``meta_model``: a decision
    model name or a scikit-learn estimator (``stacked``). ``folds``: the out-of-fold splits of ``stacked``.
    ``threshold_rule``: ``"empirical"`` (at most a share ``fpr`` of the calibration images flagged; on new clean
    images ``(floor(fpr N) + 1) / (N + 1)`` in expectation, e.g. 5.3 % for N = 227 at 5 %) or ``"conformal"``
    (at most ``fpr`` in expectation on new clean images: 4.8 % for N = 227); :meth:`expected_fpr` states it.
    """

    def __init__(
        self,
        classifier: Classifier,
        detectors: Sequence[Detector],
        *,
        combine: str = "any",
        fpr: float = 0.05,
        correct: LabelCorrection | None = None,
        calibration: float = 0.3,
        meta_model: str | BaseEstimator = "logreg",
        folds: int = 5,
        explain: bool = True,
        seed: int = 0,
        threshold_rule: str = "empirical",
    ):
        from .detectors.base import Detector, is_estimator
        from .metrics import THRESHOLD_RULES

        if not isinstance(classifier, Classifier):
            raise ParameterTypeError(
                f"Guard: classifier must be an advguard.Classifier, got {type(classifier).__name__}"
            )
        dets = list(detectors) if isinstance(detectors, (list, tuple)) else None
        if not dets or not all(isinstance(d, Detector) for d in dets):
            raise ParameterTypeError("Guard: detectors must be a non-empty list of advguard detectors")
        for d in dets:
            if d.classifier is not classifier:
                raise ParameterError(f"Guard: detector {d.name} wraps another classifier than the guard's")
        names = [d.name for d in dets]
        check_choice("combine", combine, COMBINES, where="Guard")
        if correct is not None:
            from .defenses.correction import LabelCorrection

            if not isinstance(correct, LabelCorrection) or correct.classifier is not classifier:
                raise ParameterTypeError("Guard: correct must be a LabelCorrection for the guard's classifier")
        if not (isinstance(meta_model, str) or is_estimator(meta_model)):
            raise ParameterTypeError("Guard: meta_model must be a decision model name or a scikit-learn estimator")
        self.classifier = classifier
        self.detectors = dets
        #: the detectors' names in results (a repeated name gets "#2", "#3"...)
        self.names = [n if names.count(n) == 1 else f"{n}#{names[:i].count(n) + 1}" for i, n in enumerate(names)]
        self.combine = combine
        self.fpr = check_number("fpr", fpr, lo=0, hi=1, lo_open=True, hi_open=True, where="Guard")  # as detectors
        self.correct = correct
        self.calibration = check_number(
            "calibration", calibration, lo=0, hi=1, lo_open=True, hi_open=True, where="Guard"
        )
        self.meta_model = meta_model
        self.folds = int(check_number("folds", folds, lo=2, hi=100, integer=True, where="Guard"))
        self.explain = check_bool("explain", explain, where="Guard")
        self.seed = int(check_number("seed", seed, lo=0, hi=2**32 - 1, integer=True, where="Guard"))
        self.threshold_rule = check_choice("threshold_rule", threshold_rule, THRESHOLD_RULES, where="Guard")
        #: fitted state: per detector the sorted clean calibration scores (``any``), the meta-model (``stacked``)
        self.clean_scores_: list[np.ndarray] | None = None
        self.meta_: BaseEstimator | None = None
        self.threshold_: float | None = None
        #: how many clean images set the threshold (``any``: the calibration images; ``stacked``: the clean ones)
        self.n_calibration_: int | None = None

    def __repr__(self) -> str:
        """``Guard(classifier, combine, detectors (their names), fpr, ..., fitted or not)``: what decides, at which
        rate, and whether it can be called yet."""
        extra = []
        if self.combine == "stacked":
            meta = self.meta_model if isinstance(self.meta_model, str) else type(self.meta_model).__name__
            extra.append(f"meta_model={meta!r}")
        if self.correct is not None:
            extra.append(f"correct={self.correct!r}")
        if self.threshold_rule != "empirical":
            extra.append(f"threshold_rule={self.threshold_rule!r}")
        state = f"fitted, threshold={self.threshold_:.4g}" if self.threshold_ is not None else "not fitted"
        return (
            f"Guard({self.classifier.name}, combine={self.combine!r}, detectors={self.names}, fpr={self.fpr:g}, "
            + "".join(f"{e}, " for e in extra)
            + f"{state})"
        )

    # ------------------------------------------------------------------ fitting
    def fit(self, x_clean: np.ndarray | torch.Tensor, x_adv: np.ndarray | torch.Tensor | None = None) -> Guard:
        """Fit the detectors that are not fitted yet and calibrate the joint decision on clean images only (the
        adversarial images train supervised detectors and the stacked meta-model, never the threshold)."""
        xc = self.classifier.validate(x_clean, "x_clean")
        xa = None if x_adv is None else self.classifier.validate(x_adv, "x_adv")
        need_adv = self.combine == "stacked" or any(d.supervised and d.threshold_ is None for d in self.detectors)
        if need_adv and (xa is None or len(xa) == 0):
            what = "the stacked meta-model" if self.combine == "stacked" else "a supervised detector"
            raise InputError(f"Guard.fit: {what} needs adversarial images: fit(x_clean, x_adv)")
        if self.combine == "any":
            self._fit_any(xc, xa)
        else:
            assert xa is not None
            self._fit_stacked(xc, xa)
        return self

    def _split(self, n: int, share: float) -> tuple[np.ndarray, np.ndarray]:
        perm = np.random.default_rng(self.seed).permutation(n)
        k = int(round(share * n))
        return np.sort(perm[k:]), np.sort(perm[:k])

    def _fit_any(self, xc: torch.Tensor, xa: torch.Tensor | None) -> None:
        unfitted = [d for d in self.detectors if d.threshold_ is None]
        if unfitted:
            fit_idx, cal_idx = self._split(len(xc), self.calibration)
            if len(cal_idx) < 2 or len(fit_idx) < 2:
                raise InputError(f"Guard.fit: {len(xc)} clean images are too few to fit and calibrate")
            for d in unfitted:
                d.fit(xc[fit_idx], xa if d.supervised else None)
            x_cal = xc[cal_idx]
        else:
            x_cal = xc
        self.clean_scores_, self.threshold_ = any_threshold(self._detector_scores(x_cal), self.fpr, self.threshold_rule)
        self.n_calibration_ = len(x_cal)

    def _fit_stacked(self, xc: torch.Tensor, xa: torch.Tensor) -> None:
        from sklearn.base import clone
        from sklearn.model_selection import StratifiedKFold

        x = torch.cat([xc, xa])
        y = np.r_[np.zeros(len(xc)), np.ones(len(xa))].astype(int)
        oof = np.empty((len(x), len(self.detectors)))
        k = min(self.folds, len(xc), len(xa))
        if k < 2:
            raise InputError("Guard.fit (stacked): needs at least 2 clean and 2 adversarial images")
        # features once per detector that fits on them (k refits then cost no model pass); the others refit on images
        feats = {j: d.extract(x) for j, d in enumerate(self.detectors) if d.fits_on_features}
        for tr, te in StratifiedKFold(k, shuffle=True, random_state=self.seed).split(np.zeros(len(y)), y):
            tr_c, tr_a = tr[y[tr] == 0], tr[y[tr] == 1]
            for j, d in enumerate(self.detectors):
                m = clone(d)
                if j in feats:
                    m.fit_features(feats[j][tr_c], feats[j][tr_a] if m.supervised else None)
                    oof[te, j] = m.score_features(feats[j][te])
                else:
                    m.fit(x[tr_c], x[tr_a] if m.supervised else None)
                    oof[te, j] = m.score(x[te])
        nc = len(xc)
        for j, d in enumerate(self.detectors):  # the detectors that answer later are fitted on everything
            if j in feats:
                d.fit_features(feats[j][:nc], feats[j][nc:] if d.supervised else None)
            else:
                d.fit(xc, xa if d.supervised else None)
        self.meta_, self.threshold_ = fit_meta_model(
            oof, y, self.meta_model, fpr=self.fpr, folds=k, seed=self.seed, rule=self.threshold_rule
        )
        self.n_calibration_ = nc

    # ------------------------------------------------------------------ scoring
    def _detector_scores(self, x: torch.Tensor) -> np.ndarray:
        return np.stack([d.score(x) for d in self.detectors], 1)

    def _ranks(self, scores: np.ndarray) -> np.ndarray:
        assert self.clean_scores_ is not None
        return clean_ranks(self.clean_scores_, scores)

    def _combined(self, scores: np.ndarray) -> np.ndarray:
        if self.combine == "any":
            out: np.ndarray = self._ranks(scores).max(1)
            return out
        from .detectors.decision import decision_scores

        assert self.meta_ is not None
        return decision_scores(self.meta_, scores)

    def _check_fitted(self) -> None:
        if self.threshold_ is None:
            from .detectors.base import NotFittedError

            raise NotFittedError("the guard is not fitted: call fit(x_clean[, x_adv]) or Guard.load(...)")

    def expected_fpr(self) -> float:
        """The expected share of new clean images (exchangeable with the calibration images) this fitted guard
        flags: ``(k + 1) / (N + 1)`` for the ``k`` of its ``N`` clean calibration images left above the threshold
        (:func:`advguard.metrics.expected_fpr`; ties among scores can only lower it). Approximate for a guard:
        the ``any`` rule's leave-one-out ranks and the ``stacked`` rule's out-of-fold scores are nearly, not exactly,
        exchangeable with a new image's. NaN for a ``stacked`` guard
        saved by advguard 0.2, whose file does not hold ``N``."""
        from .metrics import expected_fpr

        self._check_fitted()
        if self.n_calibration_ is None:  # a stacked guard saved before the count was written
            return math.nan
        return expected_fpr(self.n_calibration_, self.fpr, self.threshold_rule)

    def detector_thresholds(self) -> list[float]:
        """``any``: each detector's threshold in the joint OR rule (an image is flagged when some detector's score
        exceeds its threshold); ``stacked``: the detectors' own thresholds (informative only: the meta-model
        decides)."""
        self._check_fitted()
        if self.combine != "any":
            return [float(d.threshold_) if d.threshold_ is not None else math.nan for d in self.detectors]
        assert self.clean_scores_ is not None and self.threshold_ is not None
        return [_rank_inverse(c, self.threshold_) for c in self.clean_scores_]

    def score(self, x: np.ndarray | torch.Tensor) -> np.ndarray:
        """The combined score per image (higher = more adversarial; flagged above :attr:`threshold_`)."""
        self._check_fitted()
        return self._combined(self._detector_scores(self.classifier.validate(x)))

    def decision_function(self, x: np.ndarray | torch.Tensor) -> np.ndarray:
        return self.score(x)

    def predict(self, x: np.ndarray | torch.Tensor) -> np.ndarray:
        """True where the guard flags the image as adversarial."""
        s = self.score(x)
        assert self.threshold_ is not None
        return np.asarray(s > self.threshold_, dtype=bool)

    def __call__(self, x: np.ndarray | torch.Tensor) -> list[GuardResult]:
        """One :class:`GuardResult` per image of ``x``."""
        self._check_fitted()
        assert self.threshold_ is not None
        t = self.classifier.validate(x)
        probs = self.classifier.probs(t)
        conf, labels = probs.max(1)
        scores = self._detector_scores(t)
        combined = self._combined(scores)
        flagged = combined > self.threshold_
        thresholds = self.detector_thresholds()
        corrected = None
        if self.correct is not None and flagged.any():
            corrected = np.full(len(t), -1)
            corrected[flagged] = self.correct.predict(t[torch.from_numpy(flagged)])
        explanations = self._explanations(t, flagged, labels) if self.explain else [{} for _ in range(len(t))]
        out = []
        for i in range(len(t)):
            per = {
                name: {
                    "score": float(scores[i, j]),
                    "threshold": thresholds[j],
                    "flags": bool(scores[i, j] > thresholds[j]) if self.combine == "any" else None,
                }
                for j, name in enumerate(self.names)
            }
            verdict: Literal["clean", "adversarial", "corrected"] = "clean"
            if flagged[i]:
                verdict = "corrected" if corrected is not None else "adversarial"
            out.append(
                GuardResult(
                    label=int(labels[i]),
                    probability=float(conf[i]),
                    verdict=verdict,
                    score=float(combined[i]),
                    threshold=float(self.threshold_),
                    detectors=per,
                    corrected_label=None if corrected is None or not flagged[i] else int(corrected[i]),
                    explanations=explanations[i],
                )
            )
        return out

    def _explanations(self, x: torch.Tensor, flagged: np.ndarray, labels: torch.Tensor) -> list[dict[str, Any]]:
        """Per flagged image, what the detectors that can say why found (TaintRadar's region, SentiNet's salient
        region, Erase-and-Restore's label flips) and the classifier's Grad-CAM map for its label; JSON-able."""
        from .detectors.erase_restore import EraseRestore
        from .detectors.sentinet import SentiNet
        from .detectors.taintradar import TaintRadar

        out: list[dict[str, Any]] = [{} for _ in range(len(x))]
        idx = np.nonzero(flagged)[0]
        if len(idx) == 0:
            return out
        xf = x[torch.from_numpy(idx)]
        for name, d in zip(self.names, self.detectors, strict=True):
            if isinstance(d, TaintRadar):
                for i, e in zip(idx, d.explain(xf), strict=True):
                    out[i][name] = {"region": _bbox(e["final_mask"]), "region_share": e["final_region_share"]}
            elif isinstance(d, SentiNet):  # its salient region: the Grad-CAM mask it pastes onto test images
                _, masks = d.masks(xf)
                for i, m in zip(idx, masks.cpu().numpy(), strict=True):
                    out[i][name] = {"region": _bbox(m), "region_share": float(m.mean())}
            elif isinstance(d, EraseRestore):
                p = d.chunked_probs(xf)  # (n, 1 + draws, C)
                lab = p.argmax(2)
                for i, row in zip(idx, lab, strict=True):
                    flips = row[1:] != row[0]
                    out[i][name] = {
                        "label_flips": int(flips.sum()),
                        "draws": int(len(flips)),
                        "flipped_to": sorted(set(row[1:][flips].tolist())),
                    }
        clf = self.classifier
        if clf.gradcam_layer is not None:
            lab_f = labels.cpu()[torch.from_numpy(idx)]  # the answer's own labels (no second forward pass)
            cams = clf.gradcam(xf, lab_f).detach().cpu().numpy()
            for i, lab, cam in zip(idx, lab_f.tolist(), cams, strict=True):
                out[i]["grad-cam"] = {
                    "layer": clf.gradcam_layer,
                    "label": int(lab),
                    "map": np.round(np.nan_to_num(cam.astype(np.float64)), 3).tolist(),
                }
        return out

    # ------------------------------------------------------------------ files
    def save(self, path: str | Path) -> Path:
        """Write the fitted guard to one file (atomically): guard.json, arrays.npz, the meta-model (skops, through
        the detectors' allow-list) and each detector's own safe file."""
        from .detectors.serialization import _dump_estimator

        self._check_fitted()
        path = Path(path)
        meta: dict[str, Any] = {
            "format": GUARD_FORMAT,
            "classifier": self.classifier.name,
            "combine": self.combine,
            "fpr": self.fpr,
            "calibration": self.calibration,
            "folds": self.folds,
            "explain": self.explain,
            "seed": self.seed,
            "threshold_rule": self.threshold_rule,
            "n_calibration": self.n_calibration_,
            "threshold": self.threshold_,
            "detectors": self.names,
            "correct": None,
            "meta_model": self.meta_model
            if isinstance(self.meta_model, str)
            else {"estimator": type(self.meta_model).__name__},
        }
        if self.correct is not None:
            meta["correct"] = {
                "ops": [o.name for o in self.correct.ops],
                "k": self.correct.k,
                "vote_k": self.correct.vote_k,
            }
        arrays = {f"clean_scores_{j}": c for j, c in enumerate(self.clean_scores_ or [])}
        buf = io.BytesIO()
        np.savez(buf, **arrays)  # type: ignore[arg-type]
        members: dict[str, bytes] = {"arrays.npz": buf.getvalue()}
        if self.meta_ is not None:
            kind, blob = _dump_estimator(self.meta_)
            meta["meta_format"] = kind
            members["meta.bin"] = blob
        with tempfile.TemporaryDirectory() as d:
            for j, det in enumerate(self.detectors):
                members[f"detector-{j}.advguard"] = det.save(Path(d) / f"{j}.advguard").read_bytes()
        members["guard.json"] = json.dumps(meta, indent=1, allow_nan=False).encode()
        with atomic_path(path) as tmp, zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as z:
            for name, data in members.items():
                z.writestr(name, data)
        return path

    @staticmethod
    def saved_classifier(path: str | Path) -> str | None:
        """The name of the classifier a guard file was fitted for (a zoo name, when it is one), read without
        loading the rest (``advguard detect`` loads that model before :meth:`load`)."""
        from .detectors.serialization import _read_member

        try:
            with zipfile.ZipFile(path) as z:
                _check_guard_members(z.namelist(), str(path))
                meta = json.loads(_read_member(z, "guard.json", _MAX_GUARD_JSON, str(path)))
        except DetectorFileError:
            raise
        except (zipfile.BadZipFile, KeyError, OSError, ValueError, EOFError) as e:
            raise DetectorFileError(f"{path} is not a readable guard file ({type(e).__name__}: {e})") from e
        name = meta.get("classifier") if isinstance(meta, dict) else None
        return name if isinstance(name, str) else None

    @staticmethod
    def load(path: str | Path, classifier: Classifier, *, max_bytes: int = MAX_GUARD_BYTES) -> Guard:
        """Rebuild a saved guard around ``classifier`` (each detector file's checks apply, the classifier's
        fingerprint included)."""
        from .detectors.base import Detector
        from .detectors.serialization import _load_estimator, _read_member, _read_npz

        path = Path(path)
        where = str(path)
        if not path.is_file():
            raise DetectorFileError(f"guard file not found: {where}")
        try:
            with zipfile.ZipFile(path) as z:
                infos = z.infolist()
                total = sum(i.file_size for i in infos)
                if total > max_bytes:
                    raise DetectorFileError(f"{where} unpacks to {total:,} bytes, over the limit of {max_bytes:,}")
                names = [i.filename for i in infos]
                _check_guard_members(names, where)
                meta = json.loads(_read_member(z, "guard.json", _MAX_GUARD_JSON, where))
                members = {n: _read_member(z, n, max_bytes, where) for n in names if n != "guard.json"}
        except DetectorFileError:
            raise
        except (zipfile.BadZipFile, OSError, ValueError, EOFError) as e:
            raise DetectorFileError(f"{where} is not a readable guard file ({type(e).__name__}: {e})") from e
        _check_guard_meta(meta, names, where)
        dets = []
        with tempfile.TemporaryDirectory() as d:
            for j in range(len(meta["detectors"])):
                p = Path(d) / f"{j}.advguard"
                p.write_bytes(members[f"detector-{j}.advguard"])
                dets.append(Detector.load(p, classifier))
        correct = None
        if meta["correct"] is not None:
            from .defenses.correction import LabelCorrection

            c = meta["correct"]
            correct = LabelCorrection(classifier, ops=c["ops"], k=c["k"], vote_k=c["vote_k"])
        meta_model = meta["meta_model"] if isinstance(meta["meta_model"], str) else "logreg"
        g = Guard(
            classifier,
            dets,
            combine=meta["combine"],
            fpr=meta["fpr"],
            correct=correct,
            calibration=meta["calibration"],
            meta_model=meta_model,
            folds=meta["folds"],
            explain=meta["explain"],
            seed=meta["seed"],
            threshold_rule=meta.get("threshold_rule", "empirical"),
        )
        arrays = _read_npz(members["arrays.npz"], where)
        if g.combine == "any":
            g.clean_scores_ = [np.asarray(arrays[f"clean_scores_{j}"], dtype=np.float64) for j in range(len(dets))]
            if any(len(c) == 0 or not np.isfinite(c).all() or (np.diff(c) < 0).any() for c in g.clean_scores_):
                raise DetectorFileError(f"{where}: the clean calibration scores are not sorted finite numbers")
        else:
            g.meta_ = _load_estimator(meta["meta_format"], members["meta.bin"], where)
            if not isinstance(meta["meta_model"], str):
                from sklearn.base import clone

                g.meta_model = clone(g.meta_)
        g.threshold_ = float(meta["threshold"])
        # files saved before n_calibration was written: the any rule's calibration images are its clean scores
        n_cal = meta.get("n_calibration")
        g.n_calibration_ = n_cal if n_cal is not None else (len(g.clean_scores_[0]) if g.clean_scores_ else None)
        return g


def _check_guard_members(names: list[str], where: str) -> None:
    """A guard file holds guard.json and arrays.npz; a detector file (detector.json) is named as such."""
    if "guard.json" in names and "arrays.npz" in names:
        return
    if "detector.json" in names:
        raise DetectorFileError(
            f"{where} is a detector file (it holds detector.json), not a Guard file: load it with "
            "advguard.detectors.Detector.load(path, classifier), or put the detector in a guard: "
            "Guard(classifier, [detector]).fit(x_clean).save(path)"
        )
    raise DetectorFileError(f"{where} is not an advguard guard file (no guard.json and arrays.npz)")


def _check_guard_meta(meta: Any, names: list[str], where: str) -> None:
    """The structure of guard.json, every key named when wrong."""
    want: dict[str, type | tuple[type, ...]] = {
        "format": int,
        "classifier": (str, type(None)),
        "combine": str,
        "fpr": (int, float),
        "calibration": (int, float),
        "folds": int,
        "explain": bool,
        "seed": int,
        "threshold": (int, float),
        "detectors": list,
        "correct": (dict, type(None)),
        "meta_model": (str, dict),
    }
    if not isinstance(meta, dict):
        raise DetectorFileError(f"{where}: guard.json must hold an object")
    problems = [f"missing key {k!r}" for k in want if k not in meta]
    optional: dict[str, type | tuple[type, ...]] = {  # absent from files written before them
        "meta_format": str,
        "threshold_rule": str,
        "n_calibration": (int, type(None)),
    }
    problems += [
        f"{k!r} has type {type(meta[k]).__name__}"
        for k, t in {**want, **optional}.items()
        if k in meta and (not isinstance(meta[k], t) or (k in optional and isinstance(meta[k], bool)))
    ]
    unknown = sorted(set(meta) - set(want) - set(optional))
    if unknown:
        problems.append(f"unknown key(s) {unknown}")
    if problems:
        raise DetectorFileError(f"{where}: invalid guard.json: {'; '.join(problems)}")
    if meta["format"] != GUARD_FORMAT:
        raise DetectorFileError(f"{where}: guard format {meta['format']}; this advguard reads {GUARD_FORMAT}")
    from .metrics import THRESHOLD_RULES

    if meta.get("threshold_rule", "empirical") not in THRESHOLD_RULES:
        raise DetectorFileError(f"{where}: invalid threshold_rule {meta['threshold_rule']!r}")
    if isinstance(meta.get("n_calibration"), int) and meta["n_calibration"] < 1:
        raise DetectorFileError(f"{where}: invalid n_calibration {meta['n_calibration']!r}")
    if meta["combine"] not in COMBINES or not math.isfinite(meta["threshold"]):
        raise DetectorFileError(f"{where}: invalid combine {meta['combine']!r} or threshold {meta['threshold']!r}")
    expected = {"guard.json", "arrays.npz"} | {f"detector-{j}.advguard" for j in range(len(meta["detectors"]))}
    if meta["combine"] == "stacked":
        expected.add("meta.bin")
    if set(names) != expected or len(names) != len(set(names)):
        raise DetectorFileError(
            f"{where}: members {sorted(names)} do not match guard.json (expected {sorted(expected)})"
        )


def _bbox(mask: np.ndarray) -> list[int] | None:
    """[top, left, bottom, right] (exclusive) of a binary mask's pixels, None when empty."""
    rows, cols = np.nonzero(np.asarray(mask))
    if len(rows) == 0:
        return None
    return [int(rows.min()), int(cols.min()), int(rows.max()) + 1, int(cols.max()) + 1]


__all__ = ["COMBINES", "Guard", "GuardResult"]
