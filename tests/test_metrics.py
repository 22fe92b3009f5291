"""Metrics against scikit-learn and hand computations."""

from __future__ import annotations

import sys
import time

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from advguard import metrics as M


@pytest.fixture
def scores():
    rng = np.random.default_rng(0)
    return rng.normal(0, 1, 300), rng.normal(1.2, 1, 200)


def test_auc_matches_sklearn_and_ci_contains_it(scores):
    c, a = scores
    ref = roc_auc_score(np.r_[np.zeros(300), np.ones(200)], np.r_[c, a])
    assert M.roc_auc(c, a) == pytest.approx(ref)
    auc, lo, hi = M.roc_auc_ci(c, a, n_boot=300)
    assert auc == pytest.approx(ref) and lo < auc < hi and hi - lo < 0.15


def test_tpr_at_fpr_is_interpolated_by_hand():
    # clean [1, 2, 3, 3.5], adv [3.5, 5]. Thresholds 5 -> (FPR 0, TPR .5); 3.5 (a tie) -> (.25, 1):
    # the tie makes a diagonal segment, and TPR at FPR .125 lies halfway along it.
    c, a = np.array([1.0, 2, 3, 3.5]), np.array([3.5, 5.0])
    assert M.tpr_at_fpr(c, a, 0.0) == pytest.approx(0.5)
    assert M.tpr_at_fpr(c, a, 0.125) == pytest.approx(0.75)
    assert M.tpr_at_fpr(c, a, 0.25) == pytest.approx(1.0)
    # nearest-point lookup would give 0.5 or 1.0 at .125; interpolation gives neither


def test_threshold_respects_target_fpr(scores):
    c, a = scores
    for f in (0.01, 0.05, 0.1):
        t = M.threshold_at_fpr(c, f)
        dr, fpr = M.rates_at_threshold(c, a, t)
        assert fpr <= f and fpr >= f - 1 / len(c) - 1e-12
    assert M.threshold_at_fpr([1, 2, 3, 4], 0.0) == 4.0


def test_equal_error_rate_hand_example():
    # perfectly separated -> 0; identical distributions -> about 0.5
    assert M.equal_error_rate([0, 1, 2], [3, 4, 5]) == pytest.approx(0.0)
    rng = np.random.default_rng(1)
    x = rng.normal(size=4000)
    assert M.equal_error_rate(x[:2000], x[2000:]) == pytest.approx(0.5, abs=0.03)
    # symmetric Gaussians at +-1: EER = Phi(-1) = 0.1587
    c, a = rng.normal(-1, 1, 20000), rng.normal(1, 1, 20000)
    assert M.equal_error_rate(c, a) == pytest.approx(0.1587, abs=0.01)


def test_report_and_bad_scores(scores):
    c, a = scores
    r = M.detection_report(c, a, threshold=M.threshold_at_fpr(c, 0.05), n_boot=50)
    assert {"auc", "auc_ci95", "tpr_at_fpr_1", "tpr_at_fpr_5", "tpr_at_fpr_10", "detection_rate", "fpr", "eer"} <= set(
        r
    )
    with pytest.raises(ValueError, match="NaN"):
        M.roc_auc([0.0, np.nan], [1.0])


