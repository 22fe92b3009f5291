"""Adversarial-set builder: protocol, cache keys, resume, leak-free splits."""

from __future__ import annotations

import numpy as np
import pytest

from advguard import load_model
from advguard.advsets import AdvSetConfig, build_advset, config_key, fold_of, roundtrip_images
from advguard.attacks import ATTACKS


@pytest.fixture(scope="module")
def clf():
    return load_model("cifar10-cnn")


CFG = AdvSetConfig(
    "cifar10", "cifar10-cnn", "fgsm", {"eps": 2 / 255}, limit=60, seed=1, dataset_kwargs={"source": "jpeg"}
)


def test_only_correct_clean_images_and_successes_are_kept(clf, tmp_path):
    s = build_advset(CFG, clf, cache_dir=tmp_path, chunk_size=16, progress=False)
    assert s.counts["n_images"] == 60 and s.counts["n_attacked"] == s.counts["n_correct"] == len(s.x_clean)
    assert np.array_equal(clf.predict(s.x_clean).numpy(), s.y_clean)  # all clean images correct
    assert 0 < len(s.x_adv) == s.counts["n_adv"] < len(s.x_clean)  # eps 2/255 FGSM fails on some: dropped
    assert np.all(clf.predict(s.x_adv).numpy() != s.y_adv)
    assert set(s.adv_ids) <= set(s.clean_ids)
    assert float(np.max(s.norms["linf"])) <= 2 / 255 + 1e-5


def test_cache_hit_and_resume(clf, tmp_path, monkeypatch, interrupted_build):
    # Interrupt the build after the first chunk, then resume: finished chunks are reused.
    interrupted_build(CFG, clf, tmp_path, 16)
    partial = list(tmp_path.glob("*.partial/chunk-*.npz"))
    assert len(partial) == 1
    resumed = build_advset(CFG, clf, cache_dir=tmp_path, chunk_size=16, progress=False)
    fresh = build_advset(CFG, clf, cache_dir=tmp_path / "fresh", chunk_size=16, progress=False)
    assert np.array_equal(resumed.x_adv, fresh.x_adv) and np.array_equal(resumed.adv_ids, fresh.adv_ids)
    assert not list(tmp_path.glob("*.partial"))
    monkeypatch.setattr(ATTACKS["fgsm"], "__call__", lambda *a, **k: pytest.fail("cache miss"))
    again = build_advset(CFG, clf, cache_dir=tmp_path, chunk_size=16, progress=False)
    assert again.key == resumed.key


def test_cache_key_changes_with_every_parameter():
    base = config_key(CFG, "w")
    JPEG = {"source": "jpeg"}
    variants = [
        AdvSetConfig("cifar10", "cifar10-cnn", "fgsm", {"eps": 3 / 255}, limit=60, seed=1, dataset_kwargs=JPEG),
        AdvSetConfig("cifar10", "cifar10-cnn", "pgd", {"eps": 2 / 255}, limit=60, seed=1, dataset_kwargs=JPEG),
        AdvSetConfig("cifar10", "cifar10-cnn", "fgsm", {"eps": 2 / 255}, limit=61, seed=1, dataset_kwargs=JPEG),
        AdvSetConfig("cifar10", "cifar10-cnn", "fgsm", {"eps": 2 / 255}, limit=60, seed=2, dataset_kwargs=JPEG),
        AdvSetConfig(
            "cifar10", "cifar10-cnn", "fgsm", {"eps": 2 / 255}, limit=60, seed=1, split="train", dataset_kwargs=JPEG
        ),
        AdvSetConfig(
            "cifar10", "cifar10-cnn", "fgsm", {"eps": 2 / 255}, limit=60, seed=1, target_shift=1, dataset_kwargs=JPEG
        ),
        AdvSetConfig(
            "cifar10", "cifar10-cnn", "fgsm", {"eps": 2 / 255}, limit=60, seed=1, roundtrip="png", dataset_kwargs=JPEG
        ),
        AdvSetConfig("cifar10", "cifar10-cnn", "fgsm", {"eps": 2 / 255}, limit=60, seed=1),
        AdvSetConfig(
            "cifar10", "cifar10-cnn", "pgd", {"eps": 2 / 255}, limit=60, seed=1, target=3, dataset_kwargs=JPEG
        ),
    ]
    keys = {config_key(v, "w") for v in variants} | {config_key(CFG, "other-weights")}
    assert base not in keys and len(keys) == len(variants) + 1


