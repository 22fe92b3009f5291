"""Erase-and-Restore (THEMIS)'s protocol as an ``advguard reproduce`` experiment (``experiment = "themis"``).

For every target model in ``[themis] models``:

1. Balanced sets (Section 5): the correctly classified images of the drawn subset are the clean set;
   with ``balanced = true`` each configured attack attacks a disjoint part of them, so the pooled
   adversarial set holds about one image per clean image. 80/20 train/test by clean-image id.
2. The (1 + n) softmax vectors of every image under n erase-and-restore draws are computed once
   with Telea inpainting and once with the 3x3 median baseline (cached); every table slices them:
   the n sweep uses the first n' draws (draws are independent, so this equals running with n').
3. Table 1 (one detector per model and classifier, trained on all attacks pooled or on ``table1_train_on``; FPR and
   per-attack detection rate at the classifier's own decision, as the paper reports; AUCs and the rates at a
   threshold calibrated to ``fpr`` on training clean images too), Table 2 (vs the ``compare``
   detectors of the harness, calibrated to ``fpr``), Table 3 (trained on one model's CW sets, tested
   on another's), CW -> DeepFool transfer, Tables 4/5 (n sweep), Figure 5 (median-filter baseline
   ROC), Table 6 (mean KL / Wasserstein distance, threshold picked on the ROC as in the paper, plus
   an honest one calibrated on training clean images), Figure 8 (KL vs WD scatter).
4. Whose gap (issue #22): ``classifiers`` may be tables ``{label, model, params, grid, align, extra_clean,
   all_tables}`` so one run compares our decision model with the authors' (``SVC(C=5, gamma=0.01)`` on raw
   softmax features, AdaBoost with 200 stumps), a cross-validated grid and ``extra_clean_train`` clean images
   from the train split; every Table 1 row also gets the learning-free label-change vote as a reference, and
   ``[themis.learning_curve]`` draws AUC vs the number of training pairs per attack family.
5. ``[themis.adaptive]``: :class:`~advguard.attacks.adaptive.DetectorAwareCW` against the Table 1
   SVM of the first model at its own decision, on test-fold clean images, cached in chunks
   (resumable); the bypass rate vs number of optimisation paths is Figure 6.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from ...advsets import fold_of
from ...data.cache import cached_arrays, load_entry
from ...detectors import EraseRestore, make_detector
from ...detectors.decision import SCALED_MODELS as SCALED
from ...detectors.erase_restore import mean_kl_wd
from ...metrics import roc_auc
from ...models import load_model
from ..common import (
    bench_paths,
    build_sets,
    cache_key,
    cached_chunks,
    clean_set_key,
    dataset_kwargs,
    feature_key,
    features,
    forward_cost,
    results_header,
    write_results,
)
from ..config import BenchConfig, DetectorSpec
from ..page import Page, fig_png, pct, pyplot
from . import paper
from .options import classifier_specs

RESTORES = ("telea", "median")


def _probs_cached(det: EraseRestore, x: np.ndarray, path: Path, desc: str, progress: bool) -> tuple[np.ndarray, dict]:
    """(N, 1 + n, C) float32 softmax outputs of ``x`` and its n restored variants, cached at ``path``."""
    clf = det.classifier
    return cached_chunks(
        path,
        "probs",
        clf,
        x,
        lambda xb: det.probs(clf.validate(xb)).astype(np.float32),
        np.zeros((0, 1 + det.params["n"], clf.num_classes), np.float32),
        chunk=256 if x.shape[-1] * x.shape[-2] <= 4096 else 16,
        desc=desc,
        progress=progress,
    )


def _set_probs(
    cfg: BenchConfig, clf, x: np.ndarray, set_key: str, n: int, restore: str, cache: Path, desc: str, progress: bool
) -> tuple[np.ndarray, dict]:
    """:func:`_probs_cached` for one image set, with its own mask stream (seeded by the set's cache key: no two
    sets share masks), cached under that key."""
    seed = int(cache_key(cfg.seed, set_key, restore)[:8], 16)
    det = EraseRestore(clf, n=n, restore=restore, seed=seed)
    return _probs_cached(det, x, cache / "themis-probs" / f"{cache_key(set_key, n, restore, seed)}.npz", desc, progress)


def _native_threshold(det: EraseRestore) -> float:
    """The decision model's own cut: decision_function > 0 (SVM, AdaBoost) or P(adversarial) > 0.5."""
    return 0.0 if hasattr(det.estimator_, "decision_function") else 0.5


class _ModelData:
    """Everything one target model contributes: sets, folds and cached erase-and-restore outputs."""

    def __init__(self, cfg: BenchConfig, model: str, cache: Path, progress: bool):
        opts = cfg.section("themis")
        self.name = model
        self.clf = clf = load_model(model)
        ds_kwargs = dataset_kwargs(cfg, model)
        self.sets = build_sets(
            cfg, clf, ds_kwargs, cache, progress, model=model, balanced=bool(opts.get("balanced", False))
        )
        first = next(iter(self.sets.values()))
        self.first = first
        self.fold_c = fold_of(first.clean_ids, cfg.fractions, cfg.seed)
        self.fold_a = {lab: fold_of(s.adv_ids, cfg.fractions, cfg.seed) for lab, s in self.sets.items()}
        n = int(opts.get("n", 11))
        ckey = clean_set_key(cfg, first, ds_kwargs)
        self.P: dict[str, dict[str, np.ndarray]] = {}
        self.cost: dict[str, dict] = {}
        for restore in RESTORES:
            self.P[restore] = {}
            sources = [("clean", first.x_clean, ckey)] + [(lab, s.x_adv, s.key) for lab, s in self.sets.items()]
            for lab, x, key in sources:
                self.P[restore][lab], c = _set_probs(
                    cfg, clf, x, key, n, restore, cache, f"{model} E&R {restore} {lab}", progress
                )
                if lab == "clean":
                    self.cost[restore] = c
        self.extra: dict[str, np.ndarray] = {}
        self.extra_info: dict = {}
        self.extra_fold = np.zeros(0, dtype=int)
        self.grid_best: dict[tuple, dict] = {}  # cross-validated params per (label, attacks, n, restore): _fit
        k = int(opts.get("extra_clean_train", 0))
        if k:
            from ...data import load_dataset

            kw = {key: v for key, v in ds_kwargs.items() if key != "source"}
            ds = load_dataset(cfg.dataset, "train", limit=k, seed=cfg.seed, **kw)
            pred = clf.predict(ds.x).numpy()
            keep = pred == ds.y
            x_tr = ds.x[keep]
            # the dataset's own indices (stable per draw) through the same seeded hash as the test images' ids
            self.extra_fold = fold_of(np.asarray(ds.indices)[keep], cfg.fractions, cfg.seed)
            self.extra_info = {
                "split": "train",
                "source": ds.source,
                "drawn": int(len(ds.x)),
                "correct": int(keep.sum()),
                "fit": int((self.extra_fold == 0).sum()),
                "held_out": int((self.extra_fold == 1).sum()),
            }
            tkey = cache_key("extra-clean-train", cfg.dataset, ds.source, k, cfg.seed, first.config.get("weights"))
            for restore in RESTORES:
                self.extra[restore], _ = _set_probs(
                    cfg, clf, x_tr, tkey, n, restore, cache, f"{model} E&R {restore} train-split clean", progress
                )
        self.floor = forward_cost(clf, first.x_clean[:256])
        # comparison detectors of the harness (unsupervised, calibrated on training clean images)
        self.compare: dict[str, dict[str, np.ndarray]] = {}
        for d in opts.get("compare", []):
            spec_d = DetectorSpec(d, d)
            det = make_detector(d, clf, fpr=cfg.fpr, seed=cfg.seed)
            fc, _ = features(
                det,
                first.x_clean,
                cache / "features" / f"{feature_key(spec_d, ckey, 'clean')}.npz",
                f"{model} {d} clean",
            )
            self.compare[d] = {"clean": fc}
            for lab, s in self.sets.items():
                self.compare[d][lab], _ = features(
                    det, s.x_adv, cache / "features" / f"{feature_key(spec_d, s.key, 'adv')}.npz", f"{model} {d} {lab}"
                )

    def raw(self, which: str, n_use: int, restore: str = "telea", rows=slice(None)) -> np.ndarray:
        """Raw E&R feature (N, (1 + n_use) * C) of ``which`` ("clean" or an attack label), only ``rows``
        (selected before the float64 copy, which matters for 1,000-class stacks)."""
        p = self.P[restore][which][rows, : 1 + n_use]
        return p.reshape(len(p), p.shape[1] * p.shape[2]).astype(np.float64)

    def extra_raw(self, n_use: int, restore: str = "telea", fold: int = 0) -> np.ndarray:
        """Raw E&R features of the extra clean images from the train split in ``fold`` (0: added to the training
        clean images of ``extra_clean`` rows; 1: held out to measure every row's FPR on images the target model
        was trained on); (0, d) when there are none."""
        p = self.extra.get(restore)
        if p is None:
            return np.zeros((0, (1 + n_use) * self.clf.num_classes))
        p = p[self.extra_fold == fold, : 1 + n_use]
        return p.reshape(len(p), p.shape[1] * p.shape[2]).astype(np.float64)

    def train_test(self, which: str, fold: int, n_use: int, restore: str = "telea") -> np.ndarray:
        f = self.fold_c if which == "clean" else self.fold_a[which]
        return self.raw(which, n_use, restore, f == fold)


