"""Issue #24's API review: each problem a new user hit, with the call that now works or fails clearly.

Real data (the CIFAR-10 test split, the zoo's cifar10-cnn) wherever a model is involved; property-based tests for
bad input where natural."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import advguard
from advguard.errors import InputError


@pytest.fixture(scope="module")
def cifar():
    return advguard.load_dataset("cifar10", "test", limit=40)


@pytest.fixture(scope="module")
def clf():
    return advguard.load_model("cifar10-cnn")


# ---------------------------------------------------------------------------------------------- 1. ImageDataset.take
def test_take_boolean_mask_selects_the_rows(cifar):
    sub = cifar.take(cifar.y == 3)
    assert len(sub) == int((cifar.y == 3).sum()) > 1
    assert (sub.y == 3).all()
    np.testing.assert_array_equal(sub.indices, cifar.indices[cifar.y == 3])
    np.testing.assert_array_equal(sub.x, cifar.x[cifar.y == 3])
    # the same as a tensor mask and as positions
    np.testing.assert_array_equal(cifar.take(torch.from_numpy(cifar.y == 3)).y, sub.y)
    np.testing.assert_array_equal(cifar.take(np.flatnonzero(cifar.y == 3)).x, sub.x)
    assert len(cifar.take(np.zeros(len(cifar), bool))) == 0
    assert len(cifar.take([])) == 0
    np.testing.assert_array_equal(cifar.take([-1]).y, cifar.y[-1:])


def test_take_refuses_floats_short_masks_and_out_of_range(cifar):
    with pytest.raises(InputError, match="dtype float64"):
        cifar.take(np.array([0.7, 1.2]))
    with pytest.raises(InputError, match="one value per image"):
        cifar.take((cifar.y == 3)[:5])
    with pytest.raises(InputError, match="out of range"):
        cifar.take([len(cifar)])
    with pytest.raises(InputError, match="one-dimensional"):
        cifar.take(np.zeros((2, 2), int))


@given(st.lists(st.floats(allow_nan=True, allow_infinity=True), min_size=1, max_size=5))
def test_take_never_truncates_floats(values):
    ds = advguard.data.dataset.ImageDataset(
        x=np.zeros((6, 3, 2, 2), np.float32),
        y=np.arange(6),
        classes=[str(i) for i in range(6)],
        name="t",
        split="test",
        source="t",
        indices=np.arange(6),
    )
    with pytest.raises(InputError):
        ds.take(np.array(values, dtype=np.float64))


# ---------------------------------------------------------------------------------------------- 2. metrics.accuracy
def test_accuracy_flattens_a_column_and_refuses_broadcasts(clf, cifar):
    from advguard import metrics

    logits = clf.logits(cifar.x[:16])
    pred = logits.argmax(1)
    want = float((pred.numpy() == cifar.y[:16]).mean())
    assert metrics.accuracy(cifar.y[:16], pred) == want
    assert metrics.accuracy(cifar.y[:16], logits.argmax(1, keepdim=True)) == want  # (N, 1) was 0.25-ish
    y = np.array([0, 1, 2, 3, 0, 1, 2, 3])
    assert metrics.accuracy(y, y[:, None]) == 1.0
    assert metrics.accuracy(torch.from_numpy(y), torch.from_numpy(y)[:, None]) == 1.0
    assert metrics.accuracy(list(y), tuple(y)) == 1.0
    for short in (y[:1], y[:4]):
        with pytest.raises(InputError, match="same length"):
            metrics.accuracy(y, short)
    with pytest.raises(InputError, match="shape"):
        metrics.accuracy(y, np.zeros((8, 2)))
    with pytest.raises(InputError, match="empty"):
        metrics.accuracy([], [])


@given(st.integers(0, 6), st.integers(0, 6))
def test_accuracy_length_mismatch_always_raises(n, m):
    from advguard import metrics

    if n == m:
        return
    with pytest.raises(InputError):
        metrics.accuracy(np.zeros(n, int), np.zeros(m, int))


# ----------------------------------------------------------------- 3. Detector.score(X, y): scikit-learn's score
@pytest.fixture(scope="module")
def fgsm_images(correct_images):
    """(clf, clean, adversarial): 24 + 24 CIFAR-10 test images cifar10-cnn gets right, and their FGSM (4/255)."""
    from advguard.attacks import make_attack

    clf, x, y = correct_images(48, 21)
    x, y = x[:24], y[:24]
    adv = make_attack("fgsm", clf, eps=4 / 255, progress=False)(x, y).x_adv.numpy()
    return clf, x.numpy(), adv


def test_score_with_labels_is_the_roc_auc_and_return_report_is_keyword_only(fgsm_images):
    from sklearn.metrics import roc_auc_score

    from advguard.detectors import ConfidenceDetector

    clf, x, adv = fgsm_images
    det = ConfidenceDetector(clf, fpr=0.1).fit(x)
    X = np.concatenate([x, adv])
    y = np.r_[np.zeros(len(x)), np.ones(len(adv))].astype(int)
    auc = det.score(X, y)
    assert isinstance(auc, float) and auc == roc_auc_score(y, det.score(X)) and auc > 0.6
    assert det.score(torch.from_numpy(X), torch.from_numpy(y)) == auc
    assert det.score(X, list(y)) == auc
    w = np.linspace(0.5, 1.5, len(y))
    assert det.score(X, y, sample_weight=w) == roc_auc_score(y, det.score(X), sample_weight=w)
    s, reports = det.score(x[:3], return_report=True)
    assert s.shape == (3,) and len(reports) == 3
    with pytest.raises(InputError):  # scikit-learn's old confusion: a second positional argument is y, not the flag
        det.score(x[:3], True)
    with pytest.raises(InputError, match="0 \\(clean\\) or 1"):
        det.score(x[:3], np.array(["yes"] * 3))
    with pytest.raises(InputError, match="needs clean \\(0\\) and adversarial"):
        det.score(x, np.zeros(len(x), int))
    with pytest.raises(advguard.ParameterTypeError, match="return_report"):
        det.score(X, y, return_report=True)


def test_grid_search_without_scoring_picks_by_auc(fgsm_images):
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import GridSearchCV, StratifiedKFold

    from advguard.detectors import ConfidenceDetector

    clf, x, adv = fgsm_images
    X = np.concatenate([x, adv])
    y = np.r_[np.zeros(len(x)), np.ones(len(adv))].astype(int)
    cv = StratifiedKFold(2, shuffle=True, random_state=0)
    grid = {"statistic": ["max_prob", "entropy"]}
    search = GridSearchCV(ConfidenceDetector(clf, fpr=0.1), grid, cv=cv, error_score="raise").fit(X, y)
    want = []
    for statistic in grid["statistic"]:
        aucs = []
        for tr, te in cv.split(X, y):
            det = ConfidenceDetector(clf, fpr=0.1, statistic=statistic).fit(X[tr], y[tr])
            aucs.append(roc_auc_score(y[te], det.decision_function(X[te])))
        want.append(np.mean(aucs))
    np.testing.assert_allclose(search.cv_results_["mean_test_score"], want)  # no NaN: score(X, y) is the AUC
    assert search.best_params_ == {"statistic": grid["statistic"][int(np.argmax(want))]}


# ------------------------------------------------------------ 4. check_is_fitted and scikit-learn's NotFittedError
def test_check_is_fitted_and_scikit_learns_not_fitted_error(fgsm_images):
    import sklearn.exceptions
    from sklearn.utils.validation import check_is_fitted

    from advguard.detectors import ConfidenceDetector, FeatureSqueezing, NotFittedError

    clf, x, adv = fgsm_images
    assert issubclass(NotFittedError, sklearn.exceptions.NotFittedError)
    assert issubclass(NotFittedError, advguard.AdvguardError)
    for det in (ConfidenceDetector(clf), FeatureSqueezing(clf, decision_model="logreg")):
        with pytest.raises(sklearn.exceptions.NotFittedError):
            check_is_fitted(det)  # passed before: the fitted attributes exist (None) from __init__ on
        with pytest.raises(sklearn.exceptions.NotFittedError, match="not fitted"):
            det.score(x)
        with pytest.raises(NotFittedError):
            det.predict(x)
        det.fit(x, adv) if det.supervised else det.fit(x)
        check_is_fitted(det)
    calibrated = ConfidenceDetector(clf).calibrate(x)
    check_is_fitted(calibrated)


# -------------------------------------------------------------- 5. tensors given straight to clf(t) / det.features(t)
def _bad_tensors(x: torch.Tensor) -> dict[str, tuple[torch.Tensor, str]]:
    nan = x.clone()
    nan[1, 0, 0, 0] = float("nan")
    return {
        "uint8": ((x * 255).to(torch.uint8), "uint8"),
        "0..255": (x * 255, "divide by 255"),
        "CHW": (x[0], "single image"),
        "NHWC": (x.permute(0, 2, 3, 1), "NHWC"),
        "int64": (x.long(), "floating dtype"),
        "NaN": (nan, "NaN or Inf values in 1 of"),
        "size": (x[:, :, :16, :16], "spatial size"),
    }


def test_classifier_call_checks_tensors_and_keeps_the_gradient(clf, cifar):
    x = torch.from_numpy(cifar.x[:4])
    for bad, match in _bad_tensors(x).values():
        with pytest.raises(InputError, match=match):
            clf(bad)
        with pytest.raises(InputError, match=match):
            clf.forward(bad)
    xr = x.clone().requires_grad_(True)
    out = clf(xr)
    (g,) = torch.autograd.grad(out[:, 0].sum(), xr)  # not detached: the gradient reaches the caller's tensor
    assert g.shape == x.shape and bool(g.abs().sum() > 0)
    assert torch.equal(out.detach(), clf.forward(x, validate=False).detach())
    assert torch.equal(clf(x.double()).detach(), out.detach())  # float64 is cast (it failed in the conv before)
    assert clf(x * 255, validate=False).shape == (4, 10)  # the caller vouches for it


def test_detector_features_check_tensors_and_extract_checks_once(clf, cifar, monkeypatch):
    from advguard.detectors import ConfidenceDetector, FeatureSqueezing, base

    x = torch.from_numpy(cifar.x[:4])
    fs = FeatureSqueezing(clf, squeezers=("bits:5", "median:2"), progress=False)
    for det in (ConfidenceDetector(clf), fs):
        for bad, match in _bad_tensors(x).values():
            with pytest.raises(InputError, match=match):
                det.features(bad)
        np.testing.assert_array_equal(det.features(x), det.extract(x))
    calls = {"n": 0}
    real = base.check_image_tensor

    def counting(*a, **k):
        calls["n"] += 1
        return real(*a, **k)

    monkeypatch.setattr(base, "check_image_tensor", counting)
    fs.extract(x)  # validated once by the classifier, then the features' own function unchecked
    assert calls["n"] == 0
    fs.features(x)
    assert calls["n"] == 1


def test_internal_forward_calls_skip_the_checks(clf, cifar, monkeypatch):
    import advguard.classifier as classifier_module

    def refuse(*a, **k):
        raise AssertionError("an internal call was checked again")

    monkeypatch.setattr(classifier_module, "check_image_tensor", refuse)
    x, y = cifar.x[:4], cifar.y[:4]
    assert clf.input_gradient(x, y).shape == x.shape
    assert clf.gradcam(x, y).shape[0] == 4


@given(
    st.lists(st.sampled_from([0, 1, 2, 3, 16, 32]), min_size=0, max_size=5),
    st.sampled_from([torch.uint8, torch.int64, torch.bool, torch.float16, torch.float32, torch.float64]),
    st.sampled_from([1.0, 255.0, -1.0, float("inf")]),
)
def test_classifier_call_refuses_bad_tensors_with_an_input_error(shape, dtype, scale):
    clf = advguard.load_model("cifar10-cnn")
    t = (torch.rand(shape) * scale).to(dtype) if shape else torch.tensor(scale).to(dtype)
    try:
        out = clf(t)
    except InputError:
        return
    assert out.shape == (shape[0], 10) and t.dtype.is_floating_point and 0 <= float(t.min()) <= float(t.max()) <= 1


# ---------------------------------------------------------- 6. attacks leave the caller's random generators alone
def _seed_user(seed: int) -> None:
    """The user's own seeding of the global generators."""
    torch.manual_seed(seed)
    np.random.seed(seed)


