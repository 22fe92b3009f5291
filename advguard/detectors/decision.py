"""Decision models: scikit-learn-compatible binary classifiers chosen by name, with the papers' defaults.

``svc`` (RBF SVM, ML-LOO / Segmentation Fault / THEMIS), ``rf`` (random forest), ``xgb``
(XGBoost, Segmentation Fault), ``adaboost`` (THEMIS), ``lda`` / ``mlp`` (Nguyen et al.),
``logreg`` (original ML-LOO). Scaling is part of the pipeline where the model needs it; ``scale=False``
drops the scaler of ``svc`` / ``lda`` / ``mlp`` / ``logreg`` (THEMIS's released code fits its SVM on raw
softmax features: ``make_decision_model("svc", scale=False, C=5, gamma=0.01)``).

Class balance: every model fits its training data as given, as the papers did (THEMIS, ML-LOO and Segmentation
Fault pair each clean image with its adversarial one; Nguyen et al. fit their 83.9 %-adversarial database as
drawn). Where the classes are imbalanced (the guard experiment pools five attack families against one clean set,
about 1 : 4.8), ``class_weight="balanced"`` (``decision_params``) reweighs ``svc`` / ``rf`` / ``logreg`` by
``n / (2 n_class)``: a deviation from the papers, measured in ``docs/results/guard/``. ``xgb`` has no
``class_weight`` (XGBoost would ignore it silently, so it is refused): its counterpart is ``scale_pos_weight``
(n_clean / n_adversarial); ``adaboost`` / ``lda`` / ``mlp`` take none.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.base import BaseEstimator

from ..errors import unknown_name

DECISION_MODELS = ("svc", "rf", "xgb", "adaboost", "lda", "mlp", "logreg")


#: decision models whose pipeline starts with a StandardScaler (``scale=False`` removes it)
SCALED_MODELS = ("svc", "lda", "mlp", "logreg")


def make_decision_model(name: str, seed: int = 0, **params: Any) -> BaseEstimator:
    """A fresh, unfitted estimator ``name`` with ``params`` overriding the defaults; ``scale`` (bool, default
    True) only for the :data:`SCALED_MODELS`."""
    from ..errors import ParameterError, ParameterTypeError

    if "scale" in params:
        scale = params.pop("scale")
        if name not in SCALED_MODELS:
            raise ParameterError(
                f"decision model {name!r} has no scaler: 'scale' applies to {', '.join(SCALED_MODELS)}"
            )
        if not isinstance(scale, bool):
            raise ParameterTypeError(f"'scale' must be true or false, got {scale!r}")
    else:
        scale = True

    if name == "xgb" and "class_weight" in params:
        raise ParameterError(
            "decision model 'xgb' has no class_weight (XGBoost would ignore it): give scale_pos_weight "
            "= n_clean / n_adversarial instead"
        )
    try:
        est = _construct(name, seed, scale, params)
    except TypeError as e:  # an unknown keyword of the estimator
        raise ParameterError(f"decision model {name!r}: {e}") from None
    final = est.steps[-1][1] if hasattr(est, "steps") else est
    # scikit-learn's own parameter constraints (XGBoost's wrapper inherits the method but declares none)
    check = getattr(final, "_validate_params", None) if hasattr(final, "_parameter_constraints") else None
    if check is not None:
        try:
            check()
        except (ValueError, TypeError) as e:
            raise ParameterError(f"decision model {name!r}: {e}") from None
    return est


def _construct(name: str, seed: int, scale: bool, params: dict[str, Any]) -> BaseEstimator:
    from sklearn.discriminant_analysis import LinearDiscriminantAnalysis
    from sklearn.ensemble import AdaBoostClassifier, RandomForestClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.neural_network import MLPClassifier
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import SVC

    def make_pipeline(*steps: BaseEstimator) -> BaseEstimator:  # the scaler is the first step where there is one
        from sklearn.pipeline import make_pipeline as mp

        return mp(*(steps if scale else steps[1:]))

    if name == "svc":
        return make_pipeline(StandardScaler(), SVC(**{"kernel": "rbf", "C": 1.0, "gamma": "scale", **params}))
    if name == "rf":
        return RandomForestClassifier(**{"n_estimators": 100, "random_state": seed, "n_jobs": -1, **params})
    if name == "xgb":
        from xgboost import XGBClassifier

        return XGBClassifier(
            **{
                "n_estimators": 100,
                "max_depth": 6,
                "learning_rate": 0.3,
                "random_state": seed,
                "n_jobs": 2,
                "tree_method": "hist",
                **params,
            }
        )
    if name == "adaboost":
        return AdaBoostClassifier(**{"n_estimators": 50, "random_state": seed, **params})
    if name == "lda":
        return make_pipeline(StandardScaler(), LinearDiscriminantAnalysis(**params))
    if name == "mlp":
        return make_pipeline(
            StandardScaler(),
            MLPClassifier(**{"hidden_layer_sizes": (100,), "max_iter": 500, "random_state": seed, **params}),
        )
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
