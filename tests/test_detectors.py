"""Detector protocol and the two baselines on real CIFAR-10 images."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from advguard import InputError
from advguard.attacks import make_attack
from advguard.detectors import DETECTORS, Detector, NotFittedError, make_detector
from advguard.detectors.squeezing import apply_squeezer


@pytest.fixture(scope="module")
def data(correct_images):
    clf, x, y = correct_images(120, 3)
    adv = make_attack("deepfool", clf, steps=20, progress=False)(x, y)
    return clf, x, adv.x_adv[adv.success]


def test_registry_and_unfitted_errors(data):
    clf, x, _ = data
    det = make_detector("confidence", clf)
    with pytest.raises(NotFittedError):
        det.predict(x[:2])
    with pytest.raises(InputError, match="unsupervised"):
        det.fit(x, x)
    sup = make_detector("feature-squeezing", clf, decision_model="logreg")
    with pytest.raises(InputError, match="supervised"):
        sup.fit(x)
    assert set(DETECTORS) >= {"feature-squeezing", "confidence"}


def test_feature_squeezing_separates_deepfool(data):
    clf, x, xa = data
    n = len(x) // 2
    det = make_detector("feature-squeezing", clf, fpr=0.05).fit(x[:n])
    from advguard.metrics import roc_auc

    auc = roc_auc(det.score(x[n:]), det.score(xa))
    assert auc > 0.7, auc  # DeepFool's minimal perturbations are partly undone by squeezing (Xu et al.: ~77 %)
    flags = det.predict(x[n:])
    assert flags.dtype == bool and flags.mean() < 0.2


def test_calibration_hits_target_fpr(data):
    clf, x, _ = data
    det = make_detector("confidence", clf).calibrate(x, fpr=0.1)
    assert det.predict(x).mean() <= 0.1 + 1e-9


def test_report_has_continuous_scores(data):
    clf, x, _ = data
    det = make_detector("feature-squeezing", clf).fit(x)
    s, reps = det.score(x[:3], return_report=True)
    assert len(reps) == 3 and reps[0]["score"] == pytest.approx(s[0])
    assert set(reps[0]["features"]) == {"l1_bits:5", "l1_median:2", "l1_nlm:13-3-2"}
    assert isinstance(reps[0]["adversarial"], bool)
    assert det.last_cost_["passes_per_image"] == 4.0
    # CPU RAM measured; GPU memory only where a GPU was in use (None here: the model is on the CPU)
    assert det.last_cost_["peak_mb"] >= 0 and det.last_cost_["peak_gpu_mb"] is None


@pytest.mark.parametrize("decision_model", [None, "svc", "xgb", "rf"])
def test_save_load_round_trip_gives_identical_scores(data, tmp_path, decision_model):
    clf, x, xa = data
    det = make_detector("feature-squeezing", clf, decision_model=decision_model)
    det.fit(x, xa) if decision_model else det.fit(x)
    path = det.save(tmp_path / "fs.advguard")
    back = Detector.load(path, clf)
    assert type(back) is type(det) and back.threshold_ == det.threshold_
    # the file records the parameters as checked (a default None as what it resolved to, a tuple as a list)
    assert back._resolved_params() == det._resolved_params()
    np.testing.assert_array_equal(back.score(xa[:10]), det.score(xa[:10]))


def test_load_rejects_a_non_detector_file(data, tmp_path):
    from advguard import AdvguardError

    bad = tmp_path / "x.advguard"
    bad.write_bytes(b"PK not really a zip")
    with pytest.raises(AdvguardError, match="not an advguard detector"):
        Detector.load(bad, data[0])


def test_squeezers():
    x = torch.rand(2, 3, 8, 8)
    assert torch.allclose(apply_squeezer("bits:1", x), (x > 0.5).float())
    m = apply_squeezer("median:3", x)
    assert m.shape == x.shape and torch.allclose(m[0, 0, 3, 3], x[0, 0, 2:5, 2:5].median())
    with pytest.raises(ValueError, match="unknown squeezer"):
        apply_squeezer("blur:3", x)
