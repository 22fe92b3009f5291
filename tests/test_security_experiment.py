"""`experiment = "security"` (issue #26): bypass rates of plain vs adaptive attacks per detector and budget."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from advguard.cli import main
from advguard.experiments import ConfigError, parse_config

ROOT = Path(__file__).resolve().parents[1]


def test_security_smoke_config_reports_every_cell_and_reruns_from_cache(tmp_path):
    """Three detectors and a Guard of them at three budgets, TaintRadar at one patch size: every cell has a plain
    and an adaptive bypass rate, the held-out FPR is near the target, the sanity checks hold (more steps lose no
    bypass; an unbounded budget bypasses the single detectors on every image), the page and its plot are written,
    and a re-run reads every cell from the cache and gives the same figures."""
    args = ["reproduce", str(ROOT / "configs" / "security-smoke.toml"), "--out", str(tmp_path / "out")]
    args += ["--cache-dir", str(tmp_path / "cache")]
    assert main(args) == 0
    out = tmp_path / "out"
    doc = json.loads((out / "results.json").read_text())
    budgets = [b["name"] for b in doc["budgets"]]
    assert budgets == ["L-inf 4/255", "L-inf 8/255", "L2 0.5"] and doc["sanity_budget"] == "L-inf 8/255"
    rows = [*doc["rows"], doc["guard"]]
    assert [r["label"] for r in rows] == ["Confidence", "Feature Squeezing", "CNN detector", "Guard"]
    assert doc["guard"]["params"]["detectors"] == ["Confidence", "Feature Squeezing", "CNN detector"]
    assert sum(doc["folds"].values()) == doc["data"]["n_correct"] and doc["n_attack"] == 20
    for r in rows:
        assert r["n_heldout"] == doc["folds"]["attack"] and r["heldout_fpr"] <= 0.15
        for b in budgets:
            c = r["cells"][b]
            assert c["adaptive"]["n"] == 20 and 0 <= c["plain"]["bypass"] <= c["plain"]["misclassified"] <= 1
            assert 0 <= c["adaptive"]["bypass"] <= c["adaptive"]["misclassified"] <= 1
        s = r["sanity"]
        assert s["n"] == 10 and s["more_steps"]["lost"] == 0 and s["more_steps"]["bypass"] >= s["bypass"]
    # the black-box extra ran against every L-p row at the sanity budget (it queries the detector, never its gradient)
    for r in rows:
        sq = r["extra"]["Square (black-box)"]
        assert sq["attack"] == "square-bypass" and list(sq["budgets"]) == ["L-inf 8/255"]
        c = sq["budgets"]["L-inf 8/255"]
        assert c["n"] == 10 and 0 <= c["bypass"] <= c["misclassified"] <= 1 and c["mean_steps"] <= 50
    # the adaptive attacks do their job: at least as many bypasses as plain PGD summed over the budgets, and more
    # against Feature Squeezing (which flags most of plain PGD's images at the small budgets)
    for r in rows:
        assert sum(r["cells"][b]["adaptive"]["bypass"] for b in budgets) >= sum(
            r["cells"][b]["plain"]["bypass"] for b in budgets
        )
    fs = doc["rows"][1]["cells"]
    assert fs["L-inf 4/255"]["adaptive"]["bypass"] > fs["L-inf 4/255"]["plain"]["bypass"]
    for r in doc["rows"]:  # from the clean image, in steps of 1 / steps (10), not rel_stepsize 0.25 x eps = 1
        assert r["sanity"]["unbounded"]["bypass"] == 1.0 and r["sanity"]["unbounded"]["step"] == pytest.approx(0.1)
    # the patch detector gets its own row per patch size: a universal patch per batch vs the region-misleading patch
    (pr,) = doc["patch_rows"]
    assert pr["label"] == "TaintRadar" and pr["adaptive_attack"] == "region-misleading-patch"
    assert doc["n_patch_images"] == 20 and list(pr["cells"]) == ["patch 0.3"]
    for kind in ("plain", "adaptive"):
        c = pr["cells"]["patch 0.3"][kind]
        assert 0 <= c["bypass"] <= c["misclassified"] <= 1
    # TaintRadar's BPDA (a localized per-image attack) is a patch-row column, never an L-p row's extra
    bpda = pr["cells"]["patch 0.3"]["extra"]["TaintRadar BPDA"]
    assert bpda["n"] == 6 and 0 <= bpda["bypass"] <= bpda["misclassified"] <= 1 and bpda["mean_steps"] <= 20
    assert all("TaintRadar BPDA" not in r["extra"] for r in rows)
    # THEMIS's detector-aware CW, budget-free, against the one row it names
    cw = doc["rows"][0]["extra"]["THEMIS's detector-aware CW (2 paths)"]
    assert cw["attack"] == "detector-aware-cw" and list(cw["budgets"]) == ["-"]
    assert cw["budgets"]["-"]["n"] == 6 and 0 <= cw["budgets"]["-"]["bypass"] <= cw["budgets"]["-"]["misclassified"]
    assert all("THEMIS's detector-aware CW (2 paths)" not in r["extra"] for r in rows[1:])
    # a model row: PGD crafted on cifar10-cnn transferred vs PGD through the model itself (white-box is stronger)
    (mr,) = doc["model_rows"]
    assert mr["model"] == "cifar10-resnet20-pretrained" and 0 < mr["n"] <= 20 and mr["clean_accuracy"] > 0.5
    for b in budgets:
        assert mr["cells"][b]["adaptive"]["bypass"] >= mr["cells"][b]["plain"]["bypass"]
    assert (out / "bypass-vs-budget.png").read_bytes()[:4] == b"\x89PNG"
    md = (out / "results.md").read_text()
    assert "Bypass rate %: plain PGD -> adaptive attack" in md and "The papers' claims" in md
    assert "Patch detectors: bypass rate %, universal patch -> adaptive patch" in md
    assert "Square (black-box): bypass %" in md and "TaintRadar BPDA patch 0.3: bypass (target reached)" in md
    # extras beyond the sanity budget (here the budget-free detector-aware CW) get their own table, one row each
    further = md[md.index("## Further attacks: bypass %") : md.index("## The papers' claims")]
    assert "| Confidence | THEMIS's detector-aware CW (2 paths) (`detector-aware-cw`) | 6 |" in further
    assert "budget-free" in further and "Square" not in further
    assert "Defended models (no detector): misclassified %, transfer -> white-box" in md
    assert "| Guard |" in md and "3.4 %" not in md  # THEMIS's claim only where THEMIS is a row
    assert main(args) == 0
    again = json.loads((out / "results.json").read_text())
    assert again["rows"] == doc["rows"] and again["guard"] == doc["guard"] and again["patch_rows"] == doc["patch_rows"]
    assert again["model_rows"] == doc["model_rows"]
    # a patch-only table (configs/security-cifar10-vgg-patches.toml: no L-p rows) has no empty L-p sections or plot
    from advguard.experiments.security.report import build_page

    patch_md = build_page({**doc, "rows": [], "guard": None, "model_rows": []}).markdown()
    assert "Patch detectors: bypass rate %" in patch_md and "The papers' claims" in patch_md
    for gone in ("Bypass rate %: plain PGD", "bypass-vs-budget.png", "Sanity checks at", "## Details", "Further"):
        assert gone not in patch_md, gone


def test_unbounded_check_starts_clean_in_steps_of_one_over_steps():
    """A uniform start in the eps = 1 ball is a noise image (Segmentation Fault on cifar10-cnn: 8 % from there): the
    unbounded check starts from the clean image, in steps of 1 / steps unless the config sets ``unbounded_step``."""
    from advguard.experiments.security import run
    from advguard.experiments.security.options import SecurityOptions

    assert SecurityOptions(steps=50).unbounded_abs_step() == pytest.approx(0.02)
    assert SecurityOptions(steps=50, unbounded_step=0.05).unbounded_abs_step() == 0.05
    assert SecurityOptions(steps=50).unbounded_abs_step(20) == pytest.approx(0.05)  # a row's own steps
    calls = []

    class Cell:
        def adaptive(self, attack, det, det_key, params, n=None, desc=""):
            calls.append(params)
            return {"n": 4, "bypass": 1.0, "median_linf": 0.1, "seconds": 0.0, "records": np.ones((4, 1))}

    o = SecurityOptions(steps=50, steps_factor=0)  # the row's attack_params set steps = 20
    out = run.sanity_checks("C", "adaptive-confidence", None, "k", {"steps": 20, "rel_stepsize": 0.1}, Cell(), o)
    unb = calls[-1]
    assert unb["eps"] == 1.0 and unb["random_start"] is False and unb["rel_stepsize"] == pytest.approx(0.05)
    assert calls[0]["rel_stepsize"] == 0.1 and "random_start" not in calls[0]
    assert out["unbounded"]["step"] == pytest.approx(0.05)


def _doc(**security):
    return {
        "experiment": "security",
        "name": "s",
        "dataset": "cifar10",
        "model": "cifar10-cnn",
        "attack": [{"name": "fgsm", "params": {"eps": 0.03}}],
        "detector": [{"name": "confidence", "label": "C"}, {"name": "feature-squeezing", "label": "FS"}],
        "security": security,
    }


@pytest.mark.parametrize(
    "security, message",
    [
        ({"budgets": [{"norm": "linf", "eps": 8}]}, "security.budgets[1].eps: an L-inf budget is in (0, 1]"),
        ({"budgets": [{"norm": "l1", "eps": 0.1}]}, "security.budgets[1].norm"),
        ({"budgets": [{"norm": "linf", "eps": 0.1}, {"norm": "linf", "eps": 0.1}]}, "repeated budget 'L-inf 0.1'"),
        ({"attack_params": {"F S": {"steps": 3}}}, "security.attack_params.F S: 'F S' is not the label"),
        ({"guard": ["C", "X"]}, "security.guard[2]: 'X' is not the label of a [[detector]]"),
        ({"sanity_budget": "L-inf 3/255"}, "security.sanity_budget: 'L-inf 3/255' is not a budget's name"),
        ({"stepz": 3}, "security.stepz"),
        ({"extra": [{"label": "bb", "attack": "squaer"}]}, "security.extra[1].attack"),
        ({"extra": [{"label": "bb", "attack": "pgd", "budgets": ["L2 9"]}]}, "'L2 9' is not a budget's name"),
        ({"extra": [{"label": "bb", "attack": "pgd"}]}, "security.extra[1].attack: 'pgd' does not take a detector"),
        ({"unbounded": "yes"}, "security.unbounded: must be true or false"),
        ({"unbounded_step": 2}, "security.unbounded_step"),
        # attack parameters are checked when the config is read, not hours into the run
        (
            {"attack_params": {"C": {"stpes": 3}}},
            "security.attack_params.C.stpes: adaptive-confidence has no parameter 'stpes' (did you mean 'steps'?); "
            "its parameters: ",
        ),
        ({"attack_params": {"FS": {"loss": "hinge"}}}, "security.attack_params.FS.loss"),
        # what the bench passes itself is refused when read (it failed as a TypeError when the cell ran)
        (
            {"attack_params": {"C": {"progress": True}}},
            "security.attack_params.C.progress: progress is set by the bench",
        ),
        (
            {"extra": [{"label": "bb", "attack": "square-bypass", "params": {"detector": "C"}}]},
            "security.extra[1].params.detector: detector is set by the bench (the row's fitted detector)",
        ),
        (
            {"extra": [{"label": "k", "attack": "adaptive-confidence", "params": {"kappa": -1}}]},
            "security.extra[1].params.kappa",
        ),
        (
            {"extra": [{"label": "bb", "attack": "square-bypass", "params": {"querys": 5}}]},
            "security.extra[1].params.querys: square-bypass has no parameter 'querys' (did you mean 'queries'?)",
        ),
        (  # a localized attack is a patch-row column: refused where no patch detector is, and at budgets
            {"extra": [{"label": "b", "attack": "taintradar-bpda", "detectors": ["C"], "budgets": ["L2 0.5"]}]},
            "security.extra[1].budgets: 'taintradar-bpda' is localized",
        ),
        (
            {"extra": [{"label": "b", "attack": "taintradar-bpda", "detectors": ["C"]}]},
            "security.extra[1].detectors: 'taintradar-bpda' is localized: it is a column of the patch detectors' rows",
        ),
        ({"model": [{"label": "m", "model": "gtsrb-cnn-dw5"}]}, "'gtsrb-cnn-dw5' classifies 'gtsrb', not the config's"),
        ({"model": [{"label": "m", "model": "gtsrb-cnn-dw55"}]}, "security.model[1].model"),
        ({"model": [{"label": "m", "model": "cifar10-cnn"}] * 2}, "security.model[2].label: repeated label 'm'"),
    ],
)
def test_security_config_errors_name_the_key(security, message):
    with pytest.raises(ConfigError, match=None) as e:
        parse_config(_doc(**security))
    assert message in str(e.value)


def test_security_config_fractions_need_three_shares():
    doc = {**_doc(), "fractions": [0.5, 0.5]}
    with pytest.raises(ConfigError) as e:
        parse_config(doc)
    assert "fractions" in str(e.value)
