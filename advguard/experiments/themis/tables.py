"""THEMIS's tables and figures, one function each, from the target models' cached data (:mod:`.protocol`).

Table 1 (one detector per model and classifier, trained on all attacks pooled or on ``table1_train_on``; FPR and
per-attack detection rate at the classifier's own decision, as the paper reports; AUCs and the rates at a
threshold calibrated to ``fpr`` on training clean images too), the learning-free label-change vote beside it and
the learning curve (issue #22, "whose gap"), Table 2 (vs the ``compare`` detectors of the harness, calibrated to
``fpr``), Table 3 (trained on one model's CW sets, tested on another's), CW -> DeepFool transfer, Tables 4/5
(n sweep), Figure 5 (median-filter baseline ROC, with Table 1), Table 6 (mean KL / Wasserstein distance, threshold
picked on the ROC as in the paper, plus an honest one calibrated on training clean images; Figure 8's scatter),
Figure 6 (the adaptive attack against the Table 1 SVM of the first model at its own decision).

Every function returns JSON-able rows (``dict[str, Any]``: the results document's structure).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ...detectors import EraseRestore, make_detector
from ...detectors.erase_restore import mean_kl_wd
from ...metrics import roc_auc, threshold_at_fpr
from .options import AdaptiveOptions, ClassifierSpec, classifier_specs
from .protocol import (
    ADAPTIVE_ARRAYS,
    RESTORES,
    Fitted,
    Floats,
    ModelData,
    Plan,
    adaptive_run,
    calibrated_threshold,
    fit,
    label_change_rate,
    native_threshold,
    score,
)

#: one row of a results table (JSON)
Row = dict[str, Any]
#: the test clean images' scores and each attack's test images' scores
Scores = tuple[Floats, dict[str, Floats]]
#: (model, classifier label, restore) -> (clean, pooled adversarial) test scores: Figure 5's ROC curves
RocData = dict[tuple[str, str, str], tuple[Floats, Floats]]
#: model -> "clean" or attack label -> (N, 2) mean KL and Wasserstein distances: Figure 8
ScatterData = dict[str, dict[str, Floats]]


# ==================================================================== rates
def rates(sc: Floats, sas: dict[str, Floats], nat: float, cal: float) -> Row:
    """FPR of the clean scores ``sc`` and detection rate of each attack's scores at the own cut ``nat`` and the
    calibrated one ``cal``, with per-attack AUCs and counts (None for an attack without test images)."""
    dr: dict[str, float | None] = {}
    dr_cal: dict[str, float | None] = {}
    auc: dict[str, float | None] = {}
    n_adv: dict[str, int] = {}
    out: Row = {
        "n_clean_test": int(len(sc)),
        "fpr": float((sc > nat).mean()),
        "fpr_calibrated": float((sc > cal).mean()),
        "dr": dr,
        "dr_calibrated": dr_cal,
        "auc": auc,
        "n_adv_test": n_adv,
    }
    for a, sa in sas.items():
        n_adv[a] = int(len(sa))
        dr[a] = float((sa > nat).mean()) if len(sa) else None
        dr_cal[a] = float((sa > cal).mean()) if len(sa) else None
        auc[a] = roc_auc(sc, sa) if len(sa) else None
    return out


def test_scores(det: EraseRestore, md: ModelData, attacks: list[str], n_use: int, restore: str = "telea") -> Scores:
    """Scores of the test clean images and of each attack's test images."""
    return (
        score(det, md.train_test("clean", 1, n_use, restore)),
        {a: score(det, md.train_test(a, 1, n_use, restore)) for a in attacks},
    )


def evaluate(
    det: EraseRestore,
    md: ModelData,
    attacks: list[str],
    n_use: int,
    restore: str = "telea",
    scores: Scores | None = None,
) -> Row:
    """FPR on test clean images and per-attack detection rates at the native and the calibrated threshold
    (from ``scores`` = :func:`test_scores` when already computed)."""
    sc, sas = scores if scores is not None else test_scores(det, md, attacks, n_use, restore)
    return rates(sc, {a: sas[a] for a in attacks}, native_threshold(det), calibrated_threshold(det))


def trainsplit_rates(s: Floats, nat: float, cal: float) -> Row:
    return {
        "fpr_trainsplit": float((s > nat).mean()),
        "fpr_trainsplit_calibrated": float((s > cal).mean()),
        "n_trainsplit_test": int(len(s)),
    }


def trainsplit_fpr(det: EraseRestore, md: ModelData, n_use: int, restore: str = "telea") -> Row:
    """FPR on the held-out clean images of the train split (images the target model was trained on; the paper's
    30,000 CIFAR-10 images per dataset must include at least 20,000 of them), own decision and calibrated."""
    s = score(det, md.extra_raw(n_use, restore, fold=1))
    return trainsplit_rates(s, native_threshold(det), calibrated_threshold(det)) if len(s) else {}


