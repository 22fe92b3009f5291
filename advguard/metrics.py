"""Detection metrics (the common protocol, docs/methods/README.md) and cost measurement.

Every metric takes scores / labels as numpy arrays, torch tensors (any device) or sequences, and returns Python
floats (a dict for :func:`detection_report`).

ROC AUC with a bootstrap 95 % interval, TPR at a given FPR interpolated on the ROC curve
(not the nearest point), detection rate and FPR at a threshold calibrated on clean data
only, accuracy, equal error rate; and a peak-memory sampler for cost figures.
"""

from __future__ import annotations

import math
import os
import threading
import time
from dataclasses import dataclass

import numpy as np
import torch
from sklearn.metrics import roc_auc_score, roc_curve

from .errors import InputError
from .validation import check_number


def _numpy(a: object, dtype: type | None = np.float64) -> np.ndarray:
    """A numpy array of ``a``: a numpy array, a torch tensor (on any device, detached) or a sequence."""
    if isinstance(a, torch.Tensor):
        a = a.detach().cpu().numpy()
    return np.asarray(a, dtype=dtype) if dtype is not None else np.asarray(a)


def _scores(a: object, name: str) -> np.ndarray:
    """``a`` as a flat float64 array of scores: numeric (a string, a ragged list... is an InputError)."""
    try:
        return _numpy(a).ravel()
    except (TypeError, ValueError) as e:
        raise InputError(f"{name} must be numbers (an array, a tensor or a list of floats): {e}") from None


