"""Issue #24 (part A), inputs: numpy arrays and tensors alike everywhere, with one documented output type per call
(the convention in advguard/__init__.py); image files, folders and PIL images read at the model's input size with
resizing explicit and reported; bad image files refused naming the file; ImageDataset as a torch Dataset.

Real data: CIFAR-10 test images and the zoo's cifar10-cnn; Foolbox's ImageNet photos (224x224) as images of the
wrong size."""

from __future__ import annotations

import functools
import io
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import advguard
from advguard import InputError, ParameterError, load_images
from advguard.attacks import AdversarialPatch, AttackResult, Sticker, make_attack, perturbation_norms, shifted_targets
from advguard.defenses import LabelCorrection, total_variation, vote
from advguard.detectors import make_detector
from advguard.images import ImageInfo, ImageResizedWarning, resize_images
from advguard.transforms import ImageOp, apply_ops, gaussian_blur, paper_ops, rotate, scale_on_canvas

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import given  # noqa: E402
from hypothesis import strategies as st  # noqa: E402


@pytest.fixture(scope="module")
def cifar():
    """(classifier, x float32 (16, 3, 32, 32) numpy, y int64 numpy): real CIFAR-10 test images."""
    clf = advguard.load_model("cifar10-cnn")
    ds = advguard.load_dataset("cifar10", "test", limit=16, seed=3)
    return clf, ds.x, ds.y


@pytest.fixture(scope="module")
def fitted_detectors(cifar):
    """Detectors fitted once on numpy images (the fit itself is compared across input kinds below)."""
    clf, x, _ = cifar
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # 12 images cannot resolve FPR 0.05
        conf = make_detector("confidence", clf, statistic="entropy").fit(x[:12])
        squeeze = make_detector("feature-squeezing", clf, squeezers=("bits:4", "median:2")).fit(x[:12])
    return {"confidence": conf, "feature-squeezing": squeeze}


def _np(v):
    """Any output as numpy, recursively (to compare values across input kinds)."""
    if isinstance(v, torch.Tensor):
        return v.detach().cpu().numpy()
    if isinstance(v, AttackResult):
        return _np(v.numpy())
    if isinstance(v, dict):
        return {k: _np(w) for k, w in v.items()}
    if isinstance(v, (tuple, list)):
        return type(v)(_np(w) for w in v)
    return v


def _kind(v):
    """The type structure of an output (what must not depend on the input kind)."""
    if isinstance(v, dict):
        return {k: _kind(w) for k, w in v.items()}
    if isinstance(v, (tuple, list)):
        return (type(v).__name__, [_kind(w) for w in v])
    if isinstance(v, torch.Tensor):
        return ("Tensor", str(v.dtype), str(v.device))
    if isinstance(v, np.ndarray):
        return ("ndarray", str(v.dtype))
    return type(v).__name__


def _assert_same(a, b, path="out"):
    if isinstance(a, dict):
        assert a.keys() == b.keys(), path
        for k in a:
            _assert_same(a[k], b[k], f"{path}[{k!r}]")
    elif isinstance(a, (tuple, list)):
        assert len(a) == len(b), path
        for i, (u, v) in enumerate(zip(a, b, strict=True)):
            _assert_same(u, v, f"{path}[{i}]")
    elif isinstance(a, np.ndarray):
        assert a.shape == b.shape, path
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6, err_msg=path)
    elif isinstance(a, float):
        assert a == pytest.approx(b, rel=1e-6, abs=1e-9), path
    else:
        assert a == b, path


STICKER = Sticker(
    delta=torch.linspace(-0.5, 0.5, 3 * 32 * 32).view(3, 32, 32),
    mask=(torch.arange(32 * 32).view(32, 32) % 7 == 0).float(),
    target=3,
)


def _patch(clf, x: np.ndarray) -> AdversarialPatch:
    """A patch trained (two Adam steps, seeded: the same patch every call) on the first four images."""
    return AdversarialPatch(clf, target=3, size=0.2, steps=2, progress=False).fit(x[:4])


