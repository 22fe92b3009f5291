"""Detection metrics (the common protocol, docs/methods/README.md) and cost measurement.

Every metric takes scores / labels as numpy arrays, torch tensors (any device) or sequences, and returns Python
floats (a dict for :func:`detection_report`).

ROC AUC with a bootstrap 95 % interval, TPR at a given FPR interpolated on the ROC curve
(not the nearest point), detection rate and FPR at a threshold calibrated on clean data
only, accuracy, equal error rate; and a peak-memory measure for cost figures (:class:`PeakMemory`).
"""

from __future__ import annotations

import math
import os
import threading
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from sklearn.metrics import roc_auc_score, roc_curve

from .errors import InputError, ParameterError
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


#: how :func:`threshold_at_fpr` reads a target FPR (see there)
THRESHOLD_RULES = ("empirical", "conformal")


def allowed_above(n: int, fpr: float, rule: str = "empirical") -> int:
    """How many of ``n`` clean calibration scores :func:`threshold_at_fpr` leaves above its threshold."""
    fpr = _check_fpr(fpr)
    # + 1e-9: a product like 0.29 * 100 = 28.999999999999996 is 29 images
    if rule == "empirical":
        return int(np.floor(fpr * n + 1e-9))
    if rule == "conformal":
        return max(int(np.floor(fpr * (n + 1) + 1e-9)) - 1, 0)
    raise ParameterError(f"threshold rule must be one of {THRESHOLD_RULES}, got {rule!r}")


def expected_fpr(n: int, fpr: float, rule: str = "empirical") -> float:
    """The expected false-positive rate on *new* clean images of a threshold set by :func:`threshold_at_fpr` on
    ``n`` clean images exchangeable with them (continuous scores, no ties): ``(k + 1) / (n + 1)`` for ``k`` =
    :func:`allowed_above`. ``empirical``: slightly above ``fpr`` (5.26 % for 227 images at 5 %); ``conformal``:
    at most ``fpr`` once ``n + 1 >= 1 / fpr`` (4.82 % for 227)."""
    if n < 1:
        raise InputError(f"expected_fpr needs at least one calibration image, got {n}")
    return (allowed_above(n, fpr, rule) + 1) / (n + 1)


def threshold_at_fpr(scores_clean: np.ndarray, fpr: float, rule: str = "empirical") -> float:
    """The threshold (``score > threshold`` flags) at target false-positive rate ``fpr`` (in [0, 1)) set on these
    clean scores; they must be finite and at least one (an :class:`~advguard.errors.InputError` otherwise).

    ``rule="empirical"`` (the default, the papers' convention and every results page's): the smallest threshold
    whose FPR on *these* scores is at most ``fpr`` (``floor(fpr * N)`` of them above). On new clean images it
    flags ``(floor(fpr * N) + 1) / (N + 1)`` in expectation, up to ``1 / (N + 1)`` above ``fpr``.
    ``rule="conformal"``: split-conformal (Vovk et al.; Angelopoulos & Bates 2021, section 1): ``floor(fpr *
    (N + 1)) - 1`` above, so the expected FPR on new exchangeable clean images is at most ``fpr`` (when
    ``N + 1 >= 1 / fpr``; below that the threshold is the largest score, as for the empirical rule).
    :func:`expected_fpr` gives either figure."""
    c = np.sort(_scores(scores_clean, "scores_clean"))
    fpr = _check_fpr(fpr)
    if len(c) == 0:
        raise InputError("threshold_at_fpr needs at least one clean score")
    if not np.isfinite(c).all():
        raise InputError(f"threshold_at_fpr: {int((~np.isfinite(c)).sum())} of {len(c)} clean scores are NaN or Inf")
    k = min(allowed_above(len(c), fpr, rule), len(c) - 1)  # number of clean images allowed above the threshold
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


