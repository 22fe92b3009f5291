"""Segmentation Fault's results page (one function per section), Figure 3 and the terminal summary."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ...metrics import peak_memory_note
from ..config import ExperimentConfig
from ..page import Page, fig_png, pyplot
from . import paper
from .options import UnitTable, paper_label, unit_label
from .protocol import FLAVOURS

FLAVOUR_NAMES = {"1d": "1-D", "10d": "10-D", "multilayer": "multi-layer"}
Doc = dict[str, Any]


def summary_table(doc: Doc) -> tuple[list[str], list[list[Any]]]:
    """XGBoost test AUC per occlusion unit and attack family, 10-D and multi-layer."""
    fams = doc["families"]
    return (
        ["occlusion unit"] + [f"{g} {FLAVOUR_NAMES[fl]}" for g in fams for fl in ("10d", "multilayer")],
        [
            [lab] + [_f3(doc["auc"][lab].get(f"xgb|{g}|{fl}")) for g in fams for fl in ("10d", "multilayer")]
            for lab in doc["units"]
        ],
    )


def write_page(cfg: ExperimentConfig, doc: Doc, out: Path, units: list[UnitTable]) -> None:
    """``results.md``, ``report.html`` and Figure 3 into ``out``."""
    page = Page(cfg.title or cfg.name)
    _intro(page, cfg, doc)
    _data(page, doc)
    _table2(page, doc, units)
    _table6(page, doc, units)
    if doc.get("segment_counts"):
        _counts_section(page, doc["segment_counts"])
    _table7(page, doc, units)
    _figure3(page, doc, units)
    page.write(out)


def _f3(v: float | None) -> str:
    return "-" if v is None or not np.isfinite(v) else f"{v:.3f}"


def _per128(t: dict[str, Any]) -> float:
    """A timing entry's seconds per 128 images (it ran on ``images`` of them)."""
    return float(t["seconds"]) * 128 / int(t.get("images", 128))


def _intro(page: Page, cfg: ExperimentConfig, doc: Doc) -> None:
    prov = doc["provenance"]
    n_clean = next(iter(doc["counts"].values()))
    source = (doc.get("data") or {}).get("dataset_kwargs", {}).get("source")
    split = "/".join(f"{f * 100:g}" for f in cfg.fractions)
    copy = {"jpeg": ", JPEG copy", "lossless": ", lossless copy"}.get(source, f", source {source}" if source else "")
    page.text(
        f"Data: {cfg.dataset} ({cfg.split} split{copy}), the first {cfg.n_images} images of a seeded draw; the "
        f"correctly classified ones are the clean set ({n_clean['clean_train']} train + {n_clean['clean_test']} test), "
        f"shared by all attacks. Model `{cfg.model}`. Split {split} (train/test) by clean-image id. "
        f"Machine: {prov['machine']}. "
        f"Commit `{prov['commit']}`. Reproduce: `advguard reproduce configs/{cfg.name}.toml` (resumable)."
    )


def _data(page: Page, doc: Doc) -> None:
    page.h2("Data")
    rows = []
    for g in doc["families"]:
        c = doc["counts"][g]
        per = "; ".join(f"{lab}: {s['n_adv']}/{s['n_attacked']}" for lab, s in c["per_attack"].items())
        rows.append([g, c["adv_train"], c["adv_test"], per])
    page.table(["attack family", "adversarial train", "adversarial test", "successful / attacked per member"], rows)


def _table2(page: Page, doc: Doc, units: list[UnitTable]) -> None:
    pix = [unit_label(u) for u in units if u["unit"] == "pixel"]
    if not pix:
        return
    fams = doc["families"]
    page.h2("Table 2: pixel ML-LOO with off-the-shelf classifiers (test AUC; paper in parentheses)")
    lab = pix[0]
    head = ["classifier"] + [f"{g} {FLAVOUR_NAMES[fl]}" for g in fams for fl in FLAVOURS]
    rows = []
    for cname in sorted({k.split("|")[0] for k in doc["auc"][lab]}, key=["rf", "svc", "xgb"].index):
        rows.append(
            [cname.upper()]
            + [
                f"{_f3(doc['auc'][lab].get(f'{cname}|{g}|{fl}'))} "
                f"({_f3(paper.TABLE2.get(cname, {}).get(g, {}).get(fl))})"
                for g in fams
                for fl in FLAVOURS
            ]
        )
    page.table(head, rows)


def _table6(page: Page, doc: Doc, units: list[UnitTable]) -> None:
    fams = doc["families"]
    page.h2("Table 6: XGBoost test AUC per occlusion unit (paper in parentheses)")
    head = ["occlusion unit"] + [f"{g} {FLAVOUR_NAMES[fl]}" for g in fams for fl in FLAVOURS]
    rows = []
    for u in units:
        lab = unit_label(u)
        p6 = paper.TABLE6.get(paper_label(u), {})
        rows.append(
            [lab]
            + [
                f"{_f3(doc['auc'][lab].get(f'xgb|{g}|{fl}'))} ({_f3(p6.get(g, {}).get(fl))})"
                for g in fams
                for fl in FLAVOURS
            ]
        )
    page.table(head, rows)
    if any(paper_label(u) != unit_label(u) for u in units):
        page.text(
            "Paper rows beside ours: "
            + "; ".join(
                f"{unit_label(u)}: the paper's {paper_label(u)}" for u in units if paper_label(u) != unit_label(u)
            )
            + "."
        )


