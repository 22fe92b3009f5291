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

import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..classifier import Classifier
from ..errors import AdvguardError, InputError
from ..metrics import CostReport, PeakMemory, threshold_at_fpr
from .decision import decision_scores, make_decision_model
from .serialization import load_detector_file, save_detector


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
        self.classifier = classifier
        self.fpr = float(fpr)
        self.decision_model = decision_model if decision_model is not None else self.default_decision_model
        self.decision_params = dict(decision_params or {})
        self.seed = int(seed)
        self.params = params
        self.threshold_: float | None = None
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
        if not self.supervised:
            self._fit_features(f_clean)
            self.threshold_ = threshold_at_fpr(self.statistic(f_clean), self.fpr)
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
        self.threshold_ = threshold_at_fpr(oof, self.fpr)
        return self

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
            self.fpr = float(fpr)
        self.threshold_ = threshold_at_fpr(self.score(x_clean), self.fpr)
        return self

    def predict(self, x: np.ndarray | torch.Tensor) -> np.ndarray:
        """True where the image is judged adversarial (score above the calibrated threshold)."""
        if self.threshold_ is None:
            raise NotFittedError(f"{self.name} has no threshold: call fit(...) or calibrate(x_clean) first")
        return self.score(x) > self.threshold_

    # ---------------------------------------------------------------- persistence
    def save(self, path: str | Path) -> Path:
        extra_meta, arrays = self._state()
        meta = {"detector": self.name, "params": self.get_params(), "threshold": self.threshold_,
                "classifier": self.classifier.name, "state": extra_meta}
        return save_detector(path, meta, arrays, self.estimator_)

    @staticmethod
    def load(path: str | Path, classifier: Classifier) -> "Detector":
        """Rebuild a saved detector around ``classifier`` (which must be the model it was fitted for)."""
        from . import make_detector

        meta, arrays, est = load_detector_file(path)
        params = dict(meta["params"])
        det = make_detector(meta["detector"], classifier, **params)
        if meta.get("classifier") not in (None, classifier.name):
            import warnings

            warnings.warn(f"detector was fitted for classifier {meta['classifier']!r}, loading for {classifier.name!r}",
                          stacklevel=2)
        det.threshold_ = meta["threshold"]
        det.estimator_ = est
        det._set_state(meta.get("state", {}), arrays)
        return det