def _user_stream(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """What the user's next draws are after ``_seed_user(seed)``."""
    _seed_user(seed)
    return torch.rand(4).numpy(), np.random.rand(4)


def test_attacks_and_the_cnn_detector_leave_the_global_generators_alone(correct_images):
    from advguard.attacks import make_attack
    from advguard.detectors import CNNDetector

    clf, x, y = correct_images(30, 12)
    x, y = x[:4], y[:4]
    want_t, want_n = _user_stream(99)
    runs = []
    for user_seed in (99, 1234):  # PGD's random start draws from torch's global generator, seeded by the attack
        _seed_user(user_seed)
        runs.append(make_attack("pgd", clf, eps=8 / 255, steps=2, seed=5, progress=False)(x, y).x_adv)
        if user_seed == 99:
            np.testing.assert_array_equal(torch.rand(4).numpy(), want_t)  # the stream goes on where the user left it
            np.testing.assert_array_equal(np.random.rand(4), want_n)
    assert torch.equal(runs[0], runs[1])  # the result depends on the attack's seed only
    other = make_attack("pgd", clf, eps=8 / 255, steps=2, seed=6, progress=False)(x, y).x_adv
    assert not torch.equal(other, runs[0])

    clean = torch.from_numpy(advguard.load_dataset("cifar10", "test", limit=24, seed=3).x)
    adv = make_attack("fgsm", clf, eps=8 / 255, progress=False)(x, y).x_adv
    _seed_user(99)
    det = CNNDetector(clf, epochs=1, widths=((4,),), batch_size=8, progress=False, fpr=0.25)
    with warnings.catch_warnings():  # a handful of dev images may not resolve the FPR
        warnings.simplefilter("ignore", UserWarning)
        det.fit(clean[:8], adv)
    np.testing.assert_array_equal(torch.rand(4).numpy(), want_t)


def test_rp2_fit_leaves_the_global_generators_alone(correct_images):
    from advguard.attacks import make_attack

    clf, x, y = correct_images(30, 12)
    want_t, _ = _user_stream(7)
    _seed_user(7)
    make_attack("rp2", clf, steps=2, progress=False).fit(x[:2], target=int((y[0] + 1) % 10))
    np.testing.assert_array_equal(torch.rand(4).numpy(), want_t)


# ------------------------------------------------------------ 7. the user's model keeps training after being wrapped
def test_wrapping_a_users_model_leaves_its_parameters_trainable(cifar):
    from advguard.attacks import make_attack
    from advguard.models.registry import build_module, get_spec

    spec = get_spec("cifar10-cnn")
    user = build_module("cifar10-cnn").train()  # a trained network its owner is fine-tuning
    for p in user.parameters():
        p.requires_grad_(True)
    clf = advguard.Classifier(user, channels=3, size=(32, 32), mean=spec.mean, std=spec.std)
    assert all(p.requires_grad for p in user.parameters())
    assert not user.training  # documented: a wrapper for inference puts the model in eval mode
    x, y = cifar.x[:8], cifar.y[:8]
    pgd = make_attack("pgd", clf, eps=8 / 255, steps=3, progress=False)(x, y).x_adv  # Foolbox calls backward()
    make_attack("patch", clf, size=0.1, steps=2, batch_size=8, progress=False).fit(x, y)
    clf.input_gradient(x, y)
    clf.gradcam(x, y)
    assert all(p.requires_grad and p.grad is None for p in user.parameters())  # nothing accumulated
    # the same adversarial images as with frozen parameters (what Classifier used to impose)
    frozen = build_module("cifar10-cnn")
    for p in frozen.parameters():
        p.requires_grad_(False)
    clf2 = advguard.Classifier(frozen, channels=3, size=(32, 32), mean=spec.mean, std=spec.std)
    assert torch.equal(make_attack("pgd", clf2, eps=8 / 255, steps=3, progress=False)(x, y).x_adv, pgd)
    # fine-tuning goes on
    user.train()
    opt = torch.optim.SGD(user.parameters(), lr=0.1)
    before = [p.detach().clone() for p in user.parameters()]
    loss = torch.nn.functional.cross_entropy(clf(torch.from_numpy(x)), torch.from_numpy(y))
    loss.backward()
    opt.step()
    assert any(not torch.equal(a, p) for a, p in zip(before, user.parameters(), strict=True))


def test_frozen_restores_only_the_flags_that_were_on(clf):
    m = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.Flatten(), torch.nn.LazyLinear(10))
    m(torch.zeros(1, 3, 8, 8))
    c = advguard.Classifier(m, channels=3, size=(8, 8))
    m[0].bias.requires_grad_(False)
    with c.frozen():
        assert not any(p.requires_grad for p in m.parameters())
    assert [p.requires_grad for p in m.parameters()] == [True, False, True, True]
    with pytest.raises(RuntimeError), c.frozen():
        raise RuntimeError("an attack failed")
    assert [p.requires_grad for p in m.parameters()] == [True, False, True, True]
    assert not any(p.requires_grad for p in clf.model.parameters())  # a zoo model is frozen by load_model


