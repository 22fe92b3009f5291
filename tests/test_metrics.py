"""Metrics against scikit-learn and hand computations."""

from __future__ import annotations

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
    """The kernel's high-water mark (Linux): a 96 MB temporary is measured inside the block that made it, an inner
    block's reset does not hide the outer block's earlier peak, and the method is stated."""
    import subprocess
    import sys

    code = (
        "import numpy as np\nfrom advguard.metrics import PeakMemory\n"
        "with PeakMemory() as outer:\n"
        "    a = np.ones(96 * 2**20 // 8); a += 1; del a\n"
        "    with PeakMemory() as inner:\n"
        "        b = np.ones(16 * 2**20 // 8); b += 1; del b\n"
        "with PeakMemory() as idle:\n    pass\n"
        "print(outer.method, outer.peak_mb, inner.peak_mb, idle.peak_mb)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    method, outer, inner, idle = out[0], *map(float, out[1:])
    if method == "none":
        pytest.skip("no memory measurement on this platform")
    assert method in ("rss-hwm", "rss-sampled")
    assert 90 <= outer <= 140, outer
    assert 14 <= inner <= 40, inner
    assert 0 <= idle < 8, idle
