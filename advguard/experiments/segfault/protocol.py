"""Segmentation Fault's shared, cached steps: the attack families' adversarial images, each occlusion unit's
multi-layer features (cached per batch), the flavours taken from them, the Table 7 timings, the segment counts
of the paper's grid and the decision models' test AUC."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray

from ...advsets import AdvSet, fold_of
from ...classifier import Classifier
from ...data.cache import cache_lock, load_json, save_json
from ...detectors import LeaveOneOut
from ...detectors.decision import decision_scores, make_decision_model
from ...executors import cached_map
from ...metrics import PeakMemory, roc_auc
from ..common import build_sets, cache_key, clean_set_key
from ..config import ExperimentConfig
from . import paper
from .options import SegfaultOptions, SegmentCountsOptions, UnitTable, unit_label

FLAVOURS = ("1d", "10d", "multilayer")
BATCH = 128
#: the units in the order their features are computed: cheapest first, so an interrupted run has finished whole
#: rows of Table 6
UNIT_ORDER = ("slic", "felzenszwalb", "quickshift", "pixel", "channel-pixel")

Array = NDArray[Any]
#: a unit's features of one image set: features (N, D), pred (N,), units (N,), per batch seconds and peak_mb
Features = dict[str, Array]


@dataclass
class Families:
    """The attack families (attacks sharing a ``group``, else one each) pooled over their members, and the
    80/20 folds by clean-image id."""

    sets: dict[str, AdvSet]
    #: family -> its members' labels
    members: dict[str, list[str]]
    #: family -> (adversarial images, their clean ids, the members' set keys)
    pooled: dict[str, tuple[Array, Array, list[str]]]
    fold_c: Array
    fold_a: dict[str, Array]

    @property
    def first(self) -> AdvSet:
        return next(iter(self.sets.values()))


def build_families(
    cfg: ExperimentConfig, clf: Classifier, ds_kwargs: dict[str, Any], cache: Path, progress: bool
) -> Families:
    sets = build_sets(cfg, clf, ds_kwargs, cache, progress)
    members: dict[str, list[str]] = {}
    for a in cfg.attacks:
        members.setdefault(a.group or a.label, []).append(a.label)
    pooled = {
        g: (
            np.concatenate([sets[lab].x_adv for lab in labs]),
            np.concatenate([sets[lab].adv_ids for lab in labs]),
            [sets[lab].key for lab in labs],
        )
        for g, labs in members.items()
    }
    first = next(iter(sets.values()))
    return Families(
        sets=sets,
        members=members,
        pooled=pooled,
        fold_c=fold_of(first.clean_ids, cfg.fractions, cfg.seed),
        fold_a={g: fold_of(ids, cfg.fractions, cfg.seed) for g, (_, ids, _) in pooled.items()},
    )


def segment_counts(
    x: Array, value_ranges: list[float], grid: dict[str, tuple[str, dict[str, Any]]] | None = None
) -> dict[str, dict[str, float | None]]:
    """Mean segments per image of ``x`` (N, C, H, W in [0, 1]) for every setting of ``grid`` (label -> (unit,
    params); default the paper's Table 7 grid) at each value range (Felzenszwalb / Quickshift; SLIC rescales
    to [0, 1] itself, so it is counted once, under value range 1), with the paper's implied count."""
    from ...detectors.loo import UNIT_PARAMS, segment

    imgs = np.ascontiguousarray(np.asarray(x).transpose(0, 2, 3, 1), dtype=np.float64)
    out: dict[str, dict[str, float | None]] = {}
    for lab, (unit, params) in (paper.GRID if grid is None else grid).items():
        row: dict[str, float | None] = {}
        for vr in value_ranges:
            if float(vr) != 1.0 and "value_range" not in UNIT_PARAMS[unit]:
                continue
            extra = {} if float(vr) == 1.0 else {"value_range": vr}
            row[f"{vr:g}"] = float(np.mean([segment(im, unit, **params, **extra).max() + 1 for im in imgs]))
        row["paper"] = paper.implied_segments(lab)
        out[lab] = row
    return out


def cached_segment_counts(
    cfg: ExperimentConfig, sc: SegmentCountsOptions, ds_kwargs: dict[str, Any], cache: Path
) -> dict[str, Any]:
    """The segment counts of the paper's grid at each value range, on clean images of the same split (cached)."""
    n_sc, vrs = int(sc.images), list(sc.value_ranges)
    key = cache_key("segcounts", cfg.dataset, cfg.split, n_sc, cfg.seed, ds_kwargs, vrs)
    path = cache / "segfault" / f"segcounts-{key}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    with cache_lock(path):
        counts_doc: dict[str, Any] | None = load_json(path)
        if counts_doc is None:
            from ...data import load_dataset

            xs = load_dataset(cfg.dataset, cfg.split, limit=n_sc, seed=cfg.seed, **ds_kwargs).x
            t0 = time.perf_counter()
            counts_doc = {
                "images": int(len(xs)),
                "value_ranges": [f"{v:g}" for v in vrs],
                "mean_segments": segment_counts(xs, vrs),
                "seconds": 0.0,
            }
            counts_doc["seconds"] = time.perf_counter() - t0
            save_json(path, json.dumps(counts_doc, indent=1))
    return counts_doc


def make_detector(clf: Classifier, unit: UnitTable, opts: SegfaultOptions, feature: str, seed: int) -> LeaveOneOut:
    return LeaveOneOut(
        clf,
        unit=unit["unit"],
        unit_params=dict(unit.get("params", {})),
        baseline=opts.baseline,
        statistic=opts.statistic,
        feature=feature,
        seed=seed,
    )


