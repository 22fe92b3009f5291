"""Zoo models: committed weights reach their card accuracy on a fixed real test subset; cards are complete."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from advguard import UnknownNameError, load_model
from advguard.errors import AdvguardError
from advguard.models import ZOO, build_module, get_spec
from advguard.models.evaluation import CHECK_SUBSET, evaluate
from advguard.models.registry import MAX_COMMITTED_WEIGHTS_BYTES, round_to_stored, stored_state

#: The accuracy each model must reach on its full test split (issue #2).
TARGETS = {
    "fashion-mnist-cnn": 0.91,
    "cifar10-cnn": 0.88,
    "cifar10-resnet20": 0.85,
    "gtsrb-cnn": 0.95,
    "efficientnet-lite0": 0.85,
    "cifar10-cnn-ls0": 0.88,  # issue #21's two declared recipes
    "cifar10-vgg16x16": 0.88,
}
#: BlurNet's trained defences (issue #8) may cost accuracy, as in the paper (91 % -> 82-87 %): at most
#: ten points below gtsrb-cnn's target. The fixed-blur variants add layers to trained weights without
#: retraining; their accuracy is what it is (Table 1 measures it) and has no target.
TARGETS.update({n: 0.85 for n, s in ZOO.items() if s.base == "gtsrb-cnn" and s.own_weights})
TOLERANCE = 0.03  # a 500-image subset vs the full test split


#: models with weights at hand; a declared BlurNet variant is absent until `advguard train` has made it
AVAILABLE = [n for n, s in ZOO.items() if s.available]


def test_only_declared_recipes_may_lack_weights():
    from advguard.training import RECIPES

    missing = [n for n in ZOO if n not in AVAILABLE]
    # a trainable defence variant, or a model with its own declared recipe (issue #21), not trained yet
    assert all(ZOO[n].own_weights and (ZOO[n].defense or n in RECIPES) for n in missing), missing
    assert {"fashion-mnist-cnn", "cifar10-cnn", "cifar10-resnet20", "gtsrb-cnn", "efficientnet-lite0"} <= set(AVAILABLE)


@pytest.mark.parametrize("name", AVAILABLE)
def test_card_is_complete(name):
    card = get_spec(name).card()
    assert card, f"{name} has no model card; run `advguard train {name} --install`"
    for key in (
        "dataset",
        "data_source",
        "eval_split",
        "test_accuracy",
        "parameters",
        "command",
        "machine",
        "check_subset",
    ):
        assert key in card, f"{name} card lacks {key}"
    if get_spec(name).own_weights:
        assert "wall_time_s" in card and card["train_split"]
    if get_spec(name).defense:
        assert card["defense"] == get_spec(name).defense


@pytest.mark.parametrize("name", [n for n in AVAILABLE if n in TARGETS])
def test_card_accuracy_meets_issue_target(name):
    assert get_spec(name).card()["test_accuracy"] >= TARGETS[name]


@pytest.mark.parametrize("name", AVAILABLE)
def test_accuracy_on_fixed_subset_matches_card(name):
    card = get_spec(name).card()
    r = evaluate(name, **CHECK_SUBSET)
    # a dataset smaller than the subset (lisa-cnn's 40 RP2 victims) is used whole
    assert r["n"] == min(CHECK_SUBSET["limit"], int(card["eval_split"].split("(")[1].split()[0]))
    p = card["test_accuracy"]
    # models without a target (fixed-blur variants at 6-95 %): three binomial standard errors of a 500 subset
    tol = TOLERANCE if name in TARGETS else 3 * (p * (1 - p) / CHECK_SUBSET["limit"]) ** 0.5
    assert r["accuracy"] >= p - tol
    # The same weights on the same images give the accuracy recorded at training time.
    assert abs(r["accuracy"] - card["check_subset"]["accuracy"]) <= 0.004


def test_zoo_classifier_properties():
    clf = load_model("cifar10-cnn")
    assert clf.num_classes == 10 and clf.size == (32, 32)
    assert clf.gradcam_layer in clf.layer_names()
    assert get_spec("cifar10-cnn").card()["parameters"] == sum(p.numel() for p in clf.model.parameters())
    x = torch.rand(2, 3, 32, 32)
    assert clf.gradcam(x, [0, 1]).shape == (2, 8, 8)
    g = load_model("gtsrb-cnn")
    assert g.gradcam_layer == "relu3" and g.gradcam(torch.rand(2, 3, 32, 32), [14, 14]).shape == (2, 2, 2)


def test_unknown_model_name():
    with pytest.raises(UnknownNameError, match="Did you mean 'cifar10-cnn'"):
        load_model("cifar10_cnn")


@pytest.mark.parametrize("name", [n for n, s in ZOO.items() if s.own_weights and s.weights_path.exists()])
def test_committed_weights_are_within_the_size_bound_and_in_their_declared_dtype(name):
    spec = get_spec(name)
    assert spec.weights_path.stat().st_size <= MAX_COMMITTED_WEIGHTS_BYTES, (
        f"{name}: {spec.weights_path.stat().st_size} bytes; store float16 (ModelSpec.weights_dtype)"
    )
    stored = {str(v.dtype) for v in load_file(spec.weights_path).values() if v.is_floating_point()}
    assert stored == {f"torch.{spec.weights_dtype}"}
    assert spec.card().get("weights_dtype", "float32") == spec.weights_dtype
    # the module computes in float32 whatever the file stores
    assert {p.dtype for p in build_module(name).parameters()} == {torch.float32}


def test_stored_state_rounds_floating_tensors_only_and_is_a_fixed_point():
    module = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4))
    state = stored_state(module, "float16")
    assert state["0.weight"].dtype == torch.float16 and state["1.num_batches_tracked"].dtype == torch.int64
    rounded = round_to_stored(module, "float16")
    assert rounded is module and module[0].weight.dtype == torch.float32
    # once rounded, storing and loading again changes nothing (the card's accuracy is the shipped model's)
    again = stored_state(module, "float16")
    assert all(torch.equal(state[k], again[k]) for k in state)
    assert torch.equal(module[0].weight, state["0.weight"].float())
    with pytest.raises(AdvguardError, match="weights_dtype must be one of"):
        stored_state(module, "bfloat16")