# ==================================================================== Figure 3 check
def insight(plan: Plan, mds: dict[str, ModelData]) -> list[Row]:
    """What one erase-and-restore draw does (the paper's Figure 3): how often the top-1 label changes."""
    rows = []
    for m, md in mds.items():
        for restore in RESTORES:
            for which in ["clean"] + plan.labels:
                top = md.P[restore][which].argmax(-1)
                changed = top[:, 1:] != top[:, :1]
                rows.append(
                    {
                        "model": m,
                        "restore": restore,
                        "set": which,
                        "n": int(len(top)),
                        "changed_per_draw": float(changed.mean()) if len(top) else None,
                        "changed_any_draw": float(changed.any(1).mean()) if len(top) else None,
                        "changed_majority": float((changed.mean(1) > 0.5).mean()) if len(top) else None,
                    }
                )
    return rows


# ==================================================================== Table 1 (+ Figure 5)
@dataclass
class Table1:
    """Table 1's rows (each with its median-filter baseline for Figure 5), the fitted Telea detectors by
    (model, classifier label) and Figure 5's ROC data."""

    rows: list[Row] = field(default_factory=list)
    fitted: dict[tuple[str, str], EraseRestore] = field(default_factory=dict)
    roc: RocData = field(default_factory=dict)


def table1(plan: Plan, mds: dict[str, ModelData]) -> Table1:
    """One detector per model and decision model trained on ``pooled``; every ``all_tables`` one also with the
    median-filter restore (Figure 5)."""
    t1, n = Table1(), plan.n
    for m, md in mds.items():
        for c in plan.specs:
            for restore in RESTORES if c["all_tables"] else RESTORES[:1]:
                fitted = fit(md, plan.pooled, c, n, plan.cfg, restore)
                det = fitted.det
                scores = test_scores(det, md, plan.labels, n, restore)
                ev = evaluate(det, md, plan.labels, n, restore, scores)
                sc, sa = scores[0], np.concatenate([scores[1][a] for a in plan.pooled])
                if restore == "telea":
                    t1.rows.append(_table1_row(m, md, c, fitted, ev, roc_auc(sc, sa), n))
                    t1.fitted[(m, c["label"])] = det
                else:
                    t1.rows[-1]["median_baseline"] = {**ev, "auc_pooled": roc_auc(sc, sa)}
                if c["all_tables"]:
                    t1.roc[(m, c["label"], restore)] = (sc, sa)
    return t1


def _table1_row(m: str, md: ModelData, c: ClassifierSpec, fitted: Fitted, ev: Row, auc_pooled: float, n: int) -> Row:
    return {
        "model": m,
        "classifier": c["label"],
        "kind": c["model"],
        "params": fitted.params,
        "extra_clean": c["extra_clean"],
        "align": fitted.det.params["align"],
        "n_clean_train": int((md.fold_c == 0).sum()) + (int(len(md.extra_raw(n))) if c["extra_clean"] else 0),
        **ev,
        "auc_pooled": auc_pooled,
        **trainsplit_fpr(fitted.det, md, n),
    }


def vote(plan: Plan, mds: dict[str, ModelData]) -> list[Row]:
    """The label-change vote evaluated like a Table 1 row, per model: own decision = changed in more than half the
    draws; calibrated = threshold at ``fpr`` of the training clean images' rates."""
    rows = []
    for m, md in mds.items():
        P = md.P["telea"]
        rate = {w: label_change_rate(P[w][:, : 1 + plan.n]) for w in ["clean"] + plan.labels}
        sc = rate["clean"][md.fold_c == 1]
        sas = {a: rate[a][md.fold_a[a] == 1] for a in plan.labels}
        cal = float(threshold_at_fpr(rate["clean"][md.fold_c == 0], plan.cfg.fpr))
        out = {
            **rates(sc, sas, 0.5, cal),
            "threshold_calibrated": cal,
            "auc_pooled": roc_auc(sc, np.concatenate([sas[a] for a in plan.pooled])),
        }
        p = md.extra.probs.get("telea")
        if p is not None and (md.extra.fold == 1).any():
            out.update(trainsplit_rates(label_change_rate(p[md.extra.fold == 1, : 1 + plan.n]), 0.5, cal))
        rows.append({"model": m, "classifier": "label-change vote", **out})
    return rows


