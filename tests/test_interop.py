"""Other libraries' attacks feed advguard's detectors (issue #24): torchattacks and IBM's Adversarial Robustness
Toolbox (ART) attack ``clf.module`` (the network with its normalisation, taking [0, 1] images) and their
adversarial images go straight into ``det.score`` / ``det.predict``, as the README shows."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from advguard.detectors import FeatureSqueezing


@pytest.fixture(scope="module")
def fitted(correct_images):
    clf, x, y = correct_images(40, 17)
    det = FeatureSqueezing(clf, squeezers=("bits:4", "median:2"), fpr=0.1, progress=False).fit(x[:24].numpy())
    return clf, det, x[24:], y[24:]


def _detects(det: FeatureSqueezing, x_clean: np.ndarray, x_adv: np.ndarray) -> float:
    s_clean, s_adv = det.score(x_clean), det.score(x_adv)
    return float(roc_auc_score(np.r_[np.zeros(len(s_clean)), np.ones(len(s_adv))], np.r_[s_clean, s_adv]))


def test_torchattacks_images_feed_a_detector(fitted):
    import torchattacks  # installed by scripts/install.sh (--no-deps: its torchvision pin would replace torch)

    clf, det, x, y = fitted
    atk = torchattacks.PGD(clf.module, eps=8 / 255, alpha=2 / 255, steps=5, random_start=True)
    x_adv = atk(x, y)  # a float32 tensor in [0, 1], NCHW: what a detector takes
    assert x_adv.dtype == torch.float32 and float((x_adv - x).abs().max()) <= 8 / 255 + 1e-6
    assert (clf.predict(x_adv) != y).float().mean() > 0.8
    assert det.predict(x_adv).dtype == bool and _detects(det, x.numpy(), x_adv.numpy()) > 0.6


def test_art_images_feed_a_detector(fitted):
    import art  # the test extra: adversarial-robustness-toolbox
    from art.attacks.evasion import FastGradientMethod
    from art.estimators.classification import PyTorchClassifier

    clf, det, x, y = fitted
    est = PyTorchClassifier(
        model=clf.module,
        loss=torch.nn.CrossEntropyLoss(),
        input_shape=tuple(x.shape[1:]),
        nb_classes=clf.num_classes,
        clip_values=(0.0, 1.0),
    )
    x_adv = FastGradientMethod(est, eps=8 / 255).generate(x=x.numpy())  # numpy float32 NCHW in [0, 1]
    assert isinstance(x_adv, np.ndarray) and x_adv.dtype == np.float32 and art.__version__
    assert (clf.predict(x_adv).numpy() != y.numpy()).mean() > 0.5
    assert det.score(x_adv).shape == (len(x),) and _detects(det, x.numpy(), x_adv) > 0.6
