"""`advguard bench` on the smoke configuration produces every artefact; configs are validated."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from advguard.cli import main
from advguard.experiments import ConfigError, load_config, parse_config

ROOT = Path(__file__).resolve().parents[1]


def test_smoke_config_produces_every_artefact(tmp_path, capsys):
    out = tmp_path / "out"
    assert (
        main(["bench", str(ROOT / "configs" / "smoke.toml"), "--out", str(out), "--cache-dir", str(tmp_path / "cache")])
        == 0
    )
    for name in ("results.json", "results.csv", "results.md", "report.html"):
        assert (out / name).stat().st_size > 0, name
    pngs = sorted(out.glob("roc-*.png"))
    assert len(pngs) == 2 and all(p.read_bytes()[:4] == b"\x89PNG" for p in pngs)
    doc = json.loads((out / "results.json").read_text())
    assert len(doc["cells"]) == 4 and doc["provenance"]["machine"] and doc["data"]["source"] == "cifar10-jpeg"
    for c in doc["cells"]:
        assert 0 <= c["auc"] <= 1 and c["cost"]["passes_per_image"] >= 1 and c["n_adv"] > 0
    rows = list(csv.DictReader(open(out / "results.csv")))
    assert len(rows) == 4
    html = (out / "report.html").read_text()
    assert html.count("data:image/png;base64,") == 2 and "Feature Squeezing" in html and "[[attack]]" in html
    # the page says how its "peak MB" column was measured, with the method recorded in the provenance
    from advguard.metrics import memory_method

    assert doc["provenance"]["peak_memory"] == memory_method()
    assert f"method `{memory_method()}`" in (out / "results.md").read_text()
    assert all(c["cost"]["peak_mb"] >= 0 for c in doc["cells"])
    # Re-running reuses the cached sets and features and gives identical numbers.
    assert (
        main(["bench", str(ROOT / "configs" / "smoke.toml"), "--out", str(out), "--cache-dir", str(tmp_path / "cache")])
        == 0
    )
    again = json.loads((out / "results.json").read_text())
    assert [c["auc"] for c in again["cells"]] == [c["auc"] for c in doc["cells"]]


def test_shipped_configs_are_valid():
    for p in sorted((ROOT / "configs").glob("*.toml")):
        cfg = load_config(p)
        assert cfg.attacks or cfg.experiment in ("taintradar", "blurnet"), p  # these two need no [[attack]]
        assert cfg.detectors or cfg.experiment != "grid", p


@pytest.mark.parametrize(
    "doc, message",
    [
        ({"name": "x", "dataset": "cifar10", "model": "cifar10-cnn", "atack": []}, "did you mean 'attack'"),
        ({"name": "x", "dataset": "cifar-10", "model": "cifar10-cnn"}, "unknown dataset"),
        (
            {
                "name": "x",
                "dataset": "cifar10",
                "model": "cifar10-cnn",
                "attack": [{"name": "fgsn"}],
                "detector": [{"name": "confidence"}],
            },
            "unknown attack 'fgsn'",
        ),
        (
            {
                "name": "x",
                "dataset": "cifar10",
                "model": "cifar10-cnn",
                "attack": [{"name": "fgsm"}],
                "detector": [{"name": "confidence", "decision_models": ["svm"]}],
            },
            "unknown decision model 'svm'",
        ),
        ({"name": "x", "dataset": "cifar10", "model": "cifar10-cnn"}, "at least one"),
        (
            {
                "name": "x",
                "dataset": "cifar10",
                "model": "cifar10-cnn",
                "experiment": "imageopz",
                "attack": [{"name": "fgsm"}],
            },
            "unknown experiment 'imageopz'",
        ),
        (
            {
                "name": "x",
                "dataset": "cifar10",
                "model": "cifar10-cnn",
                "experiment": "imageops",
                "attack": [{"name": "fgsm"}],
                "imageops": {"families": ["jpg"]},
            },
            "unknown operation family 'jpg'",
        ),
        (
            {
                "name": "x",
                "dataset": "cifar10",
                "model": "cifar10-cnn",
                "experiment": "nguyen",
                "attack": [{"name": "fgsm"}],
                "fractions": [0.8, 0.2],
            },
            "train, dev, eval",
        ),
        (
            {
                "name": "x",
                "dataset": "cifar10",
                "model": "cifar10-cnn",
                "experiment": "nguyen",
                "attack": [{"name": "fgsm"}],
                "cnn": [{"backbone": "resnet"}],
            },
            "unknown CNN detector backbone",
        ),
        (
            {
                "name": "x",
                "dataset": "cifar10",
                "model": "cifar10-cnn",
                "experiment": "themis",
                "attack": [{"name": "fgsm"}],
                "themis": {"models": ["cifar10-resnet"]},
            },
            "unknown model 'cifar10-resnet'",
        ),
        (
            {
                "name": "x",
                "dataset": "cifar10",
                "model": "cifar10-cnn",
                "experiment": "themis",
                "attack": [{"name": "fgsm"}],
                "themis": {"compare": ["lid"]},
            },
            "unknown detector 'lid'",
        ),
        (
            {
                "name": "x",
                "dataset": "cifar10",
                "model": "cifar10-cnn",
                "experiment": "themis",
                "attack": [{"name": "fgsm"}],
                "themis": {"n": 5, "ns": [3, 7]},
            },
            "every n must be in 1..n",
        ),
        (
            {
                "name": "x",
                "dataset": "cifar10",
                "model": "cifar10-cnn",
                "experiment": "themis",
                "attack": [{"name": "fgsm"}],
                "themis": {"adaptive": {"restart": 3}},
            },
            "did you mean 'restarts'",
        ),
        (
            {
                "name": "x",
                "dataset": "cifar10",
                "model": "cifar10-cnn",
                "attack": [{"name": "fgsm"}],
                "detector": [{"name": "confidence"}],
                "themis": {"n": 5},
            },
            "belongs to experiment",
        ),
        (
            {
                "name": "x",
                "dataset": "cifar10",
                "model": "cifar10-cnn",
                "experiment": "themis",
                "attack": [{"name": "fgsm"}],
                "themis": {"classifiers": ["svc", {"model": "svc"}]},
            },
            "label 'svc' is used twice",
        ),
        (
            {
                "name": "x",
                "dataset": "cifar10",
                "model": "cifar10-cnn",
                "experiment": "themis",
                "attack": [{"name": "fgsm"}],
                "themis": {"table1_train_on": ["CW"]},
            },
            "'CW' is not the label of an \\[\\[attack\\]\\]",
        ),
        (
            {
                "name": "x",
                "dataset": "cifar10",
                "model": "cifar10-cnn",
                "experiment": "themis",
                "attack": [{"name": "fgsm"}],
                "themis": {"classifiers": [{"model": "svc", "param": {"C": 5}}]},
            },
            "did you mean 'params'",
        ),
        (
            {
                "name": "x",
                "dataset": "cifar10",
                "model": "cifar10-cnn",
                "experiment": "themis",
                "attack": [{"name": "fgsm"}],
                "themis": {"classifiers": [{"model": "svc", "params": {"C": -1.0}}]},
            },
            "'C' parameter of SVC",
        ),
        (
            {
                "name": "x",
                "dataset": "cifar10",
                "model": "cifar10-cnn",
                "experiment": "themis",
                "attack": [{"name": "fgsm"}],
                "themis": {"classifiers": [{"model": "adaboost", "params": {"scale": False}}]},
            },
            "has no scaler",
        ),
        (
            {
                "name": "x",
                "dataset": "cifar10",
                "model": "cifar10-cnn",
                "experiment": "themis",
                "attack": [{"name": "fgsm"}],
                "themis": {"classifiers": [{"model": "svc", "grid": {"C": 5}}]},
            },
            "non-empty array",
        ),
        (
            {
                "name": "x",
                "dataset": "cifar10",
                "model": "cifar10-cnn",
                "experiment": "themis",
                "attack": [{"name": "fgsm"}],
                "themis": {"learning_curve": {"sizes": [10], "classifiers": ["svm"]}},
            },
            "unknown decision model 'svm'",
        ),
        (
            {
                "name": "x",
                "dataset": "cifar10",
                "model": "cifar10-cnn",
                "experiment": "taintradar",
                "taintradar": {"misleading": {"lambda": [0.5]}},
            },
            "did you mean 'lambdas'",
        ),
        (
            {
                "name": "x",
                "dataset": "cifar10",
                "model": "cifar10-cnn",
                "experiment": "taintradar",
                "taintradar": {"misleading": {"lambdas": [1.5]}},
            },
            "weights in \\[0, 1\\]",
        ),
        (
            {
                "name": "x",
                "dataset": "cifar10",
                "model": "cifar10-cnn",
                "experiment": "taintradar",
                "taintradar": {"bpda": {"n": 500}},
            },
            "n must be in 1..n_victims = 400",
        ),
    ],
)
def test_bad_configs_name_the_problem(doc, message):
    with pytest.raises(ConfigError, match=message):
        parse_config(doc)


def test_bad_toml_file(tmp_path):
    p = tmp_path / "bad.toml"
    p.write_text("name = [unclosed")
    with pytest.raises(ConfigError, match="invalid TOML"):
        load_config(p)


def test_nguyen_experiment_smoke(tmp_path):
    """Nguyen et al.'s protocol end to end on 80 images: every table, both plots, cached re-run identical."""
    out, cache = tmp_path / "out", tmp_path / "cache"
    args = ["reproduce", str(ROOT / "configs" / "nguyen-smoke.toml"), "--out", str(out), "--cache-dir", str(cache)]
    assert main(args) == 0
    doc = json.loads((out / "results.json").read_text())
    assert [r["attack"] for r in doc["table1"]] == ["FGSM", "BIM"] and doc["table1"][1]["targeted"]
    for r in doc["table1"]:
        assert 0 < r["n_kept"] <= r["n_success"] <= r["n_attacked"]
        assert r["n_train"] + r["n_dev"] + r["n_eval"] == r["n_kept"]
    normal = doc["table3"]["Normal images"]
    assert len(normal) == 39 and normal[0] == 0  # normal images are correctly classified before any operation
    assert doc["table3"]["FGSM"][0] == doc["table3_n"]["FGSM"]  # adversarial ones all misclassified
    assert len(doc["table4"]) == 2 * 3 * 2 and all(0 <= r["eval_accuracy"] <= 1 for r in doc["table4"])
    assert {r["k"] for r in doc["k_ablation"]} == {1, 3, 5}  # the ablation always includes the default k = 5
    assert [r["ops"] for r in doc["table5"]] == ["jpeg", "scale", "jpeg+scale"]
    kinds = [r["kind"] for r in doc["table6"]]
    assert kinds == ["image-ops", "image-ops", "cnn"]
    html = (out / "report.html").read_text()
    assert html.count("data:image/png;base64,") == 2 and "Table 6" in html and "paper" in html
    md = (out / "results.md").read_text()
    assert "(table3-curves.png)" in md and "Command:" in md and "Machine:" in md
    assert main(args) == 0  # everything cached: identical numbers
    again = json.loads((out / "results.json").read_text())
    assert again["table4"] == doc["table4"] and again["table6"][2]["accuracy"] == doc["table6"][2]["accuracy"]


