"""Writing a benchmark's artefacts: results.json/.csv, a Markdown table, ROC PNGs and one self-contained HTML report."""
from __future__ import annotations

import base64
import csv
import html
import io
import json
import re
from pathlib import Path

from .._atomic import atomic_path, atomic_write_text
from ..report import markdown_table

CSV_FIELDS = ["attack", "detector", "decision_model", "n_clean", "n_adv", "auc", "auc_ci_low", "auc_ci_high",
              "tpr_at_fpr_1", "tpr_at_fpr_5", "tpr_at_fpr_10", "threshold", "detection_rate", "fpr", "eer",
              "ms_per_image", "passes_per_image", "peak_mb", "skipped"]


def _slug(s: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", s).strip("-").lower() or "x"


def _row(c: dict) -> dict:
    cost = c.get("cost", {})
    ci = c.get("auc_ci95", [None, None])
    return {"attack": c["attack"], "detector": c["detector"], "decision_model": c.get("decision_model") or "",
            "n_clean": c.get("n_clean"), "n_adv": c.get("n_adv"), "auc": c.get("auc"), "auc_ci_low": ci[0],
            "auc_ci_high": ci[1], "tpr_at_fpr_1": c.get("tpr_at_fpr_1"), "tpr_at_fpr_5": c.get("tpr_at_fpr_5"),
            "tpr_at_fpr_10": c.get("tpr_at_fpr_10"), "threshold": c.get("threshold"),
            "detection_rate": c.get("detection_rate"), "fpr": c.get("fpr"), "eer": c.get("eer"),
            "ms_per_image": cost.get("ms_per_image"), "passes_per_image": cost.get("passes_per_image"),
            "peak_mb": cost.get("peak_mb"), "skipped": c.get("skipped", "")}


def _pct(v) -> str:
    return "-" if v is None else f"{100 * v:.1f}"


def results_table(doc: dict) -> tuple[list[str], list[list]]:
    header = ["attack", "detector", "decision", "AUC % (95 % CI)", "TPR@1%", "TPR@5%", "TPR@10%",
              "det. rate % / FPR % @ cal.", "ms/img", "passes/img", "peak MB", "n clean/adv (test)"]
    rows = []
    for c in doc["cells"]:
        if c.get("skipped"):
            rows.append([c["attack"], c["detector"], c.get("decision_model") or "-", f"skipped: {c['skipped']}"]
                        + ["-"] * 8)
            continue
        cost = c["cost"]
        rows.append([
            c["attack"], c["detector"], c.get("decision_model") or "-",
            f"{100 * c['auc']:.1f} ({100 * c['auc_ci95'][0]:.1f}-{100 * c['auc_ci95'][1]:.1f})",
            _pct(c["tpr_at_fpr_1"]), _pct(c["tpr_at_fpr_5"]), _pct(c["tpr_at_fpr_10"]),
            f"{_pct(c['detection_rate'])} / {_pct(c['fpr'])}", f"{cost['ms_per_image']:.2f}",
            f"{cost['passes_per_image']:.1f}", f"{cost['peak_mb']:.0f}", f"{c['n_clean']}/{c['n_adv']}",
        ])
    return header, rows


def plot_roc(doc: dict, attack: str) -> bytes:
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
    ax.set(xlabel="false-positive rate (clean)", ylabel="true-positive rate (adversarial)", xlim=(0, 1), ylim=(0, 1.01),
           title=f"ROC: {attack}")
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


def to_markdown(doc: dict, images: dict[str, str] | None = None) -> str:
    p, d, cfg = doc["provenance"], doc["data"], doc["config"]
    header, rows = results_table(doc)
    lines = [
        f"# {cfg.get('title') or cfg['name']}\n",
        f"- Data: {d['dataset']} {d['split']} split ({d['source']}); {d['n_images']} images drawn, "
        f"{d['n_correct']} correctly classified by `{cfg['model']}` and attacked.",
        f"- Split: {int(100 * cfg['fractions'][0])}/{int(100 * cfg['fractions'][1])} by clean-image id "
        f"(a clean image and its adversarial versions never straddle fit and test); "
        f"threshold calibrated on clean fitting images only for a target FPR of {100 * cfg['fpr']:.0f} %.",
        f"- Machine: {p['machine']}. Commit `{p['commit']}`, {p['date']}.",
        f"- Command: `{p['command']}`",
        f"- Classifier forward pass alone: {doc['forward_floor']['ms_per_image']:.3f} ms/image.\n",
        "## Adversarial sets\n",
        markdown_table(["attack", "attacked", "successful (kept)", "median L2", "median L-inf"],
                       [[k, v["n_attacked"], v["n_adv"], f"{v['median_l2']:.3f}", f"{v['median_linf']:.4f}"]
                        for k, v in doc["advsets"].items()]),
        "\n## Detection (test fold)\n",
        markdown_table(header, rows),
    ]
    if images:
        lines.append("\n## ROC curves\n")
        lines += [f"![ROC {a}]({f})" for a, f in images.items()]
    return "\n".join(lines) + "\n"


def to_html(doc: dict, pngs: dict[str, bytes]) -> str:
    md_header, rows = results_table(doc)
    p, d, cfg = doc["provenance"], doc["data"], doc["config"]
    esc = html.escape

    def table(header, rows):
        h = "".join(f"<th>{esc(str(x))}</th>" for x in header)
        b = "".join("<tr>" + "".join(f"<td>{esc(str(x))}</td>" for x in r) + "</tr>" for r in rows)
        return f"<table><thead><tr>{h}</tr></thead><tbody>{b}</tbody></table>"

    sets = table(["attack", "attacked", "successful (kept)", "median L2", "median L-inf"],
                 [[k, v["n_attacked"], v["n_adv"], f"{v['median_l2']:.3f}", f"{v['median_linf']:.4f}"]
                  for k, v in doc["advsets"].items()])
    imgs = "".join(f'<figure><img alt="ROC {esc(a)}" src="data:image/png;base64,{base64.b64encode(b).decode()}">'
                   f"<figcaption>{esc(a)}</figcaption></figure>" for a, b in pngs.items())
    versions = ", ".join(f"{k} {v}" for k, v in doc["software"].items())
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{esc(cfg.get('title') or cfg['name'])}</title>
<style>body{{font-family:system-ui,sans-serif;margin:2em;max-width:1200px}}table{{border-collapse:collapse;font-size:13px}}
td,th{{border:1px solid #ccc;padding:3px 6px;text-align:right}}th{{background:#f3f3f3}}td:nth-child(-n+3){{text-align:left}}
figure{{display:inline-block;margin:0.5em}}pre{{background:#f6f6f6;padding:1em;overflow:auto}}</style></head><body>
<h1>{esc(cfg.get('title') or cfg['name'])}</h1>
<p>Data: {esc(d['dataset'])} {esc(d['split'])} split ({esc(str(d['source']))}); {d['n_images']} images drawn,
{d['n_correct']} correctly classified by <code>{esc(cfg['model'])}</code> and attacked. Split
{int(100 * cfg['fractions'][0])}/{int(100 * cfg['fractions'][1])} by clean-image id; thresholds calibrated on clean
fitting images only (target FPR {100 * cfg['fpr']:.0f} %).</p>
<p>Machine: {esc(p['machine'])}. Commit <code>{esc(p['commit'])}</code>, {esc(p['date'])}.<br>
Command: <code>{esc(p['command'])}</code><br>Classifier forward pass alone:
{doc['forward_floor']['ms_per_image']:.3f} ms/image.</p>
<h2>Adversarial sets</h2>{sets}
<h2>Detection (test fold)</h2>{table(md_header, rows)}
<h2>ROC curves</h2>{imgs}
<h2>Configuration</h2><pre>{esc(doc.get('config_toml') or json.dumps(cfg, indent=2))}</pre>
<p>Software: {esc(versions)}</p>
</body></html>
"""


def write_artefacts(doc: dict, out: Path) -> dict[str, Path]:
    """Write every artefact atomically into ``out``; returns their paths."""
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": atomic_write_text(out / "results.json", json.dumps(doc, indent=2, default=str) + "\n")}
    with atomic_path(out / "results.csv") as tmp:
        with open(tmp, "w", newline="", encoding="utf-8") as f:
            w = csv.DictWriter(f, fieldnames=CSV_FIELDS)
            w.writeheader()
            for c in doc["cells"]:
                w.writerow(_row(c))
    paths["csv"] = out / "results.csv"
    pngs, files = {}, {}
    for attack in dict.fromkeys(c["attack"] for c in doc["cells"]):
        if not any(c["attack"] == attack and not c.get("skipped") for c in doc["cells"]):
            continue
        png = plot_roc(doc, attack)
        name = f"roc-{_slug(attack)}.png"
        with atomic_path(out / name) as tmp:
            tmp.write_bytes(png)
        pngs[attack], files[attack] = png, name
    paths["md"] = atomic_write_text(out / "results.md", to_markdown(doc, files))
    paths["html"] = atomic_write_text(out / "report.html", to_html(doc, pngs))
    return paths