# ==================================================================== learning curve
def learning_curve(plan: Plan, mds: dict[str, ModelData]) -> list[Row]:
    """AUC vs training pairs per attack family (CW pooled, each other attack alone): k clean + k adversarial
    training images drawn ``repeats`` times from the training fold, AUC on the whole test fold."""
    lc = plan.opts.learning_curve
    if lc is None:
        return []
    specs = classifier_specs(lc.classifiers)
    families = ([("CW-L2 (pooled)", plan.cw)] if plan.cw else []) + [(lab, [lab]) for lab in plan.other]
    rows = []
    for md in mds.values():
        fc_tr, fc_te = md.train_test("clean", 0, plan.n), md.train_test("clean", 1, plan.n)
        for fam, atks in families:
            fa_tr = np.concatenate([md.train_test(a, 0, plan.n) for a in atks])
            fa_te = np.concatenate([md.train_test(a, 1, plan.n) for a in atks])
            if not len(fa_te):
                continue
            for k in lc.sizes:
                if k > min(len(fc_tr), len(fa_tr)):
                    continue
                for spec in specs:
                    aucs = [
                        _learning_curve_auc(plan, md, spec, k, r, (fc_tr, fa_tr), (fc_te, fa_te))
                        for r in range(lc.repeats)
                    ]
                    rows.append(
                        {
                            "model": md.name,
                            "family": fam,
                            "pairs": k,
                            "classifier": spec["label"],
                            "auc_mean": float(np.mean(aucs)),
                            "auc_min": float(np.min(aucs)),
                            "auc_max": float(np.max(aucs)),
                            "repeats": lc.repeats,
                        }
                    )
    return rows


def _learning_curve_auc(
    plan: Plan,
    md: ModelData,
    spec: ClassifierSpec,
    k: int,
    r: int,
    train: tuple[Floats, Floats],
    test: tuple[Floats, Floats],
) -> float:
    """Test AUC of a detector fitted on draw ``r`` of ``k`` clean and ``k`` adversarial training images."""
    (fc_tr, fa_tr), (fc_te, fa_te) = train, test
    rng = np.random.default_rng([plan.cfg.seed, k, r])
    ic, ia = rng.choice(len(fc_tr), k, replace=False), rng.choice(len(fa_tr), k, replace=False)
    det = EraseRestore(
        md.clf,
        n=plan.n,
        decision_model=spec["model"],
        decision_params=dict(spec["params"]) or None,
        align=spec["align"],
        fpr=plan.cfg.fpr,
        seed=plan.cfg.seed,
    )
    det.fit_features(fc_tr[ic], fa_tr[ia])
    return roc_auc(det.score_features(fc_te), det.score_features(fa_te))


# ==================================================================== Table 2
def table2(plan: Plan, mds: dict[str, ModelData]) -> list[Row]:
    """The harness's ``compare`` detectors (unsupervised) calibrated on training clean images, per model."""
    cfg, t2 = plan.cfg, []
    for m, md in mds.items():
        for d, feats in md.compare.items():
            det = make_detector(d, md.clf, fpr=cfg.fpr, seed=cfg.seed).fit_features(feats["clean"][md.fold_c == 0])
            assert det.threshold_ is not None
            th = det.threshold_
            sc = det.score_features(feats["clean"][md.fold_c == 1])
            dr: dict[str, float | None] = {}
            auc: dict[str, float | None] = {}
            for a in plan.labels:
                sa = score(det, feats[a][md.fold_a[a] == 1])
                dr[a] = float((sa > th).mean()) if len(sa) else None
                auc[a] = roc_auc(sc, sa) if len(sa) else None
            t2.append({"model": m, "detector": d, "fpr": float((sc > th).mean()), "dr": dr, "auc": auc})
    return t2


# ==================================================================== Table 3 + transfer
def table3(plan: Plan, mds: dict[str, ModelData]) -> tuple[list[Row], list[Row]]:
    """Detectors trained on one model's CW sets tested on every model's CW sets (Table 3) and on its other attacks
    (the CW -> DeepFool transfer)."""
    t3, transfer = [], []
    for a_m, md_a in mds.items():
        for c in plan.classifiers:
            det = fit(md_a, plan.cw, c, plan.n, plan.cfg).det
            for b_m, md_b in mds.items():
                head = {"train": a_m, "test": b_m, "classifier": c["label"], "kind": c["model"]}
                t3.append({**head, **evaluate(det, md_b, plan.cw, plan.n)})
                if plan.other:
                    transfer.append({**head, **evaluate(det, md_b, plan.other, plan.n)})
    return t3, transfer


# ==================================================================== Tables 4/5
def table4(plan: Plan, mds: dict[str, ModelData]) -> list[Row]:
    """The n sweep (trained on CW-L2): the first n' of the n draws of each image."""
    return [
        {
            "model": m,
            "n": n_use,
            "classifier": c["label"],
            "kind": c["model"],
            **evaluate(fit(md, plan.cw, c, n_use, plan.cfg).det, md, plan.cw, n_use),
        }
        for m, md in mds.items()
        for n_use in plan.ns
        for c in plan.classifiers
    ]