# ---------------------------------------------------------------------- 8-9. apply_ops' op names, ImageOp's value type
def test_apply_ops_takes_op_names(cifar):
    from advguard.transforms import ImageOp, apply_ops

    x = cifar.x[:3]
    jpeg, blur = ImageOp("jpeg", 75), ImageOp("blur", 2)
    want = apply_ops(x, [jpeg, blur])
    assert torch.equal(apply_ops(x, "jpeg:75"), want[:1])  # an AttributeError in a worker thread before
    assert torch.equal(apply_ops(x, ["jpeg:75", "blur:2"]), want)
    assert torch.equal(apply_ops(x, ["jpeg:75", blur]), want)
    assert torch.equal(apply_ops(x, jpeg), want[:1])
    assert apply_ops(x, "jpeg").shape[0] == 16  # a family: the paper's 16 qualities
    assert apply_ops(x, [jpeg, jpeg]).shape[0] == 2  # repeats kept, one output each (as before)
    for bad in ([75], [None], 3):
        with pytest.raises(advguard.ParameterTypeError, match="ops must be image operations"):
            apply_ops(x, bad)
    with pytest.raises(advguard.ParameterError, match="not a number"):
        apply_ops(x, "jpeg:high")


@given(st.one_of(st.text(max_size=4), st.booleans(), st.none(), st.lists(st.integers(), max_size=2)))
def test_image_op_refuses_a_value_that_is_not_a_number(value):
    from advguard.transforms import ImageOp

    with pytest.raises(advguard.ParameterTypeError, match="a number"):
        ImageOp("jpeg", value)