#: name -> f(clf, x, y, detectors, as_input) where as_input converts a numpy array to the input kind under test.
#: Together: every public entry point that takes images or scores (the Classifier's calls, attacks and their
#: results, detectors' score / predict / features / fit, transforms, defences, metrics).
CASES = {
    "Classifier.__call__": lambda c, x, y, d, a: c(a(x)),
    "Classifier.forward": lambda c, x, y, d, a: c.forward(a(x)),
    "Classifier.logits": lambda c, x, y, d, a: c.logits(a(x)),
    "Classifier.probs": lambda c, x, y, d, a: c.probs(a(x), temperature=2.0),
    "Classifier.predict": lambda c, x, y, d, a: c.predict(a(x)),
    "Classifier.top_k": lambda c, x, y, d, a: c.top_k(a(x), k=3),
    "Classifier.accuracy": lambda c, x, y, d, a: c.accuracy(a(x), a(y)),
    "Classifier.activations": lambda c, x, y, d, a: c.activations(a(x), [c.gradcam_layer], include_logits=True),
    "Classifier.input_gradient": lambda c, x, y, d, a: c.input_gradient(a(x), a(y)),
    "Classifier.layer_gradient": lambda c, x, y, d, a: c.layer_gradient(a(x), c.gradcam_layer, a(y)),
    "Classifier.gradcam": lambda c, x, y, d, a: c.gradcam(a(x), a(y)),
    "ImageOp.__call__": lambda c, x, y, d, a: ImageOp("jpeg", 75)(a(x)),
    "ImageOp.approx": lambda c, x, y, d, a: ImageOp("rotate", 5).approx(a(x)),
    "ImageOp.bpda": lambda c, x, y, d, a: ImageOp("blur", 2).bpda(a(x)),
    "apply_ops": lambda c, x, y, d, a: apply_ops(a(x), paper_ops("scale")[:2]),
    "gaussian_blur": lambda c, x, y, d, a: gaussian_blur(a(x), 1.5),
    "rotate": lambda c, x, y, d, a: rotate(a(x), 7),
    "scale_on_canvas": lambda c, x, y, d, a: scale_on_canvas(a(x), 0.8),
    "resize_images": lambda c, x, y, d, a: resize_images(a(x), (20, 24), resize="center-crop"),
    "Sticker.apply": lambda c, x, y, d, a: STICKER.apply(a(x)),
    "AdversarialPatch.apply": lambda c, x, y, d, a: _patch(c, x).apply(a(x), position="random"),
    "attack fgsm": lambda c, x, y, d, a: make_attack("fgsm", c, eps=4 / 255, progress=False)(a(x), a(y)),
    "attack pgd targeted": lambda c, x, y, d, a: make_attack("pgd", c, eps=4 / 255, steps=2, progress=False)(
        a(x), a(y), targets=a(shifted_targets(y, 10).numpy())
    ),
    "attack adaptive-squeezing": lambda c, x, y, d, a: make_attack(
        "adaptive-squeezing", c, detector=d["feature-squeezing"], eps=4 / 255, steps=2, progress=False
    )(a(x), a(y)),
    "perturbation_norms": lambda c, x, y, d, a: perturbation_norms(a(x), a(np.clip(x + 0.01, 0, 1))),
    "shifted_targets": lambda c, x, y, d, a: shifted_targets(a(y), 10, shift=3),
    "Detector.score": lambda c, x, y, d, a: d["confidence"].score(a(x)),
    "Detector.score report": lambda c, x, y, d, a: d["feature-squeezing"].score(a(x), return_report=True),
    "Detector.predict": lambda c, x, y, d, a: d["feature-squeezing"].predict(a(x)),
    "Detector.features": lambda c, x, y, d, a: d["feature-squeezing"].features(a(x)),
    "Detector.extract": lambda c, x, y, d, a: d["confidence"].extract(a(x)),
    "Detector.fit": lambda c, x, y, d, a: make_detector("confidence", c, fpr=0.25).fit(a(x)).threshold_,
    "Detector.calibrate": lambda c, x, y, d, a: make_detector("confidence", c).calibrate(a(x), fpr=0.25).threshold_,
    "LabelCorrection.top_k": lambda c, x, y, d, a: LabelCorrection(c, ops="jpeg").top_k(a(x[:4])),
    "LabelCorrection.evaluate": lambda c, x, y, d, a: LabelCorrection(c, ops="scale").evaluate(a(x[:4]), a(y[:4])),
    "vote": lambda c, x, y, d, a: vote(a(np.stack([y, (y + 1) % 10, y], 1)[:, :, None]), 10, 2),
    "total_variation": lambda c, x, y, d, a: total_variation(a(x)),
    "metrics": lambda c, x, y, d, a: _metrics(a(x[:, 0, 0, :8].ravel()), a(x[:, 1, 3, :8].ravel() + 0.1)),
}


