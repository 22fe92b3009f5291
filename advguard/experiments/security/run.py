"""The security table: every detector (and a Guard of them) against a plain and an adaptive attack per budget.

Protocol (issue #26; Carlini et al. 2019, "On evaluating adversarial robustness", Sections 4-5):

1. The configured ``[[attack]]`` list builds the plain adversarial sets supervised detectors learn from (cached,
   shared with the other experiments). Every attack starts from the same correctly classified clean images.
2. The clean images are split by clean-image id into three folds (``fractions``, default 40/20/40 %): **D** fits the
   detectors (supervised ones on D's clean images and the pooled adversarial images of D), **C** calibrates every
   threshold at the target clean FPR (:meth:`Detector.calibrate`; the Guard's joint ``any`` threshold on the same
   images), **A** is attacked: its first ``n_attack`` images in every cell, and all its clean images give the
   held-out FPR.
3. Per budget (L-inf and L2 ``eps``): the **plain** attack is PGD (Madry et al.; Foolbox's ``pgd`` / ``pgd-l2``)
   at that budget with the same steps, run once and shown to every detector; the **adaptive** attack is the
   detector's own (:data:`ADAPTIVE`, PGD on margin + detector term, BPDA / EOT where the detector is not
   differentiable), run against the fitted detector. **Bypass** = misclassified *and* not flagged at the calibrated
   threshold, checked on the returned images.
4. Sanity checks at one budget, on the first ``sanity_images`` attack images: the adaptive attack with
   ``steps_factor`` times the steps never bypasses fewer images (checked image by image: the driver continues a
   shorter run); an unbounded budget (L-inf eps = 1, from the clean image) bypasses every image; further attacks
   (``[[security.extra]]``, e.g. the gradient-free ``square-bypass``, which catches gradient masking when it beats
   the white-box attack).

Every detector fit, score array and cell is cached (chunks of ``batch_size`` images) and the run resumes after an
interruption. Deviations, stated on the page: detectors are fitted on the harness's plain sets (not each paper's own
training recipe), and the plain attack is one PGD run per budget (not each paper's attack list).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from ...advsets import AdvSet
from ...attacks import AdversarialPatch, make_attack
from ...attacks.adaptive import AdaptiveResult, evades
from ...classifier import Classifier
from ...data.cache import cache_lock
from ...detectors import make_detector
from ...detectors.base import Detector
from ...guard import Guard
from ...models import load_model
from ..common import (
    bench_paths,
    build_sets,
    cache_key,
    cached_chunks,
    clean_set_key,
    data_summary,
    dataset_kwargs,
    forward_cost,
    results_header,
    shared_folds,
)
from ..config import DetectorSpec, ExperimentConfig
from .options import Budget, Extra, SecurityOptions
from .paper import PAPER_CLAIMS

#: fold indices of the three shares
FIT, CAL, ATTACK = 0, 1, 2
#: the white-box adaptive attack of each detector (by detector name)
ADAPTIVE = {
    "feature-squeezing": "adaptive-squeezing",
    "confidence": "adaptive-confidence",
    "cnn": "adaptive-cnn",
    "image-ops": "adaptive-image-ops",
    "loo": "adaptive-loo",
    "erase-restore": "adaptive-erase-restore",
    "erase-restore-distance": "adaptive-erase-restore",
}
#: the adaptive patch attack of each patch detector (by detector name): its rows are patch sizes
PATCH_ADAPTIVE = {"taintradar": "region-misleading-patch", "sentinet": "sentinet-patch"}
#: the plain attack of each norm
PLAIN = {"linf": "pgd", "l2": "pgd-l2"}
#: columns of a cell's per-image record
RECORD = ("bypass", "misclassified", "steps", "l2", "linf")
GUARD = "Guard"


def run_security(
    cfg: ExperimentConfig, out: str | Path | None = None, cache_dir: str | Path | None = None, progress: bool = True
) -> dict[str, Any]:
    """Run the experiment; write the artefacts into ``out``; return the results document."""
    from .report import write_artefacts

    t_start = time.perf_counter()
    o: SecurityOptions = cfg.options if isinstance(cfg.options, SecurityOptions) else SecurityOptions()
    out, cache = bench_paths(cfg, out, cache_dir)
    clf = load_model(cfg.model, device=cfg.device)
    ds_kwargs = dataset_kwargs(cfg, cfg.model)
    sets = build_sets(cfg, clf, ds_kwargs, cache, progress)
    first, c_fold, a_fold = shared_folds(cfg, sets, "security")
    clean_key = clean_set_key(cfg, first, ds_kwargs)
    pool = np.flatnonzero(c_fold == ATTACK)
    idx = pool[: o.n_attack]
    x_att, y_att = first.x_clean[idx], first.y_clean[idx]
    x_held = first.x_clean[pool]
    x_cal = first.x_clean[c_fold == CAL]
    folder = cache / "security"
    base_key = cache_key(clean_key, [s.key for s in sets.values()], cfg.fractions, cfg.seed, cfg.fpr)
    att_key = cache_key(base_key, o.n_attack)
    cell = _CellRunner(clf, x_att, y_att, folder / "cells", att_key, o, progress)

    dets: dict[str, Detector] = {}
    for d in tqdm(cfg.detectors, desc="fitting detectors", disable=not progress):
        dets[d.label] = fitted_detector(d, clf, cfg, first, sets, c_fold, a_fold, x_cal, folder, base_key)

    # the plain attack per budget: one set of images, shown to every detector
    plain: dict[str, dict[str, Any]] = {}
    for b in tqdm(o.budgets, desc="plain attacks", disable=not progress):
        plain[b.name] = cell.plain(b)

    rows, patch_rows = [], []
    patches = None
    for d in cfg.detectors:
        det = dets[d.label]
        if d.name in PATCH_ADAPTIVE:
            if patches is None:  # the attack fold's images not of the target class, whole patch batches
                keep = pool[first.y_clean[pool] != o.patch_target][: o.n_attack]
                keep = keep[: len(keep) // o.patch_batch * o.patch_batch]
                xk, yk = first.x_clean[keep], first.y_clean[keep]
                patches = _PatchRunner(clf, xk, yk, folder / "patches", att_key, o, progress)
            patch_rows.append(patch_row(d, det, patches, x_held, o, folder, base_key))
            continue
        rows.append(detector_row(d.label, d.name, d.params, det, cell, plain, x_held, o, cfg, folder, base_key))
    guard_row = None
    if o.guard_row:
        labels = o.guard or [d.label for d in cfg.detectors if d.name in ADAPTIVE]
        if labels:
            guard = Guard(clf, [dets[k] for k in labels], combine="any", fpr=cfg.fpr, seed=cfg.seed).fit(x_cal)
            guard_row = detector_row(GUARD, "guard", {"detectors": labels}, guard, cell, plain, x_held, o, cfg,
                                     folder, base_key)  # fmt: skip
    model_rows = [model_row(m.label, m.model, m.note, cfg, plain, x_att, y_att, o, folder, att_key, progress)
                  for m in o.model]  # fmt: skip
    doc = {
        **results_header(cfg),
        "data": data_summary(cfg, first),
        "folds": {n: int((c_fold == i).sum()) for i, n in enumerate(("fit", "calibrate", "attack"))},
        "n_attack": len(idx),
        "forward_floor": forward_cost(clf, x_att[:256]),
        "advsets": {k: v.summary() for k, v in sets.items()},
        "budgets": [{"name": b.name, "norm": b.norm, "eps": b.eps} for b in o.budgets],
        "sanity_budget": o.sanity().name,
        "plain": {k: {m: v[m] for m in v if m != "x_adv"} for k, v in plain.items()},
        "rows": rows,
        "guard": guard_row,
        "patch_rows": patch_rows,
        "model_rows": model_rows,
        "n_patch_images": 0 if patches is None else len(patches.x),
        "wall_s": time.perf_counter() - t_start,
    }
    doc["attack_s"] = _seconds([doc["plain"], rows, guard_row, patch_rows, model_rows])
    write_artefacts(doc, out)
    return doc


def fitted_detector(
    d: DetectorSpec,
    clf: Classifier,
    cfg: ExperimentConfig,
    first: AdvSet,
    sets: dict[str, AdvSet],
    c_fold: np.ndarray,
    a_fold: dict[str, np.ndarray],
    x_cal: np.ndarray,
    folder: Path,
    base_key: str,
) -> Detector:
    """The detector fitted on fold D and calibrated on fold C (saved in the cache in advguard's pickle-free format
    and loaded from there on later runs)."""
    path = folder / "detectors" / f"{cache_key(d.name, d.params, base_key)}.advguard"
    with cache_lock(path):
        if path.exists():
            return Detector.load(path, clf)
        det = make_detector(d.name, clf, fpr=cfg.fpr, seed=cfg.seed, **d.params)
        x_fit = first.x_clean[c_fold == FIT]
        if det.supervised:
            det.fit(x_fit, np.concatenate([s.x_adv[a_fold[k] == FIT] for k, s in sets.items()]))
        else:
            det.fit(x_fit)
        det.calibrate(x_cal, cfg.fpr)
        path.parent.mkdir(parents=True, exist_ok=True)
        det.save(path)
        return det


class _CellRunner:
    """Runs (or loads) one cell: an attack on the attack images in chunks of ``batch_size``, cached per chunk."""

    def __init__(
        self,
        clf: Classifier,
        x: np.ndarray,
        y: np.ndarray,
        folder: Path,
        key: str,
        o: SecurityOptions,
        progress: bool,
    ):
        self.clf, self.x, self.y, self.folder, self.key, self.o, self.progress = clf, x, y, folder, key, o, progress

    def plain(self, b: Budget) -> dict[str, Any]:
        """PGD at budget ``b`` on every attack image: the adversarial images and the misclassification."""
        o = self.o
        params = {"eps": b.eps, "steps": o.steps, "rel_stepsize": o.rel_stepsize}
        path = self.folder / f"plain-{cache_key(self.key, PLAIN[b.norm], params)}.npz"

        def fn(i: np.ndarray) -> np.ndarray:
            r = make_attack(PLAIN[b.norm], self.clf, **params, progress=False)(self.x[i], self.y[i])
            return r.x_adv.numpy()

        x_adv, cost = cached_chunks(
            path, "x_adv", self.clf, np.arange(len(self.x)), fn, np.zeros((0, *self.x.shape[1:]), np.float32),
            chunk=o.batch_size, desc=f"PGD {b.name}", progress=self.progress,
        )  # fmt: skip
        mis = self.clf.predict(x_adv).numpy() != self.y
        # the attack's own compute time (cached with it), not this call's
        return {"attack": PLAIN[b.norm], "params": params, "x_adv": x_adv, "misclassified": mis,
                "seconds": float(cost["seconds"]), **_norm_summary(self.x, x_adv)}  # fmt: skip

    def adaptive(
        self,
        attack: str,
        det: Detector | Guard,
        det_key: str,
        params: dict[str, Any],
        n: int | None = None,
        desc: str = "",
    ) -> dict[str, Any]:
        """The detector-aware ``attack`` with ``params`` against fitted ``det`` on the first ``n`` attack images:
        per-image records (bypass, misclassified, steps or queries used, L2, L-inf) and their summary."""
        n = len(self.x) if n is None else min(n, len(self.x))
        path = self.folder / f"{attack}-{cache_key(self.key, det_key, attack, params, n, self.o.batch_size)}.npz"

        def fn(i: np.ndarray) -> np.ndarray:
            a = make_attack(attack, self.clf, detector=det, **params, progress=False)
            r = a(self.x[i], self.y[i])
            assert isinstance(r, AdaptiveResult) and r.misclassified is not None  # every detector-aware attack's
            steps = getattr(r, "steps_used", None)
            used = np.full(len(i), np.nan) if steps is None else steps.numpy().astype(float)
            return _records(det, r.misclassified.numpy(), used, self.x[i], r.x_adv)

        rec, cost = cached_chunks(
            path, "records", self.clf, np.arange(n), fn, np.zeros((0, len(RECORD))), chunk=self.o.batch_size,
            desc=desc or attack, progress=self.progress,
        )  # fmt: skip
        return {**summarise(rec), "records": rec, "seconds": float(cost["seconds"])}


class _PatchRunner:
    """Universal patches (Brown et al. 2017; TaintRadar Table II's setting): one patch trained on each batch of
    ``patch_batch`` attack images and pasted on them, targeted at ``patch_target``; cached per batch."""

    def __init__(
        self, clf: Classifier, x: np.ndarray, y: np.ndarray, folder: Path, key: str, o: SecurityOptions, progress: bool
    ):
        self.clf, self.x, self.y, self.folder, self.key, self.o, self.progress = clf, x, y, folder, key, o, progress

    def _kw(self, size: float) -> dict[str, Any]:
        o = self.o
        return {"target": o.patch_target, "size": size, "steps": o.patch_steps, "position": o.patch_position}

    def plain(self, size: float) -> np.ndarray:
        """The patched images (each batch's own universal patch), for every patch detector to score."""
        kw = self._kw(size)
        path = self.folder / f"plain-{cache_key(self.key, kw, self.o.patch_batch, len(self.x))}.npz"

        def fn(i: np.ndarray) -> np.ndarray:
            a = make_attack("patch", self.clf, **kw, seed=int(i[0]), progress=False)
            assert isinstance(a, AdversarialPatch)
            a.fit(self.x[i])
            return a(self.x[i], self.y[i], np.full(len(i), self.o.patch_target)).x_adv.numpy()

        x_adv, _ = cached_chunks(
            path, "x_adv", self.clf, np.arange(len(self.x)), fn, np.zeros((0, *self.x.shape[1:]), np.float32),
            chunk=self.o.patch_batch, desc=f"patch {size:g}", progress=self.progress,
        )  # fmt: skip
        return x_adv

    def adaptive(self, attack: str, det: Detector, det_key: str, size: float, label: str) -> dict[str, Any]:
        """The adaptive patch ``attack`` against ``det``: per-image records (bypass = target reached and not
        flagged, target reached, training steps, L2, L-inf) and their summary."""
        from ...attacks import ATTACKS

        kw = {**self._kw(size), "lam": self.o.patch_lam}
        path = self.folder / f"{attack}-{cache_key(self.key, det_key, kw, self.o.patch_batch, len(self.x))}.npz"
        needs = "detector" in getattr(ATTACKS[attack], "requires", ())

        def fn(i: np.ndarray) -> np.ndarray:
            a = make_attack(attack, self.clf, **({"detector": det} if needs else {}), **kw, seed=int(i[0]),
                            progress=False)  # fmt: skip
            assert isinstance(a, AdversarialPatch)  # the region-misleading and SentiNet patches are patches too
            a.fit(self.x[i])
            r = a(self.x[i], self.y[i], np.full(len(i), self.o.patch_target))
            reached = r.pred_adv.numpy() == self.o.patch_target
            return _records(det, reached, np.full(len(i), float(self.o.patch_steps)), self.x[i], r.x_adv)

        rec, cost = cached_chunks(
            path, "records", self.clf, np.arange(len(self.x)), fn, np.zeros((0, len(RECORD))),
            chunk=self.o.patch_batch, desc=f"{label}: {attack} {size:g}", progress=self.progress,
        )  # fmt: skip
        return {**summarise(rec), "seconds": float(cost["seconds"])}

    def per_image(self, e: Extra, det: Detector, det_key: str, size: float, label: str) -> dict[str, Any]:
        """A ``[[security.extra]]`` per-image localized attack (``norm == "l0"``, e.g. TaintRadar's BPDA) on the
        first ``e.n_images`` patch images, a region of ``size`` at the runner's position, targeted at the patch
        target: records and their summary (steps: the step of the bypass, else the attack's budget)."""
        o = self.o
        n = min(len(self.x), e.n_images or o.sanity_images)
        params = {"size": size, "position": o.patch_position, **e.params}
        seed = int(params.pop("seed", 0))  # offset by each chunk's first image, as the patches' seeds are
        key = cache_key(self.key, det_key, params, seed, o.patch_target, o.patch_batch, len(self.x), n)
        path = self.folder / f"{e.attack}-{key}.npz"

        def fn(i: np.ndarray) -> np.ndarray:
            a = make_attack(e.attack, self.clf, detector=det, **params, seed=seed + int(i[0]), progress=False)
            r = a(self.x[i], self.y[i], np.full(len(i), o.patch_target))
            reached = r.pred_adv.numpy() == o.patch_target
            budget = float(a.params["steps"]) if "steps" in a.params else np.nan
            step = getattr(r, "step", None)
            steps = np.where(step.numpy() >= 0, step.numpy(), budget) if step is not None else np.full(len(i), budget)
            return _records(det, reached, steps.astype(float), self.x[i], r.x_adv)

        rec, cost = cached_chunks(
            path, "records", self.clf, np.arange(n), fn, np.zeros((0, len(RECORD))),
            chunk=o.patch_batch, desc=f"{label}: {e.label} {size:g}", progress=self.progress,
        )  # fmt: skip
        return {**summarise(rec), "seconds": float(cost["seconds"])}


def _patch_extras(o: SecurityOptions, label: str, det: Detector) -> list[Extra]:
    """The ``[[security.extra]]`` attacks that are localized (``norm == "l0"``) and apply to this patch detector."""
    return [e for e in o.extra if e.localized and _applies(e, label, det)]


def patch_row(
    d: DetectorSpec,
    det: Detector,
    patches: _PatchRunner,
    x_held: np.ndarray,
    o: SecurityOptions,
    folder: Path,
    base_key: str,
) -> dict[str, Any]:
    """A patch detector's row: held-out FPR and, per patch size, the plain universal patch's bypass rate (target
    reached and not flagged) beside the adaptive patch's."""
    det_key, score, head = _row_head(d.label, d.name, d.params, det, patches.clf, x_held, folder, base_key)
    thr = head["threshold"]
    attack = PATCH_ADAPTIVE[d.name]
    cells: dict[str, Any] = {}
    for size in o.patch_sizes:
        x_adv = patches.plain(size)
        reached = patches.clf.predict(x_adv).numpy() == o.patch_target
        flagged = score(x_adv, f"patch {size:g}") > thr
        a = patches.adaptive(attack, det, det_key, size, d.label)
        extra = {e.label: patches.per_image(e, det, det_key, size, d.label) for e in _patch_extras(o, d.label, det)}
        cells[f"patch {size:g}"] = {
            "plain": {
                "bypass": float((reached & ~flagged).mean()),
                "misclassified": float(reached.mean()),
                "flagged": float(flagged.mean()),
                "steps": o.patch_steps,
            },  # fmt: skip
            "adaptive": a,
            **({"extra": extra} if extra else {}),
        }
    return {
        **head,
        "adaptive_attack": attack,
        "adaptive_params": {"lam": o.patch_lam, "steps": o.patch_steps, "position": o.patch_position},
        "cells": cells,
        "paper": PAPER_CLAIMS.get(d.name),
    }


def model_row(
    label: str,
    model: str,
    note: str,
    cfg: ExperimentConfig,
    plain: dict[str, dict[str, Any]],
    x: np.ndarray,
    y: np.ndarray,
    o: SecurityOptions,
    folder: Path,
    att_key: str,
    progress: bool,
) -> dict[str, Any]:
    """A defended model's row (no detector; bypass = misclassified by the defended model), over the attack images
    it classifies correctly: per budget, the config's model's PGD images transferred (BlurNet's black-box setting,
    Section 3) beside PGD through the defended model itself (white-box, Section 4)."""
    clf = load_model(model, device=cfg.device)
    ok = clf.predict(x).numpy() == y
    runner = _CellRunner(clf, x, y, folder / "cells", cache_key(att_key, model), o, progress)
    cells: dict[str, Any] = {}
    for b in o.budgets:
        transfer = clf.predict(plain[b.name]["x_adv"]).numpy() != y
        white = runner.plain(b)
        cells[b.name] = {
            "plain": {"bypass": _share(transfer, ok), "misclassified": _share(transfer, ok), "n": int(ok.sum())},
            "adaptive": {
                "bypass": _share(white["misclassified"], ok),
                "misclassified": _share(white["misclassified"], ok),
                "n": int(ok.sum()),
                "median_l2": white["median_l2"],
                "median_linf": white["median_linf"],
                "mean_steps": float(o.steps),
                "seconds": white["seconds"],
            },  # fmt: skip
        }
    return {
        "label": label,
        "model": model,
        "note": note,
        "clean_accuracy": float(ok.mean()) if len(ok) else float("nan"),
        "n": int(ok.sum()),
        "plain_attack": f"{PLAIN['linf']} / {PLAIN['l2']} on {cfg.model}, transferred",
        "adaptive_attack": f"{PLAIN['linf']} / {PLAIN['l2']} through {model}",
        "cells": cells,
        "paper": PAPER_CLAIMS.get("blurnet") if "blur" in model or "-dw" in model or "-tv" in model else None,
    }


def _seconds(o: Any) -> float:
    """The attack compute time recorded in a results structure: every ``seconds`` entry, summed (cached cells keep
    the time they took when computed)."""
    if isinstance(o, dict):
        return sum(float(v) if k == "seconds" else _seconds(v) for k, v in o.items())
    if isinstance(o, list):
        return sum(_seconds(v) for v in o)
    return 0.0


def _share(hit: np.ndarray, among: np.ndarray) -> float:
    return float(hit[among].mean()) if among.any() else float("nan")


def _distances(x: np.ndarray, x_adv: np.ndarray | torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Per image, the L2 and L-inf distance of ``x_adv`` to ``x`` (pixel units)."""
    d = (np.asarray(x_adv) - x).reshape(len(x), -1)
    return np.linalg.norm(d, axis=1), np.abs(d).max(1)


def _records(
    det: Detector | Guard, hit: np.ndarray, steps: np.ndarray, x: np.ndarray, x_adv: torch.Tensor
) -> np.ndarray:
    """A cell's per-image records (:data:`RECORD`): the bypass (``hit``, i.e. misclassified or the target reached,
    and not flagged, checked here on the returned images whatever the attack reports), ``hit``, the steps or
    queries used, the L2 and L-inf distances."""
    ok: np.ndarray = evades(det, x_adv)  # type: ignore[arg-type]  # a Guard has the detector's protocol
    return np.stack([hit & ok, hit, steps, *_distances(x, x_adv)], 1)


def _norm_summary(x: np.ndarray, x_adv: np.ndarray) -> dict[str, float]:
    l2, linf = _distances(x, x_adv)
    return {"median_l2": float(np.median(l2)), "median_linf": float(np.median(linf))}


def _median(v: np.ndarray) -> float:
    return float(np.median(v)) if len(v) else float("nan")


def summarise(rec: np.ndarray) -> dict[str, Any]:
    """Bypass and misclassification rates of a cell's records; median distortion and steps of the bypasses."""
    byp = rec[:, 0].astype(bool) if len(rec) else np.zeros(0, bool)
    return {
        "n": int(len(rec)),
        "bypass": float(byp.mean()) if len(rec) else float("nan"),
        "misclassified": float(rec[:, 1].mean()) if len(rec) else float("nan"),
        "median_l2": _median(rec[byp, 3]),
        "median_linf": _median(rec[byp, 4]),
        "median_steps": _median(rec[byp, 2][np.isfinite(rec[byp, 2])]),
        "mean_steps": float(np.nanmean(rec[:, 2])) if len(rec) and np.isfinite(rec[:, 2]).any() else float("nan"),
    }


def _row_head(
    label: str,
    name: str,
    params: dict[str, Any],
    det: Detector | Guard,
    clf: Classifier,
    x_held: np.ndarray,
    folder: Path,
    base_key: str,
) -> tuple[str, Callable[[np.ndarray, str], np.ndarray], dict[str, Any]]:
    """What every row starts with: its cache key, its cached scorer and the columns naming the decision, its
    calibrated threshold and its FPR on the held-out clean images."""
    det_key = cache_key(label, name, params, base_key)
    score = _cached_scorer(det, folder / "scores", det_key, clf)
    held = score(x_held, "held-out clean")
    thr = float(det.threshold_)  # type: ignore[arg-type]  # fitted above
    head = {"label": label, "detector": name, "params": params, "threshold": thr,
            "heldout_fpr": float((held > thr).mean()), "n_heldout": int(len(held))}  # fmt: skip
    return det_key, score, head


def detector_row(
    label: str,
    name: str,
    params: dict[str, Any],
    det: Detector | Guard,
    cell: _CellRunner,
    plain: dict[str, dict[str, Any]],
    x_held: np.ndarray,
    o: SecurityOptions,
    cfg: ExperimentConfig,
    folder: Path,
    base_key: str,
) -> dict[str, Any]:
    """One row of the table: held-out FPR, and per budget the plain and the adaptive bypass rates; sanity checks."""
    det_key, score, head = _row_head(label, name, params, det, cell.clf, x_held, folder, base_key)
    thr = head["threshold"]
    attack = "adaptive-guard" if isinstance(det, Guard) else ADAPTIVE.get(name)
    extra_params = o.attack_params.get(label, {})
    base = {"steps": o.steps, "restarts": o.restarts, "rel_stepsize": o.rel_stepsize, "kappa": o.kappa,
            "check_every": o.check_every, **extra_params}  # fmt: skip
    cells: dict[str, Any] = {}
    for b in o.budgets:
        p = plain[b.name]
        flagged = score(p["x_adv"], f"PGD {b.name}") > thr
        byp = p["misclassified"] & ~flagged
        c: dict[str, Any] = {
            "plain": {
                "bypass": float(byp.mean()),
                "misclassified": float(p["misclassified"].mean()),
                "flagged": float(flagged.mean()),
                "median_l2": p["median_l2"],
                "median_linf": p["median_linf"],
                "steps": o.steps,
            },  # fmt: skip
        }
        if attack is not None:
            r = cell.adaptive(attack, det, det_key, {**base, "eps": b.eps, "norm": b.norm}, desc=f"{label}: {b.name}")
            c["adaptive"] = {k: v for k, v in r.items() if k != "records"}
        cells[b.name] = c
    row: dict[str, Any] = {
        **head,
        "adaptive_attack": attack,
        "adaptive_params": base if attack else None,
        "cells": cells,
        "paper": PAPER_CLAIMS.get(name),
    }
    if attack is not None:
        row["sanity"] = sanity_checks(label, attack, det, det_key, base, cell, o)
    row["extra"] = extra_cells(label, det, det_key, cell, o)
    return row


def sanity_checks(
    label: str,
    attack: str,
    det: Detector | Guard,
    det_key: str,
    base: dict[str, Any],
    cell: _CellRunner,
    o: SecurityOptions,
) -> dict[str, Any]:
    """Carlini et al. 2019's checks at the sanity budget on the first ``sanity_images`` images: more steps never
    bypass fewer images (image by image); an unbounded budget (from the clean image, in steps of 1 / steps)
    bypasses every image."""
    b = o.sanity()
    n = o.sanity_images
    short = cell.adaptive(attack, det, det_key, {**base, "eps": b.eps, "norm": b.norm}, n, f"{label}: sanity")
    out: dict[str, Any] = {"budget": b.name, "n": short["n"], "bypass": short["bypass"]}
    if o.steps_factor > 1:
        more = {**base, "eps": b.eps, "norm": b.norm, "steps": base["steps"] * o.steps_factor}
        long = cell.adaptive(attack, det, det_key, more, n, f"{label}: {o.steps_factor}x steps")
        lost = short["records"][:, 0].astype(bool) & ~long["records"][:, 0].astype(bool)
        out["more_steps"] = {"factor": o.steps_factor, "bypass": long["bypass"], "lost": int(lost.sum()),
                             "seconds": long["seconds"]}  # fmt: skip
    if o.unbounded:
        # from the clean image (a uniform start in the eps = 1 ball is a noise image, on which Segmentation
        # Fault's features stay far from clean ones: 8 % on cifar10-cnn), in steps of 1 / steps (eps = 1, so
        # rel_stepsize is the absolute step)
        step = o.unbounded_abs_step(base["steps"])  # a row's attack_params may set its own steps
        unb_params = {**base, "eps": 1.0, "norm": "linf", "rel_stepsize": step, "random_start": False}
        unb = cell.adaptive(attack, det, det_key, unb_params, n, f"{label}: unbounded")
        out["unbounded"] = {"bypass": unb["bypass"], "median_linf": unb["median_linf"], "seconds": unb["seconds"],
                            "step": step}  # fmt: skip
    return out


def extra_cells(
    label: str, det: Detector | Guard, det_key: str, cell: _CellRunner, o: SecurityOptions
) -> dict[str, dict[str, Any]]:
    """The ``[[security.extra]]`` attacks that apply to this row, per budget."""
    out: dict[str, dict[str, Any]] = {}
    for e in o.extra:
        if e.localized or not _applies(e, label, det):
            continue  # localized attacks (a region, not an L-p budget) go to the patch rows
        per: dict[str, Any] = {}
        if e.budget_free:
            r = cell.adaptive(
                e.attack, det, det_key, dict(e.params), e.n_images or o.sanity_images, f"{label}: {e.label}"
            )
            per["-"] = {k: v for k, v in r.items() if k != "records"}
        else:
            for name in e.budgets or [o.sanity().name]:
                b = next(x for x in o.budgets if x.name == name)
                params = {**e.params, "eps": b.eps, "norm": b.norm}
                r = cell.adaptive(e.attack, det, det_key, params, e.n_images or o.sanity_images, f"{label}: {e.label}")
                per[b.name] = {k: v for k, v in r.items() if k != "records"}
        out[e.label] = {"attack": e.attack, "params": e.params, "budgets": per}
    return out


def _applies(e: Extra, label: str, det: Detector | Guard) -> bool:
    from ...attacks import ATTACKS

    names = getattr(ATTACKS[e.attack], "detector_names", ())
    if isinstance(det, Guard):
        return e.guard and (not e.detectors or GUARD in e.detectors)
    if e.detectors and label not in e.detectors:
        return False
    return not names or det.name in names


def _cached_scorer(
    det: Detector | Guard, folder: Path, det_key: str, clf: Classifier
) -> Callable[[np.ndarray, str], np.ndarray]:
    """``score(x, what)``: the detector's scores of ``x``, cached by the images' bytes."""

    def score(x: np.ndarray, what: str) -> np.ndarray:
        import hashlib

        h = hashlib.sha256(np.ascontiguousarray(x).tobytes()).hexdigest()[:20]
        s, _ = cached_chunks(
            folder / f"{det_key}-{h}.npz", "scores", clf, x, lambda xb: det.score(torch.from_numpy(xb)),
            np.zeros(0), desc=f"scores {what}", progress=False,
        )  # fmt: skip
        return s

    return score
