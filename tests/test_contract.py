"""The detector and attack contracts (issue #23), run over every registered detector and attack on real images."""

from __future__ import annotations

import pytest

from advguard.attacks import ATTACKS, STANDARD_ATTACKS, Attack, bench_attacks, register_attack
from advguard.detectors import DETECTORS, Detector, register_detector


# ---------------------------------------------------------------------------------------------- registries
def test_registries_keep_their_names():
    assert list(DETECTORS) == [
        "feature-squeezing",
        "confidence",
        "image-ops",
        "cnn",
        "erase-restore",
        "erase-restore-distance",
        "loo",
        "taintradar",
        "sentinet",
    ]
    adaptive = [
        "patch",
        "region-misleading-patch",
        "detector-aware-cw",
        "taintradar-bpda",
        "adaptive-squeezing",
        "adaptive-confidence",
        "adaptive-cnn",
        "adaptive-image-ops",
        "adaptive-loo",
        "adaptive-erase-restore",
        "adaptive-guard",
        "sentinet-patch",
        "square-bypass",
    ]
    assert list(ATTACKS) == [*STANDARD_ATTACKS, "rp2", *adaptive]
    assert bench_attacks() == [*STANDARD_ATTACKS, "rp2"]  # what a config's [[attack]] may name
    assert all(DETECTORS[n].name == n for n in DETECTORS) and all(ATTACKS[n].name == n for n in ATTACKS)


def test_register_decorators_fill_the_registries_and_refuse_clashes():
    @register_detector("toy-detector")
    class Toy(Detector):
        def features(self, x):
            return x.flatten(1).mean(1, keepdim=True).numpy()

        def statistic(self, f):
            return f[:, 0]

    @register_attack("toy-attack")
    class ToyAttack(Attack):
        def _run(self, x, y, targets):
            return x

    try:
        assert DETECTORS["toy-detector"] is Toy and Toy.name == "toy-detector"
        assert ATTACKS["toy-attack"] is ToyAttack
        with pytest.raises(ValueError, match="already registered"):
            register_detector("toy-detector")(type("Other", (Toy,), {}))
        with pytest.raises(ValueError, match="already registered"):
            register_attack("fgsm")(type("Other", (ToyAttack,), {}))
        with pytest.raises(TypeError, match="not a Detector"):
            register_detector("x")(int)
    finally:
        DETECTORS.pop("toy-detector", None)
        ATTACKS.pop("toy-attack", None)


# ---------------------------------------------------------------------------------------------- detectors
import warnings  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

from advguard import ParameterError  # noqa: E402
from advguard.attacks import make_attack, shifted_targets  # noqa: E402
from advguard.detectors import NotFittedError, make_detector  # noqa: E402

#: cheap test-time settings per registered detector (a new detector must add its own here)
DETECTOR_SETTINGS: dict[str, dict] = {
    "feature-squeezing": {"squeezers": ("bits:4", "median:2")},
    "confidence": {"statistic": "entropy"},
    "image-ops": {"ops": "jpeg", "decision_model": "logreg"},
    "cnn": {"epochs": 1, "widths": ((4,),), "batch_size": 16, "progress": False},
    "erase-restore": {"n": 2, "decision_model": "logreg"},
    "erase-restore-distance": {"n": 2},
    "loo": {"unit": "slic", "unit_params": {"n_segments": 8}, "decision_model": "logreg", "workers": 1},
    "taintradar": {"k_max": 3, "progress": False},
    "sentinet": {"n_test": 4, "n_bins": 3, "progress": False},
}
N_FIT, N_SCORE = 20, 6


def test_every_detector_has_test_settings():
    assert set(DETECTOR_SETTINGS) == set(DETECTORS)


@pytest.fixture(scope="module")
def real_data(correct_images):
    clf, x, y = correct_images(80, 11)
    x_fit, x_score = x[:N_FIT], x[N_FIT : N_FIT + N_SCORE]
    adv = make_attack("fgsm", clf, eps=8 / 255, progress=False)(x_fit, y[:N_FIT])
    return clf, x_fit, adv.x_adv, x_score


@pytest.fixture(scope="module")
def fitted(real_data):
    clf, x_fit, x_adv, _ = real_data
    cache: dict[str, Detector] = {}

    def get(name: str) -> Detector:
        if name == "guard":  # adaptive-guard's victim: a guard of fitted detectors, calibrated on the clean images
            from advguard import Guard

            return Guard(clf, [get(n) for n in GUARD_DETECTORS]).fit(x_fit)
        if name not in cache:
            det = make_detector(name, clf, **DETECTOR_SETTINGS[name])
            with warnings.catch_warnings():  # 20 clean images cannot resolve FPR 0.05: expected here
                warnings.simplefilter("ignore", UserWarning)
                needs_adv = det.supervised  # the CNN detector (its own network) says so too
                out = det.fit(x_fit, x_adv if needs_adv else None)
            assert out is det  # fit returns self
            cache[name] = det
        return cache[name]

    return get