def _metrics(s_clean, s_adv):
    from advguard import metrics

    return {
        "roc_auc": metrics.roc_auc(s_clean, s_adv),
        "roc_auc_ci": metrics.roc_auc_ci(s_clean, s_adv, n_boot=50),
        "tpr_at_fpr": metrics.tpr_at_fpr(s_clean, s_adv, 0.1),
        "threshold_at_fpr": metrics.threshold_at_fpr(s_clean, 0.1),
        "rates_at_threshold": metrics.rates_at_threshold(s_clean, s_adv, 0.5),
        "equal_error_rate": metrics.equal_error_rate(s_clean, s_adv),
        "accuracy": metrics.accuracy(s_clean > 0.5, s_adv > 0.5),
        "detection_report": metrics.detection_report(s_clean, s_adv, threshold=0.5, n_boot=50),
    }


#: outputs whose type follows the input by design: a numpy batch in, a numpy batch out
FOLLOWS_INPUT = {"resize_images"}


@pytest.mark.parametrize("name", list(CASES))
def test_numpy_and_tensor_inputs_give_the_same_values_and_types(name, cifar, fitted_detectors):
    clf, x, y = cifar
    f = CASES[name]
    out_np = f(clf, x, y, fitted_detectors, lambda a: a)
    out_t = f(clf, x, y, fitted_detectors, lambda a: torch.from_numpy(np.ascontiguousarray(a)))
    if name in FOLLOWS_INPUT:
        assert isinstance(out_np, np.ndarray) and isinstance(out_t, torch.Tensor)
    else:
        assert _kind(out_np) == _kind(out_t), f"{name}: the output type depends on the input kind"
    _assert_same(_np(out_np), _np(out_t))


def test_return_types_follow_the_documented_convention(cifar, fitted_detectors):
    """advguard/__init__.py's table: classifier inference and attacks -> CPU tensors, forward -> the classifier's
    device, detectors -> numpy, transforms -> a tensor on the input's device."""
    clf, x, y = cifar
    d = fitted_detectors["feature-squeezing"]
    assert clf(x).device == clf.device
    for out in (clf.logits(x), clf.probs(x), clf.predict(x), clf.gradcam(x, y), clf.input_gradient(x, y)):
        assert isinstance(out, torch.Tensor) and out.device.type == "cpu"
    assert clf.predict(x).dtype == torch.int64 and isinstance(clf.accuracy(x, y), float)
    r = make_attack("fgsm", clf, eps=2 / 255, progress=False)(x, y)
    assert all(isinstance(v, torch.Tensor) and v.device.type == "cpu" for v in (r.x_adv, r.success, r.pred_adv))
    assert isinstance(r.numpy()["x_adv"], np.ndarray) and r.numpy()["success"].dtype == bool
    assert d.score(x).dtype == np.float64 and d.predict(x).dtype == bool and d.features(x).ndim == 2
    assert isinstance(ImageOp("jpeg", 75)(x), torch.Tensor) and isinstance(STICKER.apply(x), torch.Tensor)
    assert LabelCorrection(clf, ops="jpeg").predict(x[:2]).dtype == np.int64
    ds = advguard.load_dataset("cifar10", "test", limit=4)
    assert isinstance(ds.x, np.ndarray) and isinstance(load_images(_pil(x[:2])), np.ndarray)