def test_image_op_string_value_is_refused_at_construction():
    from advguard.transforms import ImageOp

    with pytest.raises(advguard.ParameterTypeError, match="got '75' \\(str\\); parse_op reads names like 'jpeg:100'"):
        ImageOp("jpeg", "75")  # passed, then crashed in repr / name
    assert ImageOp("jpeg", np.int64(75)).name == "jpeg:75"
    assert ImageOp("scale", np.float32(0.9)).name == "scale:0.9"


# ------------------------------------------------------------------------------- 10. parameters that had no effect
def test_parameters_without_effect_are_refused_naming_why(clf, tmp_path):
    from advguard.detectors import CNNDetector, Detector, EraseRestoreDistance

    for kw in ({"pca_dim": 5}, {"align": True}, {"pca_dim": 1}):
        with pytest.raises(advguard.ParameterError, match=f"{next(iter(kw))}=.* has no effect.*EraseRestore"):
            EraseRestoreDistance(clf, **kw)
    with pytest.raises(advguard.ParameterTypeError, match="align must be True or False"):
        EraseRestoreDistance(clf, align="yes")
    # the values older files record (and the defaults) still load
    for kw in ({}, {"pca_dim": 0, "align": False}, {"pca_dim": None, "align": None}):
        det = EraseRestoreDistance(clf, n=2, progress=False, **kw)
        assert det.params["pca_dim"] == 0 and det.params["align"] is False  # resolved; get_params keeps them as given
        assert all(det.get_params()[k] is v for k, v in kw.items())
    with pytest.raises(advguard.ParameterError, match="decision_model='svc' has no effect: the detector network"):
        CNNDetector(clf, decision_model="svc")
    with pytest.raises(advguard.ParameterError, match="has no effect"):
        CNNDetector(clf).set_params(decision_model="logreg")
    assert "decision_model" not in CNNDetector(clf).get_params()
    with pytest.raises(advguard.ParameterError, match="decision_params=.* has no effect: the detector network"):
        CNNDetector(clf, decision_params={"C": 2.0})
    CNNDetector(clf, decision_params={})  # empty: what older files record, accepted
    x = advguard.load_dataset("cifar10", "test", limit=12, seed=5).x
    det = EraseRestoreDistance(clf, n=2, progress=False).fit(x)
    back = Detector.load(det.save(tmp_path / "erd.advguard"), clf)
    np.testing.assert_array_equal(back.score(x[:3]), det.score(x[:3]))


