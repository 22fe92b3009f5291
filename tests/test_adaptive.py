"""The detector-aware CW-L2 (THEMIS Section 6): it stops at the first image that fools model and detector."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from advguard.attacks import shifted_targets
from advguard.attacks.adaptive import DetectorAwareCW, evades, fresh_evasion
from advguard.detectors import Detector
from advguard.validation import ParameterError


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


class _Seeded(Detector):
    """A stand-in random detector: image i's score is one uniform draw seeded by (seed, the image's bytes), as the
    library's random detectors seed their masks and fills."""

    def __init__(self, clf, seed: int = 0):
        super().__init__(clf, seed=seed)
        self.threshold_ = 0.5

    def features(self, x):
        from advguard.detectors._seeding import per_image_rand

        return per_image_rand(torch.as_tensor(x), self.seed, shape=(1,)).numpy()

    def statistic(self, f):
        return f[:, 0]


def test_the_recheck_draws_afresh_where_re_scoring_repeats_the_draw(batch):
    """Issue found in #23's taintradar check: re-scoring a bypass repeats its seeded draw (every re-check agreed,
    recheck_evasion 1.0 by construction); fresh_evasion re-seeds the detector per draw."""
    clf, x, _, _ = batch
    det = _Seeded(clf, seed=3)
    assert (evades(det, x.repeat(4, 1, 1, 1)).reshape(4, -1) == evades(det, x)).all()  # the same draw, 4 times
    draws = 40
    share = fresh_evasion(det, x, draws)
    expected = np.mean([evades(_Seeded(clf, seed=3 + j), x) for j in range(1, draws + 1)], axis=0)
    assert np.allclose(share, expected) and ((share > 0.2) & (share < 0.8)).all()  # P(clean) = 0.5 per draw
    assert det.seed == 3 and det.get_params()["seed"] == 3  # the detector itself unchanged
    with pytest.raises(ParameterError, match="draws"):
        fresh_evasion(det, x, 0)


def test_detector_aware_cw_rechecks_with_fresh_draws(batch):
    clf, x, y, t = batch
    r = DetectorAwareCW(clf, _Seeded(clf), steps=30, restarts=3, check_every=3, progress=False, recheck=20)(x, y, t)
    found = r.evaded.numpy()
    assert found.any()
    share = r.recheck_evasion.numpy()[found]
    assert ((share > 0) & (share < 1)).any()  # not 1.0 by construction any more


def test_the_random_detectors_draw_from_their_seed(correct_images):
    """fresh_evasion relies on it: another seed, another draw (Erase-and-Restore's masks, TaintRadar's fill)."""
    from advguard.detectors import EraseRestore, TaintRadar

    clf, x, _ = correct_images(4, 1)
    t = torch.as_tensor(x)
    er = EraseRestore(clf, n=3)
    assert (er.masks_for(t) != copy.copy(er).set_params(seed=1).masks_for(t)).any()
    tr = TaintRadar(clf)
    assert not torch.equal(tr.fill_pattern(t), copy.copy(tr).set_params(seed=1).fill_pattern(t))