@pytest.mark.parametrize("name", list(DETECTORS))
def test_detector_contract(name, real_data, fitted, tmp_path):
    from sklearn.base import clone

    clf, x_fit, x_adv, x = real_data
    fresh = make_detector(name, clf, **DETECTOR_SETTINGS[name])
    assert isinstance(fresh, Detector) and type(fresh) is DETECTORS[name]
    with pytest.raises(NotFittedError):
        fresh.score(x)
    with pytest.raises(NotFittedError):
        fresh.predict(x)

    det = fitted(name)
    s = det.score(x)
    assert isinstance(s, np.ndarray) and s.shape == (len(x),) and s.dtype == np.float64 and np.isfinite(s).all()
    flags = det.predict(x)
    assert flags.shape == (len(x),) and flags.dtype == bool

    # batch-order independence: a permuted batch gives the permuted scores, a split batch the same ones
    perm = np.random.default_rng(0).permutation(len(x))
    np.testing.assert_allclose(det.score(x[perm]), s[perm], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.r_[det.score(x[:2]), det.score(x[2:])], s, rtol=1e-5, atol=1e-6)

    # save / load: the same scores
    path = det.save(tmp_path / f"{name}.advguard")
    loaded = Detector.load(path, clf)
    assert type(loaded) is type(det)
    np.testing.assert_array_equal(loaded.score(x), s)
    assert loaded._saved_params() == det._saved_params()  # (a progress switch is not saved)

    # get_params / set_params / clone (scikit-learn's contract); the classifier is passed through
    params = det.get_params(deep=True)
    assert "classifier" not in params and set(params) <= set(type(det)._get_param_names())
    again = type(det)(clf, **params)
    assert again.get_params() == params and again.params == det.params
    assert det.set_params(**params) is det and det.get_params() == params
    c = clone(det)
    assert type(c) is type(det) and c.classifier is det.classifier and c.get_params() == params
    assert c.threshold_ is None  # an unfitted copy
    with pytest.raises(NotFittedError):
        c.score(x)
    # params: a read-only view of the detector's own parameters, as checked
    assert all(k in params for k in det.params) and "fpr" not in det.params
    with pytest.raises(AttributeError):
        det.params = {}


def _constructor_defaults(cls: type) -> dict:
    """Keyword -> default of ``cls(classifier, ...)``: its ``__init__``'s and, through ``**kw``, its bases' up to
    Detector's (what scikit-learn's check_parameters_default_constructible reads from the signature)."""
    import inspect

    out: dict = {}
    for klass in cls.__mro__:
        init = vars(klass).get("__init__")
        if init is None:
            continue
        params = inspect.signature(init).parameters.values()
        for p in params:
            if p.kind is p.KEYWORD_ONLY and p.default is not p.empty:
                out.setdefault(p.name, p.default)
        if klass is Detector or not any(p.kind is p.VAR_KEYWORD for p in params):
            break
    return out


@pytest.mark.parametrize("name", list(DETECTORS))
def test_get_params_returns_the_constructor_arguments_as_given(name, real_data):
    """scikit-learn's check_parameters_default_constructible and check_get_params_invariance, adapted to a
    constructor that takes the classifier first: a default-built detector reports every default unchanged (a None
    stays None, a tuple stays the same tuple), set_params(**get_params()) changes nothing, and clone copies them."""
    from sklearn.base import clone
    from sklearn.utils.estimator_checks import check_get_params_invariance

    clf = real_data[0]
    cls = DETECTORS[name]
    det = cls(clf)
    params = det.get_params(deep=False)
    assert set(params) == set(cls._get_param_names()) - set(cls._ignored_params)
    for k, default in _constructor_defaults(cls).items():
        if k in cls._ignored_params:
            assert k not in params
        else:
            assert params[k] is default or (type(params[k]) is type(default) and params[k] == default), k
    check_get_params_invariance(name, det)
    before = {k: v for k, v in det.get_params(deep=False).items()}
    assert det.set_params(**det.get_params()) is det
    assert all(det.get_params(deep=False)[k] is v for k, v in before.items())  # a no-op, identity included
    c = clone(det)
    assert c.get_params(deep=False) == params and all(type(c.get_params()[k]) is type(v) for k, v in params.items())


