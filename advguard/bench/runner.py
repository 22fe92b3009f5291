"""Running a benchmark grid: adversarial sets -> detector features -> fitted detectors -> metrics.

Everything expensive is cached and resumable: adversarial sets (chunked, see
:mod:`advguard.advsets`) and detector features (one file per set and detector feature
configuration; clean features are shared by all attacks because every attack starts from the
same correctly classified clean images). Re-running after Ctrl-C skips what is done.
"""
from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from ..advsets import AdvSet, AdvSetConfig, build_advset
from ..data import data_dir
from ..data.cache import cache_lock, load_entry, save_entry
from ..detectors import make_detector
from ..metrics import CostReport, PeakMemory, detection_report
from ..models import get_spec, load_model
from ..report import provenance
from .config import BenchConfig, DetectorSpec

NON_FEATURE_PARAMS = {"fpr", "decision_model", "decision_params"}


def _feature_key(spec: DetectorSpec, set_key: str, which: str) -> str:
    params = {k: v for k, v in spec.params.items() if k not in NON_FEATURE_PARAMS}
    doc = json.dumps({"detector": spec.name, "params": params, "set": set_key, "which": which}, sort_keys=True)
    return hashlib.sha256(doc.encode()).hexdigest()[:20]


def cache_key(*parts) -> str:
    """A short stable hash of JSON-able ``parts`` (cache file names)."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:20]


def cached_chunks(path: Path, name: str, clf, x: np.ndarray, fn, empty: np.ndarray, chunk: int = 256,
                  desc: str = "", progress: bool = True) -> tuple[np.ndarray, dict]:
    """``fn`` applied to ``x`` in chunks (progress bar) and concatenated, with its cost (time, ``clf``'s model
    passes, peak memory); loaded from ``path`` (array ``name``) when cached there, else written atomically with a
    checksum (:mod:`advguard.data.cache`). A corrupt cache file is named in a warning, moved aside and recomputed;
    the entry's lock makes concurrent runs compute it once."""
    with cache_lock(path):
        hit = load_entry(path)  # verified; a corrupt file is named, moved aside and recomputed
        if hit is not None and name in hit and "cost" in hit:
            return hit[name], json.loads(str(hit["cost"]))
        return _compute_chunks(path, name, clf, x, fn, empty, chunk, desc, progress)


def _compute_chunks(path: Path, name: str, clf, x: np.ndarray, fn, empty: np.ndarray, chunk: int, desc: str,
                    progress: bool) -> tuple[np.ndarray, dict]:
    parts = []
    passes0, t0 = clf.num_passes, time.perf_counter()
    with PeakMemory() as mem:
        for i in tqdm(range(0, len(x), chunk), desc=desc, leave=False, disable=not progress):
            parts.append(fn(x[i: i + chunk]))
    secs = time.perf_counter() - t0
    arr = np.concatenate(parts) if parts else empty
    cost = {**CostReport(len(x), secs, clf.num_passes - passes0, mem.peak_mb).as_dict(), "seconds": secs}
    save_entry(path, {name: arr, "cost": np.asarray(json.dumps(cost))})
    return arr, cost


def _features(det, x: np.ndarray, path: Path, desc: str) -> tuple[np.ndarray, dict]:
    """Features of ``x`` from cache or computed in chunks (with a progress bar); returns (features, cost)."""
    return cached_chunks(path, "features", det.classifier, x, det.extract, np.zeros((0, 0)), desc=desc)


def bench_paths(cfg: BenchConfig, out: str | Path | None, cache_dir: str | Path | None) -> tuple[Path, Path]:
    """The output folder (``out``, else the config's, else runs/bench/<name>) and the cache folder."""
    return (Path(out or cfg.out or Path("runs") / "bench" / cfg.name),
            Path(cache_dir) if cache_dir is not None else data_dir() / "bench-cache")


