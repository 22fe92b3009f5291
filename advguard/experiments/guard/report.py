"""The hybrid-detector page: per family, every single detector beside every Guard combination; the goal table; a
TPR-at-5 %-FPR bar chart per family."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..common import write_page
from ..page import Page, fig_png, pct, pyplot
from ..registry import Summary


def _auc(r: dict[str, Any]) -> str:
    lo, hi = r["auc_ci95"]
    return f"{100 * r['auc']:.1f} ({100 * lo:.1f}-{100 * hi:.1f})"


def family_table(doc: dict[str, Any], fam: str) -> tuple[list[str], list[list[Any]]]:
    """One row per single detector and per combination on family ``fam`` (test fold)."""
    header = ["decision", "AUC % (95 % CI)", "TPR@1%", "TPR@5%", "TPR@10%", "det. rate % / FPR % @ cal.", "ms/img"]
    rows = []
    for s in doc["singles"]:
        r = s["families"].get(fam)
        if r is not None:
            rows.append(_row(s["detector"], r, s["cost"]["ms_per_image"]))
    for c in doc["combinations"]:
        r = c["families"].get(fam)
        if r is not None:
            rows.append(_row(f"**Guard: {c['label']}**", r, c["ms_per_image"]))
    return header, rows


def _row(name: str, r: dict[str, Any], ms: float) -> list[Any]:
    return [
        name,
        _auc(r),
        pct(r["tpr_at_fpr_1"]),
        pct(r["tpr_at_fpr_5"]),
        pct(r["tpr_at_fpr_10"]),
        f"{pct(r['detection_rate'])} / {pct(r['fpr'])}",
        f"{ms:.1f}",
    ]


def goal_table(doc: dict[str, Any]) -> tuple[list[str], list[list[Any]]]:
    """Per combination: its TPR at 5 % FPR per family beside the best single detector's (which one)."""
    fams = doc["families"]
    header = ["combination", *fams, "at least the best single everywhere?"]
    rows = []
    for g in doc["goal"]:
        cells = []
        for f in fams:
            v = g["families"].get(f)
            if v is None:
                cells.append("-")
                continue
            mark = "" if v["at_least_as_good"] else " (below)"
            cells.append(f"{pct(v['tpr_at_fpr_5'])} vs {pct(v['best_single_tpr_at_fpr_5'])} ({v['best_single']}){mark}")
        rows.append([g["label"], *cells, "yes" if g["met"] else "no"])
    return header, rows


def summary_table(doc: dict[str, Any]) -> Summary:
    """The closing lines of a run: TPR at 5 % FPR per family, best single detector and each combination."""
    fams = doc["families"]
    rows: list[list[Any]] = []
    for f in fams:
        best = max(doc["singles"], key=lambda s: s["families"].get(f, {}).get("tpr_at_fpr_5", -1))
        rows.append([f, f"best single: {best['detector']}", pct(best["families"][f]["tpr_at_fpr_5"])])
        for c in doc["combinations"]:
            if f in c["families"]:
                rows.append([f, f"Guard: {c['label']}", pct(c["families"][f]["tpr_at_fpr_5"])])
    return ["family", "decision", "TPR@5% (test)"], rows


def plot_tpr(doc: dict[str, Any]) -> bytes:
    """Grouped bars: TPR at 5 % FPR per family, singles in grey shades, combinations in colour."""
    plt = pyplot()
    fams = doc["families"]
    entries = [(s["detector"], s["families"], False) for s in doc["singles"]]
    entries += [(f"Guard: {c['label']}", c["families"], True) for c in doc["combinations"]]
    fig, ax = plt.subplots(figsize=(max(6.0, 1.4 * len(fams) + 2), 4.2), dpi=110)
    width = 0.85 / len(entries)
    greys = [str(0.25 + 0.5 * i / max(1, len(doc["singles"]) - 1)) for i in range(len(doc["singles"]))]
    colours = iter(greys + [f"C{i}" for i in range(len(doc["combinations"]))])
    for j, (name, per, combo) in enumerate(entries):
        xs = [i + (j - len(entries) / 2 + 0.5) * width for i in range(len(fams))]
        ys = [100 * per[f]["tpr_at_fpr_5"] if f in per else 0.0 for f in fams]
        ax.bar(xs, ys, width, label=name, color=next(colours), edgecolor="black" if combo else "none", lw=0.6)
    ax.set_xticks(range(len(fams)), fams, fontsize=7, rotation=15)
    ax.set(ylabel=f"TPR % at {100 * doc['config']['fpr']:.0f} % FPR (test fold)", ylim=(0, 100))
    ax.legend(fontsize=6, ncol=2, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.tight_layout()
    return fig_png(fig)


def build_page(doc: dict[str, Any]) -> Page:
    p, d, cfg, fo = doc["provenance"], doc["data"], doc["config"], doc["folds"]
    page = Page(cfg.get("title") or cfg["name"])
    nc = fo["clean"]
    page.text(
        "\n".join(
            [
                f"- Data: {d['dataset']} {d['split']} split ({d['source']}); {d['n_images']} images drawn, "
                f"{d['n_correct']} correctly classified by `{cfg['model']}` and attacked by every family.",
                f"- Folds by clean-image id: D (detectors fitted) {nc['fit']}, M (combination fitted, every threshold "
                f"calibrated for {100 * cfg['fpr']:.0f} % clean FPR) {nc['combine']}, T (test) {nc['test']} clean "
                "images; an adversarial image goes to its source image's fold.",
                "- Supervised detectors and the stacked meta-model see every family's adversarial images of their "
                "fold, pooled: one fitted decision faces all families, as in deployment.",
                "- TPR at x % FPR is read off the test fold's own ROC (threshold-free); 'det. rate / FPR @ cal.' "
                "is the operating point of the threshold calibrated on M.",
                f"- Machine: {p['machine']}. Commit `{p['commit']}`, {p['date']}.",
                f"- Command: `{p['command']}`",
                f"- Classifier forward pass alone: {doc['forward_floor']['ms_per_image']:.3f} ms/image; a "
                "combination's ms/img is the sum of its detectors' feature costs.",
            ]
        )
    )
    page.h2("Goal: one combination at least as good as the best single detector on every family")
    h, r = goal_table(doc)
    page.table(h, r, caption="TPR at 5 % FPR on the test fold: the combination vs the best single detector")
    page.figure("tpr-at-5-fpr.png", plot_tpr(doc), "TPR at 5 % FPR per attack family (test fold)")
    page.h2("Adversarial sets")
    page.table(
        ["attack", "attacked", "successful (kept)", "median L2", "median L-inf", "n adv fit / combine / test"],
        [
            [
                k,
                v["n_attacked"],
                v["n_adv"],
                f"{v['median_l2']:.3f}",
                f"{v['median_linf']:.4f}",
                "/".join(str(fo["adversarial"][k][n]) for n in ("fit", "combine", "test")),
            ]
            for k, v in doc["advsets"].items()
        ],
    )
    page.h2("Per family (test fold)")
    for f in doc["families"]:
        h, r = family_table(doc, f)
        page.table(h, r, caption=f)
    page.configuration(doc)
    return page


def write_artefacts(doc: dict[str, Any], out: Path) -> dict[str, Path]:
    """results.json, results.md, report.html and the figure, each written atomically."""
    return write_page(doc, out, build_page(doc))