def test_get_params_keeps_a_none_that_resolves_to_a_value(real_data):
    """What a None resolves to is in params (and in the saved file), not in get_params."""
    clf = real_data[0]
    tr = make_detector("taintradar", clf, k_max=None, progress=False)
    assert tr.get_params()["layer"] is None and tr.get_params()["k_max"] is None
    assert tr.params["layer"] == clf.gradcam_layer and tr.params["k_max"] == min(20, clf.num_classes - 1)
    fs = make_detector("feature-squeezing", clf, squeezers=("bits:4",))
    assert fs.get_params()["squeezers"] == ("bits:4",) and fs.params["squeezers"] == ["bits:4"]
    # a set_params(None) goes back to the default resolution, as the constructor's None does
    tr.set_params(k_max=3)
    assert tr.params["k_max"] == 3 and tr.set_params(k_max=None).params["k_max"] == min(20, clf.num_classes - 1)


def test_set_params_checks_values_and_fit_revalidates(real_data):
    clf, x_fit, _, _ = real_data
    det = make_detector("confidence", clf)
    with pytest.raises(ParameterError):
        det.set_params(fpr=1.5)
    assert det.fpr == 0.05  # unchanged after the refused value
    with pytest.raises(TypeError, match="did you mean 'fpr'"):
        det.set_params(fpt=0.1)
    det.fpr = 2.0  # a plain attribute write is checked when the detector is fitted
    with pytest.raises(ParameterError):
        det.fit(x_fit)
    det.fpr = 0.1
    assert det.fit(x_fit).get_params()["fpr"] == 0.1


def test_fit_signature_is_one(real_data):
    clf, x_fit, _, _ = real_data
    for name in DETECTORS:
        assert DETECTORS[name].fit is Detector.fit  # the template method is not overridden
    tr = make_detector("taintradar", clf, k_max=2, progress=False)
    with pytest.warns(DeprecationWarning, match="fpr to the constructor"):
        tr.fit(x_fit, fpr=0.1)
    assert tr.fpr == 0.1 and tr.get_params()["fpr"] == 0.1


# ---------------------------------------------------------------------------------------------- attacks
#: cheap test-time settings per registered attack
ATTACK_SETTINGS: dict[str, dict] = {
    "fgsm": {"eps": 8 / 255},
    "fgm-l2": {"eps": 0.5},
    "bim": {"eps": 8 / 255, "steps": 2},
    "bim-l2": {"eps": 0.5, "steps": 2},
    "bim-l1": {"eps": 10.0, "steps": 2},
    "pgd": {"eps": 8 / 255, "steps": 2},
    "pgd-l2": {"eps": 0.5, "steps": 2},
    "cw-l2": {"binary_search_steps": 1, "steps": 3},
    "deepfool": {"steps": 3},
    "deepfool-linf": {"steps": 3},
    "newtonfool": {"steps": 3},
    "ead": {"binary_search_steps": 1, "steps": 3},
    "rp2": {"steps": 2},
    "patch": {"size": 0.1, "steps": 2, "batch_size": 4},
    "region-misleading-patch": {"size": 0.1, "steps": 2, "batch_size": 4},
    "detector-aware-cw": {"steps": 2, "restarts": 1},
    "taintradar-bpda": {"steps": 2, "check_every": 1, "recheck": 1},
    "adaptive-squeezing": {"eps": 8 / 255, "steps": 2},
    "adaptive-confidence": {"eps": 8 / 255, "steps": 2},
    "adaptive-cnn": {"eps": 8 / 255, "steps": 2},
    "adaptive-image-ops": {"eps": 8 / 255, "steps": 2, "eot_samples": 3},
    "adaptive-loo": {"eps": 8 / 255, "steps": 2},
    "adaptive-erase-restore": {"eps": 8 / 255, "steps": 2},
    "adaptive-guard": {"eps": 8 / 255, "steps": 2},
    "sentinet-patch": {"size": 0.1, "steps": 2, "batch_size": 4, "n_paste": 2},
    "square-bypass": {"eps": 8 / 255, "queries": 3},
}
#: the fitted detector an adaptive attack evades (``Attack.requires``), from the detectors' fixture above
EVADED = {
    "detector-aware-cw": "confidence",
    "taintradar-bpda": "taintradar",
    "adaptive-squeezing": "feature-squeezing",
    "adaptive-confidence": "confidence",
    "adaptive-cnn": "cnn",
    "adaptive-image-ops": "image-ops",
    "adaptive-loo": "loo",
    "adaptive-erase-restore": "erase-restore",
    "adaptive-guard": "guard",  # a Guard of GUARD_DETECTORS (the fixtures build it)
    "sentinet-patch": "sentinet",
    "square-bypass": "feature-squeezing",
}
#: the detectors of the guard ``adaptive-guard`` evades in the contract tests
GUARD_DETECTORS = ("feature-squeezing", "confidence")


