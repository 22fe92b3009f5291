"""Nguyen et al.'s shared, cached steps: the adversarial database, its label matrices, the detectors' features,
decision models fitted on train and scored on dev / eval, the CNN detectors (cached).

1. Adversarial database (Section 2): correctly classified clean images, every configured
   attack (targeted ones at ``(label + shift) mod C``), successes only, saved and reloaded
   (``roundtrip``) and re-checked; one pooled database split 70/15/15 by clean-image id into
   train/dev/eval (a clean image and all its adversarial versions share a split).
2. The (1 + 38)-column top-K label matrix of every image is computed once (cached) and every
   table is derived from it (:mod:`advguard.experiments.nguyen.tables`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray

from ...advsets import AdvSet, fold_of
from ...classifier import Classifier
from ...data.cache import save_file, verified
from ...detectors import CNNDetector, Detector, decision_scores, make_decision_model
from ...detectors.imageops import PAPER_DECISION_PARAMS, counting_feature, default_k, differences_feature, label_matrix
from ...metrics import equal_error_rate, roc_auc
from ...transforms import ImageOp, paper_ops, parse_ops
from ..common import build_sets, cache_key, cached_chunks, dataset_kwargs
from ..config import ExperimentConfig
from .options import CNNOptions, ImageOpsOptions

SPLITS = ("train", "dev", "eval")
IntArray = NDArray[np.int64]
FloatArray = NDArray[np.float64]


@dataclass
class Database:
    """The pooled database (clean images first, then each attack's successes) and its top-K label matrices."""

    clf: Classifier
    sets: dict[str, AdvSet]
    ops: list[ImageOp]
    #: the feature's k, the ks of the ablation (k included) and the criterion's name ("top-1" below 15 classes)
    k: int
    ks: list[int]
    criterion: str
    weights_key: str
    #: (N, 1 + n_ops, max(ks)) top labels of the clean images and of each attack's images
    L_clean: IntArray
    L_adv: dict[str, IntArray]
    label_cost: dict[str, Any]
    #: fold (0 train, 1 dev, 2 eval) of each clean image and of each attack's images
    fold_c: IntArray
    adv_folds: dict[str, IntArray]
    #: pooled adversarial images: attack label, label matrix, true label, fold
    adv_label: NDArray[np.str_]
    L_all_adv: IntArray
    y_all_adv: IntArray
    fold_a: IntArray
    #: the whole database (clean then adversarial): label matrices, 0 clean / 1 adversarial, fold
    L_all: IntArray
    y_det: IntArray
    fold: IntArray

    @property
    def first(self) -> AdvSet:
        return next(iter(self.sets.values()))

    @property
    def col(self) -> dict[ImageOp, int]:
        """Each operation's column in the label matrices (column 0: the image itself)."""
        return {op: 1 + j for j, op in enumerate(self.ops)}


def _labels_cached(
    clf: Classifier, x: np.ndarray, ops: list[ImageOp], k: int, path: Path, desc: str, progress: bool
) -> tuple[IntArray, dict[str, Any]]:
    return cached_chunks(
        path,
        "labels",
        clf,
        x,
        lambda xb: label_matrix(clf, torch.from_numpy(xb), ops, k),
        np.zeros((0, 1 + len(ops), k), np.int64),
        desc=desc,
        progress=progress,
    )


def build_database(
    cfg: ExperimentConfig, opts: ImageOpsOptions, clf: Classifier, cache: Path, progress: bool
) -> Database:
    """The adversarial sets of every configured attack and the label matrices of all images (cached)."""
    C = clf.num_classes
    k = int(opts.k or default_k(C))
    ks = sorted({min(C, int(v)) for v in opts.ks} | {k})
    K = max(ks)
    ops = paper_ops("all")
    ds_kwargs = dataset_kwargs(cfg, cfg.model)
    sets = build_sets(cfg, clf, ds_kwargs, cache, progress)
    first = next(iter(sets.values()))
    wkey = first.config["weights"]
    lab_dir = cache / "imageops-labels"
    clean_key = cache_key(wkey, cfg.dataset, cfg.split, cfg.n_images, cfg.seed, ds_kwargs, K, "clean")
    L_clean, cost_clean = _labels_cached(
        clf, first.x_clean, ops, K, lab_dir / f"{clean_key}.npz", "labels clean", progress
    )
    L_adv = {
        lab: _labels_cached(
            clf, s.x_adv, ops, K, lab_dir / f"{cache_key(s.key, K, 'adv')}.npz", f"labels {lab}", progress
        )[0]
        for lab, s in sets.items()
    }
    fold_c = fold_of(first.clean_ids, cfg.fractions, cfg.seed)
    adv_label = np.concatenate([[lab] * len(s.x_adv) for lab, s in sets.items()]) if sets else np.zeros(0, str)
    L_all_adv = np.concatenate([L_adv[lab] for lab in sets])
    adv_folds = {lab: fold_of(s.adv_ids, cfg.fractions, cfg.seed) for lab, s in sets.items()}
    fold_a = np.concatenate(list(adv_folds.values()))
    return Database(
        clf=clf,
        sets=sets,
        ops=ops,
        k=k,
        ks=ks,
        criterion="top-1" if C < 15 else f"top-{k}",
        weights_key=wkey,
        L_clean=L_clean,
        L_adv=L_adv,
        label_cost=cost_clean,
        fold_c=fold_c,
        adv_folds=adv_folds,
        adv_label=adv_label,
        L_all_adv=L_all_adv,
        y_all_adv=np.concatenate([s.y_adv for s in sets.values()]),
        fold_a=fold_a,
        L_all=np.concatenate([L_clean, L_all_adv]),
        y_det=np.r_[np.zeros(len(L_clean)), np.ones(len(L_all_adv))].astype(int),
        fold=np.r_[fold_c, fold_a],
    )


def features(db: Database, family: str, feature: str, k: int) -> FloatArray:
    """The counting or differences feature of every image over the operations of ``family`` and top-``k`` lists."""
    cols = [0] + [db.col[o] for o in parse_ops(family)]
    sub = db.L_all[:, cols, :k]
    return counting_feature(sub) if feature == "count" else differences_feature(sub)


def fit_eval(db: Database, model: str, X: FloatArray, seed: int) -> dict[str, float]:
    """Decision model ``model`` fitted on the train fold of ``X``: accuracy, AUC and EER on dev and eval."""
    est = make_decision_model(model, seed=seed, **PAPER_DECISION_PARAMS.get(model, {}))
    est = est.fit(X[db.fold == 0], db.y_det[db.fold == 0])
    r = {}
    for i, sp in ((1, "dev"), (2, "eval")):
        sel = db.fold == i
        r[f"{sp}_accuracy"] = float((est.predict(X[sel]) == db.y_det[sel]).mean())
        sc = decision_scores(est, X[sel])
        r[f"{sp}_auc"] = roc_auc(sc[db.y_det[sel] == 0], sc[db.y_det[sel] == 1])
        r[f"{sp}_eer"] = equal_error_rate(sc[db.y_det[sel] == 0], sc[db.y_det[sel] == 1])
    return r


def dev_best(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The configuration the dev set selects: best dev accuracy, ties broken by dev AUC."""
    return max(rows, key=lambda r: (r["dev_accuracy"], r["dev_auc"]))


def _load_cnn(path: Path, clf: Classifier) -> CNNDetector:
    det = Detector.load(path, clf, check_classifier=False)
    assert isinstance(det, CNNDetector), f"{path} holds a {type(det).__name__}, not a CNN detector"
    return det


def cnn_detector(
    cfg: ExperimentConfig, db: Database, spec: CNNOptions, x_all: np.ndarray, cache: Path, progress: bool
) -> tuple[CNNDetector, float | None]:
    """The CNN detector of ``spec`` trained on the train images (epoch selected on dev), from the cache when
    there; with its training seconds (None when an old cache entry did not store them)."""
    key = cache_key(db.weights_key, [s.key for s in db.sets.values()], cfg.fractions, cfg.seed, spec.params)
    path = cache / "imageops-cnn" / f"{key}.zip"
    t0 = time.perf_counter()
    # verified (advguard.data.cache): a corrupt or tampered detector file is named, moved aside and retrained
    # the cache key binds the weights already: a file from before fingerprints (format 1) loads with a warning
    det = verified(path, lambda p: _load_cnn(p, db.clf))
    if isinstance(det, CNNDetector):
        saved = det.history_[-1].get("_train_seconds") if det.history_ else None
        return det, None if saved is None else float(saved)  # older caches stored it as a JSON string
    det = CNNDetector(db.clf, fpr=cfg.fpr, seed=cfg.seed, progress=progress, **spec.params)
    fold, y = db.fold, db.y_det
    det.fit(
        x_all[(fold == 0) & (y == 0)],
        x_all[(fold == 0) & (y == 1)],
        dev=(x_all[(fold == 1) & (y == 0)], x_all[(fold == 1) & (y == 1)]),
    )
    train_s = time.perf_counter() - t0
    det.history_[-1]["_train_seconds"] = train_s

    def write(p: Path) -> None:
        det.save(p)

    save_file(path, write)
    return det, train_s
