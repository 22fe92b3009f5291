"""Nguyen et al.'s tables, one function each, computed from the label matrices of the pooled database
(:class:`advguard.experiments.nguyen.protocol.Database`); each returns the JSON-able rows of the results document.

Table 1 (successful images per attack), Table 3 (misclassified counts after each operation), Table 4 (classifier x
feature x family accuracy on eval, trained on train; dev selects the best configuration per feature for Table 6),
the k ablation, the cost of each family, Table 5 (label correction over the whole database), Table 6 (the
dev-selected hand-crafted detectors and the CNN detectors of Section 4, trained on train images, epoch selected on
dev, evaluated on eval; Figure 2's logits).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from ...defenses import LabelCorrection
from ...defenses.correction import correction_rates
from ...detectors import ImageOps
from ...metrics import equal_error_rate, roc_auc
from ...transforms import parse_ops
from ..config import ExperimentConfig
from .options import CNNOptions, ImageOpsOptions
from .protocol import SPLITS, Database, FloatArray, IntArray, cnn_detector, dev_best, features, fit_eval

#: one row of a table in the results document (JSON data)
Row = dict[str, Any]
#: Figure 2's data: each CNN detector's eval-set logits and the images' kind (0 normal, 1 adversarial)
Scatter = dict[str, tuple[FloatArray, IntArray]]
#: the (classifier, family, feature) configurations of the k ablation
K_ABLATION = (("svc", "all", "diff"), ("mlp", "jpeg+scale", "count"))


def table1(cfg: ExperimentConfig, db: Database) -> list[Row]:
    """Table 1: attacked, successful and kept images per attack, their folds and median perturbations."""
    rows = []
    for a in cfg.attacks:
        s, fa = db.sets[a.label], db.adv_folds[a.label]
        rows.append(
            {
                "attack": a.label,
                "name": a.name,
                "params": a.params,
                "targeted": a.targeted,
                "n_attacked": s.counts["n_attacked"],
                "n_success": s.counts["n_success"],
                "n_kept": s.counts["n_adv"],
                **{f"n_{sp}": int((fa == i).sum()) for i, sp in enumerate(SPLITS)},
                "median_l2": float(np.median(s.norms["l2"])) if len(s.x_adv) else None,
                "median_linf": float(np.median(s.norms["linf"])) if len(s.x_adv) else None,
            }
        )
    return rows


def database_sizes(db: Database) -> dict[str, dict[str, int]]:
    """Normal and adversarial images in each of train / dev / eval."""
    return {
        sp: {"normal": int((db.fold_c == i).sum()), "adversarial": int((db.fold_a == i).sum())}
        for i, sp in enumerate(SPLITS)
    }


def _misclassified(L: IntArray, y: IntArray, kk: int) -> list[int]:
    """Per label-matrix column: images whose true label is not in the top-``kk``."""
    return [int((L[:, c, :kk] != y[:, None]).all(1).sum()) for c in range(L.shape[1])]


def table3(cfg: ExperimentConfig, db: Database) -> dict[str, dict[str, Any]]:
    """Table 3: misclassified images after each operation (``table3``), with each row's criterion k
    (``table3_criterion``) and image count (``table3_n``)."""
    crit_k = 1 if db.clf.num_classes < 15 else db.k
    # untargeted attacks count with their own success criterion (e.g. a top-1 DeepFool run on ImageNet)
    attack_k = {a.label: crit_k if a.targeted else int(a.params.get("top_k", 1)) for a in cfg.attacks}
    y_clean = db.first.y_clean
    return {
        "table3": {
            "Normal images": _misclassified(db.L_clean, y_clean, crit_k),
            **{lab: _misclassified(db.L_adv[lab], db.sets[lab].y_adv, attack_k[lab]) for lab in db.sets},
        },
        "table3_criterion": {"Normal images": crit_k, **attack_k},
        "table3_n": {"Normal images": int(len(y_clean)), **{lab: int(len(db.sets[lab].y_adv)) for lab in db.sets}},
    }


def table4(db: Database, opts: ImageOpsOptions, seed: int, progress: bool) -> list[Row]:
    """Table 4: every decision model x operation family x feature (count / diff) at the feature's k."""
    grid = [(m, f, feat) for m in opts.classifiers for f in opts.families for feat in ("count", "diff")]
    return [
        {"classifier": m, "family": f, "feature": feat, "k": db.k, **fit_eval(db, m, features(db, f, feat, db.k), seed)}
        for m, f, feat in tqdm(grid, desc="Table 4", disable=not progress)
    ]


def k_ablation(db: Database, seed: int) -> list[Row]:
    """The k ablation: two Table 4 configurations at each k of the ablation."""
    return [
        {"classifier": m, "family": f, "feature": feat, "k": kk, **fit_eval(db, m, features(db, f, feat, kk), seed)}
        for m, f, feat in K_ABLATION
        for kk in db.ks
    ]


def family_cost(t4: list[Row], families: list[str]) -> dict[str, Any]:
    """Cost vs accuracy per family: the dev-selected configuration of each family, passes = 1 + its op count;
    the cheapest family within 1 accuracy point of 'all' on eval."""
    rows = []
    for f in families:
        b = dev_best([r for r in t4 if r["family"] == f])
        rows.append(
            {
                "family": f,
                "n_ops": len(parse_ops(f)),
                "passes_per_image": 1 + len(parse_ops(f)),
                "classifier": b["classifier"],
                "feature": b["feature"],
                "eval_accuracy": b["eval_accuracy"],
                "eval_auc": b["eval_auc"],
            }
        )
    ref = next((r for r in rows if r["family"] == "all"), None)
    cheapest = None
    if ref is not None:
        ok = [r for r in rows if r["eval_accuracy"] >= ref["eval_accuracy"] - 0.01]
        cheapest = min(ok, key=lambda r: (r["passes_per_image"], -r["eval_accuracy"]))["family"]
    return {"rows": rows, "cheapest_within_1_point_of_all": cheapest}