# ------------------------------------------------------------------------------------ 11. LabelCorrection's checks
def test_label_correction_checks_its_parameters(clf, cifar):
    from advguard.defenses import LabelCorrection

    assert (LabelCorrection(clf).k, LabelCorrection(clf).vote_k) == (3, 1)  # the documented defaults, 10 classes
    assert LabelCorrection(clf, k=4, vote_k=2.0).vote_k == 2
    with pytest.raises(advguard.ParameterError, match="k=0 is outside the allowed range \\[1, 10\\]"):
        LabelCorrection(clf, k=0)  # silently 3 before
    with pytest.raises(advguard.ParameterTypeError, match="k must be an integer"):
        LabelCorrection(clf, k=2.7)  # silently 2 before
    with pytest.raises(advguard.ParameterError, match="vote_k=11"):
        LabelCorrection(clf, vote_k=11)
    with pytest.raises(advguard.ParameterTypeError, match="classifier must be an advguard.Classifier, got VGGLike"):
        LabelCorrection(clf.model)  # an AttributeError before
    lc = LabelCorrection(clf, ops="jpeg", k=2)
    assert lc.top_k(cifar.x[:2]).shape == (2, 2)


@given(st.one_of(st.integers(-3, 14), st.floats(allow_nan=True), st.text(max_size=2), st.booleans()))
def test_label_correction_k_is_an_integer_in_range_or_refused(k):
    from advguard.defenses import LabelCorrection

    clf = advguard.load_model("cifar10-cnn")
    try:
        lc = LabelCorrection(clf, k=k)
    except advguard.ParameterError:
        return
    assert isinstance(lc.k, int) and 1 <= lc.k <= 10 and lc.k == k


# ----------------------------------------------------------------------- 12. bounds=(0, 255): files read onto bounds
def test_files_and_pil_images_are_mapped_onto_the_classifiers_bounds(cifar, tmp_path):
    from PIL import Image

    from advguard.models.registry import build_module, get_spec

    spec = get_spec("cifar10-cnn")
    # the zoo network behind a 0..255 interface: normalisation with mean and std scaled by 255
    c255 = advguard.Classifier(
        build_module("cifar10-cnn"),
        channels=3,
        size=(32, 32),
        mean=[255 * m for m in spec.mean],
        std=[255 * s for s in spec.std],
        bounds=(0, 255),
    )
    c01 = advguard.load_model("cifar10-cnn", inference="float32")
    u8 = (cifar.x[:4] * 255).round().astype(np.uint8)
    paths = []
    for i, img in enumerate(u8):
        paths.append(tmp_path / f"{i}.png")
        Image.fromarray(img.transpose(1, 2, 0)).save(paths[-1])
    pils = [Image.open(p) for p in paths]
    x255 = c255.validate(paths)
    assert float(x255.max()) > 2 and float(x255.max()) <= 255  # 0..255, not [0, 1]
    np.testing.assert_allclose(x255.numpy(), u8.astype(np.float32), atol=1e-4)
    np.testing.assert_array_equal(c255.validate(pils).numpy(), x255.numpy())
    assert torch.equal(c255.predict(paths), c01.predict(paths))  # the same decisions through either interface
    np.testing.assert_allclose(c255.logits(pils).numpy(), c01.logits(pils).numpy(), rtol=1e-4, atol=1e-4)
    # (-1, 1): pixel value 0 -> -1, 255 -> 1
    cm1 = advguard.Classifier(build_module("cifar10-cnn"), channels=3, size=(32, 32), bounds=(-1, 1))
    np.testing.assert_allclose(cm1.validate(paths).numpy(), u8 / 127.5 - 1, atol=1e-6)
    for doc in ("bounds:", "batch_size:", "name:"):
        assert doc in advguard.Classifier.__doc__


# ------------------------------------------------------------------------------------------- 13. metrics' bad input
def test_metrics_refuse_bad_rates_scores_and_resample_counts(fgsm_images):
    from advguard import metrics
    from advguard.detectors import ConfidenceDetector

    clf, x, adv = fgsm_images
    det = ConfidenceDetector(clf, fpr=0.1).fit(x)
    c, a = det.score(x), det.score(adv)
    assert 0 <= metrics.tpr_at_fpr(c, a, 0.05) <= 1
    assert metrics.threshold_at_fpr(c, 0.1) == det.threshold_
    for bad in (5, 1.0, -0.1, float("nan")):
        with pytest.raises(advguard.ParameterError, match="fpr"):
            metrics.tpr_at_fpr(c, a, bad)  # fpr=5 gave 1.0
        with pytest.raises(advguard.ParameterError, match="fpr"):
            metrics.threshold_at_fpr(c, bad)
    with pytest.raises(InputError, match="NaN or Inf"):
        metrics.threshold_at_fpr(np.r_[c, np.nan], 0.05)  # gave a threshold (or NaN)
    with pytest.raises(InputError, match="at least one clean score"):
        metrics.threshold_at_fpr([], 0.05)  # IndexError
    with pytest.raises(InputError, match="must be numbers"):
        metrics.threshold_at_fpr(["high"], 0.05)
    with pytest.raises(advguard.ParameterError, match="n_boot=0"):
        metrics.roc_auc_ci(c, a, n_boot=0)  # IndexError
    with pytest.raises(advguard.ParameterError, match="level=95"):
        metrics.roc_auc_ci(c, a, n_boot=10, level=95)
    with pytest.raises(advguard.ParameterError, match="n_boot"):
        metrics.detection_report(c, a, n_boot=0)
    auc, lo, hi = metrics.roc_auc_ci(c, a, n_boot=1)
    assert lo <= hi and auc == metrics.roc_auc(c, a)


