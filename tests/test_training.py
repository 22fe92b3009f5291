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