def test_sticker_and_patch_apply_return_tensors_for_either_input_kind(cifar):
    """Sticker.apply and AdversarialPatch.apply follow the rule of every call that makes images: a float32 tensor on
    the input's device (the CPU for numpy), whatever the input kind; the images change only under the mask."""
    clf, x, _ = cifar
    patch = _patch(clf, x)
    for inp in (x, torch.from_numpy(x)):
        out = STICKER.apply(inp)
        assert isinstance(out, torch.Tensor) and out.dtype == torch.float32 and out.device.type == "cpu"
        under = STICKER.mask.bool().expand_as(out[0])
        np.testing.assert_array_equal(out[:, ~under].numpy(), x[:, ~under.numpy()])
        assert not torch.equal(out[:, under], torch.from_numpy(x)[:, under])
        xp, masks = patch.apply(inp)
        assert isinstance(xp, torch.Tensor) and xp.dtype == torch.float32 and xp.device.type == "cpu"
        assert isinstance(masks, torch.Tensor) and masks.dtype == torch.bool and masks.shape == (len(x), 32, 32)
        m = masks[:, None].expand_as(xp).numpy()
        np.testing.assert_array_equal(xp.numpy()[~m], x[~m])  # bottom-right square only
        assert masks[:, -1, -1].all() and not masks[:, 0, 0].any()


def test_readme_failures_of_the_issue_now_work(cifar):
    """The three calls issue #24 quotes: clf(ds.x), ImageOp("jpeg", 75)(ds.x), a sticker applied to numpy images."""
    clf, x, _ = cifar
    assert torch.equal(clf(x).argmax(1), clf.predict(x))
    assert ImageOp("jpeg", 75)(x).shape == x.shape
    assert STICKER.apply(x).shape == x.shape


# ------------------------------------------------------------------------------------------------ files and PIL
def _pil(x: np.ndarray) -> list[Image.Image]:
    return [Image.fromarray((a.transpose(1, 2, 0) * 255).round().astype(np.uint8)) for a in x]


@pytest.fixture(scope="module")
def cifar_files(cifar, tmp_path_factory):
    """The CIFAR-10 images as PNG files in a folder (lossless: reading them back gives the same pixels)."""
    _, x, _ = cifar
    folder = tmp_path_factory.mktemp("cifar_png")
    paths = []
    for i, im in enumerate(_pil(x)):
        p = folder / f"img_{i:02d}.png"
        im.save(p)
        paths.append(p)
    (folder / "notes.txt").write_text("not an image: skipped")
    return folder, paths


def _quantised(x: np.ndarray) -> np.ndarray:
    return (x * 255).round().astype(np.float32) / 255


def test_load_images_reads_paths_folders_and_pil_images_the_same(cifar, cifar_files):
    _, x, _ = cifar
    folder, paths = cifar_files
    q = _quantised(x)
    for src in (folder, str(folder), paths, [str(p) for p in paths], _pil(x), [paths[0], *_pil(x[1:])]):
        got = load_images(src, size=(32, 32))
        assert got.dtype == np.float32 and got.shape == x.shape
        np.testing.assert_array_equal(got, q)
    one = load_images(paths[3])
    assert one.shape == (1, 3, 32, 32)
    grey = load_images(paths[:2], channels=1)
    assert grey.shape == (2, 1, 32, 32)


def test_classifier_and_detectors_take_files_and_pil_images(cifar, cifar_files, fitted_detectors):
    clf, x, _ = cifar
    folder, paths = cifar_files
    q = _quantised(x)
    assert torch.equal(clf.predict(folder), clf.predict(q))
    assert torch.equal(clf.predict([str(p) for p in paths]), clf.predict(q))
    assert torch.allclose(clf.logits(_pil(x)), clf.logits(q))
    assert torch.allclose(clf.probs(paths[0]), clf.probs(q[:1]))
    assert torch.allclose(clf(paths[:3]), clf(q[:3]))
    det = fitted_detectors["feature-squeezing"]
    np.testing.assert_allclose(det.score(folder), det.score(q))
    np.testing.assert_array_equal(det.predict(_pil(x)), det.predict(q))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        a = make_detector("confidence", clf).fit(paths)
        b = make_detector("confidence", clf).fit(q)
    assert a.threshold_ == b.threshold_


@pytest.fixture(scope="module")
def photos(foolbox_dir):
    """Foolbox's real ImageNet photos (JPEG, larger than 32x32): images of the wrong size for a CIFAR-10 model."""
    found = sorted(foolbox_dir.glob("imagenet_*.jpg"))[:3]
    assert len(found) == 3
    return found


