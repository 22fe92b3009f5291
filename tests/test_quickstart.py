"""`advguard quickstart`, the main job install.sh runs: a guard in front of cifar10-cnn checks sample images."""

from __future__ import annotations

import json

from advguard.cli import main


def test_quickstart_writes_the_guard_the_samples_and_a_report_that_adds_up(tmp_path, capsys):
    out = tmp_path / "qs"
    assert main(["quickstart", "--out", str(out), "--n-images", "4"]) == 0
    printed = capsys.readouterr().out
    assert "clean:" in printed and "report.html" in printed
    summary = json.loads((out / "summary.json").read_text())
    lines = [json.loads(line) for line in (out / "detect.jsonl").read_text().splitlines()]  # strict JSON
    assert summary["per_source"]["clean"]["images"] == 4
    assert (
        sum(s["images"] for s in summary["per_source"].values())
        == len(lines)
        == len(list((out / "images").glob("*.png")))
    )
    for src, s in summary["per_source"].items():
        mine = [r for r in lines if r["source"] == src]
        assert s["flagged"] == sum(r["verdict"] != "clean" for r in mine) and len(mine) == s["images"]
    assert summary["calibration_images"] == 375 and summary["detectors"] == [
        "feature-squeezing",
        "confidence",
        "erase-restore-distance",
    ]
    assert (out / "report.html").read_text().count("data:image/png;base64,") == 1
    assert "advguard quickstart" in (out / "report.md").read_text()
    assert (out / "guard.advguard").stat().st_size > 0 and (out / "guard.toml").read_text().startswith("model")
    assert main(["quickstart", "--out", str(out), "--n-images", "0"]) == 2  # refused, named
    assert "--n-images must be in 1..1000" in capsys.readouterr().err
