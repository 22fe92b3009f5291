"""Shared fixtures: real images bundled with Foolbox and the small real datasets of the data directory."""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import pytest
import torch

torch.set_num_threads(max(1, os.cpu_count() or 1))

# Fuzz (property-based) tests: a short default profile that keeps the suite within its budget, and a
# longer one for a separate run: HYPOTHESIS_PROFILE=long python3 -m pytest tests/test_fuzz_*.py
try:
    from hypothesis import HealthCheck, settings

    _common = dict(
        deadline=None,
        derandomize=True,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
    )
    settings.register_profile("default", max_examples=25, **_common)
    settings.register_profile("long", max_examples=500, **_common)
    settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))
except ImportError:  # hypothesis is in the test extras; without it the fuzz tests are skipped
    pass


@pytest.fixture(scope="session")
def foolbox_images() -> dict[str, list[tuple[np.ndarray, int]]]:
    """Foolbox's 20 real test images per dataset: {dataset: [(HWC uint8 array, label), ...]}."""
    foolbox = pytest.importorskip("foolbox")
    from PIL import Image

    folder = Path(foolbox.__file__).parent / "data"
    out: dict[str, list[tuple[np.ndarray, int]]] = {}
    for p in sorted(folder.glob("*.png")):
        m = re.fullmatch(r"(.+)_(\d+)_(\d+)", p.stem)
        if m:
            out.setdefault(m.group(1), []).append((np.asarray(Image.open(p)), int(m.group(3))))
    return out


@pytest.fixture(scope="session")
def foolbox_dir() -> Path:
    foolbox = pytest.importorskip("foolbox")
    return Path(foolbox.__file__).parent / "data"


@pytest.fixture
def interrupted_build(monkeypatch):
    """``interrupted_build(cfg, clf, cache_dir, chunk_size)``: start ``build_advset`` and interrupt it (Ctrl-C)
    when the attack is called for the second chunk, so exactly one finished chunk is left on disk."""
    from advguard.advsets import build_advset
    from advguard.attacks import ATTACKS

    def run(cfg, clf, cache_dir, chunk_size):
        attack = ATTACKS[cfg.attack]
        orig = attack.__call__
        calls = {"n": 0}

        def flaky(self, x, y, targets=None):
            calls["n"] += 1
            if calls["n"] == 2:
                raise KeyboardInterrupt
            return orig(self, x, y, targets)

        monkeypatch.setattr(attack, "__call__", flaky)
        try:
            with pytest.raises(KeyboardInterrupt):
                build_advset(cfg, clf, cache_dir=cache_dir, chunk_size=chunk_size, progress=False)
        finally:
            monkeypatch.setattr(attack, "__call__", orig)

    return run


@pytest.fixture(scope="session")
def correct_images():
    """``correct_images(limit, seed, model="cifar10-cnn", dataset="cifar10")`` -> (clf, x, y): the test images
    among ``limit`` drawn (seeded) that the zoo model classifies correctly, as tensors."""
    import torch

    from advguard import load_dataset, load_model

    def make(limit: int, seed: int, model: str = "cifar10-cnn", dataset: str = "cifar10"):
        clf = load_model(model)
        ds = load_dataset(dataset, "test", limit=limit, seed=seed)
        keep = clf.predict(ds.x).numpy() == ds.y
        return clf, torch.from_numpy(ds.x[keep]), torch.from_numpy(ds.y[keep])

    return make
