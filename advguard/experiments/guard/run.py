"""The hybrid-detector experiment: single detectors and :class:`~advguard.Guard` combinations on every attack family.

Protocol (the THEMIS paper's Table 7 asks for a hybrid that is good on L2 and L-inf attacks at once; we evaluate
it on every family of the harness):

1. The configured attacks build their adversarial sets from the same correctly classified clean images (cached,
   shared with the grid). A patch attack trains one universal patch per chunk of images it then attacks.
2. The clean images are split by clean-image id into three folds (``fractions``, default 30/30/40 %): **D** fits
   the detectors, **M** fits the combination (the ``any`` rule's clean ranks, the ``stacked`` meta-model) and
   calibrates every threshold, **T** is the test fold. An adversarial image goes to its source image's fold.
3. Each detector is fitted once on D (clean, plus the adversarial images of *every* family pooled when it is
   supervised): one fitted detector facing all families, as in deployment. Pooling makes the adversarial class
   several times the clean one; the shipped config fits the supervised detectors class-balanced
   (``class_weight="balanced"``, a deviation from the papers, see :mod:`advguard.detectors.decision` and
   :mod:`advguard.detectors.cnn`). Features are cached (the grid's cache
   keys); detectors that fit on images (CNN detector, TaintRadar, SentiNet) are fitted on images and their scores
   cached.
4. Every decision, single or combined, is thresholded on M's clean images for the target FPR (the same clean
   images for all); the ``stacked`` meta-model is trained on M's clean and pooled adversarial scores
   (:func:`advguard.guard.fit_meta_model`) and the ``any`` rule calibrated jointly
   (:func:`advguard.guard.any_threshold`): the Guard's own code, on cached scores.
5. On T, per family and pooled: AUC with a bootstrap CI, TPR at 1/5/10 % FPR (from T's own ROC, threshold-free),
   detection rate and clean FPR at the calibrated threshold.

Deviation from :class:`~advguard.Guard`: its ``stacked`` rule fits the meta-model on out-of-fold detector scores
of all its images (k refits of every detector); here the detectors are fitted once on D and the meta-model on
their scores of M (a hold-out instead of k folds: the CNN detector and TaintRadar would otherwise be refitted k
times). Both give the meta-model scores from detectors that did not see the image.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from ...advsets import AdvSet
from ...classifier import Classifier
from ...data.cache import cache_lock, load_entry
from ...detectors import make_detector
from ...detectors.decision import decision_scores
from ...guard import any_threshold, clean_ranks, fit_meta_model
from ...metrics import detection_report, threshold_at_fpr
from ...models import load_model
from ..common import (
    bench_paths,
    build_sets,
    cache_key,
    cached_chunks,
    clean_set_key,
    data_summary,
    dataset_kwargs,
    feature_key,
    features,
    forward_cost,
    results_header,
    shared_folds,
)
from ..config import DetectorSpec, ExperimentConfig
from .options import Combination, GuardOptions

#: fold indices of the three shares
FIT, COMBINE, TEST = 0, 1, 2
#: the pooled row's family name
POOLED = "all families"


def run_guard(
    cfg: ExperimentConfig, out: str | Path | None = None, cache_dir: str | Path | None = None, progress: bool = True
) -> dict[str, Any]:
    """Run the experiment; write the artefacts into ``out``; return the results document."""
    from .report import write_artefacts

    o: GuardOptions = cfg.options if isinstance(cfg.options, GuardOptions) else GuardOptions.from_section({})
    out, cache = bench_paths(cfg, out, cache_dir)
    clf = load_model(cfg.model, device=cfg.device)
    ds_kwargs = dataset_kwargs(cfg, cfg.model)
    sets = build_sets(cfg, clf, ds_kwargs, cache, progress)
    first, c_fold, a_fold = shared_folds(cfg, sets, "guard")
    clean_key = clean_set_key(cfg, first, ds_kwargs)
    floor = forward_cost(clf, first.x_clean[c_fold == TEST][:256])

    scores: dict[str, dict[str, np.ndarray]] = {}
    costs: dict[str, dict[str, Any]] = {}
    for d in tqdm(cfg.detectors, desc="detectors", disable=not progress):
        scores[d.label], costs[d.label] = detector_scores(d, clf, cfg, sets, clean_key, c_fold, a_fold, cache)

    fams = list(sets)
    singles = []
    for d in cfg.detectors:
        s = scores[d.label]
        thr = float(threshold_at_fpr(s["clean"][c_fold == COMBINE], cfg.fpr))
        singles.append(
            {
                "detector": d.label,
                "detector_name": d.name,
                "detector_params": d.params,
                "cost": costs[d.label],
                "families": _per_family(s, thr, c_fold, a_fold, fams, cfg.bootstrap),
            }
        )
    combos = []
    for c in o.combinations:
        labels = c.detectors or [d.label for d in cfg.detectors]
        s, thr = combined_scores(c, labels, scores, c_fold, a_fold, fams, cfg.fpr, o.folds, cfg.seed)
        combos.append(
            {
                "label": c.label,
                "combine": c.combine,
                "detectors": labels,
                "meta_model": c.meta_model if c.combine == "stacked" else None,
                "ms_per_image": float(sum(costs[k]["ms_per_image"] for k in labels)),
                "families": _per_family(s, thr, c_fold, a_fold, fams, cfg.bootstrap),
            }
        )
    doc = {
        **results_header(cfg),
        "data": data_summary(cfg, first),
        "folds": {
            "clean": {n: int((c_fold == i).sum()) for i, n in enumerate(("fit", "combine", "test"))},
            "adversarial": {
                a: {n: int((f == i).sum()) for i, n in enumerate(("fit", "combine", "test"))} for a, f in a_fold.items()
            },
        },
        "forward_floor": floor,
        "advsets": {k: v.summary() for k, v in sets.items()},
        "families": [*fams, POOLED],
        "singles": singles,
        "combinations": combos,
        "goal": goal_rows(singles, combos, [*fams, POOLED]),
    }
    write_artefacts(doc, out)
    return doc


def detector_scores(
    d: DetectorSpec,
    clf: Classifier,
    cfg: ExperimentConfig,
    sets: dict[str, AdvSet],
    clean_key: str,
    c_fold: np.ndarray,
    a_fold: dict[str, np.ndarray],
    cache: Path,
) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """The detector fitted on fold D (clean + every family's adversarial images when supervised) and its scores of
    all clean images (``"clean"``) and of each family's adversarial images (by attack label); with its cost."""
    det = make_detector(d.name, clf, fpr=cfg.fpr, seed=cfg.seed, **d.params)
    first = next(iter(sets.values()))
    if det.fits_on_features:
        feat_dir = cache / "features"
        f_clean, cost = features(det, first.x_clean, feat_dir / f"{feature_key(d, clean_key, 'clean')}.npz", d.label)
        f_adv = {
            a: features(det, s.x_adv, feat_dir / f"{feature_key(d, s.key, 'adv')}.npz", f"{d.label} {a}")[0]
            for a, s in sets.items()
        }
        fa_fit = np.concatenate([f_adv[a][a_fold[a] == FIT] for a in sets]) if det.supervised else None
        det.fit_features(f_clean[c_fold == FIT], fa_fit)
        return {"clean": det.score_features(f_clean), **{a: det.score_features(f) for a, f in f_adv.items()}}, cost
    # fitted on images: its scores are cached under the fit's own key (detector, data, folds)
    key = cache_key(d.name, d.params, clean_key, [s.key for s in sets.values()], cfg.fractions, cfg.seed, cfg.fpr)
    folder = cache / "guard-scores" / key
    with cache_lock(folder / "fit"):
        if not _all_cached(folder, ["clean", *range(len(sets))]):
            xa_fit = np.concatenate([s.x_adv[a_fold[a] == FIT] for a, s in sets.items()]) if det.supervised else None
            det.fit(first.x_clean[c_fold == FIT], xa_fit)
        out, cost = {}, {}
        for i, (name, x) in enumerate([("clean", first.x_clean), *((a, s.x_adv) for a, s in sets.items())]):
            path = folder / ("clean.npz" if name == "clean" else f"adv-{i - 1}.npz")
            out[name], c = cached_chunks(path, "scores", clf, x, det.score, np.zeros(0), desc=f"{d.label} {name}")
            cost = c if name == "clean" else cost
    return out, cost


def _all_cached(folder: Path, names: list[object]) -> bool:
    files = [folder / ("clean.npz" if n == "clean" else f"adv-{n}.npz") for n in names]
    return all((e := load_entry(f)) is not None and "scores" in e for f in files)


def combined_scores(
    c: Combination,
    labels: list[str],
    scores: dict[str, dict[str, np.ndarray]],
    c_fold: np.ndarray,
    a_fold: dict[str, np.ndarray],
    fams: list[str],
    fpr: float,
    folds: int,
    seed: int,
) -> tuple[dict[str, np.ndarray], float]:
    """The combination's scores (same layout as a detector's) and its threshold, both fitted on fold M."""
    stack = {k: np.stack([scores[lab][k] for lab in labels], 1) for k in ["clean", *fams]}
    m_clean = stack["clean"][c_fold == COMBINE]
    if c.combine == "any":
        clean_sorted, thr = any_threshold(m_clean, fpr)
        return {k: clean_ranks(clean_sorted, v).max(1) for k, v in stack.items()}, thr
    m_adv = np.concatenate([stack[a][a_fold[a] == COMBINE] for a in fams])
    x = np.concatenate([m_clean, m_adv])
    y = np.r_[np.zeros(len(m_clean)), np.ones(len(m_adv))].astype(int)
    k = min(folds, len(m_clean), len(m_adv))
    meta, thr = fit_meta_model(x, y, c.meta_model, fpr=fpr, folds=k, seed=seed)
    return {k_: decision_scores(meta, v) for k_, v in stack.items()}, thr


def _per_family(
    s: dict[str, np.ndarray],
    thr: float,
    c_fold: np.ndarray,
    a_fold: dict[str, np.ndarray],
    fams: list[str],
    n_boot: int,
) -> dict[str, dict[str, Any]]:
    """The test fold's detection report per family and pooled (the same clean test images in each)."""
    sc = s["clean"][c_fold == TEST]
    adv = {a: s[a][a_fold[a] == TEST] for a in fams}
    out = {a: detection_report(sc, v, threshold=thr, n_boot=n_boot) for a, v in adv.items() if len(v)}
    out[POOLED] = detection_report(sc, np.concatenate(list(adv.values())), threshold=thr, n_boot=n_boot)
    return out


def goal_rows(singles: list[dict[str, Any]], combos: list[dict[str, Any]], fams: list[str]) -> list[dict[str, Any]]:
    """Per combination and family: its TPR at 5 % FPR and AUC beside the best single detector's on that family,
    and whether it is at least as good on every family at once (the issue's goal)."""
    rows = []
    for c in combos:
        per = {}
        for f in fams:
            best = max((s for s in singles if f in s["families"]), key=lambda s: s["families"][f]["tpr_at_fpr_5"])
            best_auc = max(s["families"][f]["auc"] for s in singles if f in s["families"])
            mine = c["families"].get(f)
            if mine is None:
                continue
            per[f] = {
                "tpr_at_fpr_5": mine["tpr_at_fpr_5"],
                "best_single": best["detector"],
                "best_single_tpr_at_fpr_5": best["families"][f]["tpr_at_fpr_5"],
                "auc": mine["auc"],
                "best_single_auc": best_auc,
                "at_least_as_good": bool(mine["tpr_at_fpr_5"] >= best["families"][f]["tpr_at_fpr_5"] - 1e-12),
            }
        rows.append({"label": c["label"], "families": per, "met": all(v["at_least_as_good"] for v in per.values())})
    return rows
