"""The grid's artefacts: results.json / .csv, and its results page (Markdown + HTML) with one ROC plot per attack."""

from __future__ import annotations

import csv
import io
import re
from pathlib import Path
from typing import Any

from ..._atomic import atomic_path
from ...metrics import peak_memory_note
from ..common import write_results
from ..page import Page
from ..page import pct as _pct

CSV_FIELDS = [
    "attack",
    "detector",
    "decision_model",
    "n_clean",
    "n_adv",
    "auc",
    "auc_ci_low",
    "auc_ci_high",
    "tpr_at_fpr_1",
    "tpr_at_fpr_5",
    "tpr_at_fpr_10",
    "threshold",
    "detection_rate",
    "fpr",
    "eer",
    "ms_per_image",
    "passes_per_image",
    "peak_mb",
    "skipped",
]


def _slug(s: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", s).strip("-").lower() or "x"


def _row(c: dict[str, Any]) -> dict[str, Any]:
    cost = c.get("cost", {})
    ci = c.get("auc_ci95", [None, None])
    return {
        "attack": c["attack"],
        "detector": c["detector"],
        "decision_model": c.get("decision_model") or "",
        "n_clean": c.get("n_clean"),
        "n_adv": c.get("n_adv"),
        "auc": c.get("auc"),
        "auc_ci_low": ci[0],
        "auc_ci_high": ci[1],
        "tpr_at_fpr_1": c.get("tpr_at_fpr_1"),
        "tpr_at_fpr_5": c.get("tpr_at_fpr_5"),
        "tpr_at_fpr_10": c.get("tpr_at_fpr_10"),
        "threshold": c.get("threshold"),
        "detection_rate": c.get("detection_rate"),
        "fpr": c.get("fpr"),
        "eer": c.get("eer"),
        "ms_per_image": cost.get("ms_per_image"),
        "passes_per_image": cost.get("passes_per_image"),
        "peak_mb": cost.get("peak_mb"),
        "skipped": c.get("skipped", ""),
    }


def results_table(doc: dict[str, Any]) -> tuple[list[str], list[list[Any]]]:
    header = [
        "attack",
        "detector",
        "decision",
        "AUC % (95 % CI)",
        "TPR@1%",
        "TPR@5%",
        "TPR@10%",
        "det. rate % / FPR % @ cal.",
        "ms/img",
        "passes/img",
        "peak MB",
        "n clean/adv (test)",
    ]
    rows = []
    for c in doc["cells"]:
        if c.get("skipped"):
            rows.append(
                [c["attack"], c["detector"], c.get("decision_model") or "-", f"skipped: {c['skipped']}"] + ["-"] * 8
            )
            continue
        cost = c["cost"]
        rows.append(
            [
                c["attack"],
                c["detector"],
                c.get("decision_model") or "-",
                f"{100 * c['auc']:.1f} ({100 * c['auc_ci95'][0]:.1f}-{100 * c['auc_ci95'][1]:.1f})",
                _pct(c["tpr_at_fpr_1"]),
                _pct(c["tpr_at_fpr_5"]),
                _pct(c["tpr_at_fpr_10"]),
                f"{_pct(c['detection_rate'])} / {_pct(c['fpr'])}",
                f"{cost['ms_per_image']:.2f}",
                f"{cost['passes_per_image']:.1f}",
                f"{cost['peak_mb']:.0f}",
                f"{c['n_clean']}/{c['n_adv']}",
            ]
        )
    return header, rows


def plot_roc(doc: dict[str, Any], attack: str) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4.8, 4.2), dpi=110)
    for c in doc["cells"]:
        if c["attack"] != attack or c.get("skipped"):
            continue
        lab = c["detector"] + (f" ({c['decision_model']})" if c.get("decision_model") else "")
        ax.plot(c["roc"]["fpr"], c["roc"]["tpr"], label=f"{lab}: AUC {100 * c['auc']:.1f}%")
    ax.plot([0, 1], [0, 1], ls=":", c="grey", lw=1)
    fpr = doc["config"]["fpr"]
    ax.axvline(fpr, ls="--", c="grey", lw=0.8)
    ax.set(
        xlabel="false-positive rate (clean)",
        ylabel="true-positive rate (adversarial)",
        xlim=(0, 1),
        ylim=(0, 1.01),
        title=f"ROC: {attack}",
    )
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


def build_page(doc: dict[str, Any], pngs: dict[str, bytes]) -> Page:
    """The grid's results page: data and protocol, adversarial sets, the detection table, ROC curves, config."""
    p, d, cfg = doc["provenance"], doc["data"], doc["config"]
    header, rows = results_table(doc)
    page = Page(cfg.get("title") or cfg["name"])
    page.text(
        "\n".join(
            [
                f"- Data: {d['dataset']} {d['split']} split ({d['source']}); {d['n_images']} images drawn, "
                f"{d['n_correct']} correctly classified by `{cfg['model']}` and attacked.",
                f"- Split: {int(100 * cfg['fractions'][0])}/{int(100 * cfg['fractions'][1])} by clean-image id "
                f"(a clean image and its adversarial versions never straddle fit and test); "
                f"threshold calibrated on clean fitting images only for a target FPR of {100 * cfg['fpr']:.0f} %.",
                f"- Machine: {p['machine']}. Commit `{p['commit']}`, {p['date']}.",
                f"- Command: `{p['command']}`",
                f"- Classifier forward pass alone: {doc['forward_floor']['ms_per_image']:.3f} ms/image.",
                f"- {peak_memory_note(p.get('peak_memory'))}",
            ]
        )
    )
    page.h2("Adversarial sets")
    page.table(
        ["attack", "attacked", "successful (kept)", "median L2", "median L-inf"],
        [
            [k, v["n_attacked"], v["n_adv"], f"{v['median_l2']:.3f}", f"{v['median_linf']:.4f}"]
            for k, v in doc["advsets"].items()
        ],
    )
    page.h2("Detection (test fold)")
    page.table(header, rows)
    if pngs:
        page.h2("ROC curves")
        for attack, png in pngs.items():
            page.figure(f"roc-{_slug(attack)}.png", png, f"ROC {attack}")
    page.configuration(doc)
    return page


def write_artefacts(doc: dict[str, Any], out: Path) -> dict[str, Path]:
    """Write every artefact atomically into ``out``; returns their paths."""
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": write_results(doc, out)}
    with atomic_path(out / "results.csv") as tmp:
        with open(tmp, "w", newline="", encoding="utf-8") as f:
            w = csv.DictWriter(f, fieldnames=CSV_FIELDS)
            w.writeheader()
            for c in doc["cells"]:
                w.writerow(_row(c))
    paths["csv"] = out / "results.csv"
    pngs = {}
    for attack in dict.fromkeys(c["attack"] for c in doc["cells"]):
        if any(c["attack"] == attack and not c.get("skipped") for c in doc["cells"]):
            pngs[attack] = plot_roc(doc, attack)
    paths.update(build_page(doc, pngs).write(out))
    return paths