def _grid_search(spec: dict, f: np.ndarray, y: np.ndarray, seed: int) -> dict:
    """Best ``spec["grid"]`` values by 5-fold stratified cross-validated ROC AUC on the training features."""
    from sklearn.model_selection import GridSearchCV, StratifiedKFold
    from sklearn.pipeline import Pipeline

    from ...detectors.decision import make_decision_model

    est = make_decision_model(spec["model"], seed=seed, **spec["params"])
    prefix = est.steps[-1][0] + "__" if isinstance(est, Pipeline) else ""
    gs = GridSearchCV(
        est,
        {prefix + k: v for k, v in spec["grid"].items()},
        scoring="roc_auc",
        cv=StratifiedKFold(5, shuffle=True, random_state=seed),
        n_jobs=1,
    ).fit(f, y)
    return {k[len(prefix) :]: (v.item() if isinstance(v, np.generic) else v) for k, v in gs.best_params_.items()}


def _fit(
    md: _ModelData, attacks: list[str], spec: dict, n_use: int, cfg: BenchConfig, restore: str = "telea"
) -> EraseRestore:
    f_clean = md.train_test("clean", 0, n_use, restore)
    if spec["extra_clean"]:
        f_clean = np.concatenate([f_clean, md.extra_raw(n_use, restore)])
    f_adv = np.concatenate([md.train_test(a, 0, n_use, restore) for a in attacks])
    params = dict(spec["params"])
    if spec["grid"]:
        key = (spec["label"], tuple(attacks), n_use, restore)
        if key not in md.grid_best:
            probe = EraseRestore(md.clf, n=n_use, restore=restore, align=spec["align"])
            f = probe._reduce(np.concatenate([f_clean, f_adv]))
            md.grid_best[key] = _grid_search(
                spec, f, np.r_[np.zeros(len(f_clean)), np.ones(len(f_adv))].astype(int), cfg.seed
            )
        params.update(md.grid_best[key])
    det = EraseRestore(
        md.clf,
        n=n_use,
        restore=restore,
        decision_model=spec["model"],
        decision_params=params or None,
        align=spec["align"],
        fpr=cfg.fpr,
        seed=cfg.seed,
    )
    det.fit_features(f_clean, f_adv)
    det.chosen_params_ = params
    return det


def label_change_rate(probs: np.ndarray) -> np.ndarray:
    """Share of the n draws whose top-1 label differs from the original image's: the learning-free reference
    (flag an image whose label changes in a majority of draws; the issue's "~2 % FPR with 91-100 % of CW")."""
    top = probs.argmax(-1)
    return (top[:, 1:] != top[:, :1]).mean(1)


def _vote_row(md: _ModelData, labels: list[str], pooled: list[str], n_use: int, fpr: float) -> dict:
    """The label-change vote evaluated like a Table 1 row: own decision = changed in more than half the draws;
    calibrated = threshold at ``fpr`` of the training clean images' rates."""
    from ...metrics import threshold_at_fpr

    P = md.P["telea"]
    rate = {w: label_change_rate(P[w][:, : 1 + n_use]) for w in ["clean"] + labels}
    sc = rate["clean"][md.fold_c == 1]
    sas = {a: rate[a][md.fold_a[a] == 1] for a in labels}
    cal = float(threshold_at_fpr(rate["clean"][md.fold_c == 0], fpr))
    out = {
        **_rates(sc, sas, 0.5, cal),
        "threshold_calibrated": cal,
        "auc_pooled": roc_auc(sc, np.concatenate([sas[a] for a in pooled])),
    }
    p = md.extra.get("telea")
    if p is not None and (md.extra_fold == 1).any():
        out.update(_trainsplit_rates(label_change_rate(p[md.extra_fold == 1, : 1 + n_use]), 0.5, cal))
    return out


def _learning_curve(
    md: _ModelData, labels: list[str], cw: list[str], lc: dict, n_use: int, cfg: BenchConfig
) -> list[dict]:
    """AUC vs training pairs per attack family (CW pooled, each other attack alone): k clean + k adversarial
    training images drawn ``repeats`` times from the training fold, AUC on the whole test fold."""
    specs = classifier_specs(lc.get("classifiers", ["svc", "adaboost"]))
    families = ([("CW-L2 (pooled)", cw)] if cw else []) + [(lab, [lab]) for lab in labels if lab not in cw]
    sizes = [int(v) for v in lc.get("sizes", [25, 50, 110, 220, 440])]
    repeats = int(lc.get("repeats", 3))
    rows = []
    fc_tr, fc_te = md.train_test("clean", 0, n_use), md.train_test("clean", 1, n_use)
    for fam, atks in families:
        fa_tr = np.concatenate([md.train_test(a, 0, n_use) for a in atks])
        fa_te = np.concatenate([md.train_test(a, 1, n_use) for a in atks])
        if not len(fa_te):
            continue
        for k in sizes:
            if k > min(len(fc_tr), len(fa_tr)):
                continue
            for spec in specs:
                aucs = []
                for r in range(repeats):
                    rng = np.random.default_rng([cfg.seed, k, r])
                    ic, ia = rng.choice(len(fc_tr), k, replace=False), rng.choice(len(fa_tr), k, replace=False)
                    det = EraseRestore(
                        md.clf,
                        n=n_use,
                        decision_model=spec["model"],
                        decision_params=dict(spec["params"]) or None,
                        align=spec["align"],
                        fpr=cfg.fpr,
                        seed=cfg.seed,
                    )
                    det.fit_features(fc_tr[ic], fa_tr[ia])
                    aucs.append(roc_auc(det.score_features(fc_te), det.score_features(fa_te)))
                rows.append(
                    {
                        "model": md.name,
                        "family": fam,
                        "pairs": k,
                        "classifier": spec["label"],
                        "auc_mean": float(np.mean(aucs)),
                        "auc_min": float(np.min(aucs)),
                        "auc_max": float(np.max(aucs)),
                        "repeats": repeats,
                    }
                )
    return rows