def dataset_kwargs(cfg: BenchConfig, model: str) -> dict:
    """The dataset options of zoo ``model`` (e.g. the JPEG copy of CIFAR-10), overridden by the config's.

    The model's options apply only to the dataset it was trained on: your own ``image-folder`` gets none of
    them (CIFAR-10's ``source`` would break it) but is read at the model's input size and colour mode unless
    the config says otherwise."""
    spec = get_spec(model)
    if cfg.dataset == spec.dataset:
        return {**spec.dataset_kwargs, **cfg.dataset_kwargs}
    if cfg.dataset == "image-folder":
        kw = {"size": tuple(spec.size), "mode": "L" if spec.channels == 1 else "RGB", **cfg.dataset_kwargs}
        if isinstance(kw.get("size"), list):
            kw["size"] = tuple(kw["size"])
        return kw
    return dict(cfg.dataset_kwargs)


def clean_set_key(cfg: BenchConfig, first: AdvSet, ds_kwargs: dict) -> str:
    """Cache key of the clean images every attack of ``cfg`` starts from (model weights + data draw)."""
    return cache_key(first.config["weights"], cfg.dataset, cfg.split, cfg.n_images, cfg.seed, ds_kwargs)


def forward_cost(clf, x: np.ndarray, repeats: int = 3) -> dict:
    """The classifier's plain forward pass on ``x`` (the floor every detector is compared with)."""
    clf.logits(x[: min(len(x), 64)])  # warm-up
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        clf.logits(x)
        best = min(best, time.perf_counter() - t)
    return {"ms_per_image": 1000 * best / len(x), "images_per_s": len(x) / best}


def build_sets(cfg: BenchConfig, clf, ds_kwargs: dict, cache: Path, progress: bool = True,
               model: str | None = None, balanced: bool = False) -> dict[str, AdvSet]:
    """The adversarial set of every configured attack, by attack label (built or loaded from ``cache``).

    ``balanced``: attack j attacks only part j of len(attacks) disjoint parts of the clean images, so the
    pooled adversarial images number about as many as the clean ones, one per source image. Attacks with
    a ``group`` split the clean images among the members of their group the same way.
    """
    sets: dict[str, AdvSet] = {}
    m = len(cfg.attacks)
    for j, a in enumerate(tqdm(cfg.attacks, desc="adversarial sets", disable=not progress)):
        part = (j, m) if balanced and m > 1 else None
        if a.group is not None:  # member i of an attack family of k splits the clean images with the others
            family = [b.label for b in cfg.attacks if b.group == a.group]
            part = (family.index(a.label), len(family)) if len(family) > 1 else None
        acfg = AdvSetConfig(dataset=cfg.dataset, model=model or cfg.model, attack=a.name, params=a.params,
                            split=cfg.split, limit=cfg.n_images, seed=cfg.seed, target_shift=a.target_shift,
                            roundtrip=cfg.roundtrip, dataset_kwargs=ds_kwargs, part=part)
        sets[a.label] = build_advset(acfg, clf, cache_dir=cache / "advsets", chunk_size=cfg.chunk_size,
                                     progress=progress)
    return sets


