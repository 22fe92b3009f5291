"""`experiment = "guard"` (issue #25): Guard combinations beside every single detector per attack family."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from advguard.cli import main
from advguard.experiments import ConfigError, load_config, parse_config
from advguard.experiments.guard.run import POOLED

ROOT = Path(__file__).resolve().parents[1]


def test_guard_smoke_config_reports_every_family_and_reruns_from_cache(tmp_path):
    """Three families (FGSM, DeepFool, a patch trained per chunk), four detectors (one trained on images: the CNN
    detector), three combinations: every report on the same clean test fold, the goal table consistent with the
    single detectors' figures, the page with its figure, identical numbers when re-run from the cache."""
    args = ["reproduce", str(ROOT / "configs" / "guard-smoke.toml"), "--out", str(tmp_path / "out")]
    args += ["--cache-dir", str(tmp_path / "cache")]
    assert main(args) == 0
    out = tmp_path / "out"
    doc = json.loads((out / "results.json").read_text())
    fams = doc["families"]
    assert fams[-1] == POOLED and len(fams) == 4 and "patch 0.2 (random position)" in fams
    n_test = doc["folds"]["clean"]["test"]
    assert sum(doc["folds"]["clean"].values()) == doc["data"]["n_correct"]
    assert [s["detector"] for s in doc["singles"]] == [
        "Confidence",
        "Feature Squeezing",
        "Erase-and-Restore (SVM)",
        "CNN detector",
    ]
    for entry in [*doc["singles"], *doc["combinations"]]:
        assert set(entry["families"]) == set(fams)
        for f, r in entry["families"].items():
            assert r["n_clean"] == n_test and 0 <= r["auc"] <= 1 and 0 <= r["tpr_at_fpr_5"] <= 1
            n_adv = sum(v["test"] for v in doc["folds"]["adversarial"].values()) if f == POOLED else None
            assert n_adv is None or r["n_adv"] == n_adv
    combos = {c["label"]: c for c in doc["combinations"]}
    assert combos["any (FS + confidence)"]["detectors"] == ["Confidence", "Feature Squeezing"]
    for g in doc["goal"]:
        for f, v in g["families"].items():
            best = max(s["families"][f]["tpr_at_fpr_5"] for s in doc["singles"])
            assert v["best_single_tpr_at_fpr_5"] == best
            assert v["at_least_as_good"] == (v["tpr_at_fpr_5"] >= best)
        assert g["met"] == all(v["at_least_as_good"] for v in g["families"].values())
    # the patch attack (trained per chunk inside build_advset) produced adversarial images
    assert doc["advsets"]["patch 0.2 (random position)"]["n_adv"] > 0
    assert (out / "tpr-at-5-fpr.png").read_bytes()[:4] == b"\x89PNG"
    md = (out / "results.md").read_text()
    assert "Goal: one combination at least as good" in md and "Guard: stacked (all)" in md
    assert main(args) == 0
    again = json.loads((out / "results.json").read_text())
    for a, b in zip([*doc["singles"], *doc["combinations"]], [*again["singles"], *again["combinations"]], strict=True):
        assert {f: r["auc"] for f, r in a["families"].items()} == {f: r["auc"] for f, r in b["families"].items()}


def _doc(**guard):
    return {
        "experiment": "guard",
        "name": "g",
        "dataset": "cifar10",
        "model": "cifar10-cnn",
        "fractions": [0.3, 0.3, 0.4],
        "attack": [{"name": "fgsm", "params": {"eps": 0.03}}],
        "detector": [{"name": "confidence", "label": "C"}, {"name": "feature-squeezing", "label": "FS"}],
        "guard": guard,
    }


@pytest.mark.parametrize(
    "guard, fractions, message",
    [
        (
            {"combination": [{"label": "x", "detectors": ["C", "F S"]}]},
            None,
            "'F S' is not the label of a [[detector]]",
        ),
        ({"combination": [{"label": "x", "combine": "all"}]}, None, "unknown combination rule 'all'"),
        ({"combination": [{"label": "x"}, {"label": "x"}]}, None, "repeated combination label 'x'"),
        ({"combination": [{"label": "x", "metamodel": "rf"}]}, None, "did you mean 'meta_model'"),
        ({}, [0.8, 0.2], "three shares"),
    ],
)
def test_bad_guard_sections_are_named(guard, fractions, message):
    doc = _doc(**guard)
    if fractions:
        doc["fractions"] = fractions
    with pytest.raises(ConfigError, match=None) as e:
        parse_config(doc)
    assert message in str(e.value)


def test_the_shipped_guard_configs_parse():
    for name in ("guard-smoke", "guard-cifar10"):
        cfg = load_config(ROOT / "configs" / f"{name}.toml")
        assert cfg.experiment == "guard" and len(cfg.options.combinations) >= 3
        assert np.isclose(sum(cfg.fractions), 1.0)
