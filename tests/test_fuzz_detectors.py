"""Issue #20, fuzz suite over every detector: fit / score / predict / save / load.

Properties (hypothesis; a longer run: HYPOTHESIS_PROFILE=long):

- a score is a function of the image, the fitted detector and the seed only: shuffling or splitting a batch
  never changes any image's score;
- a bad image batch (shape, dtype, range, NaN / Inf, type) gets an advguard error naming the problem,
  never a dependency's traceback;
- a mutated detector file (flipped, truncated or inserted bytes; any JSON value in detector.json) either
  loads to a detector that scores exactly as the original or is refused with a DetectorFileError.
"""

from __future__ import annotations

import io
import json
import zipfile

import numpy as np
import pytest
import torch

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import event, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from advguard import load_dataset, load_model  # noqa: E402

#: Example counts below are for the default profile (25 examples); HYPOTHESIS_PROFILE=long scales them up.
SCALE = max(1, settings.default.max_examples // 25)
from advguard.detectors import DETECTORS, Detector, make_detector  # noqa: E402
from advguard.errors import AdvguardError, DetectorFileError  # noqa: E402

#: Cheap settings per detector (the properties do not depend on detection quality).
CHEAP = {
    "feature-squeezing": dict(squeezers=["bits:5", "median:2"]),
    "confidence": {},
    "image-ops": dict(ops=["jpeg:75", "blur:2", "rotate:4", "scale:0.9"]),
    "cnn": dict(epochs=1, widths=[[8]], progress=False),
    "erase-restore": dict(n=3),
    "erase-restore-distance": dict(n=3),
    "loo": dict(unit="slic", unit_params={"n_segments": 16}),
    "taintradar": dict(k_max=3, progress=False),
    "sentinet": dict(n_test=10, progress=False),
}


def test_every_registered_detector_is_covered():
    assert set(CHEAP) == set(DETECTORS)


@pytest.fixture(scope="module")
def world():
    clf = load_model("cifar10-cnn")
    x = torch.from_numpy(load_dataset("cifar10", "test", limit=48, seed=5).x)
    noisy = (x + 0.1 * torch.randn(x.shape, generator=torch.Generator().manual_seed(0))).clamp(0, 1)
    return clf, x, noisy


@pytest.fixture(scope="module")
def fitted(world):
    """name -> a fitted detector (supervised ones on clean vs noisy images)."""
    clf, x, noisy = world
    out = {}
    for name, kw in CHEAP.items():
        det = make_detector(name, clf, **kw)
        out[name] = det.fit(x[:32], noisy[:32]) if _trained_on_adversarial(det) else det.fit(x[:32])
    return out


def _trained_on_adversarial(det) -> bool:
    return det.supervised  # the CNN detector (a network, not a decision model) is supervised too


@pytest.fixture(scope="module")
def saved(fitted, tmp_path_factory):
    folder = tmp_path_factory.mktemp("saved")
    return {name: det.save(folder / f"{name}.advg") for name, det in fitted.items()}


# ------------------------------------------------------------------------------------------- batch independence
@pytest.mark.parametrize("name", sorted(CHEAP))
@settings(max_examples=4 * SCALE)
@given(data=st.data())
def test_scores_do_not_depend_on_the_batch(fitted, world, name, data):
    _, x, noisy = world
    det = fitted[name]
    batch = torch.cat([x[32:36], noisy[36:38]])  # 6 images never seen in fitting
    ref = _ref_scores(det, name, batch)
    perm = data.draw(st.permutations(list(range(len(batch)))))
    cut = data.draw(st.integers(1, len(batch)))
    idx = perm[:cut]
    got = det.score(batch[idx])
    np.testing.assert_allclose(
        got,
        ref[idx],
        rtol=1e-5,
        atol=1e-6,
        err_msg=f"{name}: scores changed with the batch (order {perm}, first {cut})",
    )


_REF: dict[str, np.ndarray] = {}


def _ref_scores(det, name, batch) -> np.ndarray:
    if name not in _REF:
        _REF[name] = det.score(batch)
        again = det.score(batch)  # and a second call gives the same scores (no call counter)
        np.testing.assert_allclose(again, _REF[name], rtol=1e-5, atol=1e-6)
    return _REF[name]


# ------------------------------------------------------------------------------------------- bad image batches
def _bad_batches():
    def arr(shape, dtype, fill):
        return np.full(shape, fill, dtype=dtype)

    good = (2, 3, 32, 32)
    return st.one_of(
        st.builds(
            arr,
            st.sampled_from(
                [
                    (2, 32, 32, 3),
                    (3, 32, 32),
                    (2, 1, 32, 32),
                    (2, 3, 16, 16),
                    (0, 3, 32, 32),
                    (2, 3, 32),
                    (1, 1, 1, 1, 1),
                ]
            ),
            st.just(np.float32),
            st.just(0.5),
        ),
        st.builds(arr, st.just(good), st.sampled_from([np.uint8, np.int64, np.bool_, np.complex64]), st.just(1)),
        st.builds(
            arr,
            st.just(good),
            st.sampled_from([np.float32, np.float64, np.float16]),
            st.sampled_from([np.nan, np.inf, -np.inf, 255.0, -0.5, 1.5]),
        ),
        st.sampled_from([None, "image.png", [[0.5]], 3.0, {"x": 1}]),
    )


@pytest.mark.parametrize("name", sorted(CHEAP))
@settings(max_examples=12 * SCALE)
@given(bad=_bad_batches(), method=st.sampled_from(["score", "predict", "fit", "calibrate"]))
def test_bad_batches_get_a_clear_error(fitted, name, bad, method):
    det = fitted[name]
    with pytest.raises(AdvguardError) as e:
        if method == "fit" and _trained_on_adversarial(det):
            det.fit(bad, bad)
        else:
            getattr(det, method)(bad)
    assert str(e.value)


# ------------------------------------------------------------------------------------------- mutated files
def _scores_equal(a: Detector, b: Detector, x) -> bool:
    return np.allclose(a.score(x), b.score(x), rtol=1e-6, atol=1e-9) and a.threshold_ == b.threshold_


@pytest.mark.parametrize("name", sorted(CHEAP))
@settings(max_examples=10 * SCALE)
@given(data=st.data())
def test_mutated_detector_files_are_refused_or_harmless(fitted, saved, world, tmp_path_factory, name, data):
    clf, x, _ = world
    raw = bytearray(saved[name].read_bytes())
    kind = data.draw(st.sampled_from(["flip", "truncate", "insert", "zero-run"]))
    pos = data.draw(st.integers(0, len(raw) - 1))
    if kind == "flip":
        raw[pos] ^= 1 << data.draw(st.integers(0, 7))
    elif kind == "truncate":
        raw = raw[:pos]
    elif kind == "insert":
        raw[pos:pos] = data.draw(st.binary(min_size=1, max_size=16))
    else:
        raw[pos : pos + 64] = bytes(len(raw[pos : pos + 64]))
    path = tmp_path_factory.mktemp("mut") / "m.advg"
    path.write_bytes(bytes(raw))
    try:
        loaded = Detector.load(path, clf)
    except DetectorFileError as e:
        assert str(path) in str(e)
        event(f"{kind}: refused (DetectorFileError)")
        return
    assert _scores_equal(loaded, fitted[name], x[40:44]), f"{name}: a {kind} at byte {pos} loaded a changed detector"
    event(f"{kind}: loaded, scores identical (the bytes changed were not read)")


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(10**6), 10**6) | st.floats(allow_nan=True) | st.text(max_size=8),
    lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=6), c, max_size=3),
    max_leaves=6,
)


