"""Leave-one-out attribution detectors (ML-LOO, Segmentation Fault): attributions, segmentations, reduction."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from advguard import UnknownNameError
from advguard.attacks import make_attack
from advguard.classifier import Classifier
from advguard.detectors import Detector, LeaveOneOut
from advguard.detectors.loo import dispersion, occlusion_attributions, segment
from advguard.metrics import roc_auc


def _tiny() -> Classifier:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 5))
    return Classifier(net, channels=3, size=(6, 6), num_classes=5, mean=(0.4, 0.5, 0.6), std=(0.2, 0.25, 0.3))


@pytest.mark.parametrize("unit", ["pixel", "channel-pixel"])
@pytest.mark.parametrize("baseline", ["zero", "mean"])
def test_attributions_match_a_direct_loop(unit, baseline):
    clf = _tiny()
    x = torch.rand(1, 3, 6, 6, generator=torch.Generator().manual_seed(1))
    det = LeaveOneOut(clf, unit=unit, baseline=baseline, feature="10d", batch_size=7)  # chunks cross units
    base = det._baseline(x)
    with torch.no_grad():
        p0, phi = occlusion_attributions(
            lambda t: clf.logits(t, validate=False).softmax(1),
            x,
            segment(x[0].permute(1, 2, 0).numpy(), unit),
            base,
            unit == "channel-pixel",
            batch_size=7,
        )
        ref, p_ref = [], clf.module(x).softmax(1)[0]
        if unit == "pixel":
            for i in range(6):
                for j in range(6):
                    xo = x.clone()
                    xo[0, :, i, j] = base[0, :, i, j]
                    ref.append((clf.module(xo).softmax(1)[0] - p_ref).abs())
        else:
            for c in range(3):
                for i in range(6):
                    for j in range(6):
                        xo = x.clone()
                        xo[0, c, i, j] = base[0, c, i, j]
                        ref.append((clf.module(xo).softmax(1)[0] - p_ref).abs())
    np.testing.assert_allclose(phi, torch.stack(ref).numpy(), atol=1e-6)
    np.testing.assert_allclose(p0, p_ref.numpy(), atol=1e-6)
    # the detector's feature is the statistic of exactly these attributions (reduced per image, numpy's own)
    np.testing.assert_allclose(det.extract(x)[0], dispersion(phi.astype(np.float64), "iqr"), atol=1e-7)
    q75, q25 = np.percentile(phi, [75, 25], axis=0)
    np.testing.assert_allclose(dispersion(phi, "iqr"), q75 - q25)
    assert det.units_per_image_ == [36 if unit == "pixel" else 108]


@pytest.mark.parametrize(
    "unit, params",
    [
        ("felzenszwalb", {"scale": 10}),
        ("felzenszwalb", {"scale": 1000}),
        ("quickshift", {"sigma": 0, "max_dist": 10}),
        ("quickshift", {"sigma": 2, "max_dist": 20}),
        ("slic", {"n_segments": 32}),
        ("slic", {"n_segments": 128}),
        ("pixel", {}),
    ],
)
def test_segmentations_label_every_pixel(foolbox_images, unit, params):
    img = foolbox_images["cifar10"][0][0].astype(np.float64) / 255.0
    lab = segment(img, unit, **params)
    assert lab.shape == (32, 32) and lab.dtype.kind == "i"
    k = lab.max() + 1
    assert lab.min() == 0 and set(np.unique(lab)) == set(range(k))  # consecutive labels, none empty
    assert 1 < k <= 1024


def test_value_range_255_segments_real_cifar10_images_into_many_more_quickshift_segments():
    """value_range=255 segments the 8-bit image (what the paper's code most probably did): Quickshift's max_dist
    acts on colour distances, so it cuts real CIFAR-10 images into many more segments than on [0, 1];
    Felzenszwalb on [0, 255] with scale s is Felzenszwalb on [0, 1] with scale s / 255."""
    from advguard import load_dataset

    imgs = load_dataset("cifar10", "test", limit=6, seed=0, source="lossless").x.transpose(0, 2, 3, 1)
    for params in ({"sigma": 0, "max_dist": 10, "kernel_size": 5}, {"sigma": 2, "max_dist": 20, "kernel_size": 5}):
        k1 = np.mean([segment(im, "quickshift", **params).max() + 1 for im in imgs])
        k255 = np.mean([segment(im, "quickshift", **params, value_range=255).max() + 1 for im in imgs])
        assert k1 < 30 and k255 > 10 * k1, (params, k1, k255)
    for im in imgs:
        np.testing.assert_array_equal(
            segment(im, "felzenszwalb", scale=1000, value_range=255), segment(im, "felzenszwalb", scale=1000 / 255)
        )
        np.testing.assert_array_equal(
            segment(im, "quickshift", sigma=1, max_dist=10, value_range=1),
            segment(im, "quickshift", sigma=1, max_dist=10),
        )  # 1: the default
    # the detector takes [0, 1] images as always and records the segment counts
    clf = _tiny()
    x = torch.rand(2, 3, 6, 6, generator=torch.Generator().manual_seed(4))
    det = LeaveOneOut(clf, unit="quickshift", unit_params={"sigma": 0, "max_dist": 10, "value_range": 255})
    det.extract(x)
    assert det.units_per_image_ and max(det.units_per_image_) <= 36


@pytest.mark.parametrize(
    "unit, params, match",
    [
        ("quickshift", {"value_range": 0}, "value_range"),
        ("quickshift", {"value_range": -255}, "value_range"),
        ("felzenszwalb", {"value_range": float("nan")}, "value_range"),
        ("quickshift", {"value_range": "255"}, "value_range"),
        ("quickshift", {"value_range": True}, "value_range"),
        ("felzenszwalb", {"value_range": 1e9}, "value_range"),
        ("quickshift", {"value_rnage": 255}, "did you mean 'value_range'"),
        ("slic", {"n_segments": 64, "value_range": 255}, "SLIC rescales"),
        ("pixel", {"value_range": 255}, "do not segment"),
        ("felzenszwalb", {"scale": -1}, "scale"),
        ("quickshift", {"ratio": 2}, "ratio"),
        ("slic", {"n_segments": 0.5}, "n_segments"),
        ("slic", {"n_segment": 64}, "did you mean 'n_segments'"),
    ],
)
def test_unit_params_are_checked(unit, params, match):
    from advguard.errors import ParameterError

    with pytest.raises(ParameterError, match=match):
        LeaveOneOut(_tiny(), unit=unit, unit_params=params)
    with pytest.raises(ParameterError, match=match):
        segment(np.zeros((6, 6, 3)), unit, **params)


def test_value_range_in_a_bench_config_is_checked(tmp_path):
    from advguard.experiments import ConfigError, load_config

    base = (
        'name = "c"\nexperiment = "segfault"\ndataset = "cifar10"\nmodel = "cifar10-cnn"\n'
        '[[attack]]\nname = "fgsm"\n[[segfault.unit]]\nunit = "quickshift"\n'
        'paper = "Quickshift sigma=0 max_dist=10"\n'
    )
    p = tmp_path / "c.toml"
    p.write_text(base + "params = { sigma = 0, max_dist = 10, value_range = 255 }\n", encoding="utf-8")
    assert load_config(p).section("segfault")["unit"][0]["params"]["value_range"] == 255
    for bad, match in (("value_range = 0", "value_range"), ("value_rang = 255", "value_range")):
        p.write_text(base + f"params = {{ sigma = 0, {bad} }}\n", encoding="utf-8")
        with pytest.raises(ConfigError, match=match):
            load_config(p)
    p.write_text(base.replace("quickshift", "slic") + "params = { value_range = 255 }\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="SLIC rescales"):
        load_config(p)


def test_statistics_and_names():
    rng = np.random.default_rng(0)
    phi = rng.random((50, 4))
    np.testing.assert_allclose(dispersion(phi, "std"), phi.std(0))
    np.testing.assert_allclose(dispersion(phi, "mad"), np.median(np.abs(phi - np.median(phi, 0)), 0))
    with pytest.raises(UnknownNameError, match="superpixel"):
        LeaveOneOut(_tiny(), unit="superpixel")
    with pytest.raises(UnknownNameError, match="lab"):
        segment(np.zeros((4, 4, 3)), "lab")


@pytest.fixture(scope="module")
def fgsm_set(correct_images):
    clf, x, y = correct_images(120, 11)
    r = make_attack("fgsm", clf, eps=0.1, progress=False)(x, y)
    return clf, x[r.success], r.x_adv[r.success]


def test_segment_loo_separates_fgsm_from_clean(fgsm_set):
    clf, x, xa = fgsm_set
    n = len(x) // 2  # fit on one half of the images, test on the other
    det = LeaveOneOut(clf, unit="slic", unit_params={"n_segments": 64}, feature="10d", decision_model="rf")
    det.fit(x[:n], xa[:n])
    assert roc_auc(det.score(x[n:]), det.score(xa[n:])) > 0.8
    assert 20 <= np.mean(det.units_per_image_) <= 90  # SLIC-64 gives about 64 segments


def test_save_load_roundtrip(fgsm_set, tmp_path):
    clf, x, xa = fgsm_set
    det = LeaveOneOut(
        clf, unit="felzenszwalb", unit_params={"scale": 100}, baseline="blur", decision_model="logreg"
    ).fit(x[:30], xa[:30])
    back = Detector.load(det.save(tmp_path / "loo.zip"), clf)
    np.testing.assert_allclose(back.score(x[30:40]), det.score(x[30:40]))
    assert back.params["unit_params"] == {"scale": 100} and back.params["baseline"] == "blur"


def test_save_load_roundtrip_keeps_the_value_range(fgsm_set, tmp_path):
    import json
    import zipfile

    clf, x, xa = fgsm_set
    params = {"scale": 1000, "value_range": 255}  # (Felzenszwalb: ~15 segments, so this test is quick)
    det = LeaveOneOut(clf, unit="felzenszwalb", unit_params=params, feature="10d", decision_model="logreg").fit(
        x[:20], xa[:20]
    )
    path = det.save(tmp_path / "qs255.zip")
    with zipfile.ZipFile(path) as z:
        assert json.loads(z.read("detector.json"))["params"]["unit_params"] == params
    back = Detector.load(path, clf)
    assert back.params["unit_params"] == params
    np.testing.assert_allclose(back.score(x[20:26]), det.score(x[20:26]))
    assert back.units_per_image_[-6:] == det.units_per_image_[-6:]


def test_multilayer_feature_selects_hidden_units_once_and_saves_them(tmp_path):
    clf = _tiny()  # leaf modules: conv (144 outputs), relu (144), linear (output)
    x = torch.rand(6, 3, 6, 6, generator=torch.Generator().manual_seed(2))
    det = LeaveOneOut(
        clf, unit="pixel", feature="multilayer", layers=20, units_per_layer=50, seed=3, decision_model="logreg"
    )
    f = det.extract(x)
    assert [n for n, _ in det.hidden_] == ["0", "1"]  # conv and relu, not the output layer
    assert all(len(idx) == 50 and len(set(idx.tolist())) == 50 for _, idx in det.hidden_)
    assert f.shape == (6, 5 + 50 + 50)
    assert not any(m._forward_hooks for m in clf.model.modules())  # hooks removed after use
    # hidden attributions equal a direct computation for the selected conv units
    idx = det.hidden_[0][1]
    with torch.no_grad():
        v0 = clf.model[0](clf.module.normalize(x[:1])).flatten(1)[0, idx]
        phi = []
        for i in range(6):
            for j in range(6):
                xo = x[:1].clone()
                xo[0, :, i, j] = 0
                phi.append((clf.model[0](clf.module.normalize(xo)).flatten(1)[0, idx] - v0).abs())
    np.testing.assert_allclose(f[0, 5:55], dispersion(torch.stack(phi).numpy().astype(np.float64)), atol=1e-5)
    det.fit_features(f[:3], f[3:])
    back = Detector.load(det.save(tmp_path / "ml.zip"), clf)
    assert [(n, i.tolist()) for n, i in back.hidden_] == [(n, i.tolist()) for n, i in det.hidden_]
    np.testing.assert_allclose(back.score(x), det.score(x), atol=1e-6)


def test_one_and_ten_d_features_are_columns_of_the_multilayer_one(correct_images):
    """The bench computes the multi-layer feature once and slices 1-D / 10-D from it: the same numbers."""
    from advguard.experiments.segfault.run import flavour

    clf, x, _ = correct_images(3, 0)
    kw = {"unit": "slic", "unit_params": {"n_segments": 32}}
    ml = LeaveOneOut(clf, feature="multilayer", **kw).extract(x)
    pred = clf.predict(x).numpy()
    feats = {"features": ml, "pred": pred}
    for fl in ("1d", "10d"):
        np.testing.assert_allclose(flavour(feats, fl, 10), LeaveOneOut(clf, feature=fl, **kw).extract(x), atol=1e-7)
