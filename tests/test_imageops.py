"""Nguyen et al.: the 38 image operations, the image-processing detector, label correction, the CNN detector."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image, ImageFilter

from advguard import UnknownNameError, load_dataset
from advguard.attacks import make_attack
from advguard.defenses import LabelCorrection, vote
from advguard.detectors import CNNDetector, Detector, ImageOps, make_detector
from advguard.detectors.imageops import counting_feature, default_k, differences_feature, label_matrix
from advguard.errors import InputError, ParameterError
from advguard.metrics import roc_auc
from advguard.transforms import FAMILIES, ImageOp, apply_ops, differentiable_jpeg, paper_ops, parse_ops


def _pil_reference(img: Image.Image, op: ImageOp) -> np.ndarray:
    """The paper's operations written directly with Pillow, one image at a time."""
    if op.family == "jpeg":
        buf = io.BytesIO()
        img.save(buf, "JPEG", quality=int(op.value))
        return np.asarray(Image.open(io.BytesIO(buf.getvalue())))
    if op.family == "blur":
        return np.asarray(img.filter(ImageFilter.GaussianBlur(op.value)))
    if op.family == "rotate":
        return np.asarray(img.rotate(-op.value))
    w, h = img.size
    r = img.resize((round(w * op.value), round(h * op.value)), Image.BICUBIC)
    if op.value > 1:  # centre crop
        left, top = (r.size[0] - w) // 2, (r.size[1] - h) // 2
        return np.asarray(r.crop((left, top, left + w, top + h)))
    canvas = Image.new(img.mode, (w, h))
    canvas.paste(r, ((w - r.size[0]) // 2, (h - r.size[1]) // 2))
    return np.asarray(canvas)


@pytest.fixture(scope="module")
def cifar_images(foolbox_images):
    return np.stack([a for a, _ in foolbox_images["cifar10"]])  # (20, 32, 32, 3) uint8, real photos


def test_paper_op_list():
    ops = paper_ops()
    assert len(ops) == 38 and [len(FAMILIES[f]) for f in FAMILIES] == [16, 4, 8, 10]
    assert [o.name for o in parse_ops("jpeg+scale")] == [o.name for o in ops if o.family in ("jpeg", "scale")]
    assert parse_ops(["jpeg:80", "rotate:5", "jpeg:80"]) == [ImageOp("jpeg", 80), ImageOp("rotate", 5)]
    with pytest.raises(UnknownNameError, match="sharpen"):
        parse_ops("sharpen")
    with pytest.raises(ValueError, match="not a number"):
        parse_ops("jpeg:high")
    with pytest.raises(ValueError, match="needs an integer quality in 1..100, got 0"):
        ImageOp("jpeg", 0)


def test_each_op_matches_pillow_on_real_images(cifar_images):
    x = torch.from_numpy(cifar_images.transpose(0, 3, 1, 2).astype(np.float32) / 255)
    ops = paper_ops()
    out = apply_ops(x, ops, workers=2)
    assert out.shape == (38, *x.shape) and out.dtype == torch.float32
    for j, op in enumerate(ops):
        ref = np.stack([_pil_reference(Image.fromarray(a), op) for a in cifar_images])
        got = (out[j].numpy().transpose(0, 2, 3, 1) * 255).round().astype(np.uint8)
        np.testing.assert_array_equal(got, ref, err_msg=op.name)
    # the parallel path equals the serial one, and grey images work
    np.testing.assert_array_equal(apply_ops(x[:5], ops[:3], workers=1).numpy(), out[:3, :5].numpy())
    grey = apply_ops(x[:, :1], [ImageOp("rotate", 4)])
    assert grey.shape == (1, 20, 1, 32, 32)


def test_differentiable_approximations_track_the_exact_ops(cifar_images):
    x = torch.from_numpy(cifar_images.transpose(0, 3, 1, 2).astype(np.float32) / 255)
    for op in (ImageOp("blur", 2), ImageOp("rotate", 6), ImageOp("scale", 0.8), ImageOp("scale", 1.2)):
        exact, approx = op(x), op.approx(x)
        assert (exact - approx).abs().mean() < 0.5 * (exact - x).abs().mean(), op.name
    xr = x[:4].clone().requires_grad_(True)
    for op in (ImageOp("jpeg", 50), ImageOp("rotate", 3)):
        y = op.bpda(xr)
        np.testing.assert_allclose(y.detach().numpy(), op(x[:4]).numpy(), atol=1e-6)  # forward = exact op
        (g,) = torch.autograd.grad(y.sum(), xr)
        assert g.abs().sum() > 0


def test_kornia_jpeg_is_the_closer_stand_in_and_carries_a_gradient(cifar_images):
    """jpeg="kornia": kornia's differentiable JPEG tracks Pillow's encoder several times closer than the identity
    (qualities 90-25; at 100 both are within a tenth of a grey level on grey images), on colour and grey images;
    BPDA through it keeps the exact forward pass, and its gradient is not the identity's; an unknown stand-in is
    refused by name."""
    x = torch.from_numpy(cifar_images.transpose(0, 3, 1, 2).astype(np.float32) / 255)
    for q in (90, 75, 25):
        op = ImageOp("jpeg", q)
        for xs in (x, x[:, :1]):
            exact = op(xs)
            k = op.approx(xs, "kornia")
            assert k.shape == xs.shape
            assert (exact - k).abs().mean() < 0.6 * (exact - xs).abs().mean(), (q, xs.shape[1])
    np.testing.assert_allclose(differentiable_jpeg(x[:3], 50).numpy(), ImageOp("jpeg", 50).approx(x[:3], "kornia"))
    xr = x[:4].clone().requires_grad_(True)
    op = ImageOp("jpeg", 50)
    y = op.bpda(xr, "kornia")
    np.testing.assert_allclose(y.detach().numpy(), op(x[:4]).numpy(), atol=1e-6)
    w = torch.randn_like(y)
    (g,) = torch.autograd.grad((y * w).sum(), xr)
    assert g.abs().sum() > 0 and not torch.allclose(g, w)  # the identity's gradient would be w itself
    with pytest.raises(ParameterError, match="identity, kornia"):
        op.approx(x, "diffjpeg")
    with pytest.raises(InputError, match="1 or 3 channels"):
        differentiable_jpeg(torch.rand(1, 2, 8, 8), 50)


def test_features_equal_hand_computation():
    # 1 image, original top-3 = (4, 7, 1); three ops
    labels = np.array([[[4, 7, 1], [4, 7, 1], [4, 1, 7], [2, 7, 1]]])
    np.testing.assert_array_equal(counting_feature(labels), [[2, 2, 2]])
    np.testing.assert_array_equal(differences_feature(labels), [[0, 0, 0, 0, 1, 1, 1, 0, 0]])
    assert default_k(10) == 5 and default_k(43) == 5 and default_k(1000) == 5 and default_k(2) == 2


def test_vote_orders_by_frequency_then_rank():
    labels = np.array([[[3, 1], [1, 3], [1, 2]]])  # 1 appears 3x, 3 twice, 2 once
    np.testing.assert_array_equal(vote(labels, 5, 3), [[1, 3, 2]])
    tie = np.array([[[0, 4], [4, 0]]])  # equal counts and equal mean rank -> lower label first
    np.testing.assert_array_equal(vote(tie, 5, 2), [[0, 4]])


@pytest.fixture(scope="module")
def cifar_attacked(correct_images):
    clf, x, y = correct_images(160, 5)
    r = make_attack("fgsm", clf, eps=2 / 255, progress=False)(x, y)
    return clf, x, y, r.x_adv[r.success], y[r.success]


def test_label_matrix_and_detector_separate_fgsm(cifar_attacked):
    clf, x, _, xa, _ = cifar_attacked
    lab = label_matrix(clf, x[:8], paper_ops("jpeg"), 3)
    assert lab.shape == (8, 17, 3)
    np.testing.assert_array_equal(lab[:, 0, :], clf.top_k(x[:8], 3)[1].numpy())
    # large images are taken a few at a time (the variants of a chunk are held at once): same labels
    import advguard.detectors.imageops as io_mod

    per_image = 17 * int(np.prod(tuple(x.shape[1:]))) * 4
    old, io_mod.VARIANTS_BYTES = io_mod.VARIANTS_BYTES, 3 * per_image  # chunks of 3 images
    try:
        np.testing.assert_array_equal(label_matrix(clf, x[:8], paper_ops("jpeg"), 3), lab)
    finally:
        io_mod.VARIANTS_BYTES = old
    n, m = len(x) // 2, len(xa) // 2
    det = make_detector("image-ops", clf, ops="jpeg+scale", feature="count", decision_model="lda")
    det.fit(x[:n], xa[:m])
    auc = roc_auc(det.score(x[n:]), det.score(xa[m:]))
    assert auc > 0.85, auc
    assert det.k == 5 and det.feature_names(5) == [f"count_top{p}" for p in range(1, 6)]


def test_imageops_save_load_roundtrip(cifar_attacked, tmp_path):
    clf, x, _, xa, _ = cifar_attacked
    det = ImageOps(clf, ops=["jpeg:75", "scale:0.9"], feature="diff", decision_model="rf").fit(x[:40], xa[:40])
    assert det.estimator_.max_depth == 2  # the paper's forest
    path = det.save(tmp_path / "d.zip")
    back = Detector.load(path, clf)
    np.testing.assert_allclose(back.score(x[40:50]), det.score(x[40:50]))
    assert back.threshold_ == det.threshold_


def test_correction_restores_labels_jpeg_recovers(cifar_attacked):
    clf, x, y, xa, ya = cifar_attacked
    # adversarial images whose noise JPEG removes: right again after JPEG at every quality <= 80
    jpeg = apply_ops(xa, [ImageOp("jpeg", q) for q in range(80, 24, -5)])
    fixed = np.all([clf.predict(v).numpy() == ya.numpy() for v in jpeg], axis=0)
    assert fixed.sum() >= 5
    corr = LabelCorrection(clf)
    assert corr.k == 3 and corr.vote_k == 1 and len(corr.ops) == 26
    restored = corr.predict(xa[fixed]) == ya.numpy()[fixed]
    assert restored.mean() >= 0.8, restored.mean()
    ev = corr.evaluate(x[:60], y[:60])  # clean images mostly stay correct
    assert ev["top1"] >= 0.75 and ev["top3"] >= ev["top1"]


def test_cnn_detector_learns_and_roundtrips(cifar_attacked, tmp_path):
    clf = cifar_attacked[0]
    ds = load_dataset("cifar10", "test", limit=400, seed=11)
    x = torch.from_numpy(ds.x)
    xa = make_attack("fgsm", clf, eps=8 / 255, progress=False)(x, torch.from_numpy(ds.y)).x_adv
    tr, te = slice(0, 300), slice(300, 400)  # adversarial copies of the same images fall in the same part
    det = CNNDetector(clf, epochs=8, progress=False).fit(x[tr], xa[tr])
    s_clean, s_adv = det.score(x[te]), det.score(xa[te])
    assert roc_auc(s_clean, s_adv) > 0.85
    acc = np.r_[s_clean <= 0, s_adv > 0].mean()
    assert acc > 0.7, acc
    back = Detector.load(det.save(tmp_path / "cnn.zip"), clf)
    np.testing.assert_allclose(back.score(x[te][:10]), s_clean[:10], rtol=1e-5, atol=1e-5)
    assert len(back.history_) == 8


def test_cnn_detector_balanced_fit_does_not_collapse_to_the_majority_class(cifar_attacked):
    """The guard's imbalance (one clean image per five adversarial ones, pooled over families most of which the
    network cannot see): real CIFAR-10 images, a fifth of the "adversarial" class carrying a visible square (the
    patch family), the rest plain images (CW / DeepFool, invisible to this network). The paper's fit (plain loss,
    epoch selected on dev accuracy) never beats the majority share and keeps a network that calls almost every
    clean image adversarial; class_weight="balanced" learns the square and answers "clean" for clean images."""
    clf = cifar_attacked[0]
    ds = load_dataset("cifar10", "test", limit=800, seed=11)
    x = torch.from_numpy(ds.x)[torch.from_numpy(np.random.default_rng(0).permutation(800))]  # drawn sorted by class

    def square(im: torch.Tensor) -> torch.Tensor:
        out = im.clone()
        out[:, :, 4:14, 4:14] = 1.0
        return out

    x_adv = torch.cat([square(x[100:300]), x[300:600]])  # 100 clean : 500 adversarial
    test_clean, test_adv = x[600:], square(x[600:])
    plain = CNNDetector(clf, epochs=8, progress=False).fit(x[:100], x_adv)
    assert all(h["dev_accuracy"] <= 500 / 600 + 0.02 for h in plain.history_)  # never above the majority share
    assert (plain.score(test_clean) > 0).mean() >= 0.85  # collapsed: clean images called adversarial
    bal = CNNDetector(clf, epochs=8, progress=False, class_weight="balanced").fit(x[:100], x_adv)
    assert max(h["dev_balanced_accuracy"] for h in bal.history_) > 0.6
    s_clean, s_adv = bal.score(test_clean), bal.score(test_adv)
    assert roc_auc(s_clean, s_adv) > 0.9
    assert (s_clean <= 0).mean() >= 0.4 and (s_adv > 0).mean() >= 0.9


def test_cnn_detector_balanced_fit_is_the_plain_fit_on_balanced_data(cifar_attacked):
    """With as many clean as adversarial images class_weight="balanced" changes nothing (no weights, the epoch
    selected on plain accuracy): the same network, score for score."""
    clf = cifar_attacked[0]
    ds = load_dataset("cifar10", "test", limit=60, seed=5)
    x = torch.from_numpy(ds.x)
    x_adv = make_attack("fgsm", clf, eps=8 / 255, progress=False)(x, torch.from_numpy(ds.y)).x_adv
    kw = dict(epochs=2, widths=((8,), (8,)), batch_size=16, progress=False)
    a = CNNDetector(clf, **kw).fit(x[:40], x_adv[:40])
    b = CNNDetector(clf, class_weight="balanced", **kw).fit(x[:40], x_adv[:40])
    np.testing.assert_array_equal(a.score(x[40:]), b.score(x[40:]))
    assert a.history_ == b.history_ and a.threshold_ == b.threshold_
    with pytest.raises(ParameterError, match="class_weight must be None .* or 'balanced'"):
        CNNDetector(clf, class_weight="auto")


def test_image_operations_refuse_bad_parameters_and_images():
    """Issue #20: an op's parameter out of range names the allowed range; a NaN or 0..255 batch is refused
    instead of being cast to garbage uint8; numpy batches work like tensors."""
    from advguard.errors import InputError, ParameterError
    from advguard.transforms import ImageOp

    for family, value in [
        ("jpeg", 300),
        ("jpeg", 75.5),
        ("blur", 0),
        ("rotate", float("nan")),
        ("scale", 0),
        ("jpeg", "high"),
    ]:
        with pytest.raises(ParameterError, match=family):
            ImageOp(family, value)
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with pytest.raises(InputError, match="NaN"):
        ImageOp("jpeg", 75)(torch.full((1, 3, 32, 32), float("nan")))
    with pytest.raises(InputError, match="divide by 255"):
        ImageOp("jpeg", 75)(x * 255)
    assert torch.equal(ImageOp("jpeg", 75)(x.numpy()), ImageOp("jpeg", 75)(x))