@given(st.lists(st.floats(allow_nan=True, allow_infinity=True, width=32), max_size=6), st.floats(-2, 2))
def test_threshold_at_fpr_is_a_clean_score_or_refused(scores, fpr):
    from advguard import metrics

    try:
        t = metrics.threshold_at_fpr(scores, fpr)
    except (InputError, advguard.ParameterError):
        assert not scores or not np.isfinite(scores).all() or not 0 <= fpr < 1
        return
    assert t in scores and np.mean(np.asarray(scores) > t) <= fpr


# ------------------------------------------------------------------------------- 14. wrong channels= / size= named
def test_a_wrong_channels_or_size_is_named_with_the_probe_shape():
    from advguard.models.registry import build_module

    with pytest.raises(
        advguard.ParameterError, match=r"input of shape \(1, 1, 32, 32\) \(channels=1, size=\(32, 32\)\)"
    ):
        advguard.Classifier(build_module("cifar10-cnn"), channels=1, size=(32, 32))  # torch's RuntimeError before
    small = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.Flatten(), torch.nn.Linear(4 * 6 * 6, 10))
    with pytest.raises(advguard.ParameterError, match=r"size=\(32, 32\).*mat1 and mat2"):
        advguard.Classifier(small, channels=3, size=(32, 32))
    with pytest.raises(advguard.ParameterError, match="probed at 32x32: pass size"):
        advguard.Classifier(small, channels=3)
    assert advguard.Classifier(small, channels=3, size=(8, 8)).num_classes == 10

    class Dict(torch.nn.Module):
        def forward(self, x):
            return {"logits": small(x)}

    with pytest.raises(advguard.ParameterError, match="pass output= to the Classifier"):  # named as before
        advguard.Classifier(Dict(), channels=3, size=(8, 8))


# ------------------------------------------------------------------------- 15. bad choices are ParameterErrors
@pytest.mark.parametrize(
    ("name", "kw", "close"),
    [
        ("confidence", {"statistic": "maxprob"}, "max_prob"),  # a bare ValueError before
        ("image-ops", {"feature": "counts"}, "count"),  # a bare ValueError before
        ("image-ops", {"ops": "jpg"}, "jpeg"),  # UnknownNameError: a KeyError only before
        ("erase-restore", {"restore": "teela"}, "telea"),
        ("loo", {"unit": "pixels"}, "pixel"),
        ("taintradar", {"layer": "blok3"}, "block3"),
        ("confidence", {"decision_model": "svm"}, "svc"),
    ],
)
def test_bad_choices_raise_parameter_errors_with_a_suggestion(clf, name, kw, close):
    from advguard.detectors import make_detector

    with pytest.raises(advguard.ParameterError, match=f"Did you mean '{close}'") as e:
        make_detector(name, clf, **kw)
    assert isinstance(e.value, ValueError)


def test_unknown_name_error_is_a_parameter_error_and_still_a_key_error(clf):
    from advguard.attacks import make_attack
    from advguard.defenses import LabelCorrection
    from advguard.errors import UnknownNameError

    assert issubclass(UnknownNameError, advguard.ParameterError) and issubclass(UnknownNameError, KeyError)
    for call in (
        lambda: advguard.load_model("cifar10-cnnn"),
        lambda: advguard.load_dataset("cifar100"),
        lambda: make_attack("pgdd", clf),
        lambda: LabelCorrection(clf, ops="jpg"),
        lambda: clf.layer("fcc"),
    ):
        with pytest.raises(KeyError) as e:  # callers catching KeyError still do
            call()
        assert isinstance(e.value, advguard.ParameterError) and "Did you mean" in str(e.value)
        assert not str(e.value).startswith('"')  # readable, not KeyError's quoted repr


# ------------------------------------------------------------- 16. booleans are booleans, the Guard's fpr as detectors'
@pytest.mark.parametrize(
    ("name", "param"),
    [
        ("taintradar", "progress"),  # "no" was accepted (and shown a progress bar)
        ("sentinet", "progress"),
        ("erase-restore", "fixed_masks"),  # bool("no") is True
        ("erase-restore", "align"),
        ("cnn", "softmax_in_training"),
        ("loo", "patch"),
    ],
)
def test_boolean_parameters_refuse_strings_and_numbers(clf, name, param):
    from advguard.detectors import make_detector

    for bad in ("no", 1, None if param != "align" else "yes"):
        with pytest.raises(advguard.ParameterTypeError, match=f"{param} must be True or False"):
            make_detector(name, clf, **{param: bad})
    det = make_detector(name, clf, **{param: np.False_})
    assert det._resolved_params()[param] is False and det.get_params()[param] is np.False_  # checked; as given


def test_guard_checks_explain_fpr_and_combine_like_the_detectors(clf):
    from advguard import Guard
    from advguard.detectors import ConfidenceDetector

    dets = [ConfidenceDetector(clf)]
    with pytest.raises(advguard.ParameterTypeError, match="explain must be True or False"):
        Guard(clf, dets, explain="no")  # bool("no") is True
    for bad in (0, 0.0, 1.0):  # fpr=0 was accepted by the Guard, refused by its detectors
        with pytest.raises(advguard.ParameterError, match="fpr"):
            Guard(clf, dets, fpr=bad)
        with pytest.raises(advguard.ParameterError, match="fpr"):
            ConfidenceDetector(clf, fpr=bad)
    with pytest.raises(advguard.ParameterError, match="Did you mean 'stacked'"):
        Guard(clf, dets, combine="stack")
    assert Guard(clf, dets, fpr=0.01, explain=False).fpr == 0.01


@given(st.one_of(st.text(max_size=3), st.integers(), st.floats(), st.none()))
def test_check_bool_accepts_only_booleans(value):
    from advguard.validation import check_bool

    with pytest.raises(advguard.ParameterTypeError):
        check_bool("flag", value)


