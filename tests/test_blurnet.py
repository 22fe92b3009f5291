"""BlurNet defences and the RP2 sticker attack (issue #8), on real GTSRB stop signs where data is needed."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch
from torch import nn

from advguard.attacks.rp2 import (
    RP2,
    bars_mask,
    l2_dissimilarity,
    mask_from_perturbation,
    mask_share,
    nps,
    palette_cube,
    random_warps,
    save_sticker_png,
    sign_mask,
)
from advguard.defenses.blurnet import (
    DepthwiseBlur,
    TVPenalty,
    blur_kernel,
    feature_blur,
    first_layer_maps,
    high_frequency_share,
    linf_penalty,
    log_spectrum,
    total_variation,
)
from advguard.errors import AdvguardError
from advguard.models import ZOO, build_module, load_model


def tiny_cnn() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(4, 5, 3, stride=2),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(5, 3),
    ).eval()


@pytest.fixture(scope="module")
def stop_signs():
    """16 real GTSRB test stop signs (class 14), seeded draw, and the undefended classifier."""
    from advguard.data import load_dataset

    ds = load_dataset("gtsrb", "test")
    idx = np.flatnonzero(ds.y == 14)
    idx = np.random.default_rng(0).choice(idx, 16, replace=False)
    return load_model("gtsrb-cnn", inference="float32"), torch.from_numpy(ds.x[idx])


@pytest.mark.parametrize("kind", ["box", "gaussian"])
@pytest.mark.parametrize("size", [3, 5, 7])
def test_depthwise_blur_is_opencv_blur_per_channel(kind, size):
    x = torch.rand(2, 6, 16, 16)
    out = DepthwiseBlur(6, size, kind)(x)
    assert out.shape == x.shape
    k = blur_kernel(size, kind).numpy()
    for n in range(2):
        for c in range(6):  # cv2's default border (reflect-101) is torch's "reflect"
            ref = cv2.filter2D(x[n, c].numpy(), -1, k, borderType=cv2.BORDER_REFLECT_101)
            np.testing.assert_allclose(out[n, c].detach().numpy(), ref, atol=1e-5)
    # channels do not mix: changing channel 0 changes only output channel 0
    x2 = x.clone()
    x2[:, 0] += torch.rand(2, 16, 16)
    d = (DepthwiseBlur(6, size, kind)(x2) - out).abs().amax((0, 2, 3))
    assert d[0] > 0 and torch.all(d[1:] == 0)


def test_feature_blur_inserts_after_the_first_layer_and_keeps_shapes():
    base = tiny_cnn()
    x = torch.rand(3, 3, 12, 12)
    for after in (None, "1"):  # after the first conv / after its ReLU
        m = feature_blur(base, 5, after=after)
        assert m(x).shape == base(x).shape
        maps = first_layer_maps(m, x, layer=after or "0")
        assert maps.shape == (3, 4, 12, 12)
    assert not any(isinstance(mod, DepthwiseBlur) for mod in base.modules())  # surgery on a copy
    # the blurred model equals the base model fed blurred first-layer maps
    m = feature_blur(base, 3, after="1")
    h = base[1](base[0](x))
    want = base[5](base[4](base[3](base[2](DepthwiseBlur(4, 3)(h)))))
    torch.testing.assert_close(m(x), want)
    with pytest.raises(Exception, match="layer"):
        feature_blur(base, 3, after="relu9")


def test_input_blur_commutes_with_normalisation():
    clf = load_model("gtsrb-cnn-input-blur5", inference="float32")
    plain = load_model("gtsrb-cnn", inference="float32")
    x = torch.rand(4, 3, 32, 32)
    xb = DepthwiseBlur(3, 5)(x).clamp(0, 1)
    torch.testing.assert_close(clf.logits(x), plain.logits(xb), atol=1e-4, rtol=1e-4)


def test_fixed_variants_carry_the_base_weights():
    base = build_module("gtsrb-cnn")
    for name in ("gtsrb-cnn-feature-blur3", "gtsrb-cnn-feature-blur7"):
        m = build_module(name)
        torch.testing.assert_close(m.conv1.weight, base.conv1.weight)
        torch.testing.assert_close(m.fc.weight, base.fc.weight)
        assert isinstance(m.relu1[1], DepthwiseBlur) and not m.relu1[1].trainable
    assert ZOO["gtsrb-cnn-dw5"].own_weights and not ZOO["gtsrb-cnn-feature-blur5"].own_weights


def test_linf_penalty_equals_hand_computation():
    m = feature_blur(tiny_cnn(), 3, trainable=True)
    w = m[0][1].conv.weight
    with torch.no_grad():
        w.copy_(torch.arange(4 * 9, dtype=torch.float32).view(4, 1, 3, 3) - 20)
    # channel kernels hold -20..-12, -11..-3, -2..6, 7..15: L-inf 20, 11, 6, 15
    assert float(linf_penalty(m).detach()) == 20 + 11 + 6 + 15
    linf_penalty(m).backward()
    assert int((w.grad != 0).sum()) == 4  # one subgradient entry per channel
    with pytest.raises(ValueError, match="trainable"):
        linf_penalty(feature_blur(tiny_cnn(), 3))


def test_total_variation_equals_hand_computation():
    a = torch.tensor([[1.0, 3.0, 2.0], [0.0, 5.0, 5.0]])
    # vertical |0-1| + |5-3| + |5-2| = 6; horizontal |3-1| + |2-3| + |5-0| + |5-5| = 8
    assert float(total_variation(a[None, None])) == 14
    x = torch.randn(2, 3, 6, 7)
    loops = torch.zeros(2, 3)
    for n in range(2):
        for k in range(3):
            for i in range(6):
                for j in range(7):
                    if i + 1 < 6:
                        loops[n, k] += abs(x[n, k, i + 1, j] - x[n, k, i, j])
                    if j + 1 < 7:
                        loops[n, k] += abs(x[n, k, i, j + 1] - x[n, k, i, j])
    torch.testing.assert_close(total_variation(x), loops)
    torch.testing.assert_close(total_variation(x, eps=1e-4), loops, atol=1e-2, rtol=1e-3)
    # eq. 5: alpha * mean over the batch and channels of the first layer's maps, read by a hook
    base = tiny_cnn()
    pen = TVPenalty(base, alpha=0.5, layer="1")
    xi = torch.rand(2, 3, 8, 8)
    base(xi)
    maps = base[1](base[0](xi))
    torch.testing.assert_close(pen(base), 0.5 * total_variation(maps, 1e-3).mean())
    pen.detach()
    base(xi)
    with pytest.raises(RuntimeError, match="no forward pass"):
        pen(base)


@pytest.mark.parametrize("name", ["gtsrb-cnn-dw3", "gtsrb-cnn-tv1e-4"])
def test_advguard_train_applies_the_variants_penalty(name, tmp_path, monkeypatch):
    from safetensors.torch import load_file

    from advguard import training
    from advguard.defenses import blurnet

    calls = []
    real = blurnet.training_penalty

    def spy(module, defense):
        pen = real(module, defense)

        def counted(m):
            v = pen(m)
            calls.append(float(v.detach()))
            return v

        counted.detach = getattr(pen, "detach", lambda: None)
        return counted

    monkeypatch.setattr(blurnet, "training_penalty", spy)
    card = training.train(name, epochs=1, limit=860, out_dir=tmp_path, progress=False)
    assert card["defense"] == ZOO[name].defense
    assert len(calls) == 7 and all(v > 0 for v in calls)  # 860 images / batch 128: every step added it
    state = load_file(tmp_path / f"{name}.safetensors")
    m = ZOO[name].build()
    m.load_state_dict(state)  # the saved weights fit the variant's architecture
    if ZOO[name].defense["kind"] == "feature-blur":
        k = state["relu1.1.conv.weight"]
        assert not torch.allclose(k, blur_kernel(3).expand_as(k))  # the depthwise kernels were trained


def test_blur_lowers_high_frequency_share_of_real_feature_maps(stop_signs):
    clf, x = stop_signs
    maps = first_layer_maps(clf.module, x[:4], layer="model.relu1")
    blurred = DepthwiseBlur(maps.shape[1], 5)(maps)
    assert float(high_frequency_share(blurred).mean()) < 0.5 * float(high_frequency_share(maps).mean())
    s = log_spectrum(maps[0])
    assert s.shape == maps.shape[1:] and s.min() >= 0 and s.max() <= 1


def test_masks_and_warps():
    r = bars_mask(32, 32)
    s = sign_mask(32, 32)
    assert int(r.sum()) == 112 and bool((r <= s).all())  # the bars lie on the sign: 10.9 % of the image
    assert 0.5 < float(s.mean()) < 0.65
    d = torch.zeros(3, 32, 32)
    d[:, 5:9, 10:14] = 1.0
    m = mask_from_perturbation(d, s, share=16 / 1024)
    assert int(m.sum()) >= 16 and bool(m[5:9, 10:14].all())
    g = torch.Generator().manual_seed(0)
    ident = random_warps(2, 8, 8, g, rotation=0, scale=(1, 1), perspective=0, shift=0)
    want = torch.nn.functional.affine_grid(torch.eye(2, 3)[None].expand(2, 2, 3), [2, 1, 8, 8], align_corners=False)
    torch.testing.assert_close(ident, want, atol=1e-5, rtol=0)
    # NPS: zero on palette colours, positive elsewhere
    pal = palette_cube(3)
    px = torch.zeros(2, 3, 4, 4)
    px[1] = 0.25
    v = nps(px, torch.ones(1, 1, 4, 4), pal)
    assert float(v[0]) == 0 and abs(float(v[1]) - np.sqrt(3) * 0.25) < 1e-6


def test_rp2_changes_only_masked_pixels_and_reaches_its_target(stop_signs, tmp_path):
    clf, x = stop_signs
    assert bool((clf.predict(x) == 14).all())
    target = 1  # speed limit 30
    attack = RP2(clf, mask="bars", steps=120, progress=False)
    res = attack(x, torch.full((len(x),), 14), targets=torch.full((len(x),), target))
    changed = (res.x_adv - x).abs().amax(1) > 1e-6
    mask = bars_mask(32, 32).bool()
    assert bool(changed.any()) and not bool((changed & ~mask).any())
    assert res.success_rate >= 0.75, res.success_rate  # target reached on most of the real stop signs
    d = l2_dissimilarity(x, res.x_adv)
    assert bool((d > 0).all()) and float(d.mean()) < 0.6
    st = attack.stickers_[target]
    assert st.history[-1] < st.history[0]
    out = save_sticker_png(st, tmp_path / "sticker.png")
    from PIL import Image

    assert Image.open(out).size == (256, 256)
    with pytest.raises(ValueError, match="targeted"):
        attack(x, torch.full((len(x),), 14))


def test_rp2_l1_stage_builds_its_own_mask(stop_signs):
    clf, x = stop_signs
    attack = RP2(clf, mask="l1", steps=30, l1_steps=30, l1_share=0.08, progress=False)
    st = attack.fit(x[:6], 2)
    m = st.mask
    assert abs(float(m.mean()) - 0.08) < 0.03 and bool((m <= sign_mask(32, 32)).all())
    assert float((st.masked.abs().sum(0) * (1 - m)).sum()) == 0
    with pytest.raises(Exception, match="RP2 mask"):
        RP2(clf, mask="triangle")


# ---- issue #22: the RP2 authors' mask and settings, LISA-CNN ----


def test_authors_mask_is_the_default_and_covers_2_9_percent():
    from advguard.data import rp2

    clf = load_model("lisa-cnn")
    attack = RP2(clf, progress=False)
    assert attack.mask == "rp2-rectangles"
    m = attack.base_mask(32, 32)
    assert int(m.sum()) == 30 and abs(float(m.mean()) - 0.029) < 0.001  # 30 of 1,024 pixels
    assert bool((m.bool().numpy() == rp2.rectangles_mask(32)).all())
    assert abs(mask_share("rp2-rectangles", 32, 32) - 30 / 1024) < 1e-9
    assert abs(mask_share("bars", 32, 32) - 112 / 1024) < 1e-9  # ours: 10.9 %
    assert RP2(clf, mask="bars", progress=False).base_mask(32, 32).sum() == 112
    with pytest.raises(Exception, match="renamed"):  # the old ambiguous name
        RP2(clf, mask="rectangles")


def test_rp2_options_and_the_authors_preset():
    clf = load_model("lisa-cnn", inference="float32")
    a = RP2(clf, preset="authors", progress=False)
    assert a.settings() == {
        "preset": "authors",
        "mask": "rp2-rectangles",
        "lam": 0.02,
        "steps": 300,
        "lr": 0.1,
        "norm_p": 2,
        "init": "uniform",
        "transforms": False,
        "n_transforms": None,
        "nps": False,
        "nps_weight": 0.0,
        "clip": 20.0,
    }
    b = RP2(clf, preset="authors", lam=0.002, transforms=True, progress=False)  # explicit arguments win
    assert b.lam == 0.002 and b.transforms and b.init == "uniform" and b.lr == 0.1
    ours = RP2(clf, progress=False).settings()
    assert (ours["lam"], ours["lr"], ours["init"], ours["transforms"], ours["nps"], ours["clip"]) == (
        0.002,
        0.05,
        "zero",
        True,
        True,
        1.0,
    )
    for bad in (dict(init="gauss"), dict(preset="paper"), dict(transforms="no"), dict(clip=0)):
        with pytest.raises(AdvguardError):
            RP2(clf, **bad)
    from advguard.data import load_dataset

    x = torch.from_numpy(load_dataset("rp2-lisa-victims").x[:8])
    # no transforms, uniform start: deterministic, and the start is uniform(0, 1) inside the mask
    one = RP2(clf, preset="authors", steps=5, progress=False).fit(x, 12)
    two = RP2(clf, preset="authors", steps=5, progress=False).fit(x, 12)
    torch.testing.assert_close(one.delta, two.delta)
    start = RP2(clf, preset="authors", steps=1, lr=1e-12, progress=False).fit(x, 12)
    assert 0.3 < float(start.delta.mean()) < 0.7 and float(start.delta.min()) >= -1e-6
    zero = RP2(clf, preset="authors", init="zero", steps=1, lr=1e-12, progress=False).fit(x, 12)
    assert float(zero.delta.abs().max()) < 1e-9
    m = one.mask.bool()
    changed = (one.apply(x) - x).abs().amax(1) > 0
    assert not bool((changed & ~m).any())  # only the authors' 30 pixels change
    # the L1 norm and NPS on/off run too
    RP2(clf, preset="authors", norm_p=1, nps=True, steps=2, progress=False).fit(x, 3)


def test_lisa_cnn_blur_variants_are_declared():
    for name in (
        "lisa-cnn-input-blur3",
        "lisa-cnn-input-blur5",
        "lisa-cnn-feature-blur3",
        "lisa-cnn-feature-blur5",
        "lisa-cnn-feature-blur7",
    ):
        spec = ZOO[name]
        assert spec.base == "lisa-cnn" and not spec.own_weights and spec.available
        assert load_model(name).num_classes == 18
    assert "lisa-cnn-dw3" not in ZOO and "lisa-cnn-tv1e-4" not in ZOO  # no LISA training set to train them


def test_gtsrb_configs_keep_their_pre_22_cache_keys():
    """The committed GTSRB stickers stay reachable: the pinned settings give the pre-#22 cache key."""
    from pathlib import Path

    from advguard.experiments import load_config
    from advguard.experiments.blurnet.options import BLURNET_DEFAULTS
    from advguard.experiments.blurnet.run import _settings_key, rp2_settings

    root = Path(__file__).resolve().parents[1]
    for name in ("blurnet-gtsrb", "blurnet-smoke"):
        cfg = load_config(root / "configs" / f"{name}.toml")
        o = {**BLURNET_DEFAULTS, **cfg.section("blurnet")}
        old = {k: o[k] for k in ("lam", "steps", "lr", "n_transforms")}
        assert _settings_key(rp2_settings(cfg.section("blurnet"), o)) == {**old, "mask": "rectangles"}


