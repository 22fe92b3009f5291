"""The detector-aware CW-L2 (THEMIS Section 6): it stops at the first image that fools model and detector."""

from __future__ import annotations

import numpy as np
import pytest

from advguard.attacks import shifted_targets
from advguard.attacks.adaptive import DetectorAwareCW
from advguard.detectors import Detector


class _Fixed(Detector):
    """A stand-in detector that flags every image (or none), counting its queries."""

    def __init__(self, clf, flag: bool):
        super().__init__(clf)
        self.flag, self.queries = flag, 0
        self.threshold_ = 0.5

    def features(self, x):
        self.queries += len(x)
        return np.full((len(x), 1), 1.0 if self.flag else 0.0)

    def statistic(self, f):
        return f[:, 0]


@pytest.fixture(scope="module")
def batch(correct_images):
    clf, x, y = correct_images(12, 5)
    x, y = x[:6], y[:6]
    return clf, x, y, shifted_targets(y, 10, 1)


def test_blind_detector_is_bypassed_by_the_first_adversarial_iterate(batch):
    clf, x, y, t = batch
    det = _Fixed(clf, flag=False)
    r = DetectorAwareCW(clf, det, steps=30, restarts=3, check_every=3, progress=False, recheck=2)(x, y, t)
    assert r.evaded.all() and (r.restart >= 0).all()
    assert (r.pred_adv == t).all() and (r.step % 3 == 0).all()  # targeted success, found at a check step
    assert np.allclose(r.recheck_evasion.numpy(), 1.0)
    curve = r.bypass_curve(3)
    assert curve[-1] == 1.0 and np.isclose(curve[0], (r.restart.numpy() == 0).mean()) and curve[0] >= 0.5


def test_perfect_detector_is_never_bypassed_and_all_paths_are_tried(batch):
    clf, x, y, t = batch
    det = _Fixed(clf, flag=True)
    r = DetectorAwareCW(clf, det, steps=30, restarts=3, check_every=10, progress=False)(x[:3], y[:3], t[:3])
    assert not r.evaded.any() and (r.restart == -1).all() and np.isnan(r.recheck_evasion.numpy()).all()
    assert det.queries > 0 and r.bypass_curve(3).tolist() == [0.0, 0.0, 0.0]


def test_needs_a_fitted_detector(batch):
    clf = batch[0]
    det = _Fixed(clf, flag=True)
    det.threshold_ = None
    with pytest.raises(ValueError, match="threshold"):
        DetectorAwareCW(clf, det)
