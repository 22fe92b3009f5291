"""The generic grid: {attacks} x {detectors} x {decision models}, one cell per attack and detector.

Adversarial sets -> detector features (cached) -> fitted detectors -> AUC with a bootstrap CI, TPR at fixed
FPRs, the detection rate and FPR at the threshold calibrated on clean fitting images, and the cost per image.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from ...advsets import AdvSet
from ...detectors import make_detector
from ...metrics import detection_report
from ...models import load_model
from ..common import (
    bench_paths,
    build_sets,
    data_summary,
    dataset_kwargs,
    feature_key,
    features,
    forward_cost,
    results_header,
)
from ..config import AttackSpec, DetectorSpec, ExperimentConfig


def run_grid(
    cfg: ExperimentConfig, out: str | Path | None = None, cache_dir: str | Path | None = None, progress: bool = True
) -> dict[str, Any]:
    """Run the whole grid; write the artefacts into ``out``; return the results document."""
    from .report import write_artefacts

    out, cache = bench_paths(cfg, out, cache_dir)
    out.mkdir(parents=True, exist_ok=True)
    clf = load_model(cfg.model, device=cfg.device)
    ds_kwargs = dataset_kwargs(cfg, cfg.model)

    sets = build_sets(cfg, clf, ds_kwargs, cache, progress)
    first = next(iter(sets.values()))
    clean_key = hashlib.sha256(
        (
            first.config["weights"]
            + json.dumps([cfg.dataset, cfg.split, cfg.n_images, cfg.seed, ds_kwargs], sort_keys=True)
        ).encode()
    ).hexdigest()[:20]
    clean_fold = first.folds(cfg.fractions, cfg.seed)[0]
    floor = forward_cost(clf, first.x_clean[clean_fold == 1][:256])

    cells = []
    feat_dir = cache / "features"
    grid = [(a, d) for a in cfg.attacks for d in cfg.detectors]
    for a, d in tqdm(grid, desc="detector cells", disable=not progress):
        s = sets[a.label]
        det0 = make_detector(d.name, clf, fpr=cfg.fpr, seed=cfg.seed, **d.params)
        f_clean, cost_clean = features(
            det0, s.x_clean, feat_dir / f"{feature_key(d, clean_key, 'clean')}.npz", f"{d.label} clean"
        )
        f_adv, _ = features(det0, s.x_adv, feat_dir / f"{feature_key(d, s.key, 'adv')}.npz", f"{d.label} {a.label}")
        c_fold, a_fold = s.folds(cfg.fractions, cfg.seed)
        for dm in d.decision_models or [None]:
            det = make_detector(
                d.name, clf, fpr=cfg.fpr, seed=cfg.seed, **d.params, **({"decision_model": dm} if dm else {})
            )
            dm = det.decision_model
            if det.supervised:
                if (a_fold == 0).sum() < 2 or (a_fold == 1).sum() < 1:
                    cells.append(_empty_cell(a, d, dm, s, "too few adversarial examples"))
                    continue
                det.fit_features(f_clean[c_fold == 0], f_adv[a_fold == 0])
            else:
                det.fit_features(f_clean[c_fold == 0])
            sc = det.score_features(f_clean[c_fold == 1])
            sa = det.score_features(f_adv[a_fold == 1]) if (a_fold == 1).any() else np.zeros(0)
            if len(sa) == 0:
                cells.append(_empty_cell(a, d, dm, s, "no adversarial test images"))
                continue
            rep = detection_report(sc, sa, threshold=det.threshold_, n_boot=cfg.bootstrap)
            cells.append(
                {
                    **_cell_id(a, d, dm),
                    "n_fit_clean": int((c_fold == 0).sum()),
                    "n_fit_adv": int((a_fold == 0).sum()),
                    **rep,
                    "cost": cost_clean,
                    "roc": _roc_points(sc, sa),
                }
            )
    doc = {
        **results_header(cfg),
        "data": data_summary(cfg, first),
        "forward_floor": floor,
        "advsets": {k: v.summary() for k, v in sets.items()},
        "cells": cells,
    }
    write_artefacts(doc, out)
    return doc


def _cell_id(a: AttackSpec, d: DetectorSpec, dm: str | None) -> dict[str, Any]:
    """What a grid cell is: its attack, detector and decision model (the first keys of every cell)."""
    return {
        "attack": a.label,
        "attack_name": a.name,
        "attack_params": a.params,
        "detector": d.label,
        "detector_name": d.name,
        "detector_params": d.params,
        "decision_model": dm,
    }


def _empty_cell(a: AttackSpec, d: DetectorSpec, dm: str | None, s: AdvSet, why: str) -> dict[str, Any]:
    return {**_cell_id(a, d, dm), "skipped": why, "n_adv": int(len(s.x_adv))}


def _roc_points(sc: np.ndarray, sa: np.ndarray, n: int = 101) -> dict[str, Any]:
    from sklearn.metrics import roc_curve

    f, t, _ = roc_curve(np.r_[np.zeros(len(sc)), np.ones(len(sa))], np.r_[sc, sa])
    grid = np.linspace(0, 1, n)
    return {"fpr": grid.round(4).tolist(), "tpr": np.interp(grid, f, t).round(4).tolist()}