def test_blurnet_lisa_smoke_run(tmp_path):
    """The LISA setting end to end: lisa-cnn, the RP2 victims, the authors' mask and preset, blurred LISA-CNNs."""
    import json

    from advguard.cli import main

    cfg = tmp_path / "blurnet-lisa-smoke.toml"
    cfg.write_text("""name = "blurnet-lisa-smoke"
experiment = "blurnet"
dataset = "rp2-lisa-victims"
model = "lisa-cnn"
seed = 0

[blurnet]
preset = "authors"
lam = 0.002
steps = 40
n_signs = 10
targets = [0, 11, 12]
l1_mask = false
eval_views = 2
whitebox = []
blackbox = ["lisa-cnn-feature-blur5"]
""")
    out = tmp_path / "out"
    assert main(["bench", str(cfg), "--out", str(out), "--cache-dir", str(tmp_path / "cache")]) == 0
    doc = json.loads((out / "results.json").read_text())
    assert doc["targets"] == [0, 11, 12] and len(doc["signs"]) == 10
    assert doc["rp2"]["lam"] == 0.002 and doc["rp2"]["lr"] == 0.1 and doc["rp2"]["init"] == "uniform"
    assert abs(doc["mask_share"] - 30 / 1024) < 1e-9
    assert [r["model"] for r in doc["table1"]] == ["lisa-cnn", "lisa-cnn-feature-blur5"]
    base = doc["table2"][0]
    assert base["acc_signs"] == 1.0 and base["worst_success"] >= 0.5  # 40 steps already flip most signs
    md = (out / "results.md").read_text()
    assert "2.9 % of the image" in md and "mask % of image" in md