def test_themis_experiment_smoke(tmp_path):
    """THEMIS's protocol on two models end to end: every table, the adaptive curve, cached re-run identical."""
    out, cache = tmp_path / "out", tmp_path / "cache"
    args = ["bench", str(ROOT / "configs" / "themis-smoke.toml"), "--out", str(out), "--cache-dir", str(cache)]
    assert main(args) == 0
    doc = json.loads((out / "results.json").read_text())
    assert doc["table1_train_on"] == ["CW-L2 κ=0.0"]
    labels = ("svc", "adaboost", "svc authors + train-split clean", "svc grid")
    assert {(r["model"], r["classifier"]) for r in doc["table1"]} == {
        (m, c) for m in ("cifar10-cnn", "cifar10-resnet20") for c in labels
    }
    for m, s in doc["sets"].items():  # the train-split clean images: correctly classified ones of 30 drawn
        assert s["extra_clean"]["split"] == "train" and 0 < s["extra_clean"]["correct"] <= 30
        # the cost table's feature cost is measured in this run beside the floor (not read from the cache's build)
        assert set(s["er_cost_now"]) == {"telea", "median"}
        assert all(c["ms_per_image"] > s["forward_floor"]["ms_per_image"] > 0 for c in s["er_cost_now"].values())
        extra = next(r for r in doc["table1"] if r["model"] == m and r["extra_clean"])
        plain = next(r for r in doc["table1"] if r["model"] == m and r["classifier"] == "svc")
        ex = s["extra_clean"]
        assert ex["fit"] + ex["held_out"] == ex["correct"] and ex["held_out"] > 0
        assert extra["n_clean_train"] == plain["n_clean_train"] + ex["fit"]
        # every row's FPR on held-out train-split images (the model was trained on them)
        assert all(
            r["n_trainsplit_test"] == ex["held_out"] and 0 <= r["fpr_trainsplit"] <= 1
            for r in doc["table1"] + doc["vote"]
            if r["model"] == m
        )
        assert extra["params"] == {"scale": False, "C": 5.0, "gamma": 0.01}
        assert next(r for r in doc["table1"] if r["model"] == m and r["classifier"] == "svc grid")["params"]["C"] in (
            1.0,
            5.0,
        )
    # table entries without all_tables stay in Table 1 only
    assert {r["classifier"] for r in doc["table3"]} == {r["classifier"] for r in doc["table4"]} == {"svc", "adaboost"}
    assert {v["model"] for v in doc["vote"]} == set(doc["sets"]) and all(0 <= v["fpr"] <= 1 for v in doc["vote"])
    assert {(r["pairs"], r["classifier"]) for r in doc["learning_curve"]} == {
        (k, c) for k in (3, 6) for c in ("svc", "svc aligned")
    }
    assert all(0 <= r["auc_min"] <= r["auc_mean"] <= r["auc_max"] <= 1 for r in doc["learning_curve"])
    for s in doc["sets"].values():
        att = s["attacks"]
        # balanced: the attacks share the clean set and attack disjoint parts of it
        assert sum(v["n_attacked"] for v in att.values()) == s["n_correct"]
        assert all(0 < v["n_adv"] <= v["n_attacked"] for v in att.values())
    for r in doc["table1"]:
        assert 0 <= r["fpr"] <= 1 and set(r["dr"]) == {"CW-L2 κ=0.0", "DeepFool"}
        assert ("median_baseline" in r) == (r["classifier"] in ("svc", "adaboost"))
    assert {(r["train"], r["test"]) for r in doc["table3"]} == {
        (a, b) for a in ("cifar10-cnn", "cifar10-resnet20") for b in ("cifar10-cnn", "cifar10-resnet20")
    }
    assert sorted({r["n"] for r in doc["table4"]}) == [2, 5]
    assert {r["metric"] for r in doc["table6"]} == {"kl", "wd"} and doc["table2"][0]["detector"] == "feature-squeezing"
    ad = doc["adaptive"][0]
    assert ad["n_images"] == 4 and len(ad["bypass_curve"]) == 2 and 0 <= ad["bypass_rate"] <= 1
    assert ad["bypass_curve"] == sorted(ad["bypass_curve"])  # cumulative
    html = (out / "report.html").read_text()
    assert html.count("data:image/png;base64,") == 5 and "Table 3" in html and "paper" in html
    assert "Whose gap" in html and "label-change vote" in html and "Learning curve" in html
    assert main(args) == 0  # everything cached (sets, E&R outputs, adaptive chunks): identical numbers
    again = json.loads((out / "results.json").read_text())
    assert again["table1"] == doc["table1"] and again["adaptive"][0]["bypass_curve"] == ad["bypass_curve"]


