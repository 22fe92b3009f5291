"""TaintRadar's tables as JSON-able data, one function per paper table / figure: Table II and the variants
(:func:`table2`), the diagnostics of the final intersection (:func:`diagnostics`), Figure 6 (:func:`misleading`),
Section VII-B's end-to-end attack (:func:`bpda`), the harness's L2 / L-inf attacks (:func:`attacks`) and one
model's row group of issue #22's ablation (:func:`ablation_summary`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple, cast

import numpy as np
from tqdm.auto import tqdm

from ..common import build_sets, cache_key
from .options import VARIANT_DEFAULTS, TaintRadarOptions
from .protocol import (
    BPDA_ROWS,
    Array,
    Bench,
    Setting,
    bpda_arrays,
    diagnostic_arrays,
    iou,
    misleading_arrays,
    patch_cell,
    positions,
    stream,
    training_label,
)


class Example(NamedTuple):
    """The first successful patched image of the grid (Figure 4): image, patch mask, setting, position."""

    x_adv: Array
    mask: Array
    setting: str
    position: str


@dataclass
class Grid:
    """Table II's cells and the variants' (``cells``), the diagnostics, Figure 4's example and the first patch of
    every setting (with its shape)."""

    cells: list[dict[str, Any]] = field(default_factory=list)
    diagnostics: dict[str, Any] | None = None
    example: Example | None = None
    first_patches: dict[str, tuple[Array, str]] = field(default_factory=dict)


def settings(o: TaintRadarOptions) -> list[Setting]:
    """Table II's grid (sizes x batch sizes x patch sizes), then the variants (batch 16, size 0.3 unless given)."""
    grid: list[Setting] = [
        {"label": f"{'multi' if m else 'single'}-b{b}-s{s:g}", "batch": b, "size": s, "multi_size": m, "variant": False}
        for m in o.multi_size
        for b in o.batch_sizes
        for s in o.sizes
    ]
    return grid + [
        cast(Setting, {**VARIANT_DEFAULTS, **v, "label": v.get("label", f"variant-{i}"), "variant": True})
        for i, v in enumerate(o.variants)
    ]


def table2(b: Bench, progress: bool) -> Grid:
    """Table II (and the variants): per setting, its patches trained and applied at each position; a row per
    position with SR and both detectors' TPR / AUC over the successes."""
    o = b.o
    g = Grid()
    if o.diagnostics:
        g.diagnostics = {"clean": diagnostics(b, "eval-clean", b.sets.eval_clean[: o.diagnostics]), "cells": {}}
    for st in tqdm(settings(o), desc="patch settings", disable=not progress):
        sfold = b.folder / "patches" / training_label(st, o.size_range)
        sfold.mkdir(parents=True, exist_ok=True)
        res = patch_cell(b, st, sfold, progress)
        if "first_patch" in res:
            g.first_patches[st["label"]] = (res["first_patch"], st.get("shape", "square"))
        for p in positions(o, st):
            g.cells.append(_cell(b, g, st, res, p))
    return g


def _cell(b: Bench, g: Grid, st: Setting, res: dict[str, Array], p: str) -> dict[str, Any]:
    """One Table II row: the setting's patches at position ``p``."""
    succ = res[f"{p}/success"].astype(bool)
    x_adv = res[f"{p}/x_adv"][succ]
    row: dict[str, Any] = {
        "setting": st["label"],
        "batch": st["batch"],
        "size": st["size"],
        "multi_size": bool(st.get("multi_size", False)),
        "position": p,
        "shape": st.get("shape", "square"),
        "n_patches": int(st.get("n_patches", 1)),
        "variant": st["variant"],
        "attempts": int(len(succ)),
        "sr": float(succ.mean()),
    }
    row.update(b.detect(f"{st['label']}-{p}", x_adv))
    masks = res[f"{p}/mask"][succ]
    if g.diagnostics is not None:
        n = b.o.diagnostics
        y_adv = b.sets.victims_y[: len(succ)][succ]
        name = f"{st['label']}-{p}"
        g.diagnostics["cells"][f"{st['label']}/{p}"] = diagnostics(b, name, x_adv[:n], masks[:n], y_adv[:n])
    if len(x_adv):
        est = b.tr.analyse(x_adv[:64], [b.k0], stream=stream(st["label"], p)).est_mask.numpy()
        row["iou_estimated"] = float(iou(est, masks[:64]).mean())
        if g.example is None:
            g.example = Example(x_adv[0], masks[0], st["label"], p)
    return row


def diagnostics(b: Bench, name: str, x: Array, patch: Array | None = None, y: Array | None = None) -> dict[str, Any]:
    """What the rank change is made of, at every K = 1..k_max, on images ``x`` (the first ones of the cached set
    ``name``): the share of the image in the final intersection (``area``), the share of images whose intersection
    is empty (``empty``), the original label's rank change; for patched images (``patch``: their patch masks) the
    share of the intersection inside the patch (``in_patch``, over non-empty intersections) and for victims with
    true labels ``y`` the share whose true label is the label that rose most after filling the estimated region
    (``true_label_rises_most``)."""
    if not len(x):
        return {"n": 0}
    a = diagnostic_arrays(b, name, x, patch)
    area = a["area"].astype(float)
    out: dict[str, Any] = {
        "n": int(len(x)),
        "area": (area / float(a["pixels"])).mean(0).tolist(),
        "empty": (area == 0).mean(0).tolist(),
        "rank_change": a["rank"].mean(0).tolist(),
    }
    if patch is not None:
        with np.errstate(invalid="ignore", divide="ignore"):
            share = np.where(area > 0, a["in_patch"] / np.maximum(area, 1), np.nan)
        out["in_patch"] = [float(np.nanmean(c)) if np.isfinite(c).any() else None for c in share.T]
    if y is not None:
        out["true_label_rises_most"] = float((a["top_label"] == y).mean()) if len(y) else None
    return out