def test_sticker_pngs_of_an_earlier_best_target_are_removed(tmp_path):
    """Re-publishing writes one PNG per model (its best target) and removes the one an earlier run left for a
    best target that has since changed; other files in the folder stay."""
    from advguard.experiments.blurnet.protocol import Signs
    from advguard.experiments.blurnet.report import _stickers
    from advguard.experiments.blurnet.tables import WhiteBox
    from advguard.experiments.page import Page

    (tmp_path / "stickers").mkdir()
    stale, other = tmp_path / "stickers" / "m-target13.png", tmp_path / "stickers" / "notes.txt"
    stale.write_bytes(b"old")
    other.write_text("kept")
    targets = np.array([13, 36])
    delta = np.zeros((2, 3, 32, 32), np.float32)
    delta[1, :, 4:8, 4:8] = 0.5
    mask = np.zeros((2, 32, 32), np.float32)
    mask[:, 4:8, 4:8] = 1
    wb = WhiteBox()
    for model, bt in (("m", 36), ("l1", 13)):
        wb.stickers[model] = {"delta": delta, "mask": mask, "targets": targets, "seconds": np.float32(0)}
        wb.rows[model] = {"best_target": bt}
    signs = Signs(ds=None, idx=np.arange(1), x=torch.full((1, 3, 32, 32), 0.5), classes=None, targets=[13, 36])  # type: ignore[arg-type]
    _stickers(Page("t"), tmp_path, signs, wb)
    assert sorted(p.name for p in (tmp_path / "stickers").iterdir()) == [
        "l1-target13.png",
        "m-target36.png",
        "notes.txt",
    ]