# ------------------------------------------------------------------------- 17. FeatureSqueezing.features is float64
def test_feature_squeezing_features_are_float64_and_equal_extract(clf, cifar):
    from advguard.detectors import FeatureSqueezing

    fs = FeatureSqueezing(clf, squeezers=("bits:5", "median:2"), progress=False)
    f = fs.features(cifar.x[:6])
    assert f.dtype == np.float64 and f.shape == (6, 2)  # float32 before, though documented float64
    np.testing.assert_array_equal(f, fs.extract(cifar.x[:6]))
    assert np.array_equal(f, f.astype(np.float32).astype(np.float64))  # the float32 values, exactly


# --------------------------------------------------------------------------- 18. bench_attacks' docstring on targets
def test_bench_attacks_docstring_names_the_attacks_that_need_targets(correct_images):
    from advguard.attacks import ATTACKS, bench_attacks, make_attack, shifted_targets

    need = [n for n in bench_attacks() if ATTACKS[n].targets_required]
    assert "rp2" in need
    assert "targets=" in bench_attacks.__doc__ and "targets_required" in bench_attacks.__doc__
    clf, x, y = correct_images(30, 12)
    with pytest.raises(advguard.ParameterError, match="pass targets="):
        make_attack("rp2", clf, steps=1, progress=False)(x[:1], y[:1])
    r = make_attack("rp2", clf, steps=1, progress=False)(x[:1], y[:1], targets=shifted_targets(y[:1], 10))
    assert r.x_adv.shape == x[:1].shape


