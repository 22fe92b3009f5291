"""Decision models by name (advguard.detectors.decision): the scaler option THEMIS's authors' SVM needs, and
scikit-learn's own parameter constraints surfaced as ParameterError at construction (issue #22)."""

from __future__ import annotations

import numpy as np
import pytest

from advguard.detectors import EraseRestore
from advguard.detectors.decision import SCALED_MODELS, make_decision_model
from advguard.errors import ParameterError, ParameterTypeError
from advguard.experiments.themis.options import classifier_specs
from advguard.experiments.themis.run import label_change_rate


@pytest.mark.parametrize("name", SCALED_MODELS)
def test_scale_false_drops_the_scaler(name):
    with_scaler, without = make_decision_model(name), make_decision_model(name, scale=False)
    assert [n for n, _ in with_scaler.steps][0] == "standardscaler"
    assert "standardscaler" not in [n for n, _ in without.steps] and len(without.steps) == len(with_scaler.steps) - 1


def test_scale_is_refused_where_there_is_no_scaler_and_must_be_bool():
    with pytest.raises(ParameterError, match="has no scaler"):
        make_decision_model("adaboost", scale=False)
    with pytest.raises(ParameterTypeError, match="true or false"):
        make_decision_model("svc", scale=1)


def test_every_decision_model_builds_with_its_defaults():
    from advguard.detectors.decision import DECISION_MODELS

    for name in DECISION_MODELS:  # xgb's wrapper has _validate_params but no constraints: must not fail
        assert make_decision_model(name) is not None


@pytest.mark.parametrize(
    "name, params, match",
    [
        ("svc", {"C": -1.0}, "'C' parameter of SVC"),
        ("svc", {"gamma": "bad"}, "'gamma' parameter of SVC"),
        ("adaboost", {"n_estimators": 0}, "'n_estimators' parameter"),
        ("rf", {"n_estimator": 10}, "unexpected keyword"),
        ("xgb", {"class_weight": "balanced"}, "no class_weight .* scale_pos_weight"),  # XGBoost would ignore it
        ("lda", {"class_weight": "balanced"}, "unexpected keyword"),
    ],
)
def test_bad_params_are_refused_at_construction(name, params, match):
    with pytest.raises(ParameterError, match=match):
        make_decision_model(name, **params)


def test_authors_svm_fits_saves_and_loads(tmp_path, correct_images):
    """THEMIS with the released code's SVM (raw softmax features, C = 5, gamma = 0.01) on real images."""
    import torch

    cnn, x, _ = correct_images(40, 3)
    x = x[:24]
    noisy = (x + 0.08 * torch.randn(x.shape, generator=torch.Generator().manual_seed(0))).clamp(0, 1)
    det = EraseRestore(cnn, n=3, decision_params={"scale": False, "C": 5.0, "gamma": 0.01}).fit(x, noisy)
    assert [n for n, _ in det.estimator_.steps] == ["svc"] and det.estimator_[-1].C == 5.0
    det.save(tmp_path / "d")
    again = EraseRestore.load(tmp_path / "d", cnn)
    np.testing.assert_allclose(again.score(x[:6]), det.score(x[:6]))
    with pytest.raises(ParameterError, match="scaler"):
        EraseRestore(cnn, decision_model="adaboost", decision_params={"scale": False})


def test_classifier_specs_and_label_change_rate():
    specs = classifier_specs(["svc", {"label": "a", "model": "svc", "params": {"C": 5.0}, "extra_clean": True}])
    assert specs[0] == {
        "label": "svc",
        "model": "svc",
        "params": {},
        "grid": {},
        "align": None,
        "extra_clean": False,
        "all_tables": True,
    }
    assert specs[1]["label"] == "a" and specs[1]["extra_clean"] and not specs[1]["all_tables"]
    p = np.zeros((2, 5, 3))
    p[0, :, 0] = 1  # label never changes
    p[1, 0, 0] = 1
    p[1, 1:3, 1] = 1  # changes in 2 of 4 draws
    p[1, 3:, 0] = 1
    np.testing.assert_allclose(label_change_rate(p), [0.0, 0.5])
