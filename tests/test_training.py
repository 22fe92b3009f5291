"""`advguard train`: a short real run writes weights + card, resumes from its checkpoint, learns."""

from __future__ import annotations

import json

import torch
from safetensors.torch import load_file

from advguard.models import get_spec
from advguard.training import RECIPES, TrainConfig, augment, train


def test_short_training_run_writes_card_and_resumes(tmp_path):
    out = tmp_path / "run"
    card = train("fashion-mnist-cnn", epochs=3, limit=2000, out_dir=out, progress=False)
    assert (out / "fashion-mnist-cnn.safetensors").exists() and (out / "checkpoint.pt").exists()
    saved = json.loads((out / "fashion-mnist-cnn.json").read_text())
    assert saved["test_accuracy"] == card["test_accuracy"] > 0.6  # three short epochs on 2,000 real images
    assert saved["train_split"].startswith("train (2000")
    state = load_file(out / "fashion-mnist-cnn.safetensors")
    assert set(state) == set(get_spec("fashion-mnist-cnn").build().state_dict())
    # Re-running resumes from the finished checkpoint: no new epoch, same weights and accuracy.
    again = train("fashion-mnist-cnn", epochs=3, limit=2000, out_dir=out, progress=False)
    assert again["test_accuracy"] == card["test_accuracy"]
    assert again["wall_time_s"] == card["wall_time_s"]


def test_a_float16_model_is_stored_in_float16_and_loads_into_float32(tmp_path, monkeypatch):
    from dataclasses import replace

    from advguard.models import ZOO, build_module

    monkeypatch.setitem(ZOO, "fashion-mnist-cnn", replace(ZOO["fashion-mnist-cnn"], weights_dtype="float16"))
    out = tmp_path / "run"
    card = train("fashion-mnist-cnn", epochs=2, limit=1000, out_dir=out, progress=False)
    assert card["weights_dtype"] == "float16"
    state = load_file(out / "fashion-mnist-cnn.safetensors")
    assert {v.dtype for v in state.values() if v.is_floating_point()} == {torch.float16}
    module = build_module("fashion-mnist-cnn", pretrained=False)
    module.load_state_dict(state)  # upcast into the float32 module
    assert {p.dtype for p in module.parameters()} == {torch.float32}


def test_augment_keeps_shape_range_and_is_seeded():
    x = torch.rand(6, 3, 32, 32)
    cfg = TrainConfig(epochs=1, crop_padding=4, flip=True, color_jitter=0.3)
    a = augment(x, cfg, torch.Generator().manual_seed(0))
    b = augment(x, cfg, torch.Generator().manual_seed(0))
    assert a.shape == x.shape and torch.equal(a, b) and 0 <= a.min() and a.max() <= 1
    assert not RECIPES["gtsrb-cnn"].flip  # mirrored traffic signs change meaning


def test_a_run_too_short_for_its_schedule_is_refused_before_training(tmp_path):
    """500 images at batch 128 are 4 steps: PyTorch's one-cycle schedule divided by zero mid-run; now a clear error."""
    import pytest

    from advguard.errors import InputError

    with pytest.raises(InputError, match="too short for a one-cycle schedule"):
        train("cifar10-vgg16x16", epochs=1, limit=500, out_dir=tmp_path / "run", progress=False)
    assert not (tmp_path / "run" / "checkpoint.pt").exists()


def test_alpha_override_is_validated_before_any_work(tmp_path):
    """`advguard train NAME --alpha A` (issue #22's alpha pilots): only for a trained BlurNet variant, a finite
    alpha >= 0, never installed under the zoo entry's name; each refused with a message saying why."""
    import pytest

    from advguard.cli import main
    from advguard.errors import InputError

    for name, alpha, install, msg in [
        ("gtsrb-cnn-ls0", 1.0, False, "no training penalty"),
        ("gtsrb-cnn-feature-blur3", 1.0, False, "no training penalty"),
        ("gtsrb-cnn-ls0-tv1e-1", float("nan"), False, "finite number >= 0"),
        ("gtsrb-cnn-ls0-tv1e-1", -1.0, False, "finite number >= 0"),
        ("gtsrb-cnn-ls0-tv1e-1", 0.2, True, "cannot be installed"),
    ]:
        with pytest.raises(InputError, match=msg):
            train(name, alpha=alpha, install=install, epochs=1, out_dir=tmp_path / "run", progress=False)
    assert not (tmp_path / "run").exists()
    assert main(["train", "gtsrb-cnn", "--alpha", "0.5", "--out", str(tmp_path / "cli")]) == 2
    assert not (tmp_path / "cli").exists()


def test_alpha_pilot_trains_with_its_alpha_and_never_continues_another(tmp_path, monkeypatch):
    """A short real pilot on 860 GTSRB images: the TV penalty is applied with the pilot's alpha (not the zoo
    entry's), the card records it, and a checkpoint made with another alpha is not resumed."""
    from advguard.defenses import blurnet

    alphas, steps = [], []  # the alpha of each penalty built, and one entry per training step that applied one
    real = blurnet.training_penalty

    class CountingPenalty:
        def __init__(self, penalty, alpha):
            self.penalty, self.alpha = penalty, alpha

        def __call__(self, module):
            steps.append(self.alpha)
            return self.penalty(module)

        def __getattr__(self, attr):  # detach() and the like reach the real penalty
            return getattr(self.penalty, attr)

    def counting_penalty(model, defense):
        alphas.append(defense["alpha"])
        return CountingPenalty(real(model, defense), defense["alpha"])

    monkeypatch.setattr(blurnet, "training_penalty", counting_penalty)
    name, out = "gtsrb-cnn-ls0-tv1e-1", tmp_path / "run"
    assert get_spec(name).defense["alpha"] == 0.1 and RECIPES["gtsrb-cnn-ls0"].label_smoothing == 0.0
    card = train(name, alpha=0.5, epochs=1, limit=860, out_dir=out, progress=False)
    assert alphas == [0.5] and card["defense"] == {**get_spec(name).defense, "alpha": 0.5}
    assert card["command"].endswith("--alpha 0.5") and "--install" not in card["command"]
    assert not get_spec(name).card() or get_spec(name).card().get("defense", {}).get("alpha") == 0.1
    trained = len(steps)
    assert trained > 0 and set(steps) == {0.5}
    again = train(name, alpha=0.25, epochs=1, limit=860, out_dir=out, progress=False)  # same folder, other alpha
    assert again["defense"]["alpha"] == 0.25 and steps[trained:] == [0.25] * trained  # a whole epoch afresh
    same = train(name, alpha=0.25, epochs=1, limit=860, out_dir=out, progress=False)
    assert len(steps) == 2 * trained and same["wall_time_s"] == again["wall_time_s"]  # its own checkpoint resumed