def test_wrong_size_is_refused_unless_a_resize_policy_is_given(cifar, photos):
    clf, _, _ = cifar
    with pytest.raises(InputError, match=r"imagenet_.*\.jpg is \d+x\d+ \(HxW\); the model expects 32x32.*resize="):
        clf.predict(photos)
    with pytest.raises(InputError, match="different sizes"):
        load_images([photos[0], Image.new("RGB", (10, 12))])
    with pytest.warns(ImageResizedWarning, match=r"3 of 3 images resized to 32x32 \(center-crop\): .*imagenet_"):
        x, info = load_images(photos, size=(32, 32), resize="center-crop", return_info=True)
    assert x.shape == (3, 3, 32, 32) and 0 <= x.min() and x.max() <= 1
    w, h = Image.open(photos[0]).size
    assert info[0] == ImageInfo(str(photos[0]), (h, w), True) and (h, w) != (32, 32)
    resizing = advguard.load_model("cifar10-cnn", resize="resize")
    with pytest.warns(ImageResizedWarning, match=r"\(resize\)"):
        pred = resizing.predict(photos)
    assert pred.shape == (3,)
    # an image of the right size is not resized and not reported
    with warnings.catch_warnings():
        warnings.simplefilter("error", ImageResizedWarning)
        _, info = load_images(Image.new("RGB", (32, 32)), size=(32, 32), resize="resize", return_info=True)
    assert info == [ImageInfo("<PIL image 0>", (32, 32), False)]


def test_center_crop_keeps_the_aspect_ratio_and_resize_stretches():
    """A 20x40 image (left half black, right half white): center-crop to 10x10 keeps the middle (half black, half
    white), resize squeezes the whole image (also half and half, but from the full width)."""
    a = np.zeros((20, 40, 3), np.uint8)
    a[:, 20:] = 255
    a[:, 1:6] = 128  # a grey stripe inside the left quarter: cropped away by center-crop, kept by resize
    img = Image.fromarray(a)
    with pytest.warns(ImageResizedWarning):
        crop = load_images(img, size=(10, 10), resize="center-crop")
    with pytest.warns(ImageResizedWarning):
        squeeze = load_images(img, size=(10, 10), resize="resize")
    assert crop[0, 0, :, 0].max() == 0  # the crop starts at x = 10 of the original 40 (scaled to 10x20): black
    assert crop[0, 0, :, -1].min() == 1  # and ends in the white half
    assert squeeze[0, 0, :, :2].max() > 0.1  # the stripe survives the squeeze
    with pytest.raises(ParameterError, match="resize must be one of"):
        load_images(img, size=(10, 10), resize="stretch")
    with pytest.raises(ParameterError, match="needs size"):
        load_images(img, resize="resize")


def test_bad_files_are_refused_naming_the_file(tmp_path, cifar_files):
    _, paths = cifar_files
    data = paths[0].read_bytes()
    cases = {
        "missing.png": None,
        "empty.png": b"",
        "truncated.png": data[: len(data) // 2],
        "text.png": b"print('not an image')\n",
    }
    for name, content in cases.items():
        p = tmp_path / name
        if content is not None:
            p.write_bytes(content)
        with pytest.raises(InputError, match=name.replace(".", r"\.")):
            load_images([paths[1], p])
    empty = tmp_path / "no_images"
    empty.mkdir()
    with pytest.raises(InputError, match="holds no image files"):
        load_images(empty)
    with pytest.raises(InputError, match="empty list"):
        load_images([])
    with pytest.raises(InputError, match="not a path or a PIL image"):
        load_images([paths[0], 3])  # type: ignore[list-item]


def test_decompression_bombs_are_refused_naming_the_file(tmp_path, monkeypatch):
    """Pillow's own limit (Image.MAX_IMAGE_PIXELS, DecompressionBombError/-Warning) and advguard's max_pixels."""
    p = tmp_path / "bomb.png"
    Image.new("RGB", (64, 64)).save(p)
    with pytest.raises(InputError, match=r"too large.*bomb\.png"):
        load_images(p, max_pixels=1000)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1500)  # 4096 pixels > 2 x the limit: DecompressionBombError
    with pytest.raises(InputError, match=r"too large.*bomb\.png"):
        load_images(p)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 3000)  # > the limit only: DecompressionBombWarning
    with pytest.raises(InputError, match=r"too large.*bomb\.png"):
        load_images(p)
    monkeypatch.undo()
    big = Image.new("L", (3000, 3000))
    with pytest.raises(InputError, match=r"too large.*<PIL image 0>"):
        load_images(big, max_pixels=1_000_000)


