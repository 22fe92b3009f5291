"""The detector protocol every advguard detector implements.

A detector is a **feature extractor** (uses the classifier and image transforms) plus a
**decision model**: a scikit-learn-compatible estimator (supervised detectors, fitted on
clean and adversarial features) or a fixed statistic of the features (unsupervised ones,
fitted on clean data only). In both cases the decision threshold is **calibrated on clean
data only** for a target false-positive rate, never tuned per attack:

- unsupervised: the (1 - fpr) quantile of the clean fitting images' scores;
- supervised: the same quantile of *out-of-fold* clean scores (5-fold cross-validation on
  the fitting data), so the training fit does not make the threshold optimistic.

``score(x)`` returns one float per image, higher = more adversarial; ``predict(x)`` returns
booleans at the calibrated threshold; ``save``/``load`` use a pickle-free file. Following
scikit-learn, ``__init__`` only stores parameters and ``fit`` returns ``self``.
"""

from __future__ import annotations

import abc
import functools
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal, TypeVar, cast, final, overload

import numpy as np
import torch
from sklearn.exceptions import NotFittedError as SklearnNotFittedError

from ..classifier import Classifier, ImageInput
from ..errors import AdvguardError, DetectorFileError, InputError, ParameterError
from ..metrics import CostReport, PeakMemory, threshold_at_fpr
from ..validation import (
    ParameterTypeError,
    check_choice,
    check_image_tensor,
    check_keywords,
    check_number,
    init_keywords,
)
from .decision import DECISION_MODELS, decision_scores, make_decision_model
from .serialization import load_detector_file, save_detector

if TYPE_CHECKING:  # pragma: no cover
    from sklearn.base import BaseEstimator
    from typing_extensions import Self


def parameter_names(cls: type) -> set[str]:
    """Keyword parameters a detector class accepts: its ``__init__``'s and, through ``**kw``, its bases' up to
    :class:`Detector` (fpr, decision_model, decision_params, seed)."""
    return init_keywords(cls, Detector, exclude=("classifier",))


def check_rate(name: str, value: Any, *, low: float = 0.0, high: float = 1.0, closed: bool = False) -> float:
    """``value`` as a float in (low, high) (or [low, high] with ``closed``; ``high`` may be inf)."""
    return float(
        check_number(name, value, lo=low, hi=None if math.isinf(high) else high, lo_open=not closed, hi_open=not closed)
    )


@overload
def check_count(
    name: str, value: Any, *, low: int = 1, high: int | None = None, optional: Literal[False] = False
) -> int: ...
@overload
def check_count(name: str, value: Any, *, low: int = 1, high: int | None = None, optional: bool) -> int | None: ...
def check_count(name: str, value: Any, *, low: int = 1, high: int | None = None, optional: bool = False) -> int | None:
    """``value`` as an int in [low, high]; None passes when ``optional``."""
    if value is None and optional:
        return None
    return int(check_number(name, value, lo=low, hi=high, integer=True))


class NotFittedError(AdvguardError, SklearnNotFittedError):  # type: ignore[misc]  # sklearn is untyped
    """The detector must be fitted/calibrated before this call. Also scikit-learn's ``NotFittedError`` (hence a
    ``ValueError`` and an ``AttributeError``), so code written for scikit-learn estimators catches it."""


#: Every registered detector class by name (filled by :func:`register_detector`; ``make_detector`` reads it).
DETECTORS: dict[str, type[Detector]] = {}

D = TypeVar("D", bound="type[Detector]")


def register_detector(name: str | None = None) -> Callable[[D], D]:
    """Class decorator: register a :class:`Detector` subclass in :data:`DETECTORS` under ``name`` (default: its
    ``name`` attribute), like timm's ``register_model``. A name registered twice is refused::

        @register_detector("my-detector")
        class MyDetector(Detector):
            ...
    """

    def deco(cls: D) -> D:
        if not (isinstance(cls, type) and issubclass(cls, Detector)):
            raise TypeError(f"register_detector: {cls!r} is not a Detector subclass")
        key = name if name is not None else cls.name
        if not isinstance(key, str) or not key:
            raise TypeError(f"register_detector: the name must be a non-empty str, got {key!r}")
        if key in DETECTORS and DETECTORS[key] is not cls:
            raise ValueError(f"detector {key!r} is already registered ({DETECTORS[key].__qualname__})")
        if cls.name != key:
            cls.name = key
        DETECTORS[key] = cls
        return cls

    return deco


def _check_fpr(value: Any, p: dict[str, Any], det: Detector) -> float:
    return check_rate("fpr", value)


def _check_seed(value: Any, p: dict[str, Any], det: Detector) -> int:
    return int(check_count("seed", value, low=0))


def is_estimator(value: Any) -> bool:
    """A scikit-learn-compatible binary classifier instance: ``fit``, ``get_params`` and ``predict_proba`` or
    ``decision_function`` (an estimator, a pipeline, an XGBoost model...)."""
    return (
        not isinstance(value, type)
        and callable(getattr(value, "fit", None))
        and callable(getattr(value, "get_params", None))
        and (hasattr(value, "predict_proba") or hasattr(value, "decision_function"))
    )