def misleading(b: Bench, progress: bool) -> list[dict[str, Any]]:
    """Figure 6: for each lambda, region-misleading patches (batch ``batch``, patch j on victims j*batch..),
    applied to their own victims; IoU of TaintRadar's estimated region with the patch, SR without TaintRadar and
    with it (successes it lets pass)."""
    m = b.o.misleading_options()
    if m is None:
        return []
    delta_r = b.tr.delta_r_
    assert delta_r is not None
    rows = []
    for lam in tqdm(m.lambdas, desc="region-misleading lambdas", disable=not progress):
        a = misleading_arrays(b, m, lam, progress)
        succ, passed = a["success"].astype(bool), a["rank_change"] <= delta_r
        rows.append(
            {
                "lambda": float(lam),
                "attempts": int(len(succ)),
                "sr": float(succ.mean()),
                "sr_with_taintradar": float((succ & passed).mean()),
                "iou": float(a["iou"].mean()),
                "iou_successes": float(a["iou"][succ].mean()) if succ.any() else None,
                "taintradar_tpr": float((~passed[succ]).mean()) if succ.any() else None,
            }
        )
    return rows


def bpda(b: Bench, progress: bool) -> list[dict[str, Any]]:
    """Section VII-B's end-to-end attack and its baseline (no detector term) on the first ``n`` victims: how often
    each reaches the target, and undetected."""
    bp = b.o.bpda_options()
    if bp is None:
        return []
    n = int(bp.n)
    y = b.sets.victims_y[:n]
    rows = []
    for label, weight in BPDA_ROWS:
        a = bpda_arrays(b, bp, weight, progress)
        succ, ev = a["success"].astype(bool), a["evaded"].astype(bool)
        steps = a["step"][a["step"] >= 0]
        rows.append(
            {
                "attack": label,
                "n": n,
                "region_share": float(bp.size),
                "steps": int(bp.steps),
                "misclassified": float((a["pred"] != y).mean()),
                "target_rate": float(succ.mean()),
                "success_with_taintradar": float(ev.mean()),
                "taintradar_tpr": float((~ev[succ]).mean()) if succ.any() else None,
                "recheck_evasion": float(np.nanmean(a["recheck"][ev])) if ev.any() else None,
                "median_step": float(np.median(steps)) if len(steps) else None,
                "seconds_per_image": float(a["seconds"]) / n,
            }
        )
    return rows


def attacks(b: Bench, cache: Path, progress: bool) -> list[dict[str, Any]]:
    """Both detectors on the harness's ``[[attack]]`` sets (L2 / L-inf: TaintRadar is not designed for them)."""
    if not b.cfg.attacks:
        return []
    advsets = build_sets(b.cfg, b.clf, b.ds_kwargs, cache, progress=progress)
    return [
        {"attack": label, **b.detect(f"attack-{cache_key(label, s.config)}", s.x_adv)} for label, s in advsets.items()
    ]


#: the Table II cell's entries an ablation row keeps
ABLATION_CELL_KEYS = (
    "setting",
    "batch",
    "size",
    "multi_size",
    "position",
    "attempts",
    "sr",
    "n_adv",
    "taintradar_auc_by_k",
    "sentinet_auc",
    "iou_estimated",
)


def ablation_summary(doc: dict[str, Any]) -> dict[str, Any]:
    """What the comparison page needs from one model's run: operating points, the clean FPR at Delta_R = 0 at
    every K, and per Table II cell the SR, the AUC at every K (and its best K), TPR at every FPR and SentiNet."""
    fprs = doc["options"]["fprs"]
    k0 = doc["operating_points"][str(fprs[0])]["k"]
    return {
        "layer": doc["layer"],
        "layer_shape": doc["layer_shape"],
        "dataset_source": doc["dataset_source"],
        "n_correct": doc["n_correct"],
        "counts": doc["counts"],
        "k_max": doc["k_max"],
        "operating_points": doc["operating_points"],
        "clean_fpr_by_k": [row[0] for row in doc["fpr_table"]],
        "cells": [_ablation_cell(c, fprs, k0) for c in doc["cells"] if not c["variant"]],
        "diagnostics": doc.get("diagnostics"),
    }


def _ablation_cell(c: dict[str, Any], fprs: list[float], k0: int) -> dict[str, Any]:
    """A Table II cell for the comparison page, with the best AUC over K and the AUC at the chosen K."""
    aucs = c.get("taintradar_auc_by_k")
    best = int(np.nanargmax(aucs)) if aucs and not np.all(np.isnan(np.asarray(aucs, float))) else None
    return (
        {k: c.get(k) for k in ABLATION_CELL_KEYS}
        | {f"taintradar_tpr@{f}": c.get(f"taintradar_tpr@{f}") for f in fprs}
        | {f"sentinet_tpr@{f}": c.get(f"sentinet_tpr@{f}") for f in fprs}
        | {
            "best_k": None if best is None else best + 1,
            "best_auc": None if best is None or aucs is None else aucs[best],
            "auc_at_k": aucs[k0 - 1] if aucs else None,
        }
    )