def test_segfault_experiment_smoke(tmp_path):
    """Segmentation Fault's protocol end to end: families split the clean images, every table, cached re-run."""
    out, cache = tmp_path / "out", tmp_path / "cache"
    args = ["bench", str(ROOT / "configs" / "segfault-smoke.toml"), "--out", str(out), "--cache-dir", str(cache)]
    assert main(args) == 0
    doc = json.loads((out / "results.json").read_text())
    assert doc["families"] == ["FGSM", "PGD eps=0.02"]
    fgsm = doc["counts"]["FGSM"]["per_attack"]
    n_correct = next(iter(fgsm.values()))["n_correct"]
    assert sum(s["n_attacked"] for s in fgsm.values()) == n_correct  # the two eps attack disjoint halves
    assert doc["counts"]["PGD eps=0.02"]["per_attack"]["PGD eps=0.02"]["n_attacked"] == n_correct
    want = {f"{c}|{g}|{fl}" for c in ("xgb", "rf") for g in doc["families"] for fl in ("1d", "10d", "multilayer")}
    assert set(doc["auc"]["ML-LOO (pixel)"]) == want
    assert {k.split("|")[0] for k in doc["auc"]["SLIC n_segments=32"]} == {"xgb"}
    assert all(0 <= v <= 1 for u in doc["auc"].values() for v in u.values())
    t = doc["timing"]["ML-LOO (pixel)"]
    assert [t[fl]["dims"] for fl in ("1d", "10d", "multilayer")] == [1, 10, 4010]
    assert t["10d"]["mean_units"] == 1024 and 1 < doc["timing"]["SLIC n_segments=32"]["10d"]["mean_units"] <= 64
    assert doc["timing"]["SLIC n_segments=32"]["10d"]["images"] == 4  # timing_images
    # value_range = 255: the paper's row beside ours; the segment counts of the paper's grid on [0, 1] / [0, 255]
    assert doc["paper_rows"]["Felzenszwalb scale=100 [0, 255]"] == "Felzenszwalb scale=100"
    sc = doc["segment_counts"]["mean_segments"]
    assert len(sc) == 13 and set(sc["SLIC n_segments=64"]) == {"1", "paper"}
    qs = sc["Quickshift sigma=0 max_dist=10"]
    assert qs["255"] > 10 * qs["1"] and round(qs["paper"]) == 513
    html = (out / "report.html").read_text()
    assert html.count("data:image/png;base64,") == 1 and "Table 7" in html and "(0.810)" in html
    assert "(0.834)" in html and "implied by Table 7" in html  # Felzenszwalb scale=100's FGSM multi-layer AUC
    from advguard.metrics import memory_method

    assert f"method `{memory_method()}`" in (out / "results.md").read_text()  # Table 7 says how peak MB is measured
    assert main(args) == 0  # features cached per batch: identical numbers
    assert json.loads((out / "results.json").read_text())["auc"] == doc["auc"]