def _check_decision_model(value: Any, p: dict[str, Any], det: Detector) -> str | BaseEstimator | None:
    dm = value if value is not None else det.default_decision_model
    if dm is None or is_estimator(dm):
        return dm
    if not isinstance(dm, str):
        what = f"the class {dm.__name__} (pass an instance: {dm.__name__}())" if isinstance(dm, type) else repr(dm)
        raise ParameterTypeError(
            f"{det.name}: decision_model must be a name ({', '.join(DECISION_MODELS)}), a scikit-learn-compatible "
            f"classifier (fit + predict_proba or decision_function) or None, got {what}"
        )
    if dm not in DECISION_MODELS:
        from ..errors import unknown_name

        raise unknown_name("decision model", str(dm), list(DECISION_MODELS))
    return dm


def _check_decision_params(value: Any, p: dict[str, Any], det: Detector) -> dict[str, Any]:
    if value is not None and not isinstance(value, dict):
        raise ParameterError(f"decision_params must be a dict, got {type(value).__name__}")
    out = dict(value or {})
    dm = p.get("decision_model")
    if dm is not None and out:
        try:  # unknown estimator parameters fail here, not after the features are computed
            decision_estimator(dm, 0, out)
        except (TypeError, ValueError) as e:
            raise ParameterError(f"decision_params for {_dm_label(dm)}: {e}") from e
    return out


def _is_label_vector(v: Any) -> bool:
    """``fit(X, y)``'s ``y``: a 1-D array (or list) of labels rather than a batch of images."""
    if isinstance(v, torch.Tensor):
        return v.ndim == 1
    if isinstance(v, (list, tuple)):
        return all(isinstance(e, (int, np.integer, bool, np.bool_)) for e in v)
    return isinstance(v, np.ndarray) and v.ndim == 1


def _type_name(obj: object) -> str:
    return f"{type(obj).__module__}.{type(obj).__qualname__}"


def _dm_label(dm: str | BaseEstimator) -> str:
    return repr(dm) if isinstance(dm, str) else type(dm).__name__


def decision_estimator(dm: str | BaseEstimator, seed: int, params: dict[str, Any]) -> BaseEstimator:
    """A fresh, unfitted decision model: the named one with the papers' defaults (:func:`make_decision_model`),
    or an unfitted copy (``sklearn.base.clone``) of the user's estimator with ``params`` set on it (its own
    ``random_state`` is kept: ``seed`` applies to named models only)."""
    if isinstance(dm, str):
        return make_decision_model(dm, seed=seed, **params)
    from sklearn.base import clone

    est = clone(dm)
    return est.set_params(**params) if params else est


def _validating_features(fn: Callable[..., np.ndarray]) -> Callable[..., np.ndarray]:
    """Wrap a detector's ``features(x, ...)`` so that a non-tensor ``x`` is validated by its classifier first and a
    tensor gets the cheap checks of :func:`~advguard.validation.check_image_tensor` (dtype, shape, channels, size,
    range). The unwrapped function stays as ``_unchecked``: :meth:`Detector.extract` calls it on the tensor it has
    validated already."""

    @functools.wraps(fn)
    def features(self: Detector, x: Any, *args: Any, **kwargs: Any) -> np.ndarray:
        clf = self.classifier
        if isinstance(x, torch.Tensor):
            check_image_tensor(x, channels=clf.channels, size=clf.size, bounds=clf.bounds)
        else:
            x = clf.validate(x)
        return fn(self, x, *args, **kwargs)

    features._accepts_any_input = True  # type: ignore[attr-defined]
    features._unchecked = fn  # type: ignore[attr-defined]
    return features


def _accepting_renamed(init: Callable[..., None]) -> Callable[..., None]:
    """Wrap a detector's ``__init__`` so that a keyword listed in :attr:`Detector._renamed_params` is accepted under
    its old name, with a ``DeprecationWarning`` (``inspect.signature`` still shows the new names only)."""

    @functools.wraps(init)
    def __init__(self: Detector, *args: Any, **kwargs: Any) -> None:
        init(self, *args, **self._renamed(kwargs, f"{type(self).__name__}()"))

    __init__._accepts_renamed = True  # type: ignore[attr-defined]
    return __init__


#: The parameters every detector takes (``Detector.__init__``); the others are the subclass's own (``params``).
BASE_PARAMETERS = ("fpr", "seed", "decision_model", "decision_params")


