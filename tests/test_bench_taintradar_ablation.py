"""Issue #22's TaintRadar ablation: ``[taintradar] models = [...]`` runs the per-model protocol for each entry (a
model, or a model at another Grad-CAM layer) and writes one comparison page; its keys are validated."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from advguard.experiments import ConfigError, load_config, parse_config
from advguard.experiments.taintradar import run as tx

ROOT = Path(__file__).resolve().parents[1]
BASE = {"name": "x", "dataset": "cifar10", "model": "cifar10-cnn", "experiment": "taintradar"}


def _tiny(models, out: Path) -> dict:
    return {
        **BASE,
        "name": "tr-ablation-test",
        "dataset_kwargs": {"source": "lossless"},
        "n_images": 100,
        "out": str(out),
        "taintradar": {
            "n_victims": 8,
            "n_calibration": 16,
            "n_eval_clean": 16,
            "sentinet_n_test": 4,
            "target": 3,
            "batch_sizes": [4],
            "multi_size": [False],
            "sizes": [0.3],
            "positions": ["bottom-right", "random"],
            "steps": 3,
            "k_max": 3,
            "fprs": [0.06, 0.1],
            "diagnostics": 4,
            "models": models,
        },
    }


def test_ablation_runs_each_model_and_layer_and_states_untrained_ones(tmp_path, monkeypatch):
    real = tx.get_spec

    def spec(name):  # a declared model without weights, whatever the zoo holds today
        return SimpleNamespace(available=False, description="declared") if name == "cifar10-vgg16x16" else real(name)

    monkeypatch.setattr(tx, "get_spec", spec)
    out, cache = tmp_path / "out", tmp_path / "cache"
    cfg = parse_config(
        _tiny(
            [
                "cifar10-resnet20-pretrained",
                {"model": "cifar10-resnet20-pretrained", "layer": "stage2", "label": "r20 16x16", "note": "stage2"},
                "cifar10-vgg16x16",
            ],
            out,
        )
    )
    doc = tx.run_taintradar(cfg, cache_dir=cache, progress=False)
    runs = {r["label"]: r for r in doc["runs"]}
    assert list(runs) == ["cifar10-resnet20-pretrained", "r20 16x16", "cifar10-vgg16x16"]
    assert runs["cifar10-vgg16x16"]["status"] == "not yet trained"
    a, b = runs["cifar10-resnet20-pretrained"], runs["r20 16x16"]
    assert a["layer"] == "stage3" and a["layer_shape"] == [64, 8, 8] and b["layer_shape"] == [32, 16, 16]
    assert a["dataset_source"] == "cifar10-lossless" and a["counts"]["victims"] == 8
    assert len(a["clean_fpr_by_k"]) == 3 and [c["position"] for c in a["cells"]] == ["bottom-right", "random"]
    # the same patches and SentiNet points; TaintRadar per layer
    for ca, cb in zip(a["cells"], b["cells"], strict=True):
        assert ca["sr"] == cb["sr"] and ca["sentinet_tpr@0.1"] == cb["sentinet_tpr@0.1"]
        if ca["n_adv"]:
            aucs = ca["taintradar_auc_by_k"]
            assert (
                len(aucs) == 3
                and ca["best_auc"] == max(aucs)
                and ca["auc_at_k"] == aucs[a["operating_points"]["0.06"]["k"] - 1]
            )
    for r in (a, b):  # the intersection's make-up at every K, from the same noise as the cached rank changes
        d = r["diagnostics"]
        assert d["clean"]["n"] == 4 and len(d["clean"]["area"]) == 3 and "in_patch" not in d["clean"]
        for c in d["cells"].values():
            assert c["n"] == 0 or (
                len(c["in_patch"]) == 3
                and 0 <= c["true_label_rises_most"] <= 1
                and all(0 <= v <= 1 for v in c["area"] + c["empty"])
            )
    files = sorted((cache / "taintradar").glob("*/ranks-*-eval-clean.npz"))  # one per layer
    means = [np.load(f)["r"][:4].mean(0) for f in files]
    assert len(files) == 2 and all(
        any(np.allclose(r["diagnostics"]["clean"]["rank_change"], m) for m in means) for r in (a, b)
    )
    for sub in ("cifar10-resnet20-pretrained", "r20-16x16"):  # each entry's own full page
        assert json.loads((out / sub / "results.json").read_text())["layer"] in ("stage3", "stage2")
    md = (out / "results.md").read_text()
    assert "true label rises most" in md
    assert "not yet trained" in md and "(97.2)" in md and "Commit `" in md and (out / "auc_vs_k_models.png").exists()
    saved = json.loads((out / "results.json").read_text())
    assert [r["label"] for r in saved["runs"]] == list(runs)
    again = tx.run_taintradar(cfg, cache_dir=cache, progress=False)  # cached: identical numbers
    assert [r.get("cells") for r in again["runs"]] == [r.get("cells") for r in doc["runs"]]
    head, rows = tx.summary_table(doc)
    assert head[0] == "model" and len(rows) == 5 and rows[-1][-1] == "not yet trained"


@pytest.mark.parametrize(
    "models, match",
    [
        (["cifar10-cnn", {"model": "cifar10-cnn", "layr": "block4"}], "did you mean 'layer'"),
        ([{"layer": "block4"}], "models\\[1\\].model: missing required key"),
        (["cifar10-cnn", "cifar10-cnn"], "labels must be unique"),
        (["mobilenet-v2"], "taintradar.models\\[1\\]: model 'mobilenet-v2' is for dataset 'imagenet-val'"),
        (["no-such-model"], "unknown model"),
        ([], "at least 1"),
    ],
)
def test_ablation_models_are_validated(models, match):
    with pytest.raises(ConfigError, match=match):
        parse_config({**BASE, "taintradar": {"models": models}})


def test_shipped_ablation_configs_are_valid():
    for p in sorted((ROOT / "configs").glob("taintradar-ablation-*.toml")):
        cfg = load_config(p)
        assert cfg.section("taintradar")["models"], p
        assert len({tx.model_entry(m)["label"] for m in cfg.section("taintradar")["models"]}) == len(
            cfg.section("taintradar")["models"]
        )


def test_the_cache_folder_follows_the_weights_not_only_the_model_name():
    import torch

    from advguard import load_model
    from advguard.experiments.taintradar.protocol import bench_key

    cfg = load_config(ROOT / "configs" / "taintradar-smoke.toml")
    clf = load_model(cfg.model, device="cpu")
    o = tx.typed_options(cfg)
    key = bench_key(cfg, clf, o)
    assert bench_key(cfg, clf, o) == key  # stable
    with torch.no_grad():  # the same name, other weights (retrained, or stored in another dtype)
        next(clf.model.parameters()).mul_(1.001)
    assert bench_key(cfg, clf, o) != key
