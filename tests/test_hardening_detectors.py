"""Issue #20, detectors: safe detector files, classifier matching, strict parameters, batch-independent scores.

Every test here failed before the fix it guards (a crafted skops file ran code in ``Detector.load``; a
detector loaded for another network with a warning at most; misspelled parameters were ignored; scores
depended on the batch)."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from advguard import load_dataset, load_model
from advguard.detectors import (
    CNNDetector,
    Detector,
    EraseRestore,
    EraseRestoreDistance,
    FeatureSqueezing,
    ImageOps,
    LeaveOneOut,
    TaintRadar,
    make_detector,
)
from advguard.detectors.serialization import _load_estimator
from advguard.errors import DetectorFileError, InputError, ParameterError


@pytest.fixture(scope="module")
def clf():
    return load_model("cifar10-cnn")


@pytest.fixture(scope="module")
def images():
    ds = load_dataset("cifar10", "test", limit=60, seed=11)
    return torch.from_numpy(ds.x)


@pytest.fixture(scope="module")
def saved_supervised(clf, images, tmp_path_factory):
    """A supervised detector (logistic regression on the confidence features) saved to disk."""
    noise = torch.randn(images[:30].shape, generator=torch.Generator().manual_seed(0))
    noisy = (images[:30] + 0.08 * noise).clamp(0, 1)
    det = make_detector("confidence", clf, decision_model="logreg").fit(images[:30], noisy)
    path = det.save(tmp_path_factory.mktemp("det") / "conf.advg")
    return det, path


def _rewrite(path: Path, out: Path, *, meta=None, members: dict[str, bytes] | None = None) -> Path:
    """Copy a detector file, replacing detector.json (a function of the old dict) and/or raw members."""
    with zipfile.ZipFile(path) as z:
        content = {n: z.read(n) for n in z.namelist()}
    if meta is not None:
        content["detector.json"] = json.dumps(meta(json.loads(content["detector.json"]))).encode()
    content.update(members or {})
    with zipfile.ZipFile(out, "w") as z:
        for n, b in content.items():
            z.writestr(n, b)
    return out


def _exec_skops(marker: Path) -> bytes:
    """A skops file whose schema asks for builtins.exec on a string (a ConstructorFromReduceNode)."""
    payload = f"open({str(marker)!r}, 'w').write('ran')"
    evil = {
        "__class__": "exec",
        "__module__": "builtins",
        "__loader__": "ConstructorFromReduceNode",
        "__id__": 3,
        "content": {
            "__class__": "tuple",
            "__module__": "builtins",
            "__loader__": "TupleNode",
            "__id__": 2,
            "content": [
                {
                    "__class__": "str",
                    "__module__": "builtins",
                    "__loader__": "JsonNode",
                    "content": json.dumps(payload),
                    "is_json": True,
                    "__id__": 1,
                }
            ],
        },
        "protocol": 2,
        "_skops_version": "0.16.0",
    }
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("schema.json", json.dumps(evil))
    return buf.getvalue()


# ------------------------------------------------------------------------------------------- code execution
def test_crafted_skops_file_runs_nothing(tmp_path):
    marker = tmp_path / "ran"
    with pytest.raises(DetectorFileError, match="builtins.exec"):
        _load_estimator("skops", _exec_skops(marker))
    assert not marker.exists()


def test_crafted_estimator_in_a_detector_file_runs_nothing(saved_supervised, clf, tmp_path):
    import hashlib

    _, path = saved_supervised
    marker = tmp_path / "ran"
    blob = _exec_skops(marker)

    def meta(m):  # a careful attacker also fixes the recorded digest: the allow-list must still stop it
        m["digests"]["estimator.bin"] = hashlib.sha256(blob).hexdigest()
        return m

    evil = _rewrite(path, tmp_path / "evil.advg", meta=meta, members={"estimator.bin": blob})
    with pytest.raises(DetectorFileError, match="builtins.exec"):
        Detector.load(evil, clf)
    assert not marker.exists()


def test_every_decision_model_round_trips_through_the_allow_list(clf, images, tmp_path):
    from advguard.detectors.decision import DECISION_MODELS

    noisy = (images[:30] + 0.1 * torch.randn(images[:30].shape, generator=torch.Generator().manual_seed(1))).clamp(0, 1)
    f_clean = make_detector("confidence", clf).extract(images[:30])
    f_adv = make_detector("confidence", clf).extract(noisy)
    for name in DECISION_MODELS:
        det = make_detector("confidence", clf, decision_model=name).fit_features(f_clean, f_adv)
        back = Detector.load(det.save(tmp_path / f"{name}.advg"), clf)
        np.testing.assert_allclose(back.score_features(f_adv), det.score_features(f_adv), rtol=1e-6, atol=1e-9)


# ------------------------------------------------------------------------------------------- sizes
def test_member_sizes_are_checked_before_reading(saved_supervised, clf, tmp_path):
    _, path = saved_supervised
    big = tmp_path / "big.advg"
    with zipfile.ZipFile(path) as z:
        content = {n: z.read(n) for n in z.namelist() if n != "arrays.npz"}
    with zipfile.ZipFile(big, "w", compression=zipfile.ZIP_DEFLATED) as z:
        for n, b in content.items():
            z.writestr(n, b)
        z.writestr("arrays.npz", b"\0" * (64 * 2**20))  # 64 MiB of zeros deflate to ~64 KiB
    assert big.stat().st_size < 2**20
    with pytest.raises(DetectorFileError, match="over the limit"):
        Detector.load(big, clf, max_bytes=8 * 2**20)


def test_array_header_cannot_claim_more_than_its_bytes(saved_supervised, clf, tmp_path):
    import hashlib

    _, path = saved_supervised
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "<f8", "fortran_order": False, "shape": (2**31,)})
    npz = io.BytesIO()
    with zipfile.ZipFile(npz, "w") as z:
        z.writestr("huge.npy", b"\x93NUMPY\x01\x00" + header.getvalue()[8:] + b"\0" * 64)
    data = npz.getvalue()

    def meta(m):
        m["digests"]["arrays.npz"] = hashlib.sha256(data).hexdigest()
        return m

    bad = _rewrite(path, tmp_path / "hdr.advg", meta=meta, members={"arrays.npz": data})
    with pytest.raises(DetectorFileError, match="declares"):
        Detector.load(bad, clf)


# ------------------------------------------------------------------------------------------- integrity, schema
@pytest.mark.parametrize(
    "edit, match",
    [
        (lambda m: {**m, "threshold": float("nan")}, "not a finite number"),
        (lambda m: {**m, "threshold": 1e308}, "outside the range"),
        (lambda m: {**m, "threshold": "0.5"}, "'threshold' has type str"),
        (lambda m: {k: v for k, v in m.items() if k != "params"}, "missing key 'params'"),
        (lambda m: {**m, "params": {**m["params"], "statistc": "entropy"}}, "statistc"),
        (lambda m: {**m, "surprise": 1}, "unknown key"),
        (lambda m: {**m, "estimator_format": "pickle"}, "estimator_format"),
        (lambda m: {**m, "format_version": 99}, "format 99"),
        (lambda m: {**m, "detector": "no-such-detector"}, "unknown detector"),
        (lambda m: {**m, "calibration": {"n": 3, "min": "a", "max": 1}}, "calibration range"),
    ],
)
def test_detector_json_is_validated(saved_supervised, clf, tmp_path, edit, match):
    _, path = saved_supervised
    with pytest.raises(DetectorFileError, match=match):
        Detector.load(_rewrite(path, tmp_path / "e.advg", meta=edit), clf)


def test_corrupt_members_are_detected(saved_supervised, clf, tmp_path):
    _, path = saved_supervised
    with zipfile.ZipFile(path) as z:
        est = bytearray(z.read("estimator.bin"))
    est[len(est) // 2] ^= 0x01  # a bit flip inside a well-formed member
    with pytest.raises(DetectorFileError, match="sha256"):
        Detector.load(_rewrite(path, tmp_path / "flip.advg", members={"estimator.bin": bytes(est)}), clf)
    trunc = tmp_path / "trunc.advg"
    trunc.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(DetectorFileError):
        Detector.load(trunc, clf)
    with pytest.raises(DetectorFileError, match="directory"):
        Detector.load(tmp_path, clf)


# ------------------------------------------------------------------------------------------- matching
def test_detector_is_refused_for_another_network(saved_supervised, images):
    det, path = saved_supervised
    gtsrb = load_model("gtsrb-cnn")  # 43 classes
    with pytest.raises(DetectorFileError, match="num_classes"):
        Detector.load(path, gtsrb)
    same_class = load_model("cifar10-cnn")
    with torch.no_grad():
        next(same_class.model.parameters()).add_(1e-3)  # same class and architecture, other weights
    with pytest.raises(DetectorFileError, match="weights"):
        Detector.load(path, same_class)
    with pytest.warns(UserWarning, match="weights"):
        loaded = Detector.load(path, same_class, check_classifier=False)
    assert loaded.threshold_ == det.threshold_


def test_gtsrb_variants_of_one_architecture_do_not_share_detectors(tmp_path):
    base, tv = load_model("gtsrb-cnn"), load_model("gtsrb-cnn-tv1e-4")
    assert type(base.model) is type(tv.model)
    ds = load_dataset("gtsrb", "test", limit=40, seed=0)
    det = make_detector("confidence", base).fit(ds.x)
    with pytest.raises(DetectorFileError, match="weights"):
        Detector.load(det.save(tmp_path / "g.advg"), tv)
    assert Detector.load(tmp_path / "g.advg", load_model("gtsrb-cnn")).threshold_ == det.threshold_


# ------------------------------------------------------------------------------------------- strict parameters
@pytest.mark.parametrize(
    "build, bad, hint",
    [
        (lambda c: make_detector("confidence", c, statistc="entropy"), "statistc", "statistic"),
        (lambda c: FeatureSqueezing(c, squeezer=["bits:4"]), "squeezer", "squeezers"),
        (lambda c: LeaveOneOut(c, units="pixel"), "units", "unit"),
        (lambda c: EraseRestore(c, erase_share=0.2), "erase_share", None),
        (lambda c: ImageOps(c, op="jpeg"), "op", "ops"),
        (lambda c: CNNDetector(c, epoch=3), "epoch", "epochs"),
        (lambda c: EraseRestoreDistance(c, statistics="wd"), "statistics", "statistic"),
    ],
)
def test_unknown_parameters_are_refused(clf, build, bad, hint):
    with pytest.raises(ParameterError, match=bad) as e:
        build(clf)
    if hint:
        assert f"did you mean {hint!r}" in str(e.value)


@pytest.mark.parametrize(
    "kw",
    [
        dict(fpr=-0.1),
        dict(fpr=1.5),
        dict(fpr=0),
        dict(fpr=float("nan")),
        dict(fpr="0.1"),
        dict(temperature=0),
        dict(temperature=-1),
        dict(mask_threshold=1.5),
        dict(k=0),
        dict(k_max=10),
        dict(delta_r=-1),
        dict(batch_size=0),
        dict(seed=-1),
        dict(seed=1.5),
    ],
)
def test_taintradar_rates_and_counts_are_validated(clf, kw):
    with pytest.raises(ParameterError):
        TaintRadar(clf, progress=False, **kw)


@pytest.mark.parametrize(
    "build",
    [
        lambda c: EraseRestore(c, n=0),
        lambda c: EraseRestore(c, erase=1.0),
        lambda c: EraseRestore(c, blob=0),
        lambda c: make_detector("sentinet", c, n_test=0),
        lambda c: make_detector("sentinet", c, noise_std=-1),
        lambda c: CNNDetector(c, lr=0),
        lambda c: CNNDetector(c, widths=[[0]]),
        lambda c: CNNDetector(c, epochs=0),
        lambda c: LeaveOneOut(c, layers=0),
        lambda c: LeaveOneOut(c, baseline_value=[0.5]),
        lambda c: FeatureSqueezing(c, squeezers=["bits:0"]),
        lambda c: FeatureSqueezing(c, squeezers="bits:5"),
        lambda c: FeatureSqueezing(c, squeezers=["median:x"]),
        lambda c: ImageOps(c, k=0),
        lambda c: make_detector("confidence", c, decision_model="svc", decision_params={"kernal": "rbf"}),
        lambda c: make_detector("confidence", c, decision_model="forest"),
    ],
)
def test_other_detector_parameters_are_validated(clf, build):
    from advguard.errors import AdvguardError

    with pytest.raises(AdvguardError):
        build(clf)


def test_fit_on_one_clean_image_is_refused(clf, images):
    with pytest.raises(InputError, match="at least 2"):
        TaintRadar(clf, k_max=3, progress=False).fit(images[:1])
    with pytest.raises(InputError, match="at least 2"):
        make_detector("confidence", clf).fit(images[:1])
    with pytest.warns(UserWarning, match="cannot resolve FPR"):
        make_detector("confidence", clf, fpr=0.05).fit(images[:5])
