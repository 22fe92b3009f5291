"""Decision models: scikit-learn-compatible binary classifiers chosen by name, with the papers' defaults.

``svc`` (RBF SVM, ML-LOO / Segmentation Fault / THEMIS), ``rf`` (random forest), ``xgb``
(XGBoost, Segmentation Fault), ``adaboost`` (THEMIS), ``lda`` / ``mlp`` (Nguyen et al.),
``logreg`` (original ML-LOO). Scaling is part of the pipeline where the model needs it.
"""
from __future__ import annotations

import numpy as np
from sklearn.base import BaseEstimator

from ..errors import unknown_name

DECISION_MODELS = ("svc", "rf", "xgb", "adaboost", "lda", "mlp", "logreg")


def make_decision_model(name: str, seed: int = 0, **params) -> BaseEstimator:
    """A fresh, unfitted estimator ``name`` with ``params`` overriding the defaults."""
    from sklearn.discriminant_analysis import LinearDiscriminantAnalysis
    from sklearn.ensemble import AdaBoostClassifier, RandomForestClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.neural_network import MLPClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import SVC

    if name == "svc":
        return make_pipeline(StandardScaler(), SVC(**{"kernel": "rbf", "C": 1.0, "gamma": "scale", **params}))
    if name == "rf":
        return RandomForestClassifier(**{"n_estimators": 100, "random_state": seed, "n_jobs": -1, **params})
    if name == "xgb":
        from xgboost import XGBClassifier

        return XGBClassifier(**{"n_estimators": 100, "max_depth": 6, "learning_rate": 0.3, "random_state": seed,
                                "n_jobs": 2, "tree_method": "hist", **params})
    if name == "adaboost":
        return AdaBoostClassifier(**{"n_estimators": 50, "random_state": seed, **params})
    if name == "lda":
        return make_pipeline(StandardScaler(), LinearDiscriminantAnalysis(**params))
    if name == "mlp":
        return make_pipeline(StandardScaler(), MLPClassifier(**{"hidden_layer_sizes": (100,), "max_iter": 500,
                                                                "random_state": seed, **params}))
    if name == "logreg":
        return make_pipeline(StandardScaler(), LogisticRegression(**{"max_iter": 2000, **params}))
    raise unknown_name("decision model", name, list(DECISION_MODELS))


def decision_scores(model: BaseEstimator, features: np.ndarray) -> np.ndarray:
    """Continuous scores, higher = more adversarial (class 1): decision_function, else P(class 1)."""
    if hasattr(model, "decision_function"):
        try:
            return np.asarray(model.decision_function(features), dtype=np.float64)
        except AttributeError:
            pass
    return np.asarray(model.predict_proba(features)[:, 1], dtype=np.float64)
