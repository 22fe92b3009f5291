"""`advguard bench` on the smoke configuration produces every artefact; configs are validated."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from advguard.bench import ConfigError, load_config, parse_config
from advguard.cli import main

ROOT = Path(__file__).resolve().parents[1]


def test_smoke_config_produces_every_artefact(tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["bench", str(ROOT / "configs" / "smoke.toml"), "--out", str(out),
                 "--cache-dir", str(tmp_path / "cache")]) == 0
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
    # Re-running reuses the cached sets and features and gives identical numbers.
    assert main(["bench", str(ROOT / "configs" / "smoke.toml"), "--out", str(out),
                 "--cache-dir", str(tmp_path / "cache")]) == 0
    again = json.loads((out / "results.json").read_text())
    assert [c["auc"] for c in again["cells"]] == [c["auc"] for c in doc["cells"]]


def test_shipped_configs_are_valid():
    for p in sorted((ROOT / "configs").glob("*.toml")):
        cfg = load_config(p)
        assert cfg.attacks and cfg.detectors, p


@pytest.mark.parametrize("doc, message", [
    ({"name": "x", "dataset": "cifar10", "model": "cifar10-cnn", "atack": []}, "did you mean 'attack'"),
    ({"name": "x", "dataset": "cifar-10", "model": "cifar10-cnn"}, "unknown dataset"),
    ({"name": "x", "dataset": "cifar10", "model": "cifar10-cnn", "attack": [{"name": "fgsn"}],
      "detector": [{"name": "confidence"}]}, "unknown attack 'fgsn'"),
    ({"name": "x", "dataset": "cifar10", "model": "cifar10-cnn", "attack": [{"name": "fgsm"}],
      "detector": [{"name": "confidence", "decision_models": ["svm"]}]}, "unknown decision model 'svm'"),
    ({"name": "x", "dataset": "cifar10", "model": "cifar10-cnn"}, "at least one"),
])
def test_bad_configs_name_the_problem(doc, message):
    with pytest.raises(ConfigError, match=message):
        parse_config(doc)


def test_bad_toml_file(tmp_path):
    p = tmp_path / "bad.toml"
    p.write_text("name = [unclosed")
    with pytest.raises(ConfigError, match="invalid TOML"):
        load_config(p)