def test_taintradar_smoke_config(tmp_path):
    """experiment = "taintradar": patch grid + variants + an L-inf attack, Table II beside the paper's, resumable."""
    from advguard.cli import main

    out, cache = tmp_path / "out", tmp_path / "cache"
    args = ["bench", str(ROOT / "configs" / "taintradar-smoke.toml"), "--out", str(out), "--cache-dir", str(cache)]
    assert main(args) == 0
    doc = json.loads((out / "results.json").read_text())
    assert doc["counts"]["victims"] == 8 and doc["counts"]["calibration"] == 40
    grid = [c for c in doc["cells"] if not c["variant"]]
    assert {(c["batch"], c["position"]) for c in grid} == {(b, p) for b in (4, 8) for p in ("bottom-right", "random")}
    assert all(c["attempts"] == 8 and 0 <= c["sr"] <= 1 for c in doc["cells"])
    assert {c["setting"] for c in doc["cells"] if c["variant"]} == {"two patches", "star"}
    op = doc["operating_points"]["0.1"]
    assert 1 <= op["k"] <= 9 and np.asarray(doc["fpr_table"])[op["k"] - 1, op["delta_r"]] <= 0.1
    assert doc["attacks"][0]["attack"] == "FGSM eps=0.06" and doc["attacks"][0]["n_adv"] > 0
    mis = doc["misleading"]  # Figure 6 rows: one per lambda, 8 victims each
    assert [r["lambda"] for r in mis] == [0.0, 0.9] and all(r["attempts"] == 8 for r in mis)
    assert all(0 <= r["sr_with_taintradar"] <= r["sr"] <= 1 and 0 <= r["iou"] <= 1 for r in mis)
    assert [r["attack"] for r in doc["bpda"]] == ["localized attack, no detector term", "BPDA end-to-end"]
    assert all(r["n"] == 8 and 0 <= r["success_with_taintradar"] <= r["target_rate"] for r in doc["bpda"])
    html = (out / "report.html").read_text()
    assert "Table II" in html and "Figure 6" in html and "BPDA end-to-end" in html
    assert (out / "figure6_region_misleading.png").exists()
    assert (out / "patches.png").exists() and (out / "auc_vs_k.png").exists()
    assert all(c["taintradar_auc"] == c["taintradar_auc_by_k"][op["k"] - 1] for c in doc["cells"] if c["n_adv"])
    assert main(args) == 0  # patches, rank changes, SentiNet points and adaptive runs cached: identical numbers
    again = json.loads((out / "results.json").read_text())
    assert again["cells"] == doc["cells"] and again["misleading"] == mis and again["bpda"] == doc["bpda"]