def run_bench(cfg: BenchConfig, out: str | Path | None = None, cache_dir: str | Path | None = None,
              progress: bool = True) -> dict:
    """Run the whole grid; write the artefacts into ``out``; return the results document."""
    from .artefacts import write_artefacts

    if cfg.experiment == "imageops":
        from .imageops_experiment import run_imageops

        return run_imageops(cfg, out=out, cache_dir=cache_dir, progress=progress)
    if cfg.experiment == "themis":
        from .themis_experiment import run_themis

        return run_themis(cfg, out=out, cache_dir=cache_dir, progress=progress)
    if cfg.experiment == "segfault":
        from .segfault_experiment import run_segfault

        return run_segfault(cfg, out=out, cache_dir=cache_dir, progress=progress)
    if cfg.experiment == "taintradar":
        from .taintradar_experiment import run_taintradar

        return run_taintradar(cfg, out=out, cache_dir=cache_dir, progress=progress)
    if cfg.experiment == "blurnet":
        from .blurnet_experiment import run_blurnet

        return run_blurnet(cfg, out=out, cache_dir=cache_dir, progress=progress)

    out, cache = bench_paths(cfg, out, cache_dir)
    out.mkdir(parents=True, exist_ok=True)
    clf = load_model(cfg.model)
    ds_kwargs = dataset_kwargs(cfg, cfg.model)

    sets = build_sets(cfg, clf, ds_kwargs, cache, progress)
    first = next(iter(sets.values()))
    clean_key = hashlib.sha256((first.config["weights"] + json.dumps(
        [cfg.dataset, cfg.split, cfg.n_images, cfg.seed, ds_kwargs], sort_keys=True)).encode()).hexdigest()[:20]
    clean_fold = first.folds(cfg.fractions, cfg.seed)[0]
    floor = forward_cost(clf, first.x_clean[clean_fold == 1][:256])

    cells = []
    feat_dir = cache / "features"
    grid = [(a, d) for a in cfg.attacks for d in cfg.detectors]
    for a, d in tqdm(grid, desc="detector cells", disable=not progress):
        s = sets[a.label]
        det0 = make_detector(d.name, clf, fpr=cfg.fpr, seed=cfg.seed, **d.params)
        f_clean, cost_clean = _features(det0, s.x_clean, feat_dir / f"{_feature_key(d, clean_key, 'clean')}.npz",
                                        f"{d.label} clean")
        f_adv, _ = _features(det0, s.x_adv, feat_dir / f"{_feature_key(d, s.key, 'adv')}.npz",
                             f"{d.label} {a.label}")
        c_fold, a_fold = s.folds(cfg.fractions, cfg.seed)
        for dm in (d.decision_models or [None]):
            det = make_detector(d.name, clf, fpr=cfg.fpr, seed=cfg.seed, **d.params,
                                **({"decision_model": dm} if dm else {}))
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
            cells.append({
                "attack": a.label, "attack_name": a.name, "attack_params": a.params, "detector": d.label,
                "detector_name": d.name, "detector_params": d.params, "decision_model": dm,
                "n_fit_clean": int((c_fold == 0).sum()), "n_fit_adv": int((a_fold == 0).sum()),
                **rep, "cost": cost_clean, "roc": _roc_points(sc, sa),
            })
    doc = {
        "config": {**{k: v for k, v in asdict(cfg).items() if k != "source_text"}},
        "config_toml": cfg.source_text,
        "provenance": provenance(),
        "software": _versions(),
        "data": {"dataset": cfg.dataset, "split": cfg.split, "source": first.config.get("source"),
                 "n_images": first.counts["n_images"], "n_correct": first.counts["n_correct"]},
        "forward_floor": floor,
        "advsets": {k: v.summary() for k, v in sets.items()},
        "cells": cells,
    }
    write_artefacts(doc, out)
    return doc


def _empty_cell(a, d, dm, s, why: str) -> dict:
    return {"attack": a.label, "attack_name": a.name, "attack_params": a.params, "detector": d.label,
            "detector_name": d.name, "detector_params": d.params, "decision_model": dm, "skipped": why,
            "n_adv": int(len(s.x_adv))}


def _roc_points(sc: np.ndarray, sa: np.ndarray, n: int = 101) -> dict:
    from sklearn.metrics import roc_curve

    f, t, _ = roc_curve(np.r_[np.zeros(len(sc)), np.ones(len(sa))], np.r_[sc, sa])
    grid = np.linspace(0, 1, n)
    return {"fpr": grid.round(4).tolist(), "tpr": np.interp(grid, f, t).round(4).tolist()}


def _versions() -> dict:
    import importlib.metadata as md

    out = {}
    for p in ("advguard", "torch", "numpy", "scikit-learn", "scikit-image", "opencv-python-headless", "foolbox",
              "xgboost", "pillow"):
        try:
            out[p] = md.version(p)
        except md.PackageNotFoundError:
            pass
    return out