def unit_features(
    det: LeaveOneOut, x: Array, folder: Path, desc: str, progress: bool = True, batch: int = BATCH
) -> Features:
    """Multi-layer features of ``x`` in batches of ``batch`` images, each batch cached in ``folder`` (resumable).

    Returns ``features`` (N, D), ``pred`` (N,) the predicted class (the 1-D column), ``units`` (N,) occlusion
    units per image, and per batch ``seconds`` and ``peak_mb``."""
    folder.mkdir(parents=True, exist_ok=True)
    clf = det.classifier

    def build(xn: Array) -> dict[str, Array]:
        xb = clf.validate(xn)
        det.units_per_image_ = []
        t0 = time.perf_counter()
        with PeakMemory() as mem:
            f = det.features(xb)
        secs = time.perf_counter() - t0
        with torch.inference_mode():
            pred = clf.logits(xb, validate=False).argmax(1).numpy()  # the detector's own forward pass
        return dict(
            features=f,
            pred=pred,
            units=np.asarray(det.units_per_image_),
            seconds=np.asarray(secs),
            peak_mb=np.asarray(mem.peak_mb),
        )

    # each batch an independent chunk (in this process, or a Ray task under --executor ray), verified and locked:
    # a corrupt batch file is named in a warning, moved aside and recomputed
    starts = range(0, len(x), batch)
    parts = cached_map(
        build,
        [folder / f"{i // batch:05d}.npz" for i in starts],
        lambda j: x[starts[j] : starts[j] + batch],
        classifier=clf,
        desc=desc,
        progress=progress,
    )
    cat = {k: np.concatenate([p[k] for p in parts]) for k in ("features", "pred", "units")}
    cat["seconds"] = np.array([float(p["seconds"]) for p in parts])
    cat["peak_mb"] = np.array([float(p["peak_mb"]) for p in parts])
    return cat


def grid_features(
    cfg: ExperimentConfig,
    opts: SegfaultOptions,
    clf: Classifier,
    fams: Families,
    ds_kwargs: dict[str, Any],
    cache: Path,
    progress: bool,
) -> dict[str, dict[str, Features]]:
    """unit label -> {"clean" | family: its multi-layer features} (1-D and 10-D are its columns), resumable per
    batch; the cheapest units first."""
    clean_key = clean_set_key(cfg, fams.first, ds_kwargs)
    feats: dict[str, dict[str, Features]] = {}
    root = cache / "segfault"
    for u in sorted(opts.unit, key=lambda u: UNIT_ORDER.index(u["unit"])):
        lab = unit_label(u)
        det = make_detector(clf, u, opts, "multilayer", cfg.seed)
        params = {k: v for k, v in det._resolved_params().items() if k not in ("workers", "batch_size", "patch")}
        x_c = fams.first.x_clean
        feats[lab] = {
            "clean": unit_features(
                det, x_c, root / cache_key("loo", params, clean_key), f"{lab} | clean", progress, opts.batch_images
            )
        }
        for g, (xa, _, keys) in fams.pooled.items():
            feats[lab][g] = unit_features(
                det, xa, root / cache_key("loo", params, keys), f"{lab} | {g}", progress, opts.batch_images
            )
    return feats


def flavour(feats: Features, name: str, num_classes: int) -> Array:
    """The 1-D / 10-D / multi-layer feature from the multi-layer one (outputs first, then hidden units)."""
    f = feats["features"]
    if name == "1d":
        return f[np.arange(len(f)), feats["pred"]][:, None]
    return f[:, :num_classes] if name == "10d" else f


def timing(
    clf: Classifier, unit: UnitTable, opts: SegfaultOptions, x: Array, path: Path, seed: int
) -> dict[str, dict[str, Any]]:
    """Seconds and peak MB of each flavour on one batch of ``x`` (cached in ``path``)."""
    with cache_lock(path):
        cached: dict[str, dict[str, Any]] | None = load_json(path)
        if cached is not None:
            return cached
        out = _measure(clf, unit, opts, x, seed)
        save_json(path, json.dumps(out, indent=1))
    return out


def _measure(clf: Classifier, unit: UnitTable, opts: SegfaultOptions, x: Array, seed: int) -> dict[str, dict[str, Any]]:
    out = {}
    for fl in FLAVOURS:
        det = make_detector(clf, unit, opts, fl, seed)
        xb = clf.validate(x)
        det.extract(xb[:1])  # warm-up: hidden-unit selection, patcher build
        det.units_per_image_ = []
        t0 = time.perf_counter()
        with PeakMemory() as mem:
            f = det.features(xb)
        out[fl] = {
            "seconds": time.perf_counter() - t0,
            "peak_mb": mem.peak_mb,
            "dims": int(f.shape[1]),
            "mean_units": float(np.mean(det.units_per_image_)),
            "images": int(len(x)),
        }
    return out


def fit_auc(train: tuple[Array, Array], test: tuple[Array, Array], clf_name: str, seed: int) -> float:
    """Decision model ``clf_name`` fitted on (clean, adversarial) ``train`` features: its AUC on ``test``."""
    (fc, fa), (tc, ta) = train, test
    f = np.concatenate([fc, fa]).astype(np.float64)
    y = np.r_[np.zeros(len(fc)), np.ones(len(fa))]
    est = make_decision_model(clf_name, seed=seed).fit(f, y)
    return roc_auc(decision_scores(est, tc.astype(np.float64)), decision_scores(est, ta.astype(np.float64)))
