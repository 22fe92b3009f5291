"""Issue #20 regressions, attacks: bad parameters fail at construction with an advguard error naming the parameter
and its range; targets equal to the labels are refused (never a 100 % "success"); inputs that require grad work."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from advguard import AdvguardError, InputError, load_dataset, load_model
from advguard.attacks import ATTACKS, RP2, AdversarialPatch, RegionMisleadingPatch, make_attack, shifted_targets
from advguard.validation import ParameterError, ParameterTypeError


@pytest.fixture(scope="module")
def setup():
    clf = load_model("cifar10-cnn")
    ds = load_dataset("cifar10", "test", limit=16)
    return clf, torch.from_numpy(ds.x[:6]), torch.from_numpy(ds.y[:6])


def test_targets_equal_to_labels_are_refused_naming_the_images(setup):
    clf, x, y = setup
    t = shifted_targets(y, 10, 1)
    t[[1, 4]] = y[[1, 4]]
    with pytest.raises(InputError, match=r"targets equal the true labels y for 2 of 6 images \(indices 1, 4\)"):
        make_attack("bim", clf, eps=8 / 255, steps=1, progress=False)(x, y, targets=t)
    with pytest.raises(InputError, match="targets equal the true labels"):
        make_attack("rp2", clf, steps=1, progress=False)(x, y, targets=y)


def test_patch_refuses_images_of_its_target_class(setup):
    clf, x, y = setup
    ap = AdversarialPatch(clf, target=int(y[2]), size=0.1, steps=1, progress=False).fit(x)
    with pytest.raises(InputError, match=r"indices 2"):
        ap(x[:3], y[:3])


@pytest.mark.parametrize(
    "name, params, message",
    [
        ("pgd", dict(eps=0.03, steps=0), r"steps=0 is outside the allowed range \[1, "),
        ("pgd", dict(eps=0.03, steps=-1), r"steps=-1 is outside"),
        ("pgd-l2", dict(eps=300), r"eps=300 is outside \(0, 55.43\]"),
        ("pgd-l2", dict(eps=0), r"eps=0 is outside"),
        ("bim-l1", dict(eps=-1.0), r"eps=-1.0 is outside"),
        ("pgd", dict(eps=1.5), r"eps=1.5 is outside \(0, 1\]"),
        ("pgd", dict(eps=float("nan")), r"eps must be a finite number"),
        ("pgd", dict(eps="0.03"), r"eps must be a number"),
        ("pgd", dict(eps=0.03, batch_size=0), r"batch_size=0 is outside the allowed range \[1, inf\)"),
        ("pgd", dict(eps=0.03, rel_stepsize=0.0), r"rel_stepsize=0.0 is outside"),
        ("pgd", dict(eps=0.03, random_start="yes"), r"random_start must be True or False"),
        ("pgd", dict(eps=0.03, steps=2.5), r"steps must be an integer"),
        ("pgd", dict(eps=0.03, steps=True), r"steps must be an integer"),
        ("pgd", dict(eps=0.03, seed=-3), r"seed=-3 is outside"),
        ("pgd", dict(eps=0.03, progress=0), r"progress must be True or False"),
        ("cw-l2", dict(binary_search_steps=0), r"binary_search_steps=0"),
        ("cw-l2", dict(confidence=-1.0), r"confidence=-1.0"),
        ("cw-l2", dict(initial_const=0.0), r"initial_const=0.0"),
        ("deepfool", dict(candidates=11), r"candidates=11 is outside the allowed range \[2, 10\]"),
        ("deepfool", dict(loss="xent"), r"loss='xent' is not one of"),
        ("ead", dict(decision_rule="L2"), r"decision_rule='L2'"),
        ("newtonfool", dict(stepsize=-0.1), r"stepsize=-0.1"),
        ("rp2", dict(lr=0.0), r"lr=0.0 is outside"),
        ("rp2", dict(brightness=1.5), r"brightness=1.5"),
        ("rp2", dict(l1_share=0), r"l1_share=0"),
        ("rp2", dict(n_transforms=0), r"n_transforms=0"),
        ("rp2", dict(scale=(1.2, 0.8)), r"scale must be \(low, high\)"),
        ("rp2", dict(mask=np.ones((4, 4)) * 2), r"custom mask"),
    ],
)
def test_bad_attack_parameters_fail_at_construction(setup, name, params, message):
    clf, _, _ = setup
    with pytest.raises(AdvguardError, match=message) as e:
        make_attack(name, clf, **params)
    assert isinstance(e.value, (ValueError, TypeError))


def test_unknown_keyword_fails_in_make_attack_naming_the_closest(setup):
    clf, _, _ = setup
    with pytest.raises(ParameterTypeError, match=r"unknown parameter 'stpes' \(did you mean 'steps'\?\)"):
        make_attack("pgd", clf, eps=0.03, stpes=3)
    with pytest.raises(TypeError, match=r"did you mean 'binary_search_steps'"):
        make_attack("cw-l2", clf, binary_search_step=3)
    with pytest.raises(AdvguardError, match=r"did you mean 'l1_steps'"):
        make_attack("rp2", clf, l1_step=3)
    with pytest.raises(AdvguardError, match=r"did you mean 'layer'"):
        RegionMisleadingPatch(clf, target=1, layers="conv")
    # every registered attack reports its parameters, and accepts them
    for n, cls in ATTACKS.items():
        assert {"batch_size", "seed", "progress"} <= set(cls.parameters()), n


def test_bad_patch_parameters(setup):
    clf, _, _ = setup
    for kw, msg in [
        (dict(size=0), "size=0"),
        (dict(size=1.0), "size=1.0"),
        (dict(steps=0), "steps=0"),
        (dict(lr=-1.0), "lr=-1.0"),
        (dict(eot=0), "eot=0"),
        (dict(max_rotation=400), "max_rotation=400"),
        (dict(size_range=(0.5, 0.1)), "size_range"),
        (dict(target=10), "target=10"),
        (dict(target=1.5), "target must be an integer"),
        (dict(shape=3), "shape must be one of"),
        (dict(n_patches=3), "n_patches=3"),
        (dict(multi_size="yes"), "multi_size"),
    ]:
        with pytest.raises(AdvguardError, match=msg):
            AdversarialPatch(clf, **kw)
    with pytest.raises(AdvguardError, match="temperature=0"):
        RegionMisleadingPatch(clf, target=1, temperature=0)
    with pytest.raises(AdvguardError, match="unknown layer"):
        RegionMisleadingPatch(clf, target=1, layer="nope")
    with pytest.raises(AdvguardError, match="not trained") as e:
        AdversarialPatch(clf, target=1)(np.zeros((1, 3, 32, 32), np.float32), [0])
    assert isinstance(e.value, RuntimeError)


def test_input_that_requires_grad_is_attacked(setup):
    clf, x, y = setup
    xg = x.clone().requires_grad_(True)
    for name, kw in [("fgsm", dict(eps=8 / 255)), ("pgd-l2", dict(eps=0.5, steps=2)), ("deepfool", dict(steps=3))]:
        res = make_attack(name, clf, progress=False, **kw)(xg, y)
        assert not res.x_adv.requires_grad and res.x_adv.shape == x.shape
        assert torch.equal(res.success, res.pred_adv != y)


def test_l2_budget_checked_against_the_image_size_when_the_classifier_has_none(setup):
    from advguard import Classifier

    clf, x, y = setup
    free = Classifier(clf.model, channels=3, mean=clf.mean, std=clf.std)  # no fixed input size
    atk = make_attack("fgm-l2", free, eps=50.0, progress=False)  # fits 3x32x32 (max 55.4)
    assert atk(x, y).x_adv.shape == x.shape
    with pytest.raises(ParameterError, match=r"eps=50 is outside \(0, 27.71\]"):
        atk(torch.nn.functional.avg_pool2d(x, 2), y)  # 3x16x16: max 27.7


def test_untargeted_only_and_targets_required_are_advguard_errors(setup):
    clf, x, y = setup
    with pytest.raises(InputError, match="untargeted only"):
        make_attack("deepfool", clf, progress=False)(x, y, targets=shifted_targets(y, 10))
    with pytest.raises(InputError, match="targeted attack: pass targets="):
        RP2(clf, steps=1, progress=False)(x, y)
    with pytest.raises(AdvguardError, match="shift 10 maps every label onto itself"):
        shifted_targets(y, 10, 10)
    with pytest.raises(ParameterTypeError, match="attack name must be a str"):
        make_attack(3, clf)