class Detector(abc.ABC):
    """Base class; subclasses implement :meth:`features` (and :meth:`statistic` if they can run unsupervised).

    ``decision_model=None`` means unsupervised (the detector's own :meth:`statistic` scores the
    features); a name (``"svc"``, ``"xgb"``, ...) makes the detector supervised. Subclasses that
    need a decision model set :attr:`default_decision_model` (and the same default in their signature).

    **Parameters** follow scikit-learn's estimator contract: ``__init__`` stores every keyword parameter, as
    given, in an attribute of its own name (where a method or property already has that name, under the name
    :attr:`_param_attributes` gives: ``statistic`` is stored as ``statistic_param``, ImageOps' ``k`` / ``ops`` as
    ``k_param`` / ``ops_param``); :meth:`get_params` / :meth:`set_params` read and write them as given (a ``None``
    stays ``None``; what it resolves to is in :attr:`params`) and
    ``sklearn.base.clone`` makes an unfitted copy around the *same* classifier (the classifier is the network
    the detector protects, not a hyperparameter: it is passed through, never copied). Every value is checked
    against :attr:`_parameter_constraints` (scikit-learn's ``_parameter_constraints``, written as functions
    ``check(value, checked_so_far, detector) -> normalised value``) when the detector is built, by
    :meth:`set_params`, and again by :meth:`fit`; an invalid value raises :class:`~advguard.ParameterError`.
    Fitted state lives in attributes ending in ``_`` (``threshold_``, ``estimator_``, ...). :attr:`params` is the
    read-only dict of the detector's own parameters as checked (what ``self.params`` held before advguard 0.2).

    The protocol methods (:meth:`fit`, :meth:`score`, :meth:`predict`, :meth:`calibrate`, :meth:`save`,
    :meth:`load`) are templates; subclasses override the hooks (:meth:`features`, :meth:`statistic`,
    :meth:`_fit_features`, :meth:`_state`, :meth:`_set_state`, and :meth:`fit_features` / :meth:`_fit_images`
    for detectors with their own fitting).
    """

    name = "detector"
    default_decision_model: str | None = None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        """A subclass's :meth:`features` also takes what :meth:`extract` takes (numpy arrays, image files, PIL
        images): anything but a tensor is validated by the classifier first (tensors are passed as they are)."""
        super().__init_subclass__(**kwargs)
        own = cls.__dict__.get("features")
        if own is not None and not getattr(own, "_accepts_any_input", False):
            cls.features = _validating_features(own)  # type: ignore[method-assign]
        init = cls.__dict__.get("__init__")
        if cls._renamed_params and init is not None and not getattr(init, "_accepts_renamed", False):
            cls.__init__ = _accepting_renamed(init)  # type: ignore[method-assign]

    #: name -> check(value, checked parameters so far, detector) -> the normalised value, in checking order
    _parameter_constraints: ClassVar[dict[str, Callable[[Any, dict[str, Any], Detector], Any]]] = {
        "fpr": _check_fpr,
        "seed": _check_seed,
        "decision_model": _check_decision_model,
        "decision_params": _check_decision_params,
    }
    #: constructor parameters stored under another attribute (their own name is a method or property)
    _param_attributes: ClassVar[dict[str, str]] = {}
    #: constructor parameters left out of :attr:`params` and of the saved file's JSON (saved as arrays, or not
    #: at all, like a progress bar switch)
    _unsaved_params: ClassVar[tuple[str, ...]] = ()
    #: constructor parameters the detector accepts but ignores (left out of :meth:`get_params`)
    _ignored_params: ClassVar[tuple[str, ...]] = ()
    #: old parameter name -> new name: the old one is still accepted by the constructor and :meth:`set_params` (with
    #: a ``DeprecationWarning``) and read silently from files saved before the rename
    _renamed_params: ClassVar[dict[str, str]] = {}

    @classmethod
    def _renamed(cls, params: dict[str, Any], where: str, *, warn: bool = True) -> dict[str, Any]:
        """``params`` with the old names of :attr:`_renamed_params` replaced by the new ones (a warning each unless
        ``warn`` is False); both names at once are refused."""
        if not cls._renamed_params or not any(k in cls._renamed_params for k in params):
            return params
        out = dict(params)
        for old, new in cls._renamed_params.items():
            if old not in out:
                continue
            if new in out:
                raise ParameterTypeError(f"{where}: give {new}= only ({old}= is its deprecated name), not both")
            if warn:
                import warnings

                warnings.warn(
                    f"{cls.name}: the parameter {old}= is deprecated, use {new}= (the same value; {old} will be "
                    "removed in a later version)",
                    DeprecationWarning,
                    stacklevel=3,  # the caller of the constructor or of set_params
                )
            out[new] = out.pop(old)
        return out

    def __init__(
        self,
        classifier: Classifier,
        *,
        fpr: float = 0.05,
        decision_model: str | BaseEstimator | None = None,
        decision_params: dict[str, Any] | None = None,
        seed: int = 0,
        **unknown: Any,
    ):
        if not isinstance(classifier, Classifier):
            raise ParameterError(
                f"{self.name}: classifier must be an advguard.Classifier, got {type(classifier).__name__}"
            )
        check_keywords(self.name, unknown, parameter_names(type(self)))
        self.classifier = classifier
        self.fpr = fpr
        self.decision_model = decision_model
        self.decision_params = decision_params
        self.seed = seed
        self.threshold_: float | None = None
        self.calibration_: dict[str, Any] | None = None
        self.estimator_: BaseEstimator | None = None
        self.last_cost_: dict[str, Any] | None = None
        self._checked_params()  # refuse a bad value now, naming it (and again in fit: set_params may change it)

    # ---------------------------------------------------------------- parameters
    @classmethod
    def _get_param_names(cls) -> list[str]:
        """The constructor's keyword parameters (its own and, through ``**kw``, its bases'), sorted."""
        return sorted(parameter_names(cls))

    def _raw_params(self) -> dict[str, Any]:
        """The parameters as stored. A subclass that keeps a constructor argument under no attribute of its name
        (outside the contract) simply has it left out."""
        missing = object()
        raw = {n: getattr(self, self._param_attributes.get(n, n), missing) for n in self._get_param_names()}
        return {n: v for n, v in raw.items() if v is not missing}

    def _checked_params(self) -> dict[str, Any]:
        """Every parameter checked against :attr:`_parameter_constraints` and normalised (cached until a
        parameter attribute is rebound)."""
        raw = self._raw_params()
        cache = self.__dict__.get("_param_cache")
        if cache is not None and cache[0].keys() == raw.keys() and all(cache[0][k] is raw[k] for k in raw):
            cached: dict[str, Any] = cache[1]
            return cached
        checked: dict[str, Any] = {}
        for name, check in self._parameter_constraints.items():
            if name in raw:
                checked[name] = check(raw[name], checked, self)
        for name in raw:  # a parameter without a constraint passes as given
            checked.setdefault(name, raw[name])
        for name in BASE_PARAMETERS:  # a subclass whose signature leaves them out still has the base's values
            if name not in checked:
                checked[name] = Detector._parameter_constraints[name](
                    getattr(self, name, None) if name != "fpr" else getattr(self, name, 0.05), checked, self
                )
        self.__dict__["_param_cache"] = (raw, checked)
        return checked

    def get_params(self, deep: bool = True) -> dict[str, Any]:
        """The detector's parameters by name, **as given** to the constructor or :meth:`set_params`
        (scikit-learn's contract): every constructor keyword except the classifier (passed through by
        :meth:`set_params` / ``clone``, not a hyperparameter) and the ignored ones. A ``None`` stays ``None``: the
        value it resolves to (TaintRadar's ``layer``, a default decision model) is in :attr:`params` and the fitted
        attributes, so that ``clone(det)`` builds an equal unfitted detector and ``set_params(**get_params())``
        changes nothing. With ``deep``, parameters that are estimators add their own as ``name__key``."""
        out = {}
        for k, v in self._raw_params().items():
            if k in self._ignored_params:
                continue
            out[k] = v
            if deep and hasattr(v, "get_params") and not isinstance(v, type):
                out.update({f"{k}__{kk}": vv for kk, vv in v.get_params().items()})
        return out

    def _resolved_params(self) -> dict[str, Any]:
        """The parameters as checked and resolved (``None`` defaults replaced by what they resolve to), less the
        ignored ones and an empty ``decision_params``: what a saved file records and what experiment cache keys
        are built on (what :meth:`get_params` returned before it followed scikit-learn's contract, so those keys stay
        stable)."""
        return {
            k: v
            for k, v in self._checked_params().items()
            if k not in self._ignored_params and not (k == "decision_params" and not v)
        }

    def set_params(self, **params: Any) -> Self:
        """Set parameters by name (``classifier`` too; ``name__key`` for a parameter's own); they are checked at
        once (an invalid value raises and leaves the detector unchanged). Returns ``self``. Fitted state is not
        cleared: refit after changing a parameter."""
        params = self._renamed(params, f"{self.name}.set_params")
        valid = set(self._get_param_names()) | {"classifier"}
        nested: dict[str, dict[str, Any]] = {}
        for k in params:
            top = k.split("__", 1)[0]
            if top not in valid:
                check_keywords(f"{self.name}.set_params", [top], valid)
            if "__" in k:
                nested.setdefault(top, {})[k.split("__", 1)[1]] = params[k]
        old = {k: getattr(self, self._param_attributes.get(k, k)) for k in {k.split("__", 1)[0] for k in params}}
        try:
            for k, v in params.items():
                if "__" in k:
                    continue
                if k == "classifier" and not isinstance(v, Classifier):
                    raise ParameterError(
                        f"{self.name}: classifier must be an advguard.Classifier, got {type(v).__name__}"
                    )
                setattr(self, self._param_attributes.get(k, k), v)
            for k, sub in nested.items():
                getattr(self, self._param_attributes.get(k, k)).set_params(**sub)
            self.__dict__.pop("_param_cache", None)
            self._checked_params()
        except Exception:
            for k, v in old.items():
                setattr(self, self._param_attributes.get(k, k), v)
            self.__dict__.pop("_param_cache", None)
            raise
        return self

    def __sklearn_clone__(self) -> Detector:
        """``sklearn.base.clone(det)``: an unfitted detector with deep copies of the parameters, around the same
        classifier."""
        from sklearn.base import clone

        return type(self)(self.classifier, **{k: clone(v, safe=False) for k, v in self._raw_params().items()})

    @property
    def params(self) -> dict[str, Any]:
        """Read-only: the detector's own parameters (not fpr, seed, decision model), as checked and resolved
        (e.g. TaintRadar's default ``layer`` and ``k_max``). A fresh dict: change parameters with
        :meth:`set_params`."""
        return {
            k: v
            for k, v in self._checked_params().items()
            if k not in BASE_PARAMETERS and k not in self._unsaved_params and k not in self._ignored_params
        }

    def _saved_params(self) -> dict[str, Any]:
        """The parameters written to a detector file (JSON-able; what ``Detector.load`` rebuilds it from). A
        decision model given as an estimator is written as ``{"estimator": "<module.Class>"}``: the fitted
        estimator itself is saved beside (its types checked against the allow-list), and ``load`` rebuilds the
        parameter as an unfitted copy of it."""
        out = {k: v for k, v in self._resolved_params().items() if k not in self._unsaved_params}
        dm = out.get("decision_model")
        if dm is not None and not isinstance(dm, str):
            out["decision_model"] = {"estimator": _type_name(dm)}
        return out

    @property
    def supervised(self) -> bool:
        return self._checked_params()["decision_model"] is not None

    @property
    def fits_on_features(self) -> bool:
        """True when ``fit`` on images is :meth:`extract` then :meth:`fit_features`, so features computed once
        can fit it again (the Guard's folds, the experiments' caches); False for detectors that fit on images
        (the CNN detector trains a network, TaintRadar chooses K from rank changes, SentiNet keeps test images)."""
        return type(self)._fit_images is Detector._fit_images

    # ---------------------------------------------------------------- to override
    @abc.abstractmethod
    def features(self, x: torch.Tensor) -> np.ndarray:
        """(N, d) float features (a numpy array) of images ``x``: a validated tensor, or anything :meth:`extract`
        takes (numpy arrays, image files, PIL images), validated first. :meth:`extract` also records the cost."""

    def statistic(self, features: np.ndarray) -> np.ndarray:
        """Unsupervised detectors: one score per image from its features (higher = more adversarial)."""
        raise NotImplementedError(f"{self.name} has no unsupervised statistic: give it a decision_model")

    def _fit_features(self, f_clean: np.ndarray) -> None:  # noqa: B027 - optional hook, empty by default
        """Unsupervised detectors with fitted state (e.g. a PCA) fit it here, on clean features only."""

    def _state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """Fitted state beyond threshold and estimator: (JSON-able dict, arrays)."""
        return {}, {}

    def _set_state(self, meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:  # noqa: B027 - optional hook, empty by default
        pass

    def feature_names(self, d: int) -> list[str]:
        return [f"f{i}" for i in range(d)]

    # ---------------------------------------------------------------- protocol
    def __repr__(self) -> str:
        try:
            shown = self.get_params(deep=False)
        except Exception:  # noqa: BLE001 - an invalid parameter still has a repr
            shown = self._raw_params()
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in shown.items())})"

    def _unchecked_features(self, t: torch.Tensor) -> np.ndarray:
        """:meth:`features` of a tensor validated already (by :meth:`extract`): the subclass's own function, without
        the input checks :meth:`features` adds."""
        fn = type(self).features
        raw = getattr(fn, "_unchecked", fn)
        return cast(np.ndarray, raw(self, t))

    def extract(self, x: ImageInput) -> np.ndarray:
        """Validate ``x`` and compute its features (float64 (N, d) numpy array), recording the cost in
        :attr:`last_cost_`. ``x``: float NCHW images in [0, 1] as a numpy array or a tensor, or image files, a folder
        or PIL images (read at the classifier's input size, see :meth:`Classifier.validate`)."""
        t = self.classifier.validate(x)
        passes0 = self.classifier.num_passes
        start = time.perf_counter()
        with PeakMemory() as mem:
            f = np.asarray(self._unchecked_features(t), dtype=np.float64)
        cost = CostReport(
            n=t.shape[0],
            seconds=time.perf_counter() - start,
            passes=self.classifier.num_passes - passes0,
            peak_mb=mem.peak_mb,
            peak_gpu_mb=None if math.isnan(mem.peak_gpu_mb) else mem.peak_gpu_mb,
        )
        self.last_cost_ = cost.as_dict()
        if f.ndim != 2 or f.shape[0] != t.shape[0]:
            raise AdvguardError(f"{self.name}: features have shape {f.shape}, expected ({t.shape[0]}, d)")
        return f

    @final
    def fit(self, x_clean: ImageInput, x_adv: ImageInput | None = None, **fit_params: Any) -> Self:
        """Fit on clean images (unsupervised; ``x_adv`` must be None) or clean + adversarial images (supervised),
        calibrating the threshold at :attr:`fpr`; returns ``self``. The parameters are checked first.
        ``fit_params`` go to detectors that take more (the CNN detector's ``dev=``).

        scikit-learn's form ``fit(X, y)`` works too (``GridSearchCV``, ``cross_val_score``): ``y`` a 1-D array of
        0 (clean) / 1 (adversarial), one per image of ``X``; an unsupervised detector fits on the clean ones only.
        ``score(X, y)`` is then scikit-learn's score, the ROC AUC of the detector's scores against ``y`` (what
        ``GridSearchCV`` uses without a ``scoring=``); ``score(x)`` alone is the per-image score of this library's
        protocol."""
        self.__dict__.pop("_param_cache", None)
        self._checked_params()
        if x_adv is not None and _is_label_vector(x_adv):
            x_clean, x_adv = self._split_by_labels(x_clean, x_adv)
        return self._fit_images(x_clean, x_adv, **fit_params)

    def _split_by_labels(
        self, x: ImageInput, y: ImageInput
    ) -> tuple[np.ndarray | torch.Tensor, np.ndarray | torch.Tensor | None]:
        """``fit(X, y)``: the clean (y == 0) and adversarial (y == 1) images of ``X``."""
        if not isinstance(x, (np.ndarray, torch.Tensor)):  # paths, PIL images, lists: read them once
            x = self.classifier.validate(x)
        adv = self._binary_labels(x, y, "fit").astype(bool)
        if not (~adv).any():
            raise InputError(
                f"{self.name}.fit(X, y): y marks no clean image (0); the threshold is calibrated on clean images "
                "(in scikit-learn's tools, split with cv=StratifiedKFold(k, shuffle=True): a plain cv=k keeps "
                "sorted labels together)"
            )
        if isinstance(x, torch.Tensor):
            return x[torch.from_numpy(~adv)], x[torch.from_numpy(adv)] if self.supervised else None
        return x[~adv], x[adv] if self.supervised else None

    def _binary_labels(self, x: np.ndarray | torch.Tensor, y: Any, where: str) -> np.ndarray:
        """``y`` of ``fit(X, y)`` / ``score(X, y)`` checked: a 0 (clean) / 1 (adversarial) label per image of ``x``."""
        try:
            labels = np.asarray(y.detach().cpu() if isinstance(y, torch.Tensor) else y)
        except (TypeError, ValueError) as e:  # ragged lists
            raise InputError(f"{self.name}.{where}(X, y): y must be a 1-D array of 0/1 labels ({e})") from None
        n = len(x)
        if labels.shape != (n,):
            raise InputError(
                f"{self.name}.{where}(X, y): y must hold one 0/1 label per image of X ({n}), got shape {labels.shape}"
            )
        if labels.dtype.kind not in "biuf" or not np.isin(labels, (0, 1)).all():
            raise InputError(
                f"{self.name}.{where}(X, y): y must be 0 (clean) or 1 (adversarial), got values "
                f"{sorted(set(labels.tolist()), key=repr)[:5]}"
            )
        return labels.astype(np.int64)

    def __sklearn_is_fitted__(self) -> bool:
        """``sklearn.utils.validation.check_is_fitted(det)``: True once :meth:`fit` or :meth:`calibrate` set the
        threshold (the fitted attributes exist, as ``None``, from the constructor on)."""
        return self.threshold_ is not None

    def __sklearn_tags__(self) -> Any:
        """scikit-learn's estimator tags (needed by ``GridSearchCV`` and friends): scikit-learn's defaults, with
        labels optional (an unsupervised detector fits on clean images alone) and images rather than a 2-D table
        as input."""
        from sklearn.base import BaseEstimator

        tags = BaseEstimator.__sklearn_tags__(self)
        tags.target_tags.required = False
        tags.input_tags.two_d_array = False
        tags.non_deterministic = False
        return tags

    def decision_function(self, x: ImageInput) -> np.ndarray:
        """scikit-learn's name for :meth:`score`: one float per image, higher = more adversarial."""
        return self.score(x)

    def _fit_images(self, x_clean: ImageInput, x_adv: ImageInput | None = None, **fit_params: Any) -> Self:
        """The fitting behind :meth:`fit` (parameters already checked): features, then :meth:`fit_features`."""
        if fit_params:
            raise ParameterTypeError(f"{self.name}.fit takes no keyword {', '.join(map(repr, fit_params))}")
        f_adv = None
        if self.supervised:
            if x_adv is None:
                raise InputError(f"{self.name} is supervised: fit(x_clean, x_adv) needs adversarial examples")
            f_adv = self.extract(x_adv)
        elif x_adv is not None:
            raise InputError(f"{self.name} is unsupervised: fit on clean images only (x_adv must be None)")
        return self.fit_features(self.extract(x_clean), f_adv)

    def fit_features(self, f_clean: np.ndarray, f_adv: np.ndarray | None = None) -> Self:
        """:meth:`fit` on precomputed features (the benchmark harness caches them)."""
        p = self._checked_params()
        f_clean = np.asarray(f_clean, dtype=np.float64)
        self._check_fit_size(len(f_clean))
        if not self.supervised:
            self._fit_features(f_clean)
            self._set_threshold(self.statistic(f_clean))
            return self
        if f_adv is None or len(f_adv) == 0:
            raise InputError(f"{self.name} is supervised and needs adversarial features")
        from sklearn.base import clone
        from sklearn.model_selection import StratifiedKFold

        f = np.concatenate([f_clean, np.asarray(f_adv, dtype=np.float64)])
        y = np.r_[np.zeros(len(f_clean)), np.ones(len(f_adv))].astype(int)
        est = decision_estimator(p["decision_model"], p["seed"], p["decision_params"])
        oof = np.empty(len(f_clean))
        k = min(5, int(min(len(f_clean), len(f_adv))))
        if k >= 2:
            for tr, te in StratifiedKFold(k, shuffle=True, random_state=p["seed"]).split(f, y):
                m = clone(est).fit(f[tr], y[tr])
                clean_te = te[te < len(f_clean)]
                oof[clean_te] = decision_scores(m, f[clean_te])
        self.estimator_ = est.fit(f, y)
        if k < 2:
            oof = decision_scores(self.estimator_, f_clean)
        self._set_threshold(oof)
        return self

    #: The fewest clean images a fit or calibration accepts.
    min_fit_images = 2

    def _check_fit_size(self, n: int) -> None:
        """At least :attr:`min_fit_images` clean images (an error), and a warning when so few that one image is a
        share above ``fpr`` (the target FPR cannot be resolved: the threshold sits at the largest clean score)."""
        if n < self.min_fit_images:
            raise InputError(f"{self.name}: fitting needs at least {self.min_fit_images} clean images, got {n}")
        from ..metrics import warn_unresolved_fpr

        warn_unresolved_fpr(self.name, n, self._checked_params()["fpr"], stacklevel=3)

    def _set_threshold(self, clean_scores: np.ndarray, rule: str = "empirical") -> None:
        """Threshold at :attr:`fpr` of these clean scores (:func:`~advguard.metrics.threshold_at_fpr`'s ``rule``);
        their range is recorded (a saved threshold outside it is refused at load), with the rule and the expected
        FPR on new clean images."""
        from ..metrics import expected_fpr

        s = np.asarray(clean_scores, dtype=np.float64)
        if not np.isfinite(s).all():
            raise AdvguardError(f"{self.name}: {int((~np.isfinite(s)).sum())} clean calibration scores are not finite")
        fpr = self._checked_params()["fpr"]
        self.threshold_ = float(threshold_at_fpr(s, fpr, rule))
        self.calibration_ = {
            "n": int(len(s)),
            "min": float(s.min()),
            "max": float(s.max()),
            "rule": rule,
            "expected_fpr": expected_fpr(len(s), fpr, rule),
        }

    def score_features(self, f: np.ndarray) -> np.ndarray:
        f = np.asarray(f, dtype=np.float64)
        if self.supervised:
            if self.estimator_ is None:
                raise NotFittedError(f"{self.name} is not fitted: call fit(x_clean, x_adv) first")
            return decision_scores(self.estimator_, f)
        return np.asarray(self.statistic(f), dtype=np.float64)

    def _check_fitted(self) -> None:
        if self.threshold_ is None:
            raise NotFittedError(f"{self.name} is not fitted: call fit(...) or calibrate(x_clean) first")

    @overload
    def score(
        self, x: ImageInput, y: None = None, *, return_report: Literal[False] = False, sample_weight: None = None
    ) -> np.ndarray: ...
    @overload
    def score(
        self, x: ImageInput, y: None = None, *, return_report: Literal[True], sample_weight: None = None
    ) -> tuple[np.ndarray, list[dict[str, Any]]]: ...
    @overload
    def score(
        self, x: ImageInput, y: None = None, *, return_report: bool, sample_weight: None = None
    ) -> np.ndarray | tuple[np.ndarray, list[dict[str, Any]]]: ...
    @overload
    def score(
        self, x: ImageInput, y: Any, *, return_report: Literal[False] = False, sample_weight: Any = None
    ) -> float: ...
    @final
    def score(
        self, x: ImageInput, y: Any = None, *, return_report: bool = False, sample_weight: Any = None
    ) -> np.ndarray | tuple[np.ndarray, list[dict[str, Any]]] | float:
        """One score per image (higher = more adversarial), a float64 array (N,); with ``return_report=True``
        (keyword-only) also a list of dicts. Raises :class:`NotFittedError` before :meth:`fit` or :meth:`calibrate`.

        scikit-learn's form ``score(X, y)`` (what ``GridSearchCV`` / ``cross_val_score`` call without a
        ``scoring=``): with ``y`` a 0 (clean) / 1 (adversarial) label per image of ``X``, it returns one float,
        the ROC AUC of the detector's scores against ``y`` (higher is better, scikit-learn's convention;
        ``sample_weight`` weighs the images)."""
        self._check_fitted()
        if y is None:
            if sample_weight is not None:
                raise ParameterTypeError(f"{self.name}.score: sample_weight needs labels: score(X, y, sample_weight)")
            return self._score(x, return_report)
        if return_report:
            raise ParameterTypeError(
                f"{self.name}.score(X, y) returns the ROC AUC of the scores against y; return_report=True is for "
                "score(x) alone"
            )
        from sklearn.metrics import roc_auc_score

        if not isinstance(x, (np.ndarray, torch.Tensor)):  # paths, PIL images, lists: read them once
            x = self.classifier.validate(x)
        labels = self._binary_labels(x, y, "score")
        if len(np.unique(labels)) < 2:
            raise InputError(
                f"{self.name}.score(X, y): the ROC AUC needs clean (0) and adversarial (1) images, y has only "
                f"{int(labels[0])}"
            )
        return float(roc_auc_score(labels, self._score(x), sample_weight=sample_weight))

    @overload
    def _score(self, x: ImageInput, return_report: Literal[False] = False) -> np.ndarray: ...
    @overload
    def _score(self, x: ImageInput, return_report: bool) -> np.ndarray | tuple[np.ndarray, list[dict[str, Any]]]: ...
    def _score(
        self, x: ImageInput, return_report: bool = False
    ) -> np.ndarray | tuple[np.ndarray, list[dict[str, Any]]]:
        f = self.extract(x)
        s = self.score_features(f)
        if not return_report:
            return s
        names = self.feature_names(f.shape[1])
        reports: list[dict[str, Any]] = []
        for i in range(len(s)):
            r: dict[str, Any] = {
                "score": float(s[i]),
                "threshold": self.threshold_,
                "adversarial": None if self.threshold_ is None else bool(s[i] > self.threshold_),
            }
            if f.shape[1] <= 16:
                r["features"] = dict(zip(names, map(float, f[i]), strict=False))
            reports.append(r)
        return s, reports

    @final
    def calibrate(self, x_clean: ImageInput, fpr: float | None = None, rule: str = "empirical") -> Self:
        """Set the threshold so that a share ``fpr`` of these clean images is flagged (``fpr`` also becomes the
        detector's parameter); returns ``self``. ``rule``: ``"empirical"`` (what :meth:`fit` does: at most a share
        ``fpr`` of *these* images above) or ``"conformal"`` (an expected FPR of at most ``fpr`` on new clean
        images), as :func:`advguard.metrics.threshold_at_fpr`; ``calibration_["expected_fpr"]`` states it."""
        from ..metrics import THRESHOLD_RULES

        check_choice("rule", rule, THRESHOLD_RULES, where=f"{self.name}.calibrate")
        if fpr is not None:
            self.fpr = check_rate("fpr", fpr)
        scores = self._score(x_clean)
        self._check_fit_size(len(scores))
        self._set_threshold(scores, rule)
        return self

    @final
    def predict(self, x: ImageInput) -> np.ndarray:
        """True where the image is judged adversarial (score above the calibrated threshold): a bool array (N,)."""
        if self.threshold_ is None:
            raise NotFittedError(f"{self.name} has no threshold: call fit(...) or calibrate(x_clean) first")
        return np.asarray(self.score(x) > self.threshold_, dtype=bool)

    # ---------------------------------------------------------------- persistence
    @final
    def save(self, path: str | Path) -> Path:
        """Write the fitted detector to one pickle-free file (atomically), with the classifier's fingerprint."""
        from ..fingerprint import classifier_fingerprint

        extra_meta, arrays = self._state()
        meta = {
            "detector": self.name,
            "params": self._saved_params(),
            "threshold": self.threshold_,
            "classifier": self.classifier.name,
            "state": extra_meta,
            "fingerprint": classifier_fingerprint(self.classifier),
            "calibration": self.calibration_,
        }
        return save_detector(path, meta, arrays, self.estimator_)

    @staticmethod
    def load(
        path: str | Path, classifier: Classifier, *, check_classifier: bool = True, max_bytes: int | None = None
    ) -> Detector:
        """Rebuild a saved detector around ``classifier``, which must be the network it was fitted for.

        The file's classifier fingerprint (architecture, weights, input spec) must match ``classifier``;
        ``check_classifier=False`` loads anyway with a warning (e.g. for a deliberate transfer experiment).
        Every check of :mod:`advguard.detectors.serialization` applies; ``max_bytes`` raises its size limit.
        """
        import warnings

        from ..fingerprint import classifier_fingerprint, fingerprint_mismatch
        from . import DETECTORS, make_detector
        from .serialization import MAX_TOTAL_BYTES

        if not isinstance(classifier, Classifier):
            raise ParameterError(f"classifier must be an advguard.Classifier, got {type(classifier).__name__}")
        meta, arrays, est = load_detector_file(path, max_bytes=max_bytes or MAX_TOTAL_BYTES)
        if meta["detector"] not in DETECTORS:
            raise DetectorFileError(f"{path}: unknown detector {meta['detector']!r}")
        saved = meta.get("fingerprint")
        if saved is None:
            problems = ["the file records no classifier fingerprint (saved by advguard < 0.2)"]
        else:
            problems = fingerprint_mismatch(saved, classifier_fingerprint(classifier))
        if problems:
            msg = (
                f"{path} was fitted for classifier {meta.get('classifier')!r}, not this {classifier.name!r}: "
                + "; ".join(problems)
            )
            if check_classifier:
                raise DetectorFileError(msg + ". Pass check_classifier=False to load it anyway.")
            warnings.warn(msg, stacklevel=2)
        params = DETECTORS[meta["detector"]]._renamed(dict(meta["params"]), str(path), warn=False)  # older files
        dm = params.get("decision_model")
        if isinstance(dm, dict):  # a user's estimator: the parameter is an unfitted copy of the saved one
            if set(dm) != {"estimator"} or est is None or dm["estimator"] != _type_name(est):
                raise DetectorFileError(
                    f"{path}: the decision model parameter {dm!r} does not match the saved estimator "
                    f"({'none' if est is None else _type_name(est)})"
                )
            from sklearn.base import clone

            params["decision_model"] = clone(est)
        try:
            det = make_detector(meta["detector"], classifier, **params)
        except (AdvguardError, TypeError, ValueError, AttributeError, KeyError) as e:
            raise DetectorFileError(f"{path}: invalid detector parameters: {type(e).__name__}: {e}") from e
        has_model = det._checked_params()["decision_model"] is not None  # the CNN detector: supervised, no model
        if has_model != (est is not None):
            raise DetectorFileError(
                f"{path}: a detector {'with' if has_model else 'without'} a decision model parameter "
                f"{'without' if has_model else 'with'} a saved decision model"
            )
        det.threshold_ = None if meta["threshold"] is None else float(meta["threshold"])
        det.calibration_ = meta.get("calibration")
        det.estimator_ = est
        try:
            det._set_state(meta.get("state", {}), arrays)
            det._self_test()
        except Exception as e:  # any inconsistency between parameters, state and arrays: the file is bad
            raise DetectorFileError(
                f"{path}: the fitted state of this {meta['detector']} detector is invalid ({type(e).__name__}: {e})"
            ) from e
        return det

    def _self_test(self) -> None:
        """Score one grey image once (after loading): a state that cannot score, or scores NaN, is refused here
        rather than at the first real image."""
        if self.classifier.size is None or self.threshold_ is None:
            return
        probe = torch.full((1, self.classifier.channels, *self.classifier.size), 0.5)
        progress = getattr(self, "progress", None)
        if progress:
            self.progress = False
        try:
            s = self.score(probe)
        finally:
            if progress:
                self.progress = progress
        if s.shape != (1,) or not np.isfinite(s).all():
            raise AdvguardError(f"a grey probe image scored {s!r}")