def test_blurnet_names_untrained_models_before_any_work(tmp_path, monkeypatch):
    from advguard.experiments import run as run_bench
    from advguard.models import ZOO

    monkeypatch.setattr(type(ZOO["gtsrb-cnn-dw5"]), "available", property(lambda s: s.name != "gtsrb-cnn-dw5"))
    cfg = load_config(ROOT / "configs" / "blurnet-gtsrb.toml")
    with pytest.raises(ConfigError, match="no weights yet for gtsrb-cnn-dw5; make them with `advguard train"):
        run_bench(cfg, out=tmp_path / "out", cache_dir=tmp_path / "cache")
    assert not (tmp_path / "out").exists()


def test_blurnet_smoke_config(tmp_path):
    """experiment = "blurnet": RP2 stickers per target, Tables 1 and 2 beside the paper's, figures, resumable."""
    from advguard.cli import main

    out, cache = tmp_path / "out", tmp_path / "cache"
    args = ["bench", str(ROOT / "configs" / "blurnet-smoke.toml"), "--out", str(out), "--cache-dir", str(cache)]
    assert main(args) == 0
    doc = json.loads((out / "results.json").read_text())
    assert len(doc["signs"]) == 6 and doc["targets"] == [1, 38]
    assert [r["model"] for r in doc["table1"]] == ["gtsrb-cnn", "gtsrb-cnn-input-blur3"]
    t2 = {(r["model"], r.get("mask")) for r in doc["table2"]}
    assert t2 == {("gtsrb-cnn", None), ("gtsrb-cnn-feature-blur3", None), ("gtsrb-cnn", "l1")}
    base = doc["table2"][0]
    assert base["acc_signs"] == 1.0 and abs(base["acc_test"] - 0.9572) < 0.002  # the card's full-test accuracy
    assert base["avg_success"] >= 0.5 and 0 < base["l2"] < 0.6  # 25 steps already flip most signs
    assert doc["table1"][0]["avg_success"] == base["avg_success"]  # the source model sees its own stickers
    html = (out / "report.html").read_text()
    assert "Table 1" in html and "Table 2" in html and html.count("data:image/png;base64,") == 3
    assert len(list((out / "stickers").glob("*.png"))) == 3
    assert main(args) == 0  # stickers cached: identical numbers
    assert json.loads((out / "results.json").read_text())["table2"] == doc["table2"]
