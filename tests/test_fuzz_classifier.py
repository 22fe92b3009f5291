"""Issue #20: property-based fuzzing of every public Classifier method, plus plain regression tests.

Each generated call mixes good and bad arguments (image batches of every dtype / shape / range / NaN / Inf, numpy or
torch, requiring grad or not; labels; k; temperatures; batch sizes; layer names), and the generator knows which
arguments are bad. The property: with no bad argument, a correct result (shape, dtype, range, consistency); with
one or more, an ``AdvguardError`` whose message names one of the bad arguments. Never a raw exception from torch or
numpy, never a silent wrong answer. ``HYPOTHESIS_PROFILE=long`` runs 500 examples per test instead of 25.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import event, given, note  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from advguard import AdvguardError, InputError, load_dataset, load_model  # noqa: E402
from advguard.validation import ParameterError, ParameterTypeError  # noqa: E402

K = 10


@pytest.fixture(scope="module")
def real():
    clf = load_model("cifar10-cnn")
    ds = load_dataset("cifar10", "test", limit=16)
    return clf, ds.x, ds.y


# ---------------------------------------------------------------------------------------------- generators
# Every generator returns (value, problem): problem is None for a good value, else the words one of which the
# error message must contain.


@st.composite
def images(draw, x_real: np.ndarray):
    n = draw(st.integers(1, 5))
    x = x_real[:n].copy()
    problem = None
    kind = draw(
        st.sampled_from(
            [
                "good",
                "good",
                "good",
                "uint8",
                "int",
                "bool",
                "float64",
                "float16",
                "x255",
                "negative",
                "nan",
                "inf",
                "single",
                "nhwc",
                "channels",
                "size",
                "5d",
                "empty",
                "list",
                "noncontiguous",
                "complex",
                "big-endian",
            ]
        )
    )
    if kind == "uint8":
        x, problem = (x * 255).astype(np.uint8), ("uint8",)
    elif kind == "int":
        x, problem = (x * 255).astype(np.int64), ("dtype",)
    elif kind == "bool":
        x, problem = x > 0.5, ("dtype",)
    elif kind == "float64":
        x = x.astype(np.float64)
    elif kind == "float16":
        x = x.astype(np.float16)
    elif kind == "x255":
        x, problem = x * 255, ("0..255", "outside the bounds")
    elif kind == "negative":
        x, problem = x - draw(st.floats(0.01, 10)), ("outside the bounds",)
    elif kind in ("nan", "inf"):
        i = draw(st.integers(0, x.size - 1))
        x.flat[i] = np.nan if kind == "nan" else draw(st.sampled_from([np.inf, -np.inf]))
        problem = ("NaN or Inf",)
    elif kind == "single":
        x, problem = x[0], ("single image",)
    elif kind == "nhwc":
        x, problem = x.transpose(0, 2, 3, 1), ("channels", "NHWC")
    elif kind == "channels":
        x, problem = x[:, :1], ("channels",)
    elif kind == "size":
        x, problem = x[:, :, :16, :20], ("spatial size",)
    elif kind == "5d":
        x, problem = x[None], ("4 dimensions",)
    elif kind == "empty":
        x, problem = x[:0], ("empty batch",)
    elif kind == "list":
        x, problem = x.tolist(), ("numpy array or torch tensor",)
    elif kind == "noncontiguous":
        x = np.ascontiguousarray(x.transpose(0, 1, 3, 2)).transpose(0, 1, 3, 2)
    elif kind == "complex":
        x, problem = x.astype(np.complex64), ("dtype",)
    elif kind == "big-endian":
        x = x.astype(">f4")
    if not isinstance(x, list) and draw(st.booleans()):  # torch instead of numpy
        if kind == "big-endian":
            x = x.astype(np.float32)
        x = torch.from_numpy(np.ascontiguousarray(x))
        if problem is None and draw(st.booleans()):
            x = x.requires_grad_(True)
    event(f"images: {kind}")
    return x, problem


def n_of(x) -> int:
    return len(x) if hasattr(x, "__len__") and np.ndim(x if not isinstance(x, torch.Tensor) else x.detach()) == 4 else 1


@st.composite
def labels(draw, n: int, y_real: np.ndarray, name: str = "y"):
    kind = draw(
        st.sampled_from(
            [
                "good",
                "good",
                "list",
                "torch",
                "float",
                "bool",
                "short",
                "long",
                "2d",
                "high",
                "negative",
                "strings",
                "none",
                "scalar",
                "uint8",
            ]
        )
    )
    n = max(n, 1)  # an empty image batch is refused first
    y = y_real[:n].astype(np.int64)
    bad = (name,)
    problem = None
    if kind == "list":
        y = y.tolist()
    elif kind == "torch":
        y = torch.from_numpy(y)
    elif kind == "uint8":
        y = y.astype(np.uint8)
    elif kind == "float":
        y, problem = y.astype(draw(st.sampled_from([np.float32, np.float64]))), bad
    elif kind == "bool":
        y, problem = y % 2 == 0, bad
    elif kind == "short":
        y, problem = y[:-1], bad
    elif kind == "long":
        y, problem = np.concatenate([y, y[:1]]), bad
    elif kind == "2d":
        y, problem = y[:, None], bad
    elif kind == "high":
        y = y.copy()
        y[draw(st.integers(0, n - 1))] = draw(st.integers(K, 10**6))
        problem = bad
    elif kind == "negative":
        y = y.copy()
        y[draw(st.integers(0, n - 1))] = draw(st.integers(-(10**6), -1))
        problem = bad
    elif kind == "strings":
        y, problem = [str(v) for v in y], bad
    elif kind == "none":
        y, problem = None, bad
    elif kind == "scalar":
        y, problem = int(y[0]), bad
    event(f"{name}: {kind}")
    return y, problem


def batch_sizes():
    return st.sampled_from(
        [
            (None, None),
            (1, None),
            (2, None),
            (64, None),
            (0, ("batch_size",)),
            (-3, ("batch_size",)),
            (2.5, ("batch_size",)),
            ("4", ("batch_size",)),
            (True, ("batch_size",)),
            (float("nan"), ("batch_size",)),
            (np.int64(3), None),
            (4.0, None),
        ]
    )


def temperatures():
    return st.sampled_from(
        [
            (1.0, None),
            (0.5, None),
            (2, None),
            (1e-3, None),
            (0.0, ("temperature",)),
            (-1.0, ("temperature",)),
            (float("nan"), ("temperature",)),
            (float("inf"), ("temperature",)),
            ("1", ("temperature",)),
            (None, ("temperature",)),
        ]
    )


def ks():
    return st.one_of(
        st.integers(1, K).map(lambda k: (k, None)),
        st.sampled_from(
            [(0, ("k",)), (K + 1, ("k",)), (-1, ("k",)), (2.5, ("k",)), ("3", ("k",)), (True, ("k",)), (None, ("k",))]
        ),
    )


def layers(clf):
    names = clf.layer_names()
    return st.one_of(
        st.lists(st.sampled_from(names), min_size=1, max_size=3).map(lambda ls: (ls, None)),
        st.sampled_from(
            [
                (["nope"], ("unknown layer",)),
                ([names[0], "conv9"], ("unknown layer",)),
                (names[0], ("layer_names",)),
                ([3], ("layer name",)),
                (5, ("layer_names",)),
                ([""], ("unknown layer",)),
            ]
        ),
    )


# ---------------------------------------------------------------------------------------------- the oracle


def expect(call, problems: list, check) -> str:
    """Run ``call``; with problems, demand an AdvguardError naming one of them; without, check the result."""
    problems = [p for p in problems if p is not None]
    note(f"expected problems: {problems}")
    if problems:
        with pytest.raises(AdvguardError) as e:
            call()
        msg = str(e.value)
        assert any(w in msg for p in problems for w in p), (msg, problems)
        assert isinstance(e.value, (ValueError, TypeError, KeyError, RuntimeError)), type(e.value)
        event("outcome: clear error")
        return msg
    out = call()
    check(out)
    event("outcome: correct result")
    return ""


def as_np(x) -> np.ndarray:
    return (x.detach().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)).astype(np.float32)


METHODS = [
    "logits",
    "probs",
    "predict",
    "top_k",
    "accuracy",
    "gradcam",
    "activations",
    "input_gradient",
    "layer_gradient",
]


@given(data=st.data())
def test_fuzz_classifier_methods(real, data):
    clf, x_real, y_real = real
    method = data.draw(st.sampled_from(METHODS), label="method")
    event(f"method: {method}")
    x, px = data.draw(images(x_real), label="x")
    n = n_of(x)
    bs, pbs = data.draw(batch_sizes(), label="batch_size")
    problems = [px, pbs]
    # the reference: float32 logits of the same images, one batch, no fuzzed argument
    ref = (lambda: clf.logits(torch.from_numpy(as_np(x)))) if px is None else None

    if method in ("logits", "predict"):

        def check(out):
            r = ref()
            if method == "logits":
                assert out.shape == (n, K) and out.dtype == torch.float32 and torch.allclose(out, r, atol=1e-4)
            else:
                assert out.shape == (n,) and out.dtype == torch.int64 and torch.equal(out, r.argmax(1))

        expect(lambda: getattr(clf, method)(x, batch_size=bs), problems, check)
    elif method == "probs":
        t, pt = data.draw(temperatures(), label="temperature")

        def check(out):
            assert out.shape == (n, K) and bool(torch.isfinite(out).all())
            assert torch.allclose(out.sum(1), torch.ones(n), atol=1e-4) and bool((out >= 0).all())
            assert torch.allclose(out, torch.softmax(ref() / t, 1), atol=1e-4)

        expect(lambda: clf.probs(x, batch_size=bs, temperature=t), problems + [pt], check)
    elif method == "top_k":
        k, pk = data.draw(ks(), label="k")

        def check(out):
            p, lab = out
            assert p.shape == lab.shape == (n, k) and lab.dtype == torch.int64
            assert bool((p[:, :-1] >= p[:, 1:]).all()) and bool(((lab >= 0) & (lab < K)).all())
            assert torch.equal(lab[:, 0], ref().argmax(1))

        expect(lambda: clf.top_k(x, k=k, batch_size=bs), problems + [pk], check)
    elif method == "accuracy":
        y, py = data.draw(labels(n, y_real), label="y")

        def check(out):
            assert isinstance(out, float) and 0 <= out <= 1
            assert out == pytest.approx(float((ref().argmax(1) == torch.as_tensor(np.asarray(y))).float().mean()))

        expect(lambda: clf.accuracy(x, y, batch_size=bs), problems + [py], check)
    elif method in ("gradcam", "layer_gradient"):
        y, py = data.draw(labels(n, y_real), label="y")
        score = data.draw(st.sampled_from(["logit", "log_softmax", "softmax", 3]), label="score")
        t, pt = data.draw(temperatures(), label="temperature")
        ps = None if score in ("logit", "log_softmax") else ("score",)
        if method == "gradcam":

            def check(out):
                acts = clf.activations(torch.from_numpy(as_np(x[:1])), [clf.gradcam_layer])
                h, w = acts[clf.gradcam_layer].shape[-2:]
                assert out.shape == (n, h, w) and bool(torch.isfinite(out).all())
                assert float(out.min()) >= 0 and float(out.max()) <= 1 + 1e-6

            expect(lambda: clf.gradcam(x, y, score=score, temperature=t, batch_size=bs), problems + [py, ps, pt], check)
        else:
            layer = data.draw(
                st.sampled_from([(clf.gradcam_layer, None), ("nope", ("unknown layer",)), (None, ("layer name",))]),
                label="layer",
            )

            def check(out):
                a, g = out
                assert a.shape == g.shape and a.shape[0] == n and bool(torch.isfinite(g).all())

            expect(
                lambda: clf.layer_gradient(x, layer[0], y, score=score, temperature=t, batch_size=bs),
                problems + [py, ps, pt, layer[1]],
                check,
            )
    elif method == "input_gradient":
        y, py = data.draw(labels(n, y_real), label="y")
        loss = data.draw(st.sampled_from([("ce", None), ("logit", None), ("mse", ("loss",)), (None, ("loss",))]))

        def check(out):
            assert out.shape == (n, 3, 32, 32) and out.dtype == torch.float32 and bool(torch.isfinite(out).all())

        expect(lambda: clf.input_gradient(x, y, loss=loss[0], batch_size=bs), problems + [py, loss[1]], check)
    else:  # activations
        names, pl = data.draw(layers(clf), label="layer_names")
        logits = data.draw(st.booleans(), label="include_logits")

        def check(out):
            assert set(out) == set(names) | ({"logits"} if logits else set())
            for v in out.values():
                assert v.shape[0] == n and v.dtype == torch.float32 and bool(torch.isfinite(v).all())
            if logits:
                assert torch.allclose(out["logits"], ref(), atol=1e-4)

        expect(lambda: clf.activations(x, names, batch_size=bs, include_logits=logits), problems + [pl], check)
    note(f"method={method}")


# ---------------------------------------------------------------------------------------------- plain regressions


def test_temperature_zero_is_refused_not_nan(real):
    clf, x, y = real
    with pytest.raises(ParameterError, match=r"temperature=0 is outside the allowed range \(0, inf\)"):
        clf.gradcam(x[:2], y[:2], score="log_softmax", temperature=0)
    with pytest.raises(ParameterError, match="temperature"):
        clf.probs(x[:2], temperature=0.0)
    with pytest.raises(ParameterError, match="temperature"):
        clf.layer_gradient(x[:2], clf.gradcam_layer, y[:2], score="log_softmax", temperature=float("nan"))
    cam = clf.gradcam(x[:2], y[:2], score="log_softmax", temperature=2.0)
    assert bool(torch.isfinite(cam).all())


def test_batch_size_zero_is_refused_not_replaced(real):
    from advguard import Classifier

    clf, x, _ = real
    for f in (
        lambda: clf.predict(x, batch_size=0),
        lambda: clf.logits(x, batch_size=-1),
        lambda: clf.activations(x, ["fc"] if "fc" in clf.layer_names() else [clf.gradcam_layer], batch_size=0),
    ):
        with pytest.raises(ParameterError, match=r"batch_size=-?\d+ is outside the allowed range \[1, inf\)"):
            f()
    with pytest.raises(ParameterError, match="batch_size"):
        Classifier(clf.model, channels=3, size=(32, 32), batch_size=0)
    with pytest.raises(ParameterError, match="std"):
        Classifier(clf.model, channels=3, size=(32, 32), mean=(0, 0, 0), std=(1, 0, 1))
    with pytest.raises(ParameterError, match="bounds"):
        Classifier(clf.model, channels=3, size=(32, 32), bounds=(1, 0))


def test_bad_labels_k_and_layer_names_are_named(real):
    clf, x, y = real
    with pytest.raises(InputError, match="integer class labels, got dtype torch.bool"):
        clf.accuracy(x, torch.from_numpy(y) > 3)
    with pytest.raises(InputError, match="not integers"):
        clf.accuracy(x, [str(v) for v in y])
    with pytest.raises(InputError, match=r"labels outside 0..9 \(at positions \[2\]\)"):
        yy = y.copy()
        yy[2] = 10
        clf.gradcam(x, yy)
    with pytest.raises(ParameterTypeError, match="k must be an integer"):
        clf.top_k(x, k=2.5)
    with pytest.raises(ParameterError, match=r"k=11 is outside the allowed range \[1, 10\]"):
        clf.top_k(x, k=11)
    with pytest.raises(ParameterTypeError, match=r"got the string 'fc'"):
        clf.activations(x, "fc")
    with pytest.raises(ParameterTypeError, match="layer name must be a str"):
        clf.layer(3)
    with pytest.raises(ParameterError, match="loss must be"):
        clf.input_gradient(x, y, loss="mse")


def test_odd_but_valid_inputs_give_the_right_answer(real):
    clf, x, y = real
    ref = clf.logits(x)
    assert torch.allclose(clf.logits(x.astype(">f4")), ref)  # big-endian numpy
    assert torch.allclose(clf.logits(torch.from_numpy(x).requires_grad_(True)), ref)
    g = clf.input_gradient(torch.from_numpy(x).requires_grad_(True), y)
    assert torch.allclose(g, clf.input_gradient(x, y))
    assert math.isclose(clf.accuracy(x, y.astype(np.uint8)), clf.accuracy(x, y))