def _counts_section(page: Page, sc: dict[str, Any]) -> None:
    vrs = sc["value_ranges"]
    page.h2("Segments per clean image: the paper's grid on [0, 1] and on other value ranges")
    page.text(
        f"Mean segments per image over {sc['images']} clean images of the same split (all of them, not only the "
        "correctly classified), with scikit-image's defaults otherwise (Quickshift kernel_size 5), for each value "
        "range the image is scaled to before segmenting ([0, 1] is advguard's default; 255 the 8-bit range); "
        "SLIC rescales every image to [0, 1] itself, so only its [0, 1] count is given. The paper's count is the "
        "one its Table 7 memory implies (128 images x segments x 3,810 nodes x 4 bytes for the multi-layer "
        f"feature). Counting took {sc['seconds']:.0f} s."
    )
    rows = []
    for lab, row in sc["mean_segments"].items():
        rows.append(
            [lab]
            + [f"{row[v]:.1f}" if v in row else "-" for v in vrs]
            + ["-" if row.get("paper") is None else f"{row['paper']:.0f}"]
        )
    page.table(["setting"] + [f"ours on [0, {v}]" for v in vrs] + ["paper (implied by Table 7)"], rows)


def _table7(page: Page, doc: Doc, units: list[UnitTable]) -> None:
    n_time = next(iter(doc["timing"].values()))["1d"]["images"]
    page.h2("Table 7: cost per 128-image batch")
    page.text(
        f"Seconds to compute the features of the first {n_time} clean images"
        + ("" if n_time == 128 else ", scaled to 128 images,")
        + " (ours on this machine's CPU; the paper's "
        "on a Tesla P100 GPU), peak resident-memory rise during it, mean occlusion units per image, and the size of "
        "the attribution array the paper's code held before reducing it (128 x units x nodes x 4 bytes; ours "
        "never holds more than one image's); mean units per image with the paper's implied count in parentheses "
        "(from the size of its multi-layer array: 128 x units x 3,810 nodes x 4 bytes). Forward floor of the plain "
        "model: "
        f"{doc['forward_floor']['images_per_s']:.0f} images/s. "
        + peak_memory_note(doc["provenance"].get("peak_memory"))
    )
    rows = []
    for u in units:
        lab = unit_label(u)
        t = doc["timing"][lab]
        p7 = paper.TABLE7.get(paper_label(u), {})
        implied = paper.implied_segments(paper_label(u))
        held = {fl: 128 * t[fl]["mean_units"] * t[fl]["dims"] * 4 / 2**20 for fl in FLAVOURS}
        rows.append(
            [lab, f"{t['1d']['mean_units']:.1f}" + (f" ({implied:.0f})" if implied else "")]
            + [f"{_per128(t[fl]):.2f} s ({p7.get('time', {}).get(fl, '-')})" for fl in FLAVOURS]
            + [f"{t[fl]['peak_mb']:.0f}" for fl in FLAVOURS]
            + [f"{held['multilayer']:.1f} MB ({p7.get('memory', {}).get('multilayer', '-')})"]
        )
    page.table(
        ["occlusion unit", "mean units / image"]
        + [f"time {FLAVOUR_NAMES[fl]} (paper)" for fl in FLAVOURS]
        + [f"peak MB {FLAVOUR_NAMES[fl]}" for fl in FLAVOURS]
        + ["paper-style array, multi-layer (paper)"],
        rows,
    )


def _figure3(page: Page, doc: Doc, units: list[UnitTable]) -> None:
    page.h2("Figure 3: time vs detection AUC (C&W, 10-D)")
    page.figure(
        "figure3_time_vs_auc.png",
        _plot_figure3(doc, units),
        "Figure 3: each point one occlusion unit; ours (left, "
        "CPU) and the paper's (right, P100 GPU, read from its Tables 6 and 7).",
    )


def _plot_figure3(doc: Doc, units: list[UnitTable]) -> bytes:
    fams = doc["families"]
    cw = next((g for g in fams if "C&W" in g or "CW" in g), fams[-1])
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for ax, who in zip(axes, ("ours", "paper"), strict=True):
        shown: set[str] = set()
        for u in units:
            lab = unit_label(u)
            if who == "paper":  # each paper row once, under its own name
                if paper_label(u) in shown:
                    continue
                shown.add(lab := paper_label(u))
            x: float | None
            y: float | None
            if who == "ours":
                x, y = _per128(doc["timing"][lab]["10d"]), doc["auc"][lab].get(f"xgb|{cw}|10d")
            else:
                x, y = (
                    paper.seconds(paper.TABLE7.get(paper_label(u), {}).get("time", {}).get("10d")),
                    paper.TABLE6.get(paper_label(u), {}).get("C&W", {}).get("10d"),
                )
            if x is None or y is None:
                continue
            ax.scatter(
                x,
                y,
                marker={"pixel": "*", "felzenszwalb": "s", "quickshift": "^", "slic": "o"}[u["unit"]],
                s=90 if u["unit"] == "pixel" else 40,
                label=lab,
            )
            ax.annotate(
                lab.replace("Quickshift ", "QS ")
                .replace("Felzenszwalb ", "F ")
                .replace("n_segments=", "")
                .replace("max_dist", "m"),
                (x, y),
                fontsize=6,
                xytext=(3, 2),
                textcoords="offset points",
            )
        ax.set_xscale("log")
        ax.set_xlabel("seconds per 128 images (10-D)" + (" - this machine's CPU" if who == "ours" else " - P100 GPU"))
        ax.set_ylabel(f"AUC ({cw}, 10-D, XGBoost)")
        ax.set_title(who)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig_png(fig)
