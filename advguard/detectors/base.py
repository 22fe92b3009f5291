"""The detector protocol every advguard detector implements.

A detector is a **feature extractor** (uses the classifier and image transforms) plus a
**decision model**: a scikit-learn-compatible estimator (supervised detectors, fitted on
clean and adversarial features) or a fixed statistic of the features (unsupervised ones,
fitted on clean data only). In both cases the decision threshold is **calibrated on clean
data only** for a target false-positive rate, never tuned per attack:

- unsupervised: the (1 - fpr) quantile of the clean fitting images' scores;
- supervised: the same quantile of *out-of-fold* clean scores (5-fold cross-validation on
  the fitting data), so the training fit does not make the threshold optimistic.

``score(x)`` returns one float per image, higher = more adversarial; ``predict(x)`` returns
booleans at the calibrated threshold; ``save``/``load`` use a pickle-free file. Following
scikit-learn, ``__init__`` only stores parameters and ``fit`` returns ``self``.
"""
from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..classifier import Classifier
from ..errors import AdvguardError, DetectorFileError, InputError, ParameterError
from ..metrics import CostReport, PeakMemory, threshold_at_fpr
from ..validation import check_keywords, check_number, init_keywords
from .decision import DECISION_MODELS, decision_scores, make_decision_model
from .serialization import load_detector_file, save_detector

def parameter_names(cls: type) -> set[str]:
    """Keyword parameters a detector class accepts: its ``__init__``'s and, through ``**kw``, its bases' up to
    :class:`Detector` (fpr, decision_model, decision_params, seed)."""
    return init_keywords(cls, Detector, exclude=("classifier",))


def check_rate(name: str, value: Any, *, low: float = 0.0, high: float = 1.0, closed: bool = False) -> float:
    """``value`` as a float in (low, high) (or [low, high] with ``closed``; ``high`` may be inf)."""
    return float(check_number(name, value, lo=low, hi=None if math.isinf(high) else high,
                              lo_open=not closed, hi_open=not closed))


def check_count(name: str, value: Any, *, low: int = 1, high: int | None = None, optional: bool = False) -> int | None:
    """``value`` as an int in [low, high]; None passes when ``optional``."""
    if value is None and optional:
        return None
    return int(check_number(name, value, lo=low, hi=high, integer=True))


class NotFittedError(AdvguardError):
    """The detector must be fitted/calibrated before this call."""