# ------------------------------------------------------------------------------------------------ 19. Guard's repr
def test_guard_repr_says_what_decides_and_whether_it_is_fitted(fgsm_images):
    from advguard import Guard
    from advguard.detectors import ConfidenceDetector, FeatureSqueezing

    clf, x, adv = fgsm_images
    dets = [
        ConfidenceDetector(clf),
        ConfidenceDetector(clf, statistic="entropy"),
        FeatureSqueezing(clf, progress=False),
    ]
    g = Guard(clf, dets, fpr=0.1)
    assert repr(g) == (
        "Guard(cifar10-cnn, combine='any', detectors=['confidence#1', 'confidence#2', 'feature-squeezing'], "
        "fpr=0.1, not fitted)"
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        g.fit(x)
    assert repr(g).endswith(f"fpr=0.1, fitted, threshold={g.threshold_:.4g})")
    s = Guard(clf, dets[:2], combine="stacked", fpr=0.05)
    assert "combine='stacked'" in repr(s) and "meta_model=" in repr(s) and repr(s).endswith("not fitted)")


# -------------------------------------------------------------------------------------------------- 20. stale docs
def test_docs_match_erase_restore_masks_patch_apply_and_foolbox_docstrings(clf, cifar, correct_images):
    from pathlib import Path

    from advguard.attacks import ATTACKS, make_attack
    from advguard.detectors import EraseRestoreDistance

    readme = (Path(__file__).parent.parent / "README.md").read_text()
    assert "fresh per image, draw and call" not in readme
    assert "seeded by the detector's seed and the image's bytes" in readme
    # what the README now says: masks depend on the image (not the batch or the call); fixed_masks: one set for all
    det = EraseRestoreDistance(clf, n=3, progress=False)
    x = torch.from_numpy(cifar.x[:4])
    m = det.masks_for(x)
    np.testing.assert_array_equal(det.masks_for(x[2:3])[0], m[2])
    assert not np.array_equal(m[0], m[1])
    fixed = EraseRestoreDistance(clf, n=3, fixed_masks=True, progress=False).masks_for(x)
    assert all(np.array_equal(fixed[0], f) for f in fixed)
    # AdversarialPatch.apply returns a tuple, as the package docstring now says
    assert "``AdversarialPatch.apply``: a tuple" in advguard.__doc__
    c, xs, ys = correct_images(30, 12)
    patch = make_attack("patch", c, size=0.1, steps=1, batch_size=4, progress=False).fit(xs[:4], ys[:4])
    out = patch.apply(xs[:2].numpy())
    assert isinstance(out, tuple) and out[0].dtype == torch.float32 and out[1].dtype == torch.bool
    assert all("Foolboxs" not in (cls.__doc__ or "") for cls in ATTACKS.values())


# ------------------------------------------------------------------------------- 21. the wrong kind of file, named
def test_a_guard_file_and_a_detector_file_are_told_apart(fgsm_images, tmp_path, capsys):
    from advguard import Guard
    from advguard.cli import main
    from advguard.detectors import ConfidenceDetector, Detector
    from advguard.errors import DetectorFileError

    clf, x, adv = fgsm_images
    det = ConfidenceDetector(clf, fpr=0.1).fit(x)
    det_file = det.save(tmp_path / "conf.advguard")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        guard_file = Guard(clf, [ConfidenceDetector(clf)], fpr=0.1).fit(x).save(tmp_path / "g.advguard")
    with pytest.raises(DetectorFileError, match="is a Guard file .*Guard.load"):
        Detector.load(guard_file, clf)  # "unexpected or repeated members ..." before
    with pytest.raises(DetectorFileError, match="is a detector file .*Detector.load"):
        Guard.load(det_file, clf)
    with pytest.raises(DetectorFileError, match="is a detector file"):
        Guard.saved_classifier(det_file)
    png = tmp_path / "a.png"
    from PIL import Image

    Image.fromarray((x[0].transpose(1, 2, 0) * 255).round().astype(np.uint8)).save(png)
    assert main(["detect", str(png), "--guard", str(det_file)]) == 2  # KeyError 'guard.json' before
    assert "is a detector file (it holds detector.json), not a Guard file" in capsys.readouterr().err
    assert main(["detect", str(png), "--guard", str(det_file), "-m", "cifar10-cnn"]) == 2
    assert "is a detector file" in capsys.readouterr().err
    assert main(["detect", str(png), "--guard", str(guard_file)]) in (0, 1)  # 1: flagged; never an error (2)


# ---------------------------------------------------------------------------------- 22. perturbation_norms' shapes
def test_perturbation_norms_names_mismatched_shapes(cifar):
    from advguard.attacks import perturbation_norms

    x = cifar.x[:8]
    adv = np.clip(x + 2 / 255, 0, 1).astype(np.float32)
    n = perturbation_norms(x, adv)
    assert float(n["linf"].max()) == pytest.approx(2 / 255, abs=1e-6)
    with pytest.raises(InputError, match=r"same shape, got \(8, 3, 32, 32\) and \(4, 3, 32, 32\)"):
        perturbation_norms(x, adv[:4])  # torch's RuntimeError before
    with pytest.raises(InputError, match="same shape"):
        perturbation_norms(x[0], adv[0])


# ------------------------------------------------------------------------ 23. a LOO unit that takes no parameters
def test_a_unit_without_parameters_says_so(clf):
    from advguard.detectors import LeaveOneOut

    for unit in ("pixel", "channel-pixel"):
        with pytest.raises(advguard.ParameterTypeError, match=f"occlusion unit '{unit}' takes no parameters, got"):
            LeaveOneOut(clf, unit=unit, unit_params={"n_segment": 3})  # "Valid parameters: ." before
    with pytest.raises(advguard.ParameterTypeError, match="did you mean 'n_segments'"):
        LeaveOneOut(clf, unit="slic", unit_params={"n_segment": 3})
    assert LeaveOneOut(clf, unit="pixel", unit_params={}).params["unit_params"] == {}


# ---------------------------------------------------------------------- 24. NotTrainedError is a NotFittedError
def test_an_untrained_patch_raises_an_exported_not_fitted_error(correct_images, tmp_path):
    import sklearn.exceptions

    from advguard.attacks import NotTrainedError, make_attack
    from advguard.detectors import NotFittedError

    assert issubclass(NotTrainedError, NotFittedError) and issubclass(NotTrainedError, RuntimeError)
    clf, x, y = correct_images(30, 12)
    patch = make_attack("patch", clf, size=0.1, steps=1, batch_size=4, progress=False)
    for call in (lambda: patch(x[:2], y[:2]), lambda: patch.apply(x[:2]), lambda: patch.save_png(tmp_path / "p.png")):
        with pytest.raises(NotFittedError, match="not trained: call fit"):
            call()
        with pytest.raises(sklearn.exceptions.NotFittedError):
            call()
    patch.fit(x[:4], y[:4])
    assert patch(x[:2], y[:2]).x_adv.shape == x[:2].shape


# --------------------------------------------------------------- 25. load_dataset(data_dir=), unknown keywords
def test_load_dataset_takes_data_dir_and_names_unknown_keywords(tmp_path):
    from advguard.data import data_dir
    from advguard.errors import DatasetNotFoundError

    ds = advguard.load_dataset("cifar10", "test", limit=6, data_dir=data_dir())
    np.testing.assert_array_equal(ds.x, advguard.load_dataset("cifar10", "test", limit=6).x)
    with pytest.warns(DeprecationWarning, match="data_dir_=.*deprecated: use data_dir="):
        old = advguard.load_dataset("cifar10", "test", limit=6, data_dir_=data_dir())
    np.testing.assert_array_equal(old.x, ds.x)
    with pytest.raises(advguard.ParameterTypeError, match="data_dir= only"):
        advguard.load_dataset("cifar10", "test", data_dir=tmp_path, data_dir_=tmp_path)
    with pytest.raises(DatasetNotFoundError):  # the empty folder is really used
        advguard.load_dataset("rp2-lisa-victims", data_dir=tmp_path)
    with pytest.raises(advguard.ParameterTypeError, match="unknown parameter 'sorce' \\(did you mean 'source'\\?\\)"):
        advguard.load_dataset("cifar10", "test", limit=4, sorce="jpeg")  # a TypeError deep in the loader before
    with pytest.raises(advguard.ParameterTypeError, match="did you mean 'limit'"):
        advguard.load_dataset("cifar10", "test", limt=4)
    with pytest.raises(advguard.ParameterError, match="Did you mean 'test'"):
        advguard.load_dataset("cifar10", "tset")
    assert advguard.load_dataset("cifar10", "test", limit=4, source="lossless").source == "cifar10-lossless"


@given(st.text(min_size=1, max_size=8).filter(str.isidentifier))
def test_load_dataset_refuses_any_keyword_it_does_not_take(key):
    from advguard.data.registry import DATASETS, _loader_keywords

    valid = {
        "split",
        "limit",
        "seed",
        "stratified",
        "dtype",
        "data_dir",
        "data_dir_",
        *_loader_keywords(DATASETS["cifar10"]),
    }
    if key in valid:
        return
    with pytest.raises(advguard.ParameterTypeError, match="unknown parameter"):
        advguard.load_dataset("cifar10", "test", limit=2, **{key: 1})
