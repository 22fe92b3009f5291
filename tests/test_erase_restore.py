"""Erase-and-Restore (THEMIS): masks, inpainting, features, real-data separation, persistence."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from advguard import UnknownNameError
from advguard.attacks import make_attack, shifted_targets
from advguard.detectors import Detector, EraseRestore, EraseRestoreDistance, make_detector
from advguard.detectors.erase_restore import make_masks, restore
from advguard.metrics import roc_auc


def test_masks_erase_the_requested_share_and_differ():
    rng = np.random.default_rng(0)
    m = make_masks(rng, 4, 11, (32, 32), 0.10)
    assert m.shape == (4, 11, 32, 32) and (m.reshape(44, -1).sum(1) == round(0.1 * 1024)).all()
    flat = m.reshape(44, -1)
    assert len({r.tobytes() for r in flat}) == 44  # every image and draw gets its own mask
    b = make_masks(rng, 2, 3, (32, 32), 0.10, kind="blobs", blob=3)
    erased = b.reshape(6, -1).sum(1)
    assert (erased >= 102).all() and (erased < 102 + 9).all()  # blobs until 10 % (102 px), one blob of overshoot
    with pytest.raises(UnknownNameError, match="stripes"):
        make_masks(rng, 1, 1, (8, 8), 0.1, kind="stripes")


@pytest.mark.parametrize("method", ["telea", "ns", "median"])
def test_restoration_changes_only_masked_pixels(foolbox_images, method):
    imgs = np.stack([a for a, _ in foolbox_images["cifar10"][:6]])  # real photos, uint8 HWC
    masks = make_masks(np.random.default_rng(1), 6, 3, (32, 32), 0.10)
    out = restore(imgs, masks, method, workers=2)
    assert out.shape == (6, 3, 32, 32, 3) and out.dtype == np.uint8
    same = out == imgs[:, None]
    assert same[~masks].all()  # unmasked pixels untouched
    assert not same[masks].all()  # masked pixels restored, not left as they were
    serial = restore(imgs, masks, method, workers=1)
    np.testing.assert_array_equal(out, serial)


@pytest.fixture(scope="module")
def cw_set(correct_images):
    clf, x, y = correct_images(140, 7)
    r = make_attack("cw-l2", clf, steps=40, binary_search_steps=3, progress=False)(x, y, shifted_targets(y, 10, 1))
    ok = r.success
    perm = torch.randperm(int(ok.sum()), generator=torch.Generator().manual_seed(0))
    return clf, x[ok][perm], r.x_adv[ok][perm]  # adversarial i comes from clean i; shuffled across classes


def test_features_shape_and_per_image_masks(cw_set):
    """Masks are drawn per image (seeded by its bytes): they differ across images and draws, but an image gets
    the same masks on every call and wherever it sits in a batch (issue #20: scores must not depend on the
    batch; the old per-call masks gave 0.725 in a batch vs 0.547 alone)."""
    clf, x, _ = cw_set
    det = EraseRestore(clf, n=5)
    f1, f2 = det.extract(x[:4]), det.extract(x[:4])
    assert f1.shape == (4, 6 * 10)
    np.testing.assert_allclose(f1, f2, atol=1e-6)
    np.testing.assert_allclose(det.extract(x[[3, 1]]), f1[[3, 1]], atol=1e-5)  # position and batch do not matter
    m = det.masks_for(x[:4])
    assert m.shape == (4, 5, 32, 32) and not (m[0] == m[1]).all() and not (m[0, 0] == m[0, 1]).all()
    fixed = EraseRestore(clf, n=5, fixed_masks=True)
    mf = fixed.masks_for(x[:4])
    assert (mf == mf[:1]).all()  # the same n masks for every image
    np.testing.assert_allclose(fixed.extract(x[:4]), fixed.extract(x[:4]), atol=1e-6)
    assert EraseRestoreDistance(clf, n=5).extract(x[:4]).shape == (4, 2)


def test_separates_cw_l2_from_clean(cw_set):
    clf, x, xa = cw_set
    n = len(x) // 2  # fit on the first half of the images, test on the others (no image in both)
    kl = make_detector("erase-restore-distance", clf, statistic="kl").fit(x[:n])
    assert roc_auc(kl.score(x[n:]), kl.score(xa[n:])) > 0.9
    svc = EraseRestore(clf).fit(x[:n], xa[:n])
    assert roc_auc(svc.score(x[n:]), svc.score(xa[n:])) > 0.85


def test_save_load_roundtrip_with_pca(cw_set, tmp_path):
    clf, x, xa = cw_set
    det = EraseRestore(clf, n=4, pca_dim=4, decision_model="adaboost", fixed_masks=True).fit(x[:40], xa[:40])
    assert det.pca_[1].shape == (4, 10)
    back = Detector.load(det.save(tmp_path / "er.zip"), clf)
    np.testing.assert_allclose(back.score(x[40:50]), det.score(x[40:50]))
    assert back.threshold_ == det.threshold_ and back.params["restore"] == "telea"


def test_pca_path_is_class_agnostic(cw_set):
    """With PCA, vectors are aligned by the original's ranking first: relabelling the classes (as when test
    images belong to classes the detector never saw in training) changes nothing."""
    clf, x, xa = cw_set
    det = EraseRestore(clf, n=4, pca_dim=4, fixed_masks=True)
    assert det.params["align"] and EraseRestore(clf, n=4).params["align"]  # default: on (issue #22)
    assert not EraseRestore(clf, n=4, align=False).params["align"]
    f_clean, f_adv = det.extract(x[:40]), det.extract(xa[:40])
    det.fit_features(f_clean, f_adv)
    f = det.extract(x[40:50])
    perm = np.random.default_rng(0).permutation(10)
    relabelled = f.reshape(len(f), 5, 10)[:, :, perm].reshape(len(f), -1)
    np.testing.assert_allclose(det.score_features(relabelled), det.score_features(f), atol=1e-9)
    aligned = det._aligned(f)
    assert (aligned[:, 0, 0] == f.reshape(len(f), 5, 10)[:, 0].max(1)).all()  # column 0 = the original's top-1