# ==================================================================== Table 6 (+ Figure 8)
def table6(plan: Plan, mds: dict[str, ModelData]) -> tuple[list[Row], ScatterData]:
    """Mean KL divergence and Wasserstein distance over 10 draws as in the paper: at the ROC point maximising
    TPR - FPR (the paper's cut) and at a threshold calibrated on training clean images."""
    t6, scatter = [], {}
    draws = min(10, plan.n)
    for m, md in mds.items():
        dc = mean_kl_wd(md.P["telea"]["clean"][:, : 1 + draws])
        scatter[m] = {"clean": dc}
        for a in plan.labels:
            da = mean_kl_wd(md.P["telea"][a][:, : 1 + draws])
            scatter[m][a] = da
            for j, metric in enumerate(("kl", "wd")):
                sc, sa = dc[:, j], da[:, j]
                t6.append(
                    {
                        "model": m,
                        "attack": a,
                        "metric": metric,
                        **youden(sc, sa),
                        **calibrated(sc[md.fold_c == 0], sc[md.fold_c == 1], sa[md.fold_a[a] == 1], plan.cfg.fpr),
                    }
                )
    return t6, scatter


def youden(sc: Floats, sa: Floats) -> Row:
    """The paper's Table 6 cut: the ROC point maximising TPR - FPR, picked on the same images."""
    from sklearn.metrics import roc_curve

    f, t, _ = roc_curve(np.r_[np.zeros(len(sc)), np.ones(len(sa))], np.r_[sc, sa])
    j = int(np.argmax(t - f))
    return {
        "fpr_roc": float(f[j]),
        "tpr_roc": float(t[j]),
        "auc": roc_auc(sc, sa),
        "n_clean": int(len(sc)),
        "n_adv": int(len(sa)),
    }


def calibrated(sc_train: Floats, sc_test: Floats, sa_test: Floats, fpr: float) -> Row:
    th = threshold_at_fpr(sc_train, fpr)
    return {
        "fpr_calibrated": float((sc_test > th).mean()),
        "tpr_calibrated": float((sa_test > th).mean()) if len(sa_test) else None,
    }


# ==================================================================== Figure 6: adaptive attack
def figure6(
    plan: Plan, mds: dict[str, ModelData], fitted: dict[tuple[str, str], EraseRestore], cache: Path, progress: bool
) -> list[Row]:
    """Every ``[[themis.adaptive]]`` run against the Table 1 SVM of the first model (else its first decision
    model) at its own decision."""
    m0 = plan.models[0]
    c0 = next((c for c in plan.specs if c["label"] == "svc"), plan.specs[0])
    det0 = fitted[(m0, c0["label"])]
    return [adaptive(plan, a, mds[m0], det0, cache, progress) for a in plan.opts.adaptive]


def adaptive(plan: Plan, a: AdaptiveOptions, md: ModelData, det: EraseRestore, cache: Path, progress: bool) -> Row:
    """One adaptive run's bypass rate, curve vs paths, distortion and re-check evasion."""
    cfg = plan.cfg
    run = adaptive_run(cfg, a, md, det, cache, progress)
    cat = run.arrays
    assert set(cat) == set(ADAPTIVE_ARRAYS)
    found = cat["evaded"]
    restarts = int(a.restarts)
    curve = [float(((cat["restart"] >= 0) & (cat["restart"] < T) & found).mean()) for T in range(1, restarts + 1)]
    budgets = [0.25, 0.5, 1.0, 1.5, 2.0]
    ref = md.sets[cfg.attacks[0].label] if cfg.attacks else None
    return {
        "label": a.label,
        "params": {"init_noise": 8 / 255, **a.attack_params()},
        "n_images": run.n_images,
        "operating_point": "SVM decision_function > 0",
        "l2_of_bypass": cat["l2"][found].tolist(),
        "bypass_within_l2": {str(b): float((found & (cat["l2"] <= b)).mean()) for b in budgets},
        "reference_attack": cfg.attacks[0].label if ref is not None else None,
        "reference_median_l2": float(np.median(ref.norms["l2"])) if ref is not None and len(ref.x_adv) else None,
        "clean_false_alarms": int(run.clean_flag.sum()),
        "bypass_rate": float(found.mean()),
        "bypass_curve": curve,
        "n_bypass": int(found.sum()),
        "median_l2_bypass": float(np.median(cat["l2"][found])) if found.any() else None,
        "mean_recheck_evasion": float(np.nanmean(cat["recheck"][found])) if found.any() else None,
        "robust_bypass_rate": float((found & (np.nan_to_num(cat["recheck"]) >= 0.5)).mean()),
        "restart_of_bypass": cat["restart"][found].tolist(),
        "seconds": run.seconds,
        "seconds_per_image": run.seconds / max(1, run.n_images),
    }