@functools.lru_cache(maxsize=2)
def _real_file_bytes(fmt: str) -> bytes:
    ds = advguard.load_dataset("cifar10", "test", limit=1)
    buf = io.BytesIO()
    _pil(ds.x)[0].save(buf, format=fmt, quality=90)
    return buf.getvalue()


@given(
    cut=st.integers(min_value=0, max_value=400),
    flips=st.lists(st.tuples(st.integers(0, 400), st.integers(1, 255)), max_size=4),
    fmt=st.sampled_from(["PNG", "JPEG"]),
)
def test_fuzz_damaged_files_read_or_refused_naming_the_file(tmp_path_factory, cut, flips, fmt):
    """A real CIFAR-10 PNG / JPEG truncated and byte-flipped: load_images returns float32 NCHW in [0, 1] of the
    requested size, or raises InputError naming the file; never another exception."""
    data = bytearray(_real_file_bytes(fmt))
    for pos, xor in flips:
        if pos < len(data):
            data[pos] ^= xor
    data = data[: len(data) - cut] if cut < len(data) else data[:1]
    p = Path(tmp_path_factory.mktemp("fuzz")) / "damaged.img"
    p.write_bytes(bytes(data))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ImageResizedWarning)
            x = load_images(p, size=(32, 32), resize="resize")
    except InputError as e:
        assert "damaged.img" in str(e)
    else:
        assert x.shape == (1, 3, 32, 32) and x.dtype == np.float32 and 0 <= x.min() and x.max() <= 1


@given(
    h=st.integers(1, 40),
    w=st.integers(1, 40),
    mode=st.sampled_from(["RGB", "L", "RGBA", "P", "1", "I;16", "F", "CMYK"]),
    policy=st.sampled_from([None, "resize", "center-crop"]),
)
def test_fuzz_pil_images_of_any_mode_and_size(h, w, mode, policy):
    """Any PIL image: read as float32 NCHW in [0, 1] at (8, 8) when a policy is given or it is 8x8 already,
    otherwise refused naming it; nothing else."""
    img = Image.new(mode, (w, h))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ImageResizedWarning)
            x = load_images(img, size=(8, 8), resize=policy)
    except InputError as e:
        assert policy is None and (h, w) != (8, 8) and "<PIL image 0>" in str(e)
    else:
        assert x.shape == (1, 3, 8, 8) and x.dtype == np.float32 and 0 <= x.min() and x.max() <= 1


@given(
    bad=st.one_of(st.integers(), st.floats(), st.none(), st.binary(max_size=4), st.dictionaries(st.text(), st.text()))
)
def test_fuzz_things_that_are_not_images(bad):
    with pytest.raises((InputError, ParameterError)):
        load_images(bad)  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------------------ torch Dataset view
def test_image_dataset_is_a_torch_dataset_for_dataloaders():
    from torch.utils.data import DataLoader, Dataset

    ds = advguard.load_dataset("cifar10", "test", limit=10, seed=1)
    assert isinstance(ds, Dataset) and len(ds) == 10
    img, label = ds[3]
    assert img.dtype == torch.float32 and img.shape == (3, 32, 32) and isinstance(label, int)
    np.testing.assert_array_equal(img.numpy(), ds.x[3].astype(np.float32) / (255 if ds.x.dtype == np.uint8 else 1))
    assert label == int(ds.y[3]) and ds[-1][1] == int(ds.y[-1])
    batches = list(DataLoader(ds, batch_size=4, shuffle=False))
    xs = torch.cat([b[0] for b in batches])
    ys = torch.cat([b[1] for b in batches])
    assert xs.shape == (10, 3, 32, 32) and xs.dtype == torch.float32 and ys.dtype == torch.int64
    x_all, y_all = ds.tensors()
    assert torch.equal(xs, x_all) and torch.equal(ys, y_all)
    clf = advguard.load_model("cifar10-cnn")
    assert torch.equal(clf.predict(xs), clf.predict(ds.x))
    with pytest.raises(IndexError, match="out of range"):
        ds[10]
    with pytest.raises(TypeError, match="take"):
        ds[1:3]  # type: ignore[index]