def _test_scores(
    det: EraseRestore, md: _ModelData, attacks: list[str], n_use: int, restore: str = "telea"
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Scores of the test clean images and of each attack's test images."""
    return (
        _score(det, md.train_test("clean", 1, n_use, restore)),
        {a: _score(det, md.train_test(a, 1, n_use, restore)) for a in attacks},
    )


def _score(det, f: np.ndarray) -> np.ndarray:
    """``det.score_features(f)``; empty for no images (scikit-learn refuses empty arrays)."""
    return det.score_features(f) if len(f) else np.zeros(0)


def _trainsplit_fpr(det: EraseRestore, md: _ModelData, n_use: int, restore: str = "telea") -> dict:
    """FPR on the held-out clean images of the train split (images the target model was trained on; the paper's
    30,000 CIFAR-10 images per dataset must include at least 20,000 of them), own decision and calibrated."""
    s = _score(det, md.extra_raw(n_use, restore, fold=1))
    return _trainsplit_rates(s, _native_threshold(det), det.threshold_) if len(s) else {}


def _trainsplit_rates(s: np.ndarray, nat: float, cal: float) -> dict:
    return {
        "fpr_trainsplit": float((s > nat).mean()),
        "fpr_trainsplit_calibrated": float((s > cal).mean()),
        "n_trainsplit_test": int(len(s)),
    }


def _evaluate(
    det: EraseRestore,
    md: _ModelData,
    attacks: list[str],
    n_use: int,
    restore: str = "telea",
    scores: tuple[np.ndarray, dict[str, np.ndarray]] | None = None,
) -> dict:
    """FPR on test clean images and per-attack detection rates at the native and the calibrated threshold
    (from ``scores`` = :func:`_test_scores` when already computed)."""
    sc, sas = scores if scores is not None else _test_scores(det, md, attacks, n_use, restore)
    return _rates(sc, {a: sas[a] for a in attacks}, _native_threshold(det), det.threshold_)


def _rates(sc: np.ndarray, sas: dict[str, np.ndarray], nat: float, cal: float) -> dict:
    """FPR of the clean scores ``sc`` and detection rate of each attack's scores at the own cut ``nat`` and the
    calibrated one ``cal``, with per-attack AUCs and counts (None for an attack without test images)."""
    out = {
        "n_clean_test": int(len(sc)),
        "fpr": float((sc > nat).mean()),
        "fpr_calibrated": float((sc > cal).mean()),
        "dr": {},
        "dr_calibrated": {},
        "auc": {},
        "n_adv_test": {},
    }
    for a, sa in sas.items():
        out["n_adv_test"][a] = int(len(sa))
        out["dr"][a] = float((sa > nat).mean()) if len(sa) else None
        out["dr_calibrated"][a] = float((sa > cal).mean()) if len(sa) else None
        out["auc"][a] = roc_auc(sc, sa) if len(sa) else None
    return out


def run_themis(
    cfg: BenchConfig, out: str | Path | None = None, cache_dir: str | Path | None = None, progress: bool = True
) -> dict:
    out, cache = bench_paths(cfg, out, cache_dir)
    opts = cfg.section("themis")
    models = list(opts.get("models") or [cfg.model])
    n = int(opts.get("n", 11))
    ns = sorted({int(v) for v in opts.get("ns", [n])} | {n})
    specs = classifier_specs(opts.get("classifiers", ["svc", "adaboost"]))
    classifiers = [c for c in specs if c["all_tables"]]
    labels = [a.label for a in cfg.attacks]
    cw = [lab for lab in opts.get("train_on", [a.label for a in cfg.attacks if a.name == "cw-l2"]) if lab in labels]
    other = [lab for lab in labels if lab not in cw]
    # Table 1's detectors train on these attacks pooled (default all); the others are tested as unseen attacks
    pooled = [lab for lab in opts.get("table1_train_on", labels) if lab in labels]
    t_start = time.perf_counter()

    mds = {m: _ModelData(cfg, m, cache, progress) for m in tqdm(models, desc="target models", disable=not progress)}
    first = mds[models[0]].first
    doc: dict = {
        **results_header(cfg),
        "n": n,
        "ns": ns,
        "train_on": cw,
        "data": {
            "dataset": cfg.dataset,
            "split": cfg.split,
            "source": first.config.get("source"),
            "n_images": first.counts["n_images"],
        },
        "classifiers": specs,
        "table1_train_on": pooled,
    }
    doc["sets"] = {
        m: {
            "n_correct": md.first.counts["n_correct"],
            "clean": {"train": int((md.fold_c == 0).sum()), "test": int((md.fold_c == 1).sum())},
            "attacks": {
                lab: {
                    **s.summary(),
                    "train": int((md.fold_a[lab] == 0).sum()),
                    "test": int((md.fold_a[lab] == 1).sum()),
                }
                for lab, s in md.sets.items()
            },
            "forward_floor": md.floor,
            "er_cost": md.cost,
            "extra_clean": md.extra_info,
        }
        for m, md in mds.items()
    }

    # ---------------------------------------------------------------- Figure 3 check: what one E&R draw does
    insight = []
    for m, md in mds.items():
        for restore in RESTORES:
            for which in ["clean"] + labels:
                top = md.P[restore][which].argmax(-1)
                changed = top[:, 1:] != top[:, :1]
                insight.append(
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
    doc["insight"] = insight

    # ---------------------------------------------------------------- Table 1 (+ ROC data for Figure 5)
    t1, fitted, roc = [], {}, {}
    for m, md in mds.items():
        for c in specs:
            for restore in RESTORES if c["all_tables"] else RESTORES[:1]:
                det = _fit(md, pooled, c, n, cfg, restore)
                scores = _test_scores(det, md, labels, n, restore)
                ev = _evaluate(det, md, labels, n, restore, scores)
                sc, sa = scores[0], np.concatenate([scores[1][a] for a in pooled])
                if restore == "telea":
                    t1.append(
                        {
                            "model": m,
                            "classifier": c["label"],
                            "kind": c["model"],
                            "params": det.chosen_params_,
                            "extra_clean": c["extra_clean"],
                            "align": det.params["align"],
                            "n_clean_train": int((md.fold_c == 0).sum())
                            + (int(len(md.extra_raw(n))) if c["extra_clean"] else 0),
                            **ev,
                            "auc_pooled": roc_auc(sc, sa),
                            **_trainsplit_fpr(det, md, n),
                        }
                    )
                    fitted[(m, c["label"])] = det
                else:
                    t1[-1]["median_baseline"] = {**ev, "auc_pooled": roc_auc(sc, sa)}
                if c["all_tables"]:
                    roc[(m, c["label"], restore)] = (sc, sa)
    doc["table1"] = t1
    doc["vote"] = [
        {"model": m, "classifier": "label-change vote", **_vote_row(md, labels, pooled, n, cfg.fpr)}
        for m, md in mds.items()
    ]
    lc = opts.get("learning_curve")
    doc["learning_curve"] = (
        [r for md in mds.values() for r in _learning_curve(md, labels, cw, lc, n, cfg)] if lc else []
    )

    # ---------------------------------------------------------------- Table 2: vs the harness's detectors
    t2 = []
    for m, md in mds.items():
        for d, feats in md.compare.items():
            det = make_detector(d, md.clf, fpr=cfg.fpr, seed=cfg.seed).fit_features(feats["clean"][md.fold_c == 0])
            sc = det.score_features(feats["clean"][md.fold_c == 1])
            row = {"model": m, "detector": d, "fpr": float((sc > det.threshold_).mean()), "dr": {}, "auc": {}}
            for a in labels:
                sa = _score(det, feats[a][md.fold_a[a] == 1])
                row["dr"][a] = float((sa > det.threshold_).mean()) if len(sa) else None
                row["auc"][a] = roc_auc(sc, sa) if len(sa) else None
            t2.append(row)
    doc["table2"] = t2

    # ---------------------------------------------------------------- Table 3 + transfer CW -> DeepFool
    t3, transfer = [], []
    for a_m, md_a in mds.items():
        for c in classifiers:
            det = _fit(md_a, cw, c, n, cfg)
            for b_m, md_b in mds.items():
                t3.append(
                    {
                        "train": a_m,
                        "test": b_m,
                        "classifier": c["label"],
                        "kind": c["model"],
                        **_evaluate(det, md_b, cw, n),
                    }
                )
                if other:
                    transfer.append(
                        {
                            "train": a_m,
                            "test": b_m,
                            "classifier": c["label"],
                            "kind": c["model"],
                            **_evaluate(det, md_b, other, n),
                        }
                    )
    doc["table3"], doc["transfer"] = t3, transfer

    # ---------------------------------------------------------------- Tables 4/5: n sweep (CW-trained)
    t4 = []
    for m, md in mds.items():
        for n_use in ns:
            for c in classifiers:
                t4.append(
                    {
                        "model": m,
                        "n": n_use,
                        "classifier": c["label"],
                        "kind": c["model"],
                        **_evaluate(_fit(md, cw, c, n_use, cfg), md, cw, n_use),
                    }
                )
    doc["table4"] = t4

    # ---------------------------------------------------------------- Table 6: KL / WD (10 draws as in the paper)
    t6, scatter = [], {}
    draws = min(10, n)
    for m, md in mds.items():
        dc = mean_kl_wd(md.P["telea"]["clean"][:, : 1 + draws])
        scatter[m] = {"clean": dc}
        for a in labels:
            da = mean_kl_wd(md.P["telea"][a][:, : 1 + draws])
            scatter[m][a] = da
            for j, metric in enumerate(("kl", "wd")):
                sc, sa = dc[:, j], da[:, j]
                t6.append(
                    {
                        "model": m,
                        "attack": a,
                        "metric": metric,
                        **_youden(sc, sa),
                        **_calibrated(sc[md.fold_c == 0], sc[md.fold_c == 1], sa[md.fold_a[a] == 1], cfg.fpr),
                    }
                )
    doc["table6"] = t6

    # ---------------------------------------------------------------- Figure 6: adaptive attack
    if opts.get("adaptive"):
        m0 = models[0]
        c0 = next((c for c in specs if c["label"] == "svc"), specs[0])
        det0 = fitted[(m0, c0["label"])]
        ads = opts["adaptive"] if isinstance(opts["adaptive"], list) else [opts["adaptive"]]
        doc["adaptive"] = [_adaptive(cfg, a, mds[m0], det0, cache, progress) for a in ads]
    doc["wall_seconds"] = time.perf_counter() - t_start

    out.mkdir(parents=True, exist_ok=True)
    write_results(doc, out)
    _page(doc, cfg, roc, scatter).write(out)
    return doc


def _youden(sc: np.ndarray, sa: np.ndarray) -> dict:
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


def _calibrated(sc_train: np.ndarray, sc_test: np.ndarray, sa_test: np.ndarray, fpr: float) -> dict:
    from ...metrics import threshold_at_fpr

    th = threshold_at_fpr(sc_train, fpr)
    return {
        "fpr_calibrated": float((sc_test > th).mean()),
        "tpr_calibrated": float((sa_test > th).mean()) if len(sa_test) else None,
    }


# ==================================================================== adaptive attack (Figure 6)
def _adaptive(cfg: BenchConfig, a: dict, md: _ModelData, det: EraseRestore, cache: Path, progress: bool) -> dict:
    from ...attacks import shifted_targets
    from ...attacks.adaptive import DetectorAwareCW

    n_img = int(a.get("n_images", 50))
    restarts = int(a.get("restarts", 150))
    params = {
        "confidence": float(a.get("confidence", 0.0)),
        "steps": int(a.get("steps", 100)),
        "restarts": restarts,
        "check_every": int(a.get("check_every", 1)),
        "const": float(a.get("const", 1.0)),
        "stepsize": float(a.get("stepsize", 0.01)),
    }
    if "init_noise" in a:  # only when set, so caches of runs with the default start stay valid
        params["init_noise"] = float(a["init_noise"])
    det.threshold_ = _native_threshold(det)  # the paper's operating point: the SVM's own decision
    test = np.flatnonzero(md.fold_c == 1)[:n_img]  # clean test images: never seen by the detector
    x, y = md.first.x_clean[test], md.first.y_clean[test]
    t = shifted_targets(y, md.clf.num_classes, 1).numpy()
    # the plain detector on these clean images (its false alarms are not bypasses to be won)
    clean_flag = det.score_features(md.raw("clean", det.params["n"], rows=test)) > det.threshold_
    chunk = 10
    parts = []
    t0 = time.perf_counter()
    for i in tqdm(range(0, len(x), chunk), desc="adaptive attack chunks", disable=not progress):
        key = cache_key(md.first.config["weights"], md.first.key, params, test[i : i + chunk].tolist(), cfg.seed)
        path = cache / "themis-adaptive" / f"{key}.npz"

        def build(i: int = i, t0: float = t0) -> dict[str, np.ndarray]:
            atk = DetectorAwareCW(md.clf, det, seed=cfg.seed + i, progress=progress, **params)
            r = atk(x[i : i + chunk], y[i : i + chunk], t[i : i + chunk])
            return dict(
                restart=r.restart.numpy(),
                step=r.step.numpy(),
                evaded=r.evaded.numpy(),
                recheck=r.recheck_evasion.numpy(),
                l2=r.norms["l2"].numpy(),
                success=r.success.numpy(),
                seconds=np.asarray(time.perf_counter() - t0),
            )

        # verified and locked (advguard.data.cache): a corrupt chunk is named, moved aside and recomputed
        hit = load_entry(path)
        if hit is None:
            hit = cached_arrays(path, build)
            t0 = time.perf_counter()
        parts.append(hit)
    cat = {k: np.concatenate([p[k] for p in parts]) for k in ("restart", "step", "evaded", "recheck", "l2", "success")}
    found = cat["evaded"]
    curve = [float(((cat["restart"] >= 0) & (cat["restart"] < T) & found).mean()) for T in range(1, restarts + 1)]
    budgets = [0.25, 0.5, 1.0, 1.5, 2.0]
    ref = md.sets[cfg.attacks[0].label] if cfg.attacks else None
    return {
        "label": a.get("label", "adaptive CW-L2"),
        "params": {"init_noise": 8 / 255, **params},
        "n_images": int(len(x)),
        "operating_point": "SVM decision_function > 0",
        "l2_of_bypass": cat["l2"][found].tolist(),
        "bypass_within_l2": {str(b): float((found & (cat["l2"] <= b)).mean()) for b in budgets},
        "reference_attack": cfg.attacks[0].label if ref is not None else None,
        "reference_median_l2": float(np.median(ref.norms["l2"])) if ref is not None and len(ref.x_adv) else None,
        "clean_false_alarms": int(clean_flag.sum()),
        "bypass_rate": float(found.mean()),
        "bypass_curve": curve,
        "n_bypass": int(found.sum()),
        "median_l2_bypass": float(np.median(cat["l2"][found])) if found.any() else None,
        "mean_recheck_evasion": float(np.nanmean(cat["recheck"][found])) if found.any() else None,
        "robust_bypass_rate": float((found & (np.nan_to_num(cat["recheck"]) >= 0.5)).mean()),
        "restart_of_bypass": cat["restart"][found].tolist(),
        "seconds": float(sum(float(p["seconds"]) for p in parts)),
        "seconds_per_image": float(sum(float(p["seconds"]) for p in parts)) / max(1, len(x)),
    }


# ==================================================================== page
def _abbrev(label: str) -> str:
    """Short column name of an attack label: 'CW-L2 κ=0.4' -> 'κ0.4', 'DeepFool' -> 'DF'."""
    if "κ=" in label:
        return "κ" + label.split("κ=")[1]
    return {"deepfool": "DF"}.get(label.lower(), label.split()[0])


def _short(m: str) -> str:
    return m.replace("cifar10-", "")


def _page(doc: dict, cfg: BenchConfig, roc: dict, scatter: dict) -> Page:
    p, d = doc["provenance"], doc["data"]
    labels = [a.label for a in cfg.attacks]
    cw = doc["train_on"]
    cifar = cfg.dataset == "cifar10"
    pg = Page(cfg.title or cfg.name)
    lines = [
        f"- Data: {d['dataset']} {d['split']} split ({d['source']}); {d['n_images']} images drawn (seed {cfg.seed})."
    ]
    for m, s in doc["sets"].items():
        att = ", ".join(
            f"{lab} {v['n_adv']} of {v['n_attacked']} attacked (train {v['train']} / test {v['test']}, "
            f"median L2 {v['median_l2']:.3f})"
            for lab, v in s["attacks"].items()
        )
        lines.append(
            f"- `{m}`: {s['n_correct']} correctly classified = clean set (train {s['clean']['train']} / test "
            f"{s['clean']['test']}); adversarial: {att}."
        )
    lines += [
        "- Balanced protocol: "
        + (
            "each attack attacks a disjoint part of the clean images (one adversarial image per source image); "
            if cfg.section("themis").get("balanced")
            else ""
        )
        + f"{'/'.join(str(int(round(100 * f))) for f in cfg.fractions)} train/test split by clean-image id. "
        "Adversarial images are float32 (no 8-bit round trip). Paper: 30,000 images per dataset.",
        f"- THEMIS: n = {doc['n']} draws, 10 % of the pixels erased (exact count, fresh masks per image and draw), "
        "OpenCV Telea inpainting radius 3; feature = the n + 1 softmax vectors"
        + ("" if cifar else ", each reduced by a PCA to 10 dimensions fitted once on the training features")
        + ".",
        "- Rates are on the test split. **FPR / DR** = at the decision model's own decision (SVM / AdaBoost "
        f"decision_function > 0, as the paper reports); **@{100 * cfg.fpr:g}%** = at a threshold calibrated on "
        f"training clean images for {100 * cfg.fpr:g} % FPR (the advguard protocol).",
        f"- Machine: {p['machine']}. Commit `{p['commit']}`. Date {p['date']}. Wall time "
        f"{doc['wall_seconds'] / 60:.1f} min (cached stages excluded).",
        f"- Reproduce: `{p['command']}`.",
    ]
    pg.text("\n".join(lines))

    def model_name(m: str) -> str:
        return {
            "cifar10-cnn": "Carlini",
            "cifar10-cnn-ls0": "Carlini",
            "cifar10-resnet20": "ResNet32",
            "cifar10-resnet32-pretrained": "ResNet32",
        }.get(m, "ResNet50")

    ds_name = "CIFAR-10" if cifar else "ImageNet"
    # ---- whose gap: every decision model variant of Table 1 beside the learning-free vote and the paper
    if doc.get("vote"):
        pg.h2("Whose gap? One change at a time (Table 1 setting, all attacks pooled)")
        att = " / ".join(_abbrev(lab) for lab in labels)
        head = [
            "model",
            "decision model",
            "settings",
            "clean train",
            "FPR % (own)",
            f"DR % (own): {att}",
            f"FPR % @{100 * cfg.fpr:g}%",
            f"DR % @{100 * cfg.fpr:g}%: {att}",
            "AUC pooled %",
            f"FPR % on train-split images (own / @{100 * cfg.fpr:g}%)",
        ]
        rows = []
        for m in doc["sets"]:
            for r in [r for r in doc["table1"] if r["model"] == m] + [
                v for v in doc.get("vote", []) if v["model"] == m
            ]:
                dr = " / ".join(pct(r["dr"].get(lab), 0) for lab in labels)
                drc = " / ".join(pct(r["dr_calibrated"].get(lab), 0) for lab in labels)
                sett = ", ".join(f"{k}={v}" for k, v in (r.get("params") or {}).items()) or "defaults"
                if r.get("kind") in SCALED and (r.get("params") or {}).get("scale", True):
                    sett = "scaler, " + sett
                if r.get("align"):
                    sett += ", aligned"
                if r["classifier"] == "label-change vote":
                    sett = "flag if the label changes in > n/2 draws (no training)"
                clean_tr = (
                    f"{r['n_clean_train']}" + (" (incl. train split)" if r.get("extra_clean") else "")
                    if "n_clean_train" in r
                    else "-"
                )
                rows.append(
                    [
                        f"`{_short(m)}`",
                        r["classifier"],
                        sett,
                        clean_tr,
                        pct(r["fpr"]),
                        dr,
                        pct(r["fpr_calibrated"]),
                        drc,
                        pct(r.get("auc_pooled"), 2),
                        f"{pct(r['fpr_trainsplit'])} / {pct(r['fpr_trainsplit_calibrated'])}"
                        if "fpr_trainsplit" in r
                        else "-",
                    ]
                )
            for kind in ("svc", "adaboost"):
                pap = paper.TABLE1.get((ds_name, model_name(m), kind))
                if pap:
                    rows.append(
                        [
                            f"paper ({model_name(m)})",
                            kind,
                            "authors: SVC(C=5, gamma=0.01) on raw softmax"
                            if kind == "svc"
                            else "authors: AdaBoost, 200 stumps",
                            "24,000 (+ 24,000 adv.)",
                            f"{pap[0]}",
                            " / ".join(f"{v:.0f}" for v in _paper_cols(pap[1:], labels) if not isinstance(v, str)),
                            "-",
                            "-",
                            "-",
                            "-",
                        ]
                    )
        pg.table(
            head,
            rows,
            'Each row changes one thing against the first (ours); "own" = the decision model\'s own '
            "cut (decision_function > 0), as the paper reports; the calibrated threshold comes from out-of-fold "
            "scores of the row's own training clean images. Detectors trained on "
            + ", ".join(doc.get("table1_train_on", labels))
            + " pooled; AUC pooled over those. The last column: "
            "the same detectors on held-out clean images of the train split (images the target model was trained "
            "on; not used to fit any row), i.e. the FPR a protocol that evaluates on training images would "
            "report.",
        )
    if doc.get("learning_curve"):
        pg.h2("Learning curve: AUC vs training pairs")
        lcr = doc["learning_curve"]
        sizes = sorted({r["pairs"] for r in lcr})
        rows = []
        for m, fam, c in dict.fromkeys((r["model"], r["family"], r["classifier"]) for r in lcr):
            by = {r["pairs"]: r for r in lcr if (r["model"], r["family"], r["classifier"]) == (m, fam, c)}
            rows.append(
                [f"`{_short(m)}`", fam, c]
                + [f"{pct(by[k]['auc_mean'], 1)} ({pct(by[k]['auc_min'], 1)})" if k in by else "-" for k in sizes]
            )
        pg.table(
            ["model", "attack family", "decision model"] + [f"{k} pairs" for k in sizes],
            rows,
            f"Mean AUC % over {lcr[0]['repeats']} draws of k clean + k adversarial training images (worst draw in "
            "parentheses), tested on the whole test fold of that family.",
        )
        pg.figure("learning_curve.png", _plot_learning_curve(lcr), "AUC vs training pairs per attack family.")

    # ---- Table 1
    pg.h2("Table 1: detection rate and FPR (trained on all attacks pooled)")
    head = (
        ["model", "classifier", "FPR %"]
        + [f"DR {lab} %" for lab in labels]
        + [f"FPR @{100 * cfg.fpr:g}%"]
        + [f"DR {lab} @{100 * cfg.fpr:g}%" for lab in labels]
        + ["AUC pooled %"]
    )
    rows = []
    for r in doc["table1"]:
        rows.append(
            [f"`{r['model']}`", r["classifier"], pct(r["fpr"])]
            + [pct(r["dr"][lab]) for lab in labels]
            + [pct(r["fpr_calibrated"])]
            + [pct(r["dr_calibrated"][lab]) for lab in labels]
            + [pct(r["auc_pooled"], 2)]
        )
        pap = (
            paper.TABLE1.get((ds_name, model_name(r["model"]), r["classifier"]))
            if r["classifier"] == r.get("kind", r["classifier"])
            else None
        )
        if pap:
            rows.append(
                [f"paper ({model_name(r['model'])})", r["classifier"], f"{pap[0]}"]
                + [f"{v}" for v in _paper_cols(pap[1:], labels)]
                + ["-"] * (len(labels) + 2)
            )
    pg.table(
        head,
        rows,
        "Ours (test split) with the paper's row below (the paper's CIFAR-10 models: Carlini's CIFAR "
        "net and ResNet-32; ours: cifar10-cnn and cifar10-resnet20).",
    )

    # ---- Figure 3 check
    pg.h2("Why it works: what one erase-and-restore draw does (the paper's Figure 3)")
    rows = [
        [
            f"`{r['model']}`",
            r["restore"],
            r["set"],
            r["n"],
            pct(r["changed_per_draw"]),
            pct(r["changed_any_draw"]),
            pct(r["changed_majority"]),
        ]
        for r in doc["insight"]
    ]
    pg.table(
        [
            "model",
            "restore",
            "images",
            "n",
            "top-1 changed, per draw %",
            "changed in >= 1 of n draws %",
            "changed in most draws %",
        ],
        rows,
        "Paper (ResNet-32, 10 % erased, Telea): benign accuracy after one draw 90.5-96.6 % (5-15 % erased), i.e. "
        "3.4-9.5 % changed; CW attack success after one draw 3.1-7.1 %, i.e. ~93-97 % changed.",
    )

    # ---- Table 2
    if doc["table2"]:
        pg.h2("Table 2: THEMIS vs Feature Squeezing")
        k0 = cw[0] if cw else labels[0]
        df = next((lab for lab in labels if "deepfool" in lab.lower()), labels[-1])
        rows = []
        for m in doc["sets"]:
            t = (
                next(r for r in doc["table1"] if r["model"] == m and r["classifier"] == "svc")
                if any(r["classifier"] == "svc" for r in doc["table1"])
                else doc["table1"][0]
            )
            rows.append([f"`{m}`", "THEMIS (SVM, own decision)", pct(t["fpr"]), pct(t["dr"][k0]), pct(t["dr"][df])])
            rows.append(
                [
                    f"`{m}`",
                    f"THEMIS (SVM, @{100 * cfg.fpr:g}%)",
                    pct(t["fpr_calibrated"]),
                    pct(t["dr_calibrated"][k0]),
                    pct(t["dr_calibrated"][df]),
                ]
            )
            for r in doc["table2"]:
                if r["model"] == m:
                    rows.append(
                        [
                            f"`{m}`",
                            f"{r['detector']} (@{100 * cfg.fpr:g}%)",
                            pct(r["fpr"]),
                            pct(r["dr"][k0]),
                            pct(r["dr"][df]),
                        ]
                    )
        for name, v in paper.TABLE2.items():
            f, a, b = v[ds_name]
            rows.append(["paper", name, f"{f}", f"{a}", f"{b}"])
        pg.table(
            ["model", "detector", "FPR %", f"DR {k0} %", f"DR {df} %"],
            rows,
            "Feature Squeezing = the harness's detector (median 2x2, bit depth 5, non-local means; max L1 "
            "distance), threshold calibrated on training clean images. LID and NIC are not implemented in "
            "advguard: their rows are the paper's quotes only.",
        )

    # ---- Table 3 + transfer
    if len(doc["sets"]) > 1:
        pg.h2("Table 3: target-model agnostic (train on one model's CW-L2 sets, test on the other's)")
        rows = []
        for r in doc["table3"]:
            if r["train"] == r["test"]:
                continue
            key = f"{model_name(r['train'])}->{model_name(r['test'])}"
            pap = paper.TABLE3.get((key, r.get("kind", r["classifier"])))
            rows.append(
                [f"`{_short(r['train'])}` -> `{_short(r['test'])}`", r["classifier"], pct(r["fpr"])]
                + [pct(r["dr"][lab]) for lab in cw]
                + [" / ".join(f"{v}" for v in pap) if pap else "-"]
            )
        pg.table(
            ["train -> test", "classifier", "FPR on test model's clean %"]
            + [f"DR {lab} %" for lab in cw]
            + ["paper DR κ=0 / 0.4 / 1.0"],
            rows,
        )
    if doc["transfer"]:
        pg.h2("Transferability: trained on CW-L2, tested on DeepFool")
        rows = []
        for r in doc["transfer"]:
            pap = paper.TRANSFER_CW_TO_DEEPFOOL.get(model_name(r["test"])) if r["train"] == "cifar10-cnn" else None
            rows.append(
                [f"`{_short(r['train'])}` -> `{_short(r['test'])}`", r["classifier"], pct(r["fpr"])]
                + [pct(v) for v in r["dr"].values()]
                + [pct(v, 2) for v in r["auc"].values()]
                + [f"{pap}" if pap else "-"]
            )
        att = list(doc["transfer"][0]["dr"])
        pg.table(
            ["train (CW) -> test", "classifier", "FPR %"]
            + [f"DR {lab} %" for lab in att]
            + [f"AUC {lab} %" for lab in att]
            + ["paper DR % (classifier not stated)"],
            rows,
        )

    # ---- Tables 4/5
    pg.h2(f"Table {'4' if cifar else '5'}: impact of n (trained on CW-L2)")
    rows = []
    for r in doc["table4"]:
        if cifar:
            pap = paper.TABLE4.get(r["n"], {}).get((model_name(r["model"]), r.get("kind", r["classifier"])))
        else:
            pap = paper.TABLE5.get(r["n"], {}).get(r.get("kind", r["classifier"]))
        rows.append(
            [f"`{r['model']}`", r["n"], r["classifier"], pct(r["fpr"])]
            + [pct(r["dr"][lab]) for lab in cw]
            + [pct(min(r["auc"][lab] for lab in cw), 2)]
            + [" / ".join(f"{v}" for v in pap) if pap else "-"]
        )
    pg.table(
        ["model", "n", "classifier", "FPR %"]
        + [f"DR {lab} %" for lab in cw]
        + ["min AUC %", "paper FPR / DR κ=0 / 0.4 / 1.0"],
        rows,
        "The first n' of the n draws of each image (independent draws).",
    )
    pg.figure("n_sweep.png", _plot_n_sweep(doc, cw), "FPR and mean CW detection rate vs n.")

    # ---- Figure 5
    pg.h2("Figure 5: Telea inpainting vs the 3x3 median-filter baseline")
    rows = []
    for r in doc["table1"]:
        mb = r.get("median_baseline")
        if mb is None:
            continue
        pap = paper.FIGURE5_AUC.get(r.get("kind", r["classifier"])) if cifar else None
        rows.append(
            [
                f"`{r['model']}`",
                r["classifier"],
                pct(r["auc_pooled"], 2),
                pct(mb["auc_pooled"], 2),
                pct(r["fpr"]),
                pct(mb["fpr"]),
                f"{pap['telea']} / {pap['median']}" if pap else "-",
            ]
        )
    pg.table(
        [
            "model",
            "classifier",
            "AUC Telea %",
            "AUC median %",
            "FPR Telea %",
            "FPR median %",
            "paper AUC Telea / median (ResNet-32 set)",
        ],
        rows,
        "Pooled test set (all attacks).",
    )
    pg.figure(
        "roc_median_baseline.png",
        _plot_roc(roc),
        "ROC of THEMIS with Telea inpainting vs the median-filter "
        "baseline, per model and classifier (test split, all attacks pooled).",
    )

    # ---- Table 6
    pg.h2("Table 6: one-dimensional scores (mean KL divergence, Wasserstein distance over 10 draws)")
    rows = []
    for r in doc["table6"]:
        key = ("CW-L2" if r["attack"].startswith("CW") else "DeepFool", r["metric"])
        pap = paper.TABLE6.get(key) if r["attack"] in (cw[:1] + [lab for lab in labels if lab not in cw]) else None
        rows.append(
            [
                f"`{r['model']}`",
                r["attack"],
                r["metric"].upper(),
                pct(r["fpr_roc"]),
                pct(r["tpr_roc"]),
                pct(r["auc"], 2),
                pct(r["fpr_calibrated"]),
                pct(r["tpr_calibrated"]),
                f"{pap[0]} / {pap[1]}" if pap else "-",
            ]
        )
    pg.table(
        [
            "model",
            "attack",
            "metric",
            "FPR % (ROC cut)",
            "TPR % (ROC cut)",
            "AUC %",
            f"FPR % (@{100 * cfg.fpr:g}%)",
            f"TPR % (@{100 * cfg.fpr:g}%)",
            "paper FPR / TPR (ImageNet)",
        ],
        rows,
        "ROC cut = the point maximising TPR - FPR, chosen on all images as the paper did (illustrative); "
        f"@{100 * cfg.fpr:g}% = threshold from training clean images, rates on the test split.",
    )
    pg.figure(
        "kl_wd_scatter.png",
        _plot_scatter(scatter),
        "Mean KL divergence vs mean Wasserstein distance between f(x) and f(E&R(x)) (the paper's Figure 8).",
    )

    # ---- adaptive
    ads = doc.get("adaptive") or []
    if isinstance(ads, dict):
        ads = [ads]
    if ads:
        pg.h2("Figure 6: adaptive CW-L2 that checks THEMIS along its path")
        for ad in ads:
            pr = ad["params"]
            pg.text(
                "\n".join(
                    [
                        f"- **{ad.get('label', 'adaptive CW-L2')}**: `advguard.attacks.adaptive.DetectorAwareCW` on "
                        f"{ad['n_images']} clean test images of `{next(iter(doc['sets']))}` (never used to train the "
                        f"detector), targeted at the next class, κ = {pr['confidence']}; {pr['steps']} Adam steps "
                        f"(lr {pr['stepsize']}) per optimisation path, up to {pr['restarts']} paths per image, each "
                        "from a "
                        f"random start (uniform ±{255 * pr['init_noise']:.0f}/255) with c drawn log-uniformly in "
                        f"[{pr['const'] / 10:g}, {pr['const'] * 10:g}]; the detector (the Table 1 SVM at its own "
                        "decision) is "
                        f"queried every {pr['check_every']} steps (the paper: every step) on the images that are "
                        "adversarial "
                        f"at that point.",
                        f"- **Bypass rate: {pct(ad['bypass_rate'])} %** ({ad['n_bypass']} of {ad['n_images']}) after "
                        f"{pr['restarts']} paths ({pct(ad['bypass_curve'][min(49, len(ad['bypass_curve']) - 1)])} % "
                        "after "
                        f"{min(50, len(ad['bypass_curve']))}); paper: 3.4 % after 50 paths and 4.2 % after 150 (500 "
                        "images).",
                        f"- THEMIS is random: re-checking each bypassing image with 10 fresh draws, it evades "
                        f"{pct(ad['mean_recheck_evasion'])} % of them on average; {pct(ad['robust_bypass_rate'])} % "
                        "of the "
                        "images bypass in at least half of the re-checks.",
                        f"- The detector flags {ad['clean_false_alarms']} of these {ad['n_images']} clean images "
                        "themselves. "
                        f"Cost: {ad['seconds_per_image']:.1f} s per image on this machine "
                        f"(paper: ~450 s per image for T = 150).",
                    ]
                    + (
                        [
                            "- Distortion: the attack stops at the first bypass, so its L2 is whatever the path had "
                            "reached. "
                            "Bypass rate within an L2 budget: "
                            + ", ".join(f"≤ {b}: {pct(v)} %" for b, v in ad["bypass_within_l2"].items())
                            + (
                                f" (plain {ad['reference_attack']} on this model: median L2 "
                                f"{ad['reference_median_l2']:.3f})."
                                if ad.get("reference_median_l2")
                                else "."
                            ),
                        ]
                        if "bypass_within_l2" in ad
                        else []
                    )
                )
            )
        pg.figure(
            "adaptive_bypass.png",
            _plot_adaptive(ads),
            "Left: cumulative bypass rate vs number of "
            "optimisation paths T, with the paper's two reported points. Right: share of images bypassed within "
            "an L2 budget.",
        )

    # ---- cost
    pg.h2("Cost of the feature (this run)")
    rows = []
    for m, s in doc["sets"].items():
        fl = s["forward_floor"]["ms_per_image"]
        for restore, c in s["er_cost"].items():
            rows.append(
                [
                    f"`{m}`",
                    restore,
                    f"{c['ms_per_image']:.2f}",
                    f"{(1 + doc['n']) * fl:.2f}",
                    f"{c['ms_per_image'] / ((1 + doc['n']) * fl):.2f}x",
                ]
            )
    pg.table(
        ["model", "restore", "ms / image", f"floor ({1 + doc['n']} passes) ms", "ratio"],
        rows,
        "Measured while building the cached features (chunks of 256 CIFAR / 16 ImageNet images); "
        "the dedicated speed benchmark is `benchmarks/themis_speed.py` (docs/results/themis/speed.md).",
    )
    pg.h2("Configuration")
    pg.code(doc.get("config_toml") or json.dumps(doc["config"], indent=2, default=str))
    return pg


def _paper_cols(vals: tuple, labels: list[str]) -> list:
    """Map the paper's (κ=0, 0.4, 1.0, DeepFool) columns onto our attack labels by name."""
    by = {"0.0": vals[0], "0.4": vals[1], "1.0": vals[2]}
    out = []
    for lab in labels:
        if "deepfool" in lab.lower():
            out.append(vals[3])
        else:
            out.append(next((v for k, v in by.items() if k in lab), "-"))
    return out


def summary_table(doc: dict) -> tuple[list[str], list[list]]:
    labels = list(doc["table1"][0]["dr"]) if doc["table1"] else []
    return (
        ["model", "classifier", "FPR %"] + [f"DR {lab} %" for lab in labels],
        [[r["model"], r["classifier"], pct(r["fpr"])] + [pct(r["dr"][lab]) for lab in labels] for r in doc["table1"]],
    )


# ==================================================================== plots
def _plot_learning_curve(lcr: list[dict]) -> bytes:
    plt = pyplot()
    keys = list(dict.fromkeys((r["model"], r["family"]) for r in lcr))
    fig, axes = plt.subplots(1, len(keys), figsize=(3.3 * len(keys), 3.2), squeeze=False, sharey=True)
    for ax, (m, fam) in zip(axes[0], keys, strict=True):
        for c in dict.fromkeys(r["classifier"] for r in lcr):
            rs = sorted(
                (r for r in lcr if (r["model"], r["family"], r["classifier"]) == (m, fam, c)), key=lambda r: r["pairs"]
            )
            if rs:
                ax.errorbar(
                    [r["pairs"] for r in rs],
                    [100 * r["auc_mean"] for r in rs],
                    fmt="-o",
                    ms=3,
                    yerr=[
                        [100 * (r["auc_mean"] - r["auc_min"]) for r in rs],
                        [100 * (r["auc_max"] - r["auc_mean"]) for r in rs],
                    ],
                    label=c,
                )
        ax.set(xscale="log", xlabel="training pairs", title=f"{_short(m)}: {fam}", ylim=(40, 101))
    axes[0][0].set_ylabel("AUC %")
    axes[0][-1].legend(fontsize=6)
    return fig_png(fig)


def _plot_n_sweep(doc: dict, cw: list[str]) -> bytes:
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4))
    for m, c in sorted({(r["model"], r["classifier"]) for r in doc["table4"]}):
        rs = [r for r in doc["table4"] if r["model"] == m and r["classifier"] == c]
        xs = [r["n"] for r in rs]
        axes[0].plot(xs, [100 * r["fpr"] for r in rs], marker="o", label=f"{_short(m)} {c}")
        axes[1].plot(
            xs, [100 * np.mean([r["dr"][lab] for lab in cw]) for r in rs], marker="o", label=f"{_short(m)} {c}"
        )
    axes[0].set(xlabel="n (draws)", ylabel="FPR %", title="false positives")
    axes[1].set(xlabel="n (draws)", ylabel="mean CW detection rate %", title="detection")
    axes[1].legend(fontsize=7)
    return fig_png(fig)