def _hwm_bytes() -> int | None:
    """The kernel's resident high-water mark (VmHWM) of this process, read only; None off Linux."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def memory_method() -> str:
    """How :class:`PeakMemory` measures here: ``"rss-sampled+hwm"`` (Linux: resident memory sampled every
    ``interval_s``, made exact by the kernel's high-water mark whenever the block sets a new process peak),
    ``"rss-sampled"`` (psutil elsewhere) or ``"none"`` (NaN)."""
    global _METHOD
    if _METHOD is None:
        try:
            _rss_bytes()
            _METHOD = "rss-sampled+hwm" if _hwm_bytes() is not None else "rss-sampled"
        except (ImportError, OSError):
            _METHOD = "none"
    return _METHOD


_METHOD: str | None = None


def peak_memory_note(method: str | None) -> str:
    """The sentence a results page that reports "peak MB" states, for the :func:`memory_method` recorded with its
    results (``None``: results from before advguard recorded it)."""
    what = "Peak MB = the largest rise of the process's resident memory (RSS, CPU RAM) during the call over its start"
    if not method:
        return f"{what} (the measuring method was not recorded with these results)."
    if method == "none":
        return f"{what}: not measurable on that machine (NaN)."
    how = "sampled every 5 ms" + (
        ", exact when the call set a new process peak (Linux's VmHWM)" if "hwm" in method else ""
    )
    return (
        f"{what} (advguard.metrics.PeakMemory, method `{method}`: RSS {how}); 0 means the call fitted in memory the "
        "process already held (freed memory is reused before the RSS grows)."
    )


class _Sampler:
    """One daemon thread for the whole process that samples the RSS (and the GPUs' allocated memory) for every open
    :class:`PeakMemory` block, so that entering and leaving a block costs two reads rather than a thread start and
    join. It sleeps on a condition while no block is open; a forked child starts its own."""

    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.blocks: list[PeakMemory] = []
        self.thread: threading.Thread | None = None

    def add(self, block: PeakMemory) -> None:
        with self.cond:
            self.blocks.append(block)
            if self.thread is None or not self.thread.is_alive():
                self.thread = threading.Thread(target=self._run, daemon=True, name="advguard-PeakMemory")
                self.thread.start()
            self.cond.notify()

    def remove(self, block: PeakMemory) -> None:
        with self.cond:
            if block in self.blocks:
                self.blocks.remove(block)

    def _run(self) -> None:
        while True:
            with self.cond:
                while not self.blocks:
                    self.cond.wait()
                blocks = list(self.blocks)
            interval = min(b.interval_s for b in blocks)
            rss = _rss_bytes() if any(b.method != "none" for b in blocks) else 0
            gpus = {b._gpu for b in blocks if b._gpu is not None}
            gpu = {d: torch.cuda.memory_allocated(d) for d in gpus}
            with self.cond:
                for b in self.blocks:
                    b._observe(rss, gpu)
            time.sleep(interval)


_SAMPLER = _Sampler()


def _new_sampler_after_fork() -> None:
    global _SAMPLER
    _SAMPLER = _Sampler()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_new_sampler_after_fork)


@dataclass
class PeakMemory:
    """Context manager: ``.peak_mb`` is the peak rise of this process's resident memory (RSS) over its value at the
    start, i.e. the extra RAM the block needed (``.method`` says how it was measured: :func:`memory_method`).

    The RSS is read at the start and the end and sampled every ``interval_s`` in between by one shared background
    thread (``/proc/self/statm`` on Linux, psutil elsewhere); at the end the kernel's resident high-water mark is
    read (Linux): when the block raised it, that mark is the block's exact peak; otherwise a peak shorter than
    ``interval_s`` can be missed. Off Linux without psutil it is NaN. A rise of 0 MB is a true statement, not a
    failure: the block fitted in memory the process already held (freed memory is reused by the allocators before
    the RSS grows). The measure is process-wide: another thread's allocations in the same interval count too. With
    CUDA in use, ``.peak_gpu_mb`` is the same for the memory torch's allocator has allocated on the current GPU
    (``torch.cuda.memory_allocated`` sampled, exact through ``max_memory_allocated`` when the block raised it).

    Nothing process-wide is changed: the kernel's mark is not reset through ``/proc/self/clear_refs`` (that would
    also lower the ``ru_maxrss`` that ``getrusage``, ``/usr/bin/time`` and batch schedulers report for the whole
    process) and torch's peak statistics are not reset (``torch.cuda.reset_peak_memory_stats`` would clear the
    caller's own measurement).
    """

    interval_s: float = 0.005
    peak_mb: float = float("nan")
    peak_gpu_mb: float = float("nan")
    method: str = "none"

    def __enter__(self) -> PeakMemory:
        self.method = memory_method()
        self._gpu: int | None = None
        try:
            if torch.cuda.is_available() and torch.cuda.is_initialized():
                self._gpu = torch.cuda.current_device()
                self._gpu_start = self._gpu_peak = torch.cuda.memory_allocated(self._gpu)
                self._gpu_max0 = torch.cuda.max_memory_allocated(self._gpu)
        except Exception:  # noqa: BLE001 - GPU accounting is optional
            self._gpu = None
        if self.method != "none":
            self._hwm0 = _hwm_bytes()
            self._start = self._peak = _rss_bytes()
        if self.method != "none" or self._gpu is not None:
            _SAMPLER.add(self)
        return self

    def _observe(self, rss: int, gpu: dict[int, int]) -> None:
        """A sample (the shared thread's, or the final one)."""
        if self.method != "none":
            self._peak = max(self._peak, rss)
        if self._gpu is not None and self._gpu in gpu:
            self._gpu_peak = max(self._gpu_peak, gpu[self._gpu])

    def __exit__(self, *exc: object) -> None:
        _SAMPLER.remove(self)
        if self.method != "none":
            self._observe(_rss_bytes(), {})
            hwm = _hwm_bytes()
            if hwm is not None and self._hwm0 is not None and hwm > self._hwm0:  # a new process peak: exact
                self._peak = max(self._peak, hwm)
            self.peak_mb = max(0.0, (self._peak - self._start) / 2**20)
        if self._gpu is not None:
            self._observe(0, {self._gpu: torch.cuda.memory_allocated(self._gpu)})
            top = torch.cuda.max_memory_allocated(self._gpu)
            if top > self._gpu_max0:
                self._gpu_peak = max(self._gpu_peak, top)
            self.peak_gpu_mb = max(0.0, (self._gpu_peak - self._gpu_start) / 2**20)


@dataclass
class CostReport:
    """Cost of scoring ``n`` images: wall time, model passes and peak memory: ``peak_mb`` the process's CPU RAM,
    ``peak_gpu_mb`` torch's allocations on the current GPU (None where no GPU was in use), both as
    :class:`PeakMemory` measures them."""

    n: int
    seconds: float
    passes: int
    peak_mb: float
    peak_gpu_mb: float | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "n": self.n,
            "ms_per_image": 1000 * self.seconds / max(self.n, 1),
            "images_per_s": self.n / self.seconds if self.seconds > 0 else float("inf"),
            "passes_per_image": self.passes / max(self.n, 1),
            "peak_mb": self.peak_mb,
            "peak_gpu_mb": self.peak_gpu_mb,
        }