@pytest.mark.parametrize("name", sorted(CHEAP))
@settings(max_examples=10 * SCALE)
@given(data=st.data())
def test_any_json_value_in_detector_json_is_validated(fitted, saved, world, tmp_path_factory, name, data):
    clf, x, _ = world
    with zipfile.ZipFile(saved[name]) as z:
        members = {n: z.read(n) for n in z.namelist()}
    meta = json.loads(members["detector.json"])
    section = data.draw(st.sampled_from(["top", "params", "state"]))
    target = meta if section == "top" else meta[section]
    key = data.draw(st.sampled_from(sorted(target) + ["unknown_key"]))
    target[key] = data.draw(_JSON)
    members["detector.json"] = json.dumps(meta).encode()
    path = tmp_path_factory.mktemp("json") / "j.advg"
    with zipfile.ZipFile(path, "w") as z:
        for n, b in members.items():
            z.writestr(n, b)
    try:
        loaded = Detector.load(path, clf)
    except DetectorFileError as e:
        assert str(e)
        event("refused at load (DetectorFileError)")
        return
    # an edit that passes validation gives a working detector: it scores, or refuses with an advguard error
    try:
        s = loaded.score(x[40:42])
    except AdvguardError:
        event("loaded; scoring refused with an advguard error")
        return
    assert s.shape == (2,)
    event("loaded and scores (a valid edit)")


def test_a_detector_file_is_one_zip_of_known_members(saved):
    for path in saved.values():
        with zipfile.ZipFile(io.BytesIO(path.read_bytes())) as z:
            assert set(z.namelist()) <= {"detector.json", "arrays.npz", "estimator.bin"}