def _plot_roc(roc: dict) -> bytes:
    from sklearn.metrics import roc_curve

    plt = pyplot()
    keys = sorted({(m, c) for (m, c, _) in roc})
    fig, axes = plt.subplots(1, len(keys), figsize=(3.4 * len(keys), 3.3), squeeze=False)
    for ax, (m, c) in zip(axes[0], keys, strict=True):
        for restore, style in (("telea", "-"), ("median", "--")):
            sc, sa = roc[(m, c, restore)]
            f, t, _ = roc_curve(np.r_[np.zeros(len(sc)), np.ones(len(sa))], np.r_[sc, sa])
            ax.plot(f, t, style, label=f"{restore} (AUC {100 * roc_auc(sc, sa):.2f})")
        ax.set(title=f"{_short(m)} {c}", xlabel="FPR", ylabel="TPR")
        ax.legend(fontsize=7, loc="lower right")
    return fig_png(fig)


def _plot_scatter(scatter: dict) -> bytes:
    plt = pyplot()
    fig, axes = plt.subplots(1, len(scatter), figsize=(4.2 * len(scatter), 3.6), squeeze=False)
    for ax, (m, groups) in zip(axes[0], scatter.items(), strict=True):
        for lab, v in groups.items():
            ax.scatter(
                np.maximum(v[:, 0], 1e-6),
                np.maximum(v[:, 1], 1e-6),
                s=3,
                alpha=0.4,
                label=lab,
                color="green" if lab == "clean" else None,
            )
        ax.set(xscale="log", yscale="log", xlabel="mean KL", ylabel="mean Wasserstein", title=_short(m))
        ax.legend(fontsize=7, markerscale=3)
    return fig_png(fig)