def _check(scores_clean: np.ndarray, scores_adv: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    c = _scores(scores_clean, "scores_clean")
    a = _scores(scores_adv, "scores_adv")
    if len(c) == 0 or len(a) == 0:
        raise InputError("need at least one clean and one adversarial score")
    if not (np.isfinite(c).all() and np.isfinite(a).all()):
        raise InputError("scores contain NaN or Inf")
    return c, a


def _check_fpr(fpr: object) -> float:
    """A target false-positive rate: a number in [0, 1) (a share, not a percentage)."""
    return float(check_number("fpr", fpr, lo=0.0, hi=1.0, hi_open=True))


def roc_auc(scores_clean: np.ndarray, scores_adv: np.ndarray) -> float:
    """Area under the ROC curve; adversarial is the positive class, higher score = more adversarial."""
    c, a = _check(scores_clean, scores_adv)
    return float(roc_auc_score(np.r_[np.zeros(len(c)), np.ones(len(a))], np.r_[c, a]))


def roc_auc_ci(
    scores_clean: np.ndarray, scores_adv: np.ndarray, n_boot: int = 1000, seed: int = 0, level: float = 0.95
) -> tuple[float, float, float]:
    """AUC and a percentile-bootstrap interval (clean and adversarial resampled separately): ``n_boot`` >= 1
    resamples, ``level`` in (0, 1) (0.95, not 95)."""
    c, a = _check(scores_clean, scores_adv)
    n_boot = int(check_number("n_boot", n_boot, lo=1, integer=True, where="roc_auc_ci"))
    level = float(check_number("level", level, lo=0.0, hi=1.0, lo_open=True, hi_open=True, where="roc_auc_ci"))
    auc = roc_auc(c, a)
    rng = np.random.default_rng(seed)
    # Rank-based AUC for speed: P(score_adv > score_clean) + 0.5 P(tie), via sorted searches.
    boots = np.empty(n_boot)
    for b in range(n_boot):
        cb = np.sort(c[rng.integers(0, len(c), len(c))])
        ab = a[rng.integers(0, len(a), len(a))]
        less = np.searchsorted(cb, ab, side="left")
        leq = np.searchsorted(cb, ab, side="right")
        boots[b] = (less + 0.5 * (leq - less)).sum() / (len(c) * len(a))
    lo, hi = np.quantile(boots, [(1 - level) / 2, 1 - (1 - level) / 2])
    return auc, float(lo), float(hi)


def tpr_at_fpr(scores_clean: np.ndarray, scores_adv: np.ndarray, fpr: float) -> float:
    """TPR at the given FPR (in [0, 1)), linearly interpolated on the ROC curve."""
    c, a = _check(scores_clean, scores_adv)
    fpr = _check_fpr(fpr)
    f, t, _ = roc_curve(np.r_[np.zeros(len(c)), np.ones(len(a))], np.r_[c, a], drop_intermediate=False)
    return float(np.interp(fpr, f, t))


def threshold_at_fpr(scores_clean: np.ndarray, fpr: float) -> float:
    """Smallest threshold whose FPR on these clean scores (``score > threshold``) is at most ``fpr`` (in [0, 1)).
    The scores must be finite and at least one (an :class:`~advguard.errors.InputError` otherwise)."""
    c = np.sort(_scores(scores_clean, "scores_clean"))
    fpr = _check_fpr(fpr)
    if len(c) == 0:
        raise InputError("threshold_at_fpr needs at least one clean score")
    if not np.isfinite(c).all():
        raise InputError(f"threshold_at_fpr: {int((~np.isfinite(c)).sum())} of {len(c)} clean scores are NaN or Inf")
    k = int(np.floor(fpr * len(c)))  # number of clean images allowed above the threshold
    return float(c[len(c) - k - 1])


def warn_unresolved_fpr(who: str, n: int, fpr: float, what: str = "score", stacklevel: int = 3) -> None:
    """Warn (a ``UserWarning`` from ``who``) when ``n`` clean images are too few to resolve ``fpr``: one image is a
    share above it, so :func:`threshold_at_fpr` sits at the largest clean ``what``. ``stacklevel`` as if the caller
    warned itself."""
    need = math.ceil(1.0 / fpr - 1e-9)
    if n < need:
        import warnings

        warnings.warn(
            f"{who}: {n} clean images cannot resolve FPR {fpr:g} (needs at least {need}); "
            f"the threshold is the largest clean {what}",
            UserWarning,
            stacklevel=stacklevel + 1,
        )


def rates_at_threshold(scores_clean: np.ndarray, scores_adv: np.ndarray, threshold: float) -> tuple[float, float]:
    """(detection rate, false-positive rate) for the rule ``score > threshold``."""
    c, a = _check(scores_clean, scores_adv)
    return float((a > threshold).mean()), float((c > threshold).mean())


def equal_error_rate(scores_clean: np.ndarray, scores_adv: np.ndarray) -> float:
    """The error rate where FPR equals FNR (interpolated on the ROC curve)."""
    c, a = _check(scores_clean, scores_adv)
    f, t, _ = roc_curve(np.r_[np.zeros(len(c)), np.ones(len(a))], np.r_[c, a], drop_intermediate=False)
    fnr = 1 - t
    d = f - fnr
    i = int(np.nonzero(d >= 0)[0][0])
    if i == 0 or d[i] == 0:
        return float(f[i])
    w = d[i] / (d[i] - d[i - 1])  # interpolate between points i-1 and i
    return float(f[i] - w * (f[i] - f[i - 1]))


def _label_vector(a: object, name: str) -> np.ndarray:
    """``a`` as a 1-D array of labels: an (N, 1) column (a model's ``argmax(1, keepdim=True)``) is flattened."""
    v = _numpy(a, None)
    if v.ndim == 2 and v.shape[1] == 1:
        v = v[:, 0]
    if v.ndim != 1:
        raise InputError(f"{name} must be a 1-D array of class labels (N,) or a column (N, 1), got shape {v.shape}")
    return v


def accuracy(labels: np.ndarray, predictions: np.ndarray) -> float:
    """Share of ``predictions`` equal to ``labels``: two 1-D label vectors of the same length N >= 1 (an (N, 1)
    column is flattened); anything else raises an :class:`~advguard.errors.InputError` (never a broadcast)."""
    y = _label_vector(labels, "labels")
    p = _label_vector(predictions, "predictions")
    if len(y) != len(p):
        raise InputError(f"labels and predictions must have the same length, got {len(y)} and {len(p)}")
    if len(y) == 0:
        raise InputError("accuracy of no predictions: labels and predictions are empty")
    return float(np.mean(y == p))


def detection_report(
    scores_clean: np.ndarray, scores_adv: np.ndarray, threshold: float | None = None, n_boot: int = 1000
) -> dict:
    """All the protocol's numbers for one (detector, attack) cell (``n_boot`` >= 1 bootstrap resamples)."""
    auc, lo, hi = roc_auc_ci(scores_clean, scores_adv, n_boot=n_boot)
    rep = {
        "auc": auc,
        "auc_ci95": [lo, hi],
        "n_clean": int(_numpy(scores_clean).size),
        "n_adv": int(_numpy(scores_adv).size),
        "eer": equal_error_rate(scores_clean, scores_adv),
    }
    for f in (0.01, 0.05, 0.10):
        rep[f"tpr_at_fpr_{int(round(100 * f))}"] = tpr_at_fpr(scores_clean, scores_adv, f)
    if threshold is not None:
        dr, fp = rates_at_threshold(scores_clean, scores_adv, threshold)
        rep.update(threshold=float(threshold), detection_rate=dr, fpr=fp)
    return rep


def _rss_bytes() -> int:
    """Resident set size of this process now (Linux: /proc; elsewhere psutil)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        import psutil

        return int(psutil.Process().memory_info().rss)


def _hwm_bytes() -> int:
    """The kernel's resident high-water mark (VmHWM) since it was last reset."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise OSError("no VmHWM in /proc/self/status")


def _reset_hwm() -> None:
    """Reset VmHWM to the current RSS (writing 5 to /proc/self/clear_refs, Linux >= 4.0)."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def memory_method() -> str:
    """How :class:`PeakMemory` measures here: ``"rss-hwm"`` (Linux: the kernel's exact resident high-water mark,
    reset at the start), ``"rss-sampled"`` (psutil, sampled every ``interval_s``) or ``"none"``."""
    global _METHOD
    if _METHOD is None:
        try:
            _hwm_bytes()
            _reset_hwm()
            _METHOD = "rss-hwm"
        except OSError:
            try:
                import psutil  # noqa: F401

                _rss_bytes()
                _METHOD = "rss-sampled"
            except (ImportError, OSError):
                _METHOD = "none"
    return _METHOD


_METHOD: str | None = None
_LOCK = threading.Lock()
#: the PeakMemory blocks open now (``rss-hwm``: an inner block's reset must not lose an outer block's peak)
_OPEN: list[PeakMemory] = []


@dataclass
class PeakMemory:
    """Context manager: ``.peak_mb`` is the peak rise of this process's resident memory over its value at the
    start, i.e. the extra RAM the block needed (``.method`` says how it was measured).

    On Linux the kernel's resident high-water mark is reset at the start and read at the end (``"rss-hwm"``):
    exact, no sampling thread; nested blocks each get their own peak. Elsewhere psutil samples RSS every
    ``interval_s`` (``"rss-sampled"``; a shorter peak can be missed); without either it is NaN (``"none"``).
    A rise of 0 MB is a true statement, not a failure: the block fitted in memory the process already held
    (freed memory is reused by the allocators before the RSS grows). The measure is process-wide: another thread's
    allocations in the same interval count too. With CUDA, ``.peak_gpu_mb`` is the peak allocated GPU memory
    (torch's allocator statistics) over the start.
    """

    interval_s: float = 0.005
    peak_mb: float = float("nan")
    peak_gpu_mb: float = float("nan")
    method: str = "none"

    def __enter__(self) -> PeakMemory:
        self.method = memory_method()
        if self.method == "rss-hwm":
            with _LOCK:
                hw = _hwm_bytes()
                for outer in _OPEN:  # keep the outer blocks' peak before resetting the mark
                    outer._peak = max(outer._peak, hw)
                _reset_hwm()
                self._start = self._peak = _rss_bytes()
                _OPEN.append(self)
        elif self.method == "rss-sampled":
            self._stop = threading.Event()
            self._start = self._peak = _rss_bytes()
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        try:
            import torch

            if torch.cuda.is_available():
                torch.cuda.reset_peak_memory_stats()
                self._gpu0 = torch.cuda.memory_allocated()
        except Exception:  # noqa: BLE001 - GPU accounting is optional
            pass
        return self

    def _sample(self) -> None:
        while not self._stop.is_set():
            self._peak = max(self._peak, _rss_bytes())
            time.sleep(self.interval_s)

    def __exit__(self, *exc: object) -> None:
        if self.method == "rss-hwm":
            with _LOCK:
                hw = _hwm_bytes()
                self._peak = max(self._peak, hw)
                if self in _OPEN:
                    _OPEN.remove(self)
                for outer in _OPEN:
                    outer._peak = max(outer._peak, hw)
            self.peak_mb = max(0.0, (self._peak - self._start) / 2**20)
        elif self.method == "rss-sampled":
            self._stop.set()
            self._thread.join()
            self._peak = max(self._peak, _rss_bytes())
            self.peak_mb = max(0.0, (self._peak - self._start) / 2**20)
        if hasattr(self, "_gpu0"):
            import torch

            self.peak_gpu_mb = (torch.cuda.max_memory_allocated() - self._gpu0) / 2**20


@dataclass
class CostReport:
    """Cost of scoring ``n`` images: wall time, model passes and peak memory."""

    n: int
    seconds: float
    passes: int
    peak_mb: float

    def as_dict(self) -> dict:
        return {
            "n": self.n,
            "ms_per_image": 1000 * self.seconds / max(self.n, 1),
            "images_per_s": self.n / self.seconds if self.seconds > 0 else float("inf"),
            "passes_per_image": self.passes / max(self.n, 1),
            "peak_mb": self.peak_mb,
        }
