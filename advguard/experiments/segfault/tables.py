"""Segmentation Fault's tables, one function each, from the cached features (:mod:`.protocol`); each returns the
JSON-able data of the results document.

Table 2 (pixel ML-LOO, ``pixel_classifiers``) and Table 6 (XGBoost AUC for every unit) are one AUC grid; Table 7
(seconds, peak MB and mean segments per 128-image batch for each flavour, timed on the first clean images); the
cost of computing the whole grid; the images per family and fold.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..._progress import progress_bar
from ...classifier import Classifier
from ..common import cache_key
from .options import SegfaultOptions, unit_label
from .protocol import FLAVOURS, Array, Families, Features, fit_auc, flavour, timing


def aucs(
    opts: SegfaultOptions,
    feats: dict[str, dict[str, Features]],
    fams: Families,
    num_classes: int,
    seed: int,
    progress: bool = True,
) -> dict[str, dict[str, float]]:
    """Tables 2 and 6: unit label -> {"model|family|flavour": test AUC} (train fold 0, test fold 1). One decision
    model fitted per cell (units x models x families x flavours), not cached: a bar shows the cells."""
    fold_c, fold_a = fams.fold_c, fams.fold_a
    cells = [
        (unit_label(u), cname, g, fl)
        for u in opts.unit
        for cname in opts.models(u)
        for g in fams.pooled
        for fl in FLAVOURS
    ]
    out: dict[str, dict[str, float]] = {unit_label(u): {} for u in opts.unit}
    for lab, cname, g, fl in progress_bar(cells, desc="AUC grid (decision models)", enabled=progress):
        fc = flavour(feats[lab]["clean"], fl, num_classes)
        fa = flavour(feats[lab][g], fl, num_classes)
        out[lab][f"{cname}|{g}|{fl}"] = fit_auc(
            (fc[fold_c == 0], fa[fold_a[g] == 0]), (fc[fold_c == 1], fa[fold_a[g] == 1]), cname, seed
        )
    return out


def timings(
    clf: Classifier, opts: SegfaultOptions, section: dict[str, Any], x: Array, clean_key: str, root: Path, seed: int
) -> dict[str, dict[str, dict[str, Any]]]:
    """Table 7: every flavour of every unit timed on ``x`` (cached; the key holds the unit's table and the
    [segfault] ``section`` as written)."""
    return {
        unit_label(u): timing(clf, u, opts, x, root / f"timing-{cache_key('t', u, section, clean_key)}.json", seed)
        for u in opts.unit
    }


def family_counts(fams: Families) -> dict[str, dict[str, Any]]:
    """Clean and adversarial images per fold of each family, and each member's adversarial set summary."""
    fold_c = fams.fold_c
    return {
        g: {
            "clean_train": int((fold_c == 0).sum()),
            "clean_test": int((fold_c == 1).sum()),
            "adv_train": int((fams.fold_a[g] == 0).sum()),
            "adv_test": int((fams.fold_a[g] == 1).sum()),
            "per_attack": {lab: fams.sets[lab].summary() for lab in fams.members[g]},
        }
        for g in fams.pooled
    }


def grid_cost(feats: dict[str, dict[str, Features]], labels: list[str]) -> dict[str, dict[str, dict[str, float]]]:
    """What computing each unit's features cost per set: seconds per batch, batches, peak MB, mean units."""
    return {
        lab: {
            k: {
                "seconds_per_batch": float(np.mean(v["seconds"])),
                "batches": int(len(v["seconds"])),
                "peak_mb": float(np.nanmax(v["peak_mb"])),
                "mean_units": float(np.mean(v["units"])),
            }
            for k, v in feats[lab].items()
        }
        for lab in labels
    }
