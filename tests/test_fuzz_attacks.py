"""Issue #20: property-based fuzzing of ``make_attack`` and of attack calls, on the zoo CIFAR-10 CNN and real test
images.

Two probes. *Parameters*: an attack name and a parameter dict mixing good values, bad ones (zero, negative, NaN,
Inf, huge, wrong types) and unknown keywords. *Inputs*: a cheap attack called with fuzzed images, labels and
targets (numpy or torch, requiring grad, wrong dtype / shape / range, targets equal to the labels...). The generator
knows what is bad. Property: nothing bad -> a correct result (x_adv in [0, 1] with the input's shape, within eps for
budgeted attacks, success and pred_adv consistent with the classifier); something bad -> an ``AdvguardError`` whose
message names one bad parameter or argument, raised by ``make_attack`` itself for parameters. Never a raw exception
from Foolbox, eagerpy or torch.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import event, given, note  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from test_fuzz_classifier import images, labels, n_of  # noqa: E402

from advguard import AdvguardError, load_dataset, load_model  # noqa: E402
from advguard.attacks import ATTACKS, bench_attacks, make_attack, shifted_targets  # noqa: E402

K = 10
SQRT_D = float(np.sqrt(3 * 32 * 32))  # the largest L2 distance between two CIFAR images


@pytest.fixture(scope="module")
def real():
    clf = load_model("cifar10-cnn")
    ds = load_dataset("cifar10", "test", limit=16)
    return clf, ds.x, ds.y


NAN, INF = float("nan"), float("inf")
# bad values common to every numeric parameter
BAD_NUMBERS = [NAN, INF, -INF, "1", None, [1], True]
COUNT_BAD = [0, -1, -(10**9), 2.5, 10**12] + BAD_NUMBERS
RATE_BAD = [0.0, -0.1, -1e9] + BAD_NUMBERS
# per parameter: cheap good values and bad ones (None is good where the parameter is optional)
PARAMS = {
    "steps": ([1, 2, 3], COUNT_BAD),
    "binary_search_steps": ([1, 2], COUNT_BAD),
    "rel_stepsize": ([0.1, 0.5, 1.0], RATE_BAD),
    "abs_stepsize": ([None, 0.01, 0.1], [0.0, -0.1, NAN, "1"]),
    "stepsize": ([0.01, 0.1], RATE_BAD),
    "initial_stepsize": ([0.01], RATE_BAD),
    "confidence": ([0.0, 1.0], [-1.0, NAN, INF, "0"]),
    "initial_const": ([0.01, 1.0], RATE_BAD),
    "regularization": ([0.0, 0.01], [-0.1, NAN, "0"]),
    "overshoot": ([0.0, 0.02], [-1.0, NAN, "x"]),
    "candidates": ([None, 2, 5, 10], [1, 0, 11, 2.5, "3"]),
    "random_start": ([True, False], [1, "yes", None]),
    "abort_early": ([True, False], [0, "no"]),
    "loss": (["logits", "crossentropy"], ["xent", 1, None]),
    "decision_rule": (["EN", "L1"], ["L2", None]),
    "batch_size": ([1, 2, 100], COUNT_BAD[:-1]),
    "seed": ([0, 7, 2**40], [-1, 2**70, 1.5, "0", None]),
    "progress": ([False], [0, "no", None]),
    "top_k": ([1, 2, 9], [0, 10, -1, 1.5, None]),
}
EPS = {  # good and bad budgets per norm (pixel units)
    "linf": ([1 / 255, 8 / 255, 0.5, 1.0], [0.0, -0.1, 1.01, 8.0, 255.0] + BAD_NUMBERS),
    "l2": ([0.1, 1.0, 50.0, SQRT_D], [0.0, -1.0, SQRT_D + 0.1, 300.0] + BAD_NUMBERS),
    "l1": ([1.0, 20.0, 3000.0], [0.0, -1.0, 3 * 32 * 32 + 1.0, 1e9] + BAD_NUMBERS),
}
CHEAP = {
    "cw-l2": dict(steps=3, binary_search_steps=1),
    "ead": dict(steps=3, binary_search_steps=1),
    "rp2": dict(steps=1, l1_steps=1),
}
UNKNOWN = ["stpes", "epsilon", "eps_iter", "lr", "target", "norm", "max_iter", "batchsize", "Steps", "rel_step_size"]


def standard_attacks():
    return sorted(n for n in bench_attacks() if not ATTACKS[n].targets_required)


@st.composite
def attack_params(draw):
    name = draw(st.sampled_from(standard_attacks()))
    cls = ATTACKS[name]
    allowed = [p for p in cls.parameters() if p in PARAMS]
    chosen = draw(st.lists(st.sampled_from(allowed), max_size=4, unique=True))
    params, problems = dict(CHEAP.get(name, {})), []
    params["progress"] = False
    for p in chosen:
        good, bad = PARAMS[p]
        if draw(st.integers(0, 3)) == 0:  # one draw in four is a bad value
            params[p] = draw(st.sampled_from(bad))
            problems.append((p,))
            event(f"bad value of {p}")
        else:
            params[p] = draw(st.sampled_from(good))
    good_eps, bad_eps = EPS[cls.norm]
    if cls.fixed_budget or draw(st.booleans()):
        if draw(st.integers(0, 3)) == 0:
            params["eps"] = draw(st.sampled_from(bad_eps))
            problems.append(("eps",))
            event("bad eps")
        else:
            params["eps"] = draw(st.sampled_from(good_eps))
    elif cls.fixed_budget:
        problems.append(("eps",))
    if draw(st.integers(0, 5)) == 0:
        key = draw(st.sampled_from([u for u in UNKNOWN if u not in cls.parameters()]))
        params[key] = 1
        problems.append((repr(key),))
        event("unknown keyword")
    if not cls.fixed_budget and "eps" not in params and draw(st.integers(0, 7)) == 0:
        params["eps"] = None  # the optional cap, explicitly off
    return name, params, problems


def check_result(clf, name, params, x, y, targets, res):
    x = torch.from_numpy(np.asarray(x.detach() if isinstance(x, torch.Tensor) else x, dtype=np.float32))
    assert res.x_adv.shape == x.shape and res.x_adv.dtype == torch.float32
    assert float(res.x_adv.min()) >= 0 and float(res.x_adv.max()) <= 1
    assert not res.x_adv.requires_grad
    pred = clf.predict(res.x_adv)
    assert torch.equal(res.pred_adv, pred)
    yt = torch.as_tensor(np.asarray(y)).long()
    top_k = int(params.get("top_k", 1))
    if targets is not None:
        assert torch.equal(res.success, pred == torch.as_tensor(np.asarray(targets)).long())
    elif top_k == 1:
        assert torch.equal(res.success, pred != yt)
    else:
        _, lab = clf.top_k(res.x_adv, top_k)
        assert torch.equal(res.success, ~(lab == yt[:, None]).any(1))
    eps = params.get("eps")
    if eps is not None:
        norm = ATTACKS[name].norm
        d = (res.x_adv - x).flatten(1)
        dist = {"linf": d.abs().amax(1), "l2": d.norm(dim=1), "l1": d.abs().sum(1)}[norm]
        assert float(dist.max()) <= eps * (1 + 1e-4) + 1e-4, (name, eps, float(dist.max()))


@given(data=st.data())
def test_fuzz_make_attack_parameters(real, data):
    clf, x_real, y_real = real
    name, params, problems = data.draw(attack_params(), label="attack")
    note(f"make_attack({name!r}, **{params}); expected problems {problems}")
    event(f"attack: {name}")
    if problems:
        with pytest.raises(AdvguardError) as e:
            make_attack(name, clf, **params)  # refused at construction, before any image
        msg = str(e.value)
        assert any(w in msg for p in problems for w in p), (msg, problems)
        assert isinstance(e.value, (ValueError, TypeError)), type(e.value)
        event("outcome: clear error")
        return
    atk = make_attack(name, clf, **params)
    n = data.draw(st.integers(1, 3), label="n")
    x, y = x_real[:n], y_real[:n]
    targets = None
    if atk.targeted_ok and data.draw(st.booleans(), label="targeted"):
        targets = shifted_targets(y, K, data.draw(st.integers(1, K - 1), label="shift")).numpy()
    res = atk(x, y, targets=targets)
    check_result(clf, name, params, x, y, targets, res)
    event("outcome: correct result")


INPUT_ATTACKS = {
    "fgsm": dict(eps=8 / 255),
    "pgd": dict(eps=8 / 255, steps=2),
    "pgd-l2": dict(eps=0.5, steps=2),
    "deepfool": dict(steps=3),
    "bim-l1": dict(eps=10.0, steps=2),
    "cw-l2": dict(steps=3, binary_search_steps=1),
}


@st.composite
def targets_for(draw, y, n: int, targeted_ok: bool):
    kind = draw(
        st.sampled_from(
            ["none", "none", "shifted", "shifted", "equal", "some-equal", "out-of-range", "float", "short", "list"]
        )
    )
    event(f"targets: {kind}")
    if kind == "none":
        return None, None
    yt = np.asarray(y).astype(np.int64)[:n]
    t = (yt + draw(st.integers(1, K - 1))) % K
    problem = ("targets",) if targeted_ok else ("untargeted only", "targets")
    if kind == "shifted":
        return t, None if targeted_ok else problem
    if kind == "list":
        return t.tolist(), None if targeted_ok else problem
    if kind == "equal":
        return yt.copy(), ("targets equal the true labels",) if targeted_ok else problem
    if kind == "some-equal":
        t = t.copy()
        t[draw(st.integers(0, n - 1))] = yt[0] if n == 1 else t[0]
        same = bool((t == yt).any())
        return t, (("targets equal the true labels",) if same else None) if targeted_ok else problem
    if kind == "out-of-range":
        t = t.copy()
        t[0] = draw(st.sampled_from([K, -1, 10**9]))
        return t, ("targets",) if targeted_ok else problem
    if kind == "float":
        return t.astype(np.float32), ("targets",) if targeted_ok else problem
    return t[:-1], ("targets",) if targeted_ok else problem  # short


@given(data=st.data())
def test_fuzz_attack_inputs(real, data):
    clf, x_real, y_real = real
    name = data.draw(st.sampled_from(sorted(INPUT_ATTACKS)), label="attack")
    params = dict(INPUT_ATTACKS[name], progress=False)
    atk = make_attack(name, clf, **params)
    x, px = data.draw(images(x_real), label="x")
    n = max(n_of(x), 1)
    y, py = data.draw(labels(n, y_real), label="y")
    t, pt = data.draw(targets_for(y_real, n, atk.targeted_ok), label="targets")
    problems = [p for p in (px, py, pt) if p is not None]
    note(f"{name}: expected problems {problems}")
    event(f"attack: {name}")
    if problems:
        with pytest.raises(AdvguardError) as e:
            atk(x, y, targets=t)
        msg = str(e.value)
        assert any(w in msg for p in problems for w in p), (msg, problems)
        event("outcome: clear error")
        return
    res = atk(x, y, targets=t)
    check_result(clf, name, params, x, y, t, res)
    event("outcome: correct result")


# ------------------------------------------------------------------------------------- square-bypass (issue #26)
#: square-bypass's own parameters: cheap good values and bad ones (eps and norm are drawn together below)
SQUARE_PARAMS = {
    "queries": ([1, 2, 3], COUNT_BAD),
    "p_init": ([None, 0.05, 0.5, 1.0], [0.0, -0.1, 1.5, NAN, INF, "0.1", True]),
    "restarts": ([1, 2], COUNT_BAD),
    "kappa": ([0.0, 5.0, (0.0, 10.0)], [-1.0, NAN, INF, "0", [], [1.0, -1.0]]),
    "weight": ([0.0, 1.0, 10.0], [-1.0, NAN, INF, "1", None]),
    **{k: PARAMS[k] for k in ("batch_size", "seed", "progress")},
}


@pytest.fixture(scope="module")
def squeezing(real):
    """Feature Squeezing fitted on the 16 real images (the properties do not depend on detection quality)."""
    import warnings

    from advguard.detectors import make_detector

    clf, x, _ = real
    with warnings.catch_warnings():  # 16 clean images cannot resolve FPR 0.05: expected here
        warnings.simplefilter("ignore", UserWarning)
        return make_detector("feature-squeezing", clf, squeezers=("bits:4", "median:2"), progress=False).fit(x)


@st.composite
def square_params(draw):
    params, problems = {"progress": False, "queries": 2}, []
    for p in draw(st.lists(st.sampled_from(sorted(SQUARE_PARAMS)), max_size=4, unique=True)):
        good, bad = SQUARE_PARAMS[p]
        if draw(st.integers(0, 3)) == 0:
            params[p] = draw(st.sampled_from(bad))
            problems.append((p,))
            event(f"bad value of {p}")
        else:
            params[p] = draw(st.sampled_from(good))
    norm = draw(st.sampled_from(["linf", "l2"]))
    if draw(st.integers(0, 7)) == 0:
        params["norm"] = draw(st.sampled_from(["l1", "L2", 2, None]))
        problems.append(("norm",))
        event("bad norm")
    elif norm == "l2" or draw(st.booleans()):
        params["norm"] = norm
    good_eps, bad_eps = EPS[norm]
    if draw(st.integers(0, 3)) == 0:
        params["eps"] = draw(st.sampled_from(bad_eps))
        problems.append(("eps",))
        event("bad eps")
    elif draw(st.integers(0, 3)):
        params["eps"] = draw(st.sampled_from(good_eps))
    if draw(st.integers(0, 5)) == 0:
        key = draw(st.sampled_from(["steps", "top_k", "max_queries", "n_queries", "p", "epsilon"]))
        params[key] = 1
        problems.append((repr(key),))
        event("unknown keyword")
    return params, problems


@given(data=st.data())
def test_fuzz_square_bypass_parameters(real, squeezing, data):
    """Any parameter dict: a clear error naming a bad parameter at make_attack, or a correct BypassResult (within
    eps, success = misclassified or target reached *and* not flagged, re-checked here; queries counted)."""
    from advguard.attacks import BypassResult
    from advguard.attacks.adaptive import evades

    clf, x_real, y_real = real
    params, problems = data.draw(square_params(), label="params")
    note(f"make_attack('square-bypass', detector=fs, **{params}); expected problems {problems}")
    if problems:
        with pytest.raises(AdvguardError) as e:
            make_attack("square-bypass", clf, detector=squeezing, **params)
        msg = str(e.value)
        assert any(w in msg for p in problems for w in p), (msg, problems)
        event("outcome: clear error")
        return
    atk = make_attack("square-bypass", clf, detector=squeezing, **params)
    n = data.draw(st.integers(1, 3), label="n")
    x, y = x_real[:n], y_real[:n]
    targets = None
    if data.draw(st.booleans(), label="targeted"):
        targets = shifted_targets(y, K, data.draw(st.integers(1, K - 1), label="shift")).numpy()
    res = atk(x, y, targets=targets)
    assert isinstance(res, BypassResult) and torch.equal(res.success, res.evaded)
    check_result(
        clf, "square-bypass", {}, x, y, targets, BypassResult(**{**res.__dict__, "success": res.misclassified})
    )
    eps, norm = atk.eps, atk.norm
    d = (res.x_adv - torch.from_numpy(np.asarray(x))).flatten(1)
    assert float((d.abs().amax(1) if norm == "linf" else d.norm(dim=1)).max()) <= eps * (1 + 1e-5) + 1e-6
    assert torch.equal(res.success, res.misclassified & torch.from_numpy(evades(squeezing, res.x_adv)))
    budget = atk.params["restarts"] * atk.params["queries"]
    assert ((res.steps_used >= 1) & (res.steps_used <= budget)).all()
    event("outcome: correct result")