def test_every_attack_has_test_settings():
    assert set(ATTACK_SETTINGS) == set(ATTACKS)


@pytest.fixture(scope="module")
def attack_data(correct_images):
    clf, x, y = correct_images(30, 12)
    return clf, x[:4], y[:4]


def check_success_is_the_bypass(r, det) -> None:
    """Issue #26: an adaptive attack's ``success`` is its goal, the bypass (misclassified, or the target reached,
    *and* not flagged by ``det``); ``misclassified`` is the first half alone (so it holds wherever ``success`` does)
    and ``evaded`` an alias of ``success``. Checked on the classifier and on the detector (every detector's score is
    deterministic: its random draws are seeded per image)."""
    from advguard.attacks.adaptive import AdaptiveResult

    assert isinstance(r, AdaptiveResult) and r.misclassified is not None, type(r)
    assert torch.equal(r.success, r.evaded)
    assert (r.misclassified | ~r.success).all()  # misclassified >= success
    reached = (r.pred_adv == r.targets) if r.targets is not None else (r.pred_adv != r.y)
    assert torch.equal(r.misclassified, reached)
    assert not (det.score(r.x_adv)[r.success.numpy()] > det.threshold_).any()


@pytest.mark.parametrize("name", list(ATTACKS))
def test_attack_contract(name, attack_data, fitted):
    from advguard import InputError

    clf, x, y = attack_data
    cls = ATTACKS[name]
    assert "__call__" not in vars(cls) and issubclass(cls, Attack)
    settings = dict(ATTACK_SETTINGS[name])
    if name in ("region-misleading-patch", "sentinet-patch"):  # targeted only: a class none of the images has
        settings["target"] = next(c for c in range(clf.num_classes) if c not in set(y.tolist()))
    if cls.requires:
        with pytest.raises(ParameterError, match="needs detector="):
            make_attack(name, clf, **settings)
        settings["detector"] = fitted(EVADED[name])

    def build() -> Attack:
        attack = make_attack(name, clf, progress=False, seed=5, **settings)
        if cls.needs_fit:
            assert attack.fit(x, y) is attack  # fit returns self
        return attack

    attack = build()
    targets = shifted_targets(y, clf.num_classes) if cls.targets_required else None
    if cls.targets_required:
        with pytest.raises(InputError, match="targeted attack: pass targets="):
            attack(x, y)
    r1 = attack(x, y, targets=targets)
    assert r1.x_adv.shape == x.shape and r1.x_adv.dtype == torch.float32
    assert float(r1.x_adv.min()) >= 0.0 and float(r1.x_adv.max()) <= 1.0
    assert r1.success.shape == (len(x),) and r1.success.dtype == torch.bool
    r2 = build()(x, y, targets=targets)
    assert torch.equal(r1.x_adv, r2.x_adv)  # deterministic given the seed
    if cls.requires == ("detector",):  # every adaptive attack (issue #26): success means the bypass
        check_success_is_the_bypass(r1, settings["detector"])


def test_abstract_bases():
    assert "_run" in Attack.__abstractmethods__ and "features" in Detector.__abstractmethods__


@pytest.mark.parametrize("name", ["detector-aware-cw", "taintradar-bpda"])
def test_configs_name_only_attacks_that_need_no_detector(name, tmp_path):
    """An [[attack]] may name any attack but the adaptive ones, which need the fitted detector they evade; a patch
    attack (needs_fit) is allowed: build_advset trains it on each chunk it attacks."""
    from advguard.attacks import config_attacks
    from advguard.experiments import ConfigError, load_config

    path = tmp_path / "c.toml"
    path.write_text(
        f'name = "x"\ndataset = "cifar10"\nmodel = "cifar10-cnn"\n[[attack]]\nname = "{name}"\nlabel = "a"\n'
        '[[detector]]\nname = "confidence"\n'
    )
    with pytest.raises(ConfigError, match=rf"attack\[1\]\.name: {name} needs the fitted detector it evades"):
        load_config(path)
    assert {"patch", "region-misleading-patch"} <= set(config_attacks()) and name not in config_attacks()
    path.write_text(path.read_text().replace(name, "patch"))
    assert load_config(path).attacks[0].name == "patch"
    with pytest.raises(ParameterError, match="needs detector="):
        make_attack("taintradar-bpda", None, size=0.1)  # type: ignore[arg-type]