def test_peak_memory_sees_an_allocation():
    # In a fresh process: RSS-based peaks cannot see allocations that reuse memory freed by earlier tests.
    import subprocess
    import sys

    code = (
        "import numpy as np\nfrom advguard.metrics import PeakMemory\n"
        "with PeakMemory() as m:\n    big = np.ones(64 * 2**20 // 8)\n    big += 1\n    del big\nprint(m.peak_mb)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert 40 < float(out) < 200


def test_peak_memory_is_exact_per_block_and_nested_blocks_keep_their_own_peaks():
    """Known allocations in a fresh process (Linux: a new process peak is exact through the kernel's high-water mark;
    below it, the 5 ms samples see a temporary held for 100 ms): a 96 MB temporary in the outer block, a 16 MB one
    in the inner block after it, nothing in an idle block; the method is stated."""
    import subprocess
    import sys

    code = (
        "import time\nimport numpy as np\nfrom advguard.metrics import PeakMemory\n"
        "with PeakMemory() as outer:\n"
        "    a = np.ones(96 * 2**20 // 8); a += 1; del a\n"
        "    with PeakMemory() as inner:\n"
        "        b = np.ones(16 * 2**20 // 8); b += 1; time.sleep(0.1); del b\n"
        "with PeakMemory() as idle:\n    pass\n"
        "print(outer.method, outer.peak_mb, inner.peak_mb, idle.peak_mb)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    method, outer, inner, idle = out[0], *map(float, out[1:])
    if method == "none":
        pytest.skip("no memory measurement on this platform")
    assert method == ("rss-sampled+hwm" if sys.platform.startswith("linux") else "rss-sampled")
    assert 90 <= outer <= 140, outer
    assert 14 <= inner <= 40, inner
    assert 0 <= idle < 8, idle


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the kernel's high-water mark is Linux's")
def test_peak_memory_changes_nothing_process_wide():
    """PeakMemory must not reset the process's peak RSS (writing /proc/self/clear_refs did: getrusage's ru_maxrss and
    /usr/bin/time then reported the RSS at the reset instead of the process's real peak)."""
    import subprocess

    code = (
        "import resource\nimport numpy as np\nfrom advguard.metrics import PeakMemory\n"
        "def hwm():\n    return next(int(l.split()[1]) for l in open('/proc/self/status') if l.startswith('VmHWM'))\n"
        "a = np.ones(256 * 2**20 // 8); a += 1; del a\n"
        "before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, hwm()\n"
        "with PeakMemory() as m:\n    b = np.ones(8 * 2**20 // 8); b += 1; del b\n"
        "after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, hwm()\n"
        "print(*before, *after, m.peak_mb)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    ru0, hwm0, ru1, hwm1 = map(int, out[:4])
    assert ru0 > 256 * 1024 and hwm0 > 256 * 1024  # kB: the 256 MB temporary is the process's peak
    assert ru1 >= ru0 and hwm1 >= hwm0, out
    assert 0 <= float(out[4]) < 40


def test_peak_gpu_memory_reads_torchs_allocator_without_resetting_it(monkeypatch):
    """No GPU here: torch.cuda's allocator statistics are simulated. A block that raises the allocator's peak gets
    that peak over its start; torch's peak statistics are never reset (that is the caller's own measurement)."""
    import torch

    state = {"cur": 100 * 2**20, "max": 500 * 2**20}  # an earlier peak of 500 MB the caller may be measuring

    def alloc(n: int) -> None:
        state["cur"] = n
        state["max"] = max(state["max"], n)

    def no_reset(*a, **k):
        raise AssertionError("reset_peak_memory_stats was called")

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: True)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch.cuda, "memory_allocated", lambda device=None: state["cur"])
    monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda device=None: state["max"])
    monkeypatch.setattr(torch.cuda, "reset_peak_memory_stats", no_reset)
    with M.PeakMemory() as m:
        alloc(800 * 2**20)  # above the earlier peak: exact through max_memory_allocated
        alloc(100 * 2**20)
    assert m.peak_gpu_mb == 700
    with M.PeakMemory(interval_s=0.002) as m:
        alloc(300 * 2**20)  # below the peak of 800: seen by the samples while it is held
        time.sleep(0.1)
        alloc(100 * 2**20)
    assert m.peak_gpu_mb == 200
    with M.PeakMemory() as m:
        pass
    assert m.peak_gpu_mb == 0 and state["max"] == 800 * 2**20


def test_peak_memory_note_states_the_recorded_method():
    assert "method `rss-sampled+hwm`" in M.peak_memory_note("rss-sampled+hwm") and "VmHWM" in M.peak_memory_note(
        "rss-sampled+hwm"
    )
    assert "VmHWM" not in M.peak_memory_note("rss-sampled") and "5 ms" in M.peak_memory_note("rss-sampled")
    assert "not recorded" in M.peak_memory_note(None) and "NaN" in M.peak_memory_note("none")
    assert M.memory_method() in ("rss-sampled+hwm", "rss-sampled", "none")


def test_the_conformal_rule_bounds_the_expected_fpr_on_new_images_and_the_empirical_rule_states_its_excess():
    """threshold_at_fpr's two rules (issue #25): the empirical rule leaves floor(fpr N) of N calibration scores
    above and flags (floor(fpr N) + 1) / (N + 1) of new exchangeable clean images in expectation; the conformal rule
    leaves floor(fpr (N + 1)) - 1 above and flags at most fpr. Checked exactly (the expected share over draws is
    the rank arithmetic) and by simulation."""
    for n, f in [(227, 0.05), (40, 0.05), (999, 0.01), (19, 0.05), (100, 0.1)]:
        k_emp, k_conf = M.allowed_above(n, f), M.allowed_above(n, f, "conformal")
        assert k_emp == int(np.floor(f * n)) and k_conf == max(int(np.floor(f * (n + 1))) - 1, 0)
        assert M.expected_fpr(n, f) == (k_emp + 1) / (n + 1) >= f - 1e-12
        assert M.expected_fpr(n, f, "conformal") <= f + 1e-12
    assert M.expected_fpr(227, 0.05) == pytest.approx(12 / 228)  # 5.26 %: the figure the guard pages state
    assert M.expected_fpr(227, 0.05, "conformal") == pytest.approx(11 / 228)  # 4.82 %
    rng = np.random.default_rng(0)
    for rule in M.THRESHOLD_RULES:
        seen = []
        for _ in range(4000):
            cal = rng.normal(size=41)
            seen.append((rng.normal(size=50) > M.threshold_at_fpr(cal, 0.1, rule)).mean())
        assert float(np.mean(seen)) == pytest.approx(M.expected_fpr(41, 0.1, rule), abs=0.004)
    assert M.expected_fpr(41, 0.1, "conformal") <= 0.1 < M.expected_fpr(41, 0.1)
    with pytest.raises(ValueError, match="threshold rule"):
        M.threshold_at_fpr([1.0, 2.0], 0.1, rule="strict")