def _plot_adaptive(ads: list[dict]) -> bytes:
    plt = pyplot()
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(9.5, 3.4))
    for ad in ads:
        lab = f"{ad.get('label', 'ours')} ({ad['n_images']} images)"
        T = np.arange(1, len(ad["bypass_curve"]) + 1)
        (line,) = ax.plot(T, 100 * np.asarray(ad["bypass_curve"]), label=lab)
        l2 = np.sort(np.asarray(ad.get("l2_of_bypass", [])))
        ax2.step(
            np.r_[0, l2, max(2.0, l2.max() if len(l2) else 0)],
            100 * np.r_[np.arange(len(l2) + 1), len(l2)] / ad["n_images"],
            where="post",
            color=line.get_color(),
            label=lab,
        )
    ref = next((a for a in ads if a.get("reference_median_l2")), None)
    if ref:
        ax2.axvline(
            ref["reference_median_l2"], color="grey", ls="--", label=f"plain {ref['reference_attack']} median L2"
        )
    ax.scatter(
        list(paper.ADAPTIVE_BYPASS),
        list(paper.ADAPTIVE_BYPASS.values()),
        color="red",
        zorder=3,
        label="paper (500 images)",
    )
    ax.set(xlabel="optimisation paths T", ylabel="bypass rate %", xlim=(0, 152), title="bypass rate vs paths")
    ax2.set(xlabel="L2 budget", ylabel="bypass rate %", title="bypasses within an L2 budget")
    ax.legend(fontsize=7)
    ax2.legend(fontsize=7)
    return fig_png(fig)
