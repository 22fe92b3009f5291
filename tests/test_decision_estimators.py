"""Any scikit-learn-compatible decision model (issue #24): estimators and pipelines as ``decision_model=``, their
safe saving (or a clear refusal), and detectors inside scikit-learn's tools (``fit(X, y)``, ``GridSearchCV``)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.base import clone
from sklearn.ensemble import GradientBoostingClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import GridSearchCV, StratifiedKFold
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC

from advguard import InputError, ParameterError
from advguard.attacks import make_attack
from advguard.detectors import Detector, FeatureSqueezing, make_detector
from advguard.errors import DetectorFileError


@pytest.fixture(scope="module")
def images(correct_images):
    clf, x, y = correct_images(48, 21)
    adv = make_attack("fgsm", clf, eps=4 / 255, progress=False)(x, y).x_adv.numpy()
    return clf, x.numpy()[:24], adv[:24], x.numpy()[24:], adv[24:]


@pytest.mark.parametrize(
    "estimator",
    [LogisticRegression(C=0.5), make_pipeline(StandardScaler(), SVC(C=2.0, gamma="scale"))],
    ids=["logreg", "scaler+svc"],
)
def test_an_estimator_is_a_decision_model_and_round_trips(images, estimator, tmp_path):
    clf, x_fit, adv_fit, x_test, adv_test = images
    det = FeatureSqueezing(clf, squeezers=("bits:4", "median:2"), decision_model=estimator, fpr=0.1)
    assert det.supervised and det.get_params()["decision_model"] is estimator
    det.fit(x_fit, adv_fit)
    assert det.estimator_ is not estimator and not hasattr(estimator, "classes_")  # a clone was fitted
    s = det.score(np.concatenate([x_test, adv_test]))
    auc = roc_auc_score(np.r_[np.zeros(len(x_test)), np.ones(len(adv_test))], s)
    assert auc > 0.6, auc  # the estimator really decides (feature squeezing vs FGSM on CIFAR-10)
    path = det.save(tmp_path / "det.advguard")
    back = Detector.load(path, clf)
    np.testing.assert_array_equal(back.score(x_test), det.score(x_test))
    assert type(back.get_params()["decision_model"]) is type(estimator)
    assert back.get_params()["decision_model"].get_params(deep=False).keys() == estimator.get_params(deep=False).keys()
    assert clone(back).get_params()["decision_model"] is not back.get_params()["decision_model"]


def test_decision_params_and_nested_parameters_reach_the_estimator(images):
    clf, x_fit, adv_fit, *_ = images
    det = make_detector("feature-squeezing", clf, decision_model=LogisticRegression(), decision_params={"C": 0.01})
    det.fit(x_fit, adv_fit)
    assert det.estimator_.C == 0.01
    det.set_params(decision_model__C=3.0)
    assert det.get_params()["decision_model__C"] == 3.0
    with pytest.raises(ParameterError, match="decision_params for LogisticRegression"):
        make_detector("feature-squeezing", clf, decision_model=LogisticRegression(), decision_params={"Cee": 1})


def test_a_decision_model_outside_the_allow_list_is_refused_at_save_naming_the_type(images, tmp_path):
    clf, x_fit, adv_fit, *_ = images
    det = FeatureSqueezing(clf, decision_model=GradientBoostingClassifier(n_estimators=5)).fit(x_fit, adv_fit)
    assert det.score(x_fit).shape == (len(x_fit),)
    with pytest.raises(DetectorFileError, match="GradientBoosting"):
        det.save(tmp_path / "gb.advguard")
    assert not list(tmp_path.iterdir())  # nothing half-written


@pytest.mark.parametrize(
    ("value", "match"),
    [(LogisticRegression, "the class LogisticRegression"), (object(), "scikit-learn-compatible"), (3, "got 3")],
)
def test_a_decision_model_that_is_no_estimator_is_refused(images, value, match):
    clf = images[0]
    with pytest.raises(ParameterError, match=match):
        FeatureSqueezing(clf, decision_model=value)


def test_detectors_fit_the_scikit_learn_way_and_sit_in_grid_search(images):
    clf, x_fit, adv_fit, *_ = images
    X = np.concatenate([x_fit, adv_fit])
    y = np.r_[np.zeros(len(x_fit)), np.ones(len(adv_fit))].astype(int)
    a = FeatureSqueezing(clf, decision_model="logreg").fit(X, y)
    b = FeatureSqueezing(clf, decision_model="logreg").fit(x_fit, adv_fit)
    np.testing.assert_allclose(a.decision_function(x_fit), b.score(x_fit))
    unsup = FeatureSqueezing(clf).fit(torch.from_numpy(X), torch.from_numpy(y))  # clean images only
    assert unsup.threshold_ == FeatureSqueezing(clf).fit(x_fit).threshold_
    search = GridSearchCV(
        FeatureSqueezing(clf, decision_model=LogisticRegression()),
        {"decision_model__C": [0.01, 10.0]},
        scoring=lambda det, X, y: roc_auc_score(y, det.decision_function(X)),
        cv=StratifiedKFold(2, shuffle=True, random_state=0),
    ).fit(X, y)
    assert search.best_params_["decision_model__C"] in (0.01, 10.0)
    assert np.isfinite(search.cv_results_["mean_test_score"]).all()
    with pytest.raises(InputError, match="one 0/1 label per image"):
        FeatureSqueezing(clf).fit(X, y[:-1])
    with pytest.raises(InputError, match="0 \\(clean\\) or 1"):
        FeatureSqueezing(clf).fit(X, y * 2)