def table5(db: Database) -> list[Row]:
    """Table 5: label correction by votes over JPEG / scaling / both, on the whole database."""
    rows = []
    y_clean, y_adv, adv_label = db.first.y_clean, db.y_all_adv, db.adv_label
    for ops_name in ("jpeg", "scale", "jpeg+scale"):
        corr = LabelCorrection(db.clf, ops=ops_name)  # its defaults: k = 3 below 15 classes, else 5
        cols = [0] + [db.col[o] for o in corr.ops]
        cc = corr.top_k_from_labels(db.L_clean[:, cols])
        ca = corr.top_k_from_labels(db.L_all_adv[:, cols])
        rc, ra = correction_rates(cc, y_clean), correction_rates(ca, y_adv)
        rows.append(
            {
                "ops": ops_name,
                "n_ops": len(corr.ops),
                "vote_k": corr.vote_k,
                "k": corr.k,
                "normal_top1": rc["top1"],
                "normal_topk": rc[f"top{corr.k}"],
                "adversarial_top1": ra["top1"],
                "adversarial_topk": ra[f"top{corr.k}"],
                "per_attack_top1": {
                    lab: float((ca[adv_label == lab, 0] == y_adv[adv_label == lab]).mean())
                    for lab in db.sets
                    if (adv_label == lab).any()
                },
            }
        )
    return rows


def table6_imageops(t4: list[Row]) -> tuple[list[Row], dict[str, Row]]:
    """Table 6's hand-crafted rows: the dev-selected Table 4 configuration per feature; and those configurations
    by feature."""
    rows, best = [], {}
    for feat in ("count", "diff"):
        cands = [r for r in t4 if r["feature"] == feat]
        if cands:
            b = best[feat] = dev_best(cands)
            rows.append(
                {
                    "detector": f"{b['classifier'].upper()} - {'counting' if feat == 'count' else 'differences'}"
                    f" feature ({b['family']})",
                    "kind": "image-ops",
                    "accuracy": b["eval_accuracy"],
                    "eer": b["eval_eer"],
                    "auc": b["eval_auc"],
                }
            )
    return rows, best


def per_attack_detection(cfg: ExperimentConfig, db: Database, hand: list[Row], best: dict[str, Row]) -> Row:
    """The dev-selected differences detector (the last of Table 6's hand-crafted rows ``hand``) calibrated at the
    config's FPR (protocol threshold): its detection rate per attack on eval ({} without a differences one)."""
    if "diff" not in best:
        return {}
    b = best["diff"]
    det = ImageOps(
        db.clf, ops=b["family"], feature="diff", k=db.k, decision_model=b["classifier"], fpr=cfg.fpr, seed=cfg.seed
    )
    X = features(db, b["family"], "diff", db.k)
    fold, y_det = db.fold, db.y_det
    det.fit_features(X[(fold == 0) & (y_det == 0)], X[(fold == 0) & (y_det == 1)])
    ev = fold == 2
    assert det.threshold_ is not None  # set by fit_features
    flags = det.score_features(X[ev]) > det.threshold_
    yev = y_det[ev]
    lab_ev = np.r_[np.array([""] * len(db.L_clean)), db.adv_label][ev]
    return {
        "detector": hand[-1]["detector"],
        "threshold_fpr_target": cfg.fpr,
        "clean_fpr": float(flags[yev == 0].mean()),
        "rates": {lab: float(flags[lab_ev == lab].mean()) for lab in db.sets if (lab_ev == lab).any()},
    }


def table6_cnn(
    cfg: ExperimentConfig, db: Database, specs: list[CNNOptions], cache: Path, progress: bool
) -> tuple[list[Row], Scatter]:
    """Table 6's CNN detector rows (Section 4) on the eval set, and their eval logits (Figure 2)."""
    x_all = np.concatenate([db.first.x_clean] + [s.x_adv for s in db.sets.values()])
    rows, scatter = [], {}
    ev = db.fold == 2
    yev = db.y_det[ev]
    for spec in tqdm(specs, desc="CNN detectors", disable=not progress):
        label = spec.label or json.dumps(spec.params)
        det, train_s = cnn_detector(cfg, db, spec, x_all, cache, progress)
        z = det.features(torch.from_numpy(x_all[ev]))
        s = det.statistic(z)
        rows.append(
            {
                "detector": label,
                "kind": "cnn",
                "params": spec.params,
                "accuracy": float(((s > 0) == yev).mean()),
                "eer": equal_error_rate(s[yev == 0], s[yev == 1]),
                "auc": roc_auc(s[yev == 0], s[yev == 1]),
                "train_seconds": train_s,
                "history": [{k_: v for k_, v in h.items() if not k_.startswith("_")} for h in det.history_],
            }
        )
        scatter[label] = (z, yev)
    return rows, scatter


def majority_baseline(db: Database) -> float:
    """The eval accuracy of always answering the majority kind (adversarial in the paper's database)."""
    y = db.y_det[db.fold == 2]
    return float(max((y == 1).mean(), (y == 0).mean()))