class Detector:
    """Base class; subclasses implement :meth:`features` (and :meth:`statistic` if they can run unsupervised).

    ``decision_model=None`` means unsupervised (the detector's own :meth:`statistic` scores the
    features); a name (``"svc"``, ``"xgb"``, ...) makes the detector supervised. Subclasses that
    need a decision model set :attr:`default_decision_model`.
    """

    name = "detector"
    default_decision_model: str | None = None

    def __init__(self, classifier: Classifier, *, fpr: float = 0.05, decision_model: str | None = None,
                 decision_params: dict | None = None, seed: int = 0, **params: Any):
        if not isinstance(classifier, Classifier):
            raise ParameterError(f"{self.name}: classifier must be an advguard.Classifier, got "
                                 f"{type(classifier).__name__}")
        check_keywords(self.name, params, parameter_names(type(self)))
        self.classifier = classifier
        self.fpr = check_rate("fpr", fpr)
        self.decision_model = decision_model if decision_model is not None else self.default_decision_model
        if self.decision_model is not None and self.decision_model not in DECISION_MODELS:
            from ..errors import unknown_name

            raise unknown_name("decision model", str(self.decision_model), list(DECISION_MODELS))
        if decision_params is not None and not isinstance(decision_params, dict):
            raise ParameterError(f"decision_params must be a dict, got {type(decision_params).__name__}")
        self.decision_params = dict(decision_params or {})
        if self.decision_model is not None and self.decision_params:
            try:  # unknown estimator parameters fail here, not after the features are computed
                make_decision_model(self.decision_model, seed=0, **self.decision_params)
            except TypeError as e:
                raise ParameterError(f"decision_params for {self.decision_model!r}: {e}") from e
        self.seed = check_count("seed", seed, low=0)
        self.params = params
        self.threshold_: float | None = None
        self.calibration_: dict | None = None
        self.estimator_ = None
        self.last_cost_: dict | None = None

    @property
    def supervised(self) -> bool:
        return self.decision_model is not None

    # ---------------------------------------------------------------- to override
    def features(self, x: torch.Tensor) -> np.ndarray:
        """(N, d) float features of validated images ``x``."""
        raise NotImplementedError

    def statistic(self, features: np.ndarray) -> np.ndarray:
        """Unsupervised detectors: one score per image from its features (higher = more adversarial)."""
        raise NotImplementedError

    def _fit_features(self, f_clean: np.ndarray) -> None:
        """Unsupervised detectors with fitted state (e.g. a PCA) fit it here, on clean features only."""

    def _state(self) -> tuple[dict, dict[str, np.ndarray]]:
        """Fitted state beyond threshold and estimator: (JSON-able dict, arrays)."""
        return {}, {}

    def _set_state(self, meta: dict, arrays: dict[str, np.ndarray]) -> None:
        pass

    def feature_names(self, d: int) -> list[str]:
        return [f"f{i}" for i in range(d)]

    # ---------------------------------------------------------------- protocol
    def get_params(self) -> dict:
        out = {"fpr": self.fpr, "seed": self.seed, **self.params, "decision_model": self.decision_model}
        if self.decision_params:
            out["decision_params"] = self.decision_params
        return out

    def __repr__(self) -> str:
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in self.get_params().items())})"

    def extract(self, x: np.ndarray | torch.Tensor) -> np.ndarray:
        """Validate ``x`` and compute its features, recording the cost in :attr:`last_cost_`."""
        t = self.classifier.validate(x)
        passes0 = self.classifier.num_passes
        start = time.perf_counter()
        with PeakMemory() as mem:
            f = np.asarray(self.features(t), dtype=np.float64)
        cost = CostReport(n=t.shape[0], seconds=time.perf_counter() - start,
                          passes=self.classifier.num_passes - passes0, peak_mb=mem.peak_mb)
        self.last_cost_ = cost.as_dict()
        if f.ndim != 2 or f.shape[0] != t.shape[0]:
            raise AdvguardError(f"{self.name}: features have shape {f.shape}, expected ({t.shape[0]}, d)")
        return f

    def fit(self, x_clean: np.ndarray | torch.Tensor, x_adv: np.ndarray | torch.Tensor | None = None) -> "Detector":
        """Supervised: fit on clean + adversarial images; unsupervised: ``x_adv`` must be None."""
        f_adv = None
        if self.supervised:
            if x_adv is None:
                raise InputError(f"{self.name} is supervised: fit(x_clean, x_adv) needs adversarial examples")
            f_adv = self.extract(x_adv)
        elif x_adv is not None:
            raise InputError(f"{self.name} is unsupervised: fit on clean images only (x_adv must be None)")
        return self.fit_features(self.extract(x_clean), f_adv)

    def fit_features(self, f_clean: np.ndarray, f_adv: np.ndarray | None = None) -> "Detector":
        """:meth:`fit` on precomputed features (the benchmark harness caches them)."""
        f_clean = np.asarray(f_clean, dtype=np.float64)
        self._check_fit_size(len(f_clean))
        if not self.supervised:
            self._fit_features(f_clean)
            self._set_threshold(self.statistic(f_clean))
            return self
        if f_adv is None or len(f_adv) == 0:
            raise InputError(f"{self.name} is supervised and needs adversarial features")
        from sklearn.base import clone
        from sklearn.model_selection import StratifiedKFold

        f = np.concatenate([f_clean, np.asarray(f_adv, dtype=np.float64)])
        y = np.r_[np.zeros(len(f_clean)), np.ones(len(f_adv))].astype(int)
        est = make_decision_model(self.decision_model, seed=self.seed, **self.decision_params)
        oof = np.empty(len(f_clean))
        k = min(5, int(min(len(f_clean), len(f_adv))))
        if k >= 2:
            for tr, te in StratifiedKFold(k, shuffle=True, random_state=self.seed).split(f, y):
                m = clone(est).fit(f[tr], y[tr])
                clean_te = te[te < len(f_clean)]
                oof[clean_te] = decision_scores(m, f[clean_te])
        self.estimator_ = est.fit(f, y)
        if k < 2:
            oof = decision_scores(self.estimator_, f_clean)
        self._set_threshold(oof)
        return self

    #: The fewest clean images a fit or calibration accepts.
    min_fit_images = 2

    def _check_fit_size(self, n: int) -> None:
        """At least :attr:`min_fit_images` clean images (an error), and a warning when so few that one image is a
        share above ``fpr`` (the target FPR cannot be resolved: the threshold sits at the largest clean score)."""
        if n < self.min_fit_images:
            raise InputError(f"{self.name}: fitting needs at least {self.min_fit_images} clean images, got {n}")
        need = math.ceil(1.0 / self.fpr - 1e-9)
        if n < need:
            import warnings

            warnings.warn(f"{self.name}: {n} clean images cannot resolve FPR {self.fpr:g} (needs at least {need}); "
                          "the threshold is the largest clean score", UserWarning, stacklevel=3)

    def _set_threshold(self, clean_scores: np.ndarray) -> None:
        """Threshold at :attr:`fpr` of these clean scores; their range is recorded (a saved threshold outside
        it is refused at load)."""
        s = np.asarray(clean_scores, dtype=np.float64)
        if not np.isfinite(s).all():
            raise AdvguardError(f"{self.name}: {int((~np.isfinite(s)).sum())} clean calibration scores are not "
                                "finite")
        self.threshold_ = float(threshold_at_fpr(s, self.fpr))
        self.calibration_ = {"n": int(len(s)), "min": float(s.min()), "max": float(s.max())}

    def score_features(self, f: np.ndarray) -> np.ndarray:
        f = np.asarray(f, dtype=np.float64)
        if self.supervised:
            if self.estimator_ is None:
                raise NotFittedError(f"{self.name} is not fitted: call fit(x_clean, x_adv) first")
            return decision_scores(self.estimator_, f)
        return np.asarray(self.statistic(f), dtype=np.float64)

    def score(self, x: np.ndarray | torch.Tensor, return_report: bool = False):
        """One score per image (higher = more adversarial); with ``return_report`` also a list of dicts."""
        f = self.extract(x)
        s = self.score_features(f)
        if not return_report:
            return s
        names = self.feature_names(f.shape[1])
        reports = []
        for i in range(len(s)):
            r = {"score": float(s[i]), "threshold": self.threshold_,
                 "adversarial": None if self.threshold_ is None else bool(s[i] > self.threshold_)}
            if f.shape[1] <= 16:
                r["features"] = dict(zip(names, map(float, f[i])))
            reports.append(r)
        return s, reports

    def calibrate(self, x_clean: np.ndarray | torch.Tensor, fpr: float | None = None) -> "Detector":
        """Set the threshold so that a share ``fpr`` of these clean images is flagged."""
        if fpr is not None:
            self.fpr = check_rate("fpr", fpr)
        scores = self.score(x_clean)
        self._check_fit_size(len(scores))
        self._set_threshold(scores)
        return self

    def predict(self, x: np.ndarray | torch.Tensor) -> np.ndarray:
        """True where the image is judged adversarial (score above the calibrated threshold)."""
        if self.threshold_ is None:
            raise NotFittedError(f"{self.name} has no threshold: call fit(...) or calibrate(x_clean) first")
        return self.score(x) > self.threshold_

    # ---------------------------------------------------------------- persistence
    def save(self, path: str | Path) -> Path:
        """Write the fitted detector to one pickle-free file (atomically), with the classifier's fingerprint."""
        from ..fingerprint import classifier_fingerprint

        extra_meta, arrays = self._state()
        meta = {"detector": self.name, "params": self.get_params(), "threshold": self.threshold_,
                "classifier": self.classifier.name, "state": extra_meta,
                "fingerprint": classifier_fingerprint(self.classifier), "calibration": self.calibration_}
        return save_detector(path, meta, arrays, self.estimator_)

    @staticmethod
    def load(path: str | Path, classifier: Classifier, *, check_classifier: bool = True,
             max_bytes: int | None = None) -> "Detector":
        """Rebuild a saved detector around ``classifier``, which must be the network it was fitted for.

        The file's classifier fingerprint (architecture, weights, input spec) must match ``classifier``;
        ``check_classifier=False`` loads anyway with a warning (e.g. for a deliberate transfer experiment).
        Every check of :mod:`advguard.detectors.serialization` applies; ``max_bytes`` raises its size limit.
        """
        import warnings

        from ..fingerprint import classifier_fingerprint, fingerprint_mismatch
        from . import DETECTORS, make_detector
        from .serialization import MAX_TOTAL_BYTES

        if not isinstance(classifier, Classifier):
            raise ParameterError(f"classifier must be an advguard.Classifier, got {type(classifier).__name__}")
        meta, arrays, est = load_detector_file(path, max_bytes=max_bytes or MAX_TOTAL_BYTES)
        if meta["detector"] not in DETECTORS:
            raise DetectorFileError(f"{path}: unknown detector {meta['detector']!r}")
        saved = meta.get("fingerprint")
        if saved is None:
            problems = ["the file records no classifier fingerprint (saved by advguard < 0.2)"]
        else:
            problems = fingerprint_mismatch(saved, classifier_fingerprint(classifier))
        if problems:
            msg = (f"{path} was fitted for classifier {meta.get('classifier')!r}, not this {classifier.name!r}: "
                   + "; ".join(problems))
            if check_classifier:
                raise DetectorFileError(msg + ". Pass check_classifier=False to load it anyway.")
            warnings.warn(msg, stacklevel=2)
        try:
            det = make_detector(meta["detector"], classifier, **meta["params"])
        except (AdvguardError, TypeError, ValueError, AttributeError, KeyError) as e:
            raise DetectorFileError(f"{path}: invalid detector parameters: {type(e).__name__}: {e}") from e
        if det.supervised != (est is not None):
            raise DetectorFileError(f"{path}: a {'supervised' if det.supervised else 'unsupervised'} detector "
                                    f"{'without' if det.supervised else 'with'} a decision model")
        det.threshold_ = None if meta["threshold"] is None else float(meta["threshold"])
        det.calibration_ = meta.get("calibration")
        det.estimator_ = est
        try:
            det._set_state(meta.get("state", {}), arrays)
            det._self_test()
        except Exception as e:  # any inconsistency between parameters, state and arrays: the file is bad
            raise DetectorFileError(f"{path}: the fitted state of this {meta['detector']} detector is invalid "
                                    f"({type(e).__name__}: {e})") from e
        return det

    def _self_test(self) -> None:
        """Score one grey image once (after loading): a state that cannot score, or scores NaN, is refused here
        rather than at the first real image."""
        if self.classifier.size is None or self.threshold_ is None:
            return
        probe = torch.full((1, self.classifier.channels, *self.classifier.size), 0.5)
        progress = self.params.get("progress")
        if progress:
            self.params["progress"] = False
        try:
            s = self.score(probe)
        finally:
            if progress:
                self.params["progress"] = progress
        if s.shape != (1,) or not np.isfinite(s).all():
            raise AdvguardError(f"a grey probe image scored {s!r}")