def test_key_of_a_set_without_the_newer_fields_is_unchanged():
    """``part`` and ``target`` enter the key only when set: sets cached before they existed stay valid."""
    import hashlib
    import json
    from dataclasses import asdict

    d = {k: v for k, v in asdict(CFG).items() if k not in ("part", "target")}
    old = hashlib.sha256(json.dumps({**d, "weights": "w", "v": 1}, sort_keys=True, default=str).encode())
    assert config_key(CFG, "w") == old.hexdigest()[:20]


def test_a_fixed_target_attacks_every_other_image_towards_it(clf, tmp_path):
    """``target``: one class for every image (RP2's stop -> speed limit 45); images of that class are not attacked,
    every adversarial image is classified as it and carries it as its target."""
    cfg = AdvSetConfig(
        "cifar10", "cifar10-cnn", "pgd", {"eps": 8 / 255, "steps": 10}, limit=60, seed=1, target=3,
        dataset_kwargs={"source": "jpeg"},
    )  # fmt: skip
    s = build_advset(cfg, clf, cache_dir=tmp_path, chunk_size=16, progress=False)
    assert s.counts["n_attacked"] == int((s.y_clean != 3).sum()) < s.counts["n_correct"]
    assert 0 < len(s.x_adv) and s.targets is not None and np.all(s.targets == 3)
    assert np.all(clf.predict(s.x_adv).numpy() == 3) and np.all(s.y_adv != 3)
    with pytest.raises(ValueError, match="not both"):
        AdvSetConfig("cifar10", "cifar10-cnn", "pgd", target=3, target_shift=1)


def test_folds_never_split_a_clean_image_from_its_adversarials():
    ids = np.arange(10000)
    f = fold_of(ids, (0.8, 0.2), seed=0)
    assert abs(f.mean() - 0.2) < 0.02
    three = fold_of(ids, (0.7, 0.15, 0.15), seed=0)
    assert np.allclose(np.bincount(three) / len(ids), [0.7, 0.15, 0.15], atol=0.02)
    sub = np.array([5, 17, 923, 4000])  # the fold of an id does not depend on which other ids are present
    assert np.array_equal(fold_of(sub, (0.8, 0.2), 0), f[sub])
    assert not np.array_equal(fold_of(ids, (0.8, 0.2), 1), f)


def test_split_pairs_stay_together(clf, tmp_path):
    s = build_advset(CFG, clf, cache_dir=tmp_path, chunk_size=32, progress=False)
    cf, af = s.folds((0.7, 0.3), seed=0)
    fold_by_id = dict(zip(s.clean_ids.tolist(), cf.tolist(), strict=True))
    assert all(fold_by_id[i] == f for i, f in zip(s.adv_ids.tolist(), af.tolist(), strict=True))


def test_png_roundtrip_is_8bit_quantisation_and_jpeg_changes_little(clf):
    import torch

    from advguard import load_dataset

    x = torch.rand(3, 3, 32, 32)
    png = roundtrip_images(x, "png")
    assert torch.allclose(png, (x * 255).round() / 255, atol=1e-6)
    real = torch.from_numpy(load_dataset("cifar10", "test", limit=8).x)
    jpg = roundtrip_images(real, "jpeg")  # Pillow q=100 with its default 4:2:0 chroma subsampling
    assert 0 < float((jpg - real).abs().mean()) < 0.02


def test_parts_are_disjoint_and_share_one_clean_set(clf, tmp_path):
    """``part=(i, m)``: m attacks share the clean set, each attacking its own disjoint part of it."""
    sets = [
        build_advset(
            AdvSetConfig(**{**CFG.__dict__, "params": {"eps": 8 / 255}, "part": (i, 3)}),
            clf,
            cache_dir=tmp_path,
            chunk_size=16,
            progress=False,
        )
        for i in range(3)
    ]
    assert all(np.array_equal(s.clean_ids, sets[0].clean_ids) for s in sets)
    attacked = [s.counts["n_attacked"] for s in sets]
    assert sum(attacked) == len(sets[0].clean_ids) and min(attacked) > 0
    ids = [set(s.adv_ids.tolist()) for s in sets]
    assert not (ids[0] & ids[1]) and not (ids[0] & ids[2]) and not (ids[1] & ids[2])
    assert config_key(CFG, "h") != config_key(AdvSetConfig(**{**CFG.__dict__, "part": (0, 3)}), "h")
    with pytest.raises(ValueError, match="part"):
        AdvSetConfig("cifar10", "m", "fgsm", part=(3, 3))
