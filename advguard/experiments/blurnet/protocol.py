"""BlurNet's shared, cached steps: the stop signs, RP2's resolved settings and cache key, the RP2 stickers of
every target (cached per chunk of targets), their evaluation on a model and its summary."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from numpy.typing import NDArray

from ...attacks.rp2 import AUTHORS, LEGACY, OURS, RP2, Sticker, l2_dissimilarity, random_warps
from ...classifier import Classifier
from ...data import load_dataset
from ...data.dataset import ImageDataset
from ...executors import cached_map
from ...models import get_spec
from ..common import cache_key
from ..config import ConfigError, ExperimentConfig
from .options import BLURNET_DEFAULTS, BlurNetOptions

#: RP2 settings a [blurnet] table may set (a preset's values unless set there)
RP2_KEYS = ("mask", "lam", "steps", "lr", "norm_p", "init", "transforms", "nps", "clip")

Array = NDArray[Any]
#: a model's stickers: delta (T, C, H, W), mask (T, 1, H, W), targets (T,), seconds (the RP2 time, 0-d)
Stickers = dict[str, Array]
#: per target: success, target_rate, l2, success_views
Evaluation = dict[str, NDArray[np.float64]]


def options_record(section: dict[str, Any]) -> dict[str, Any]:
    """The [blurnet] table ``section`` merged with the defaults, as the results document records it."""
    return {**BLURNET_DEFAULTS, **section}


def rp2_settings(section: dict[str, Any], o: dict[str, Any]) -> dict[str, Any]:
    """RP2's resolved settings for a [blurnet] table ``section`` (``o``: it merged with the defaults):
    with ``preset``, the preset's values overridden by those ``section`` sets; without, ``o``'s defaults and
    RP2's own (:data:`advguard.attacks.rp2.OURS`)."""
    preset = section.get("preset")
    if preset == "authors":
        given = {k: section[k] for k in RP2_KEYS if k in section}
        base = AUTHORS
    else:
        given = {k: o[k] for k in RP2_KEYS if k in o}
        base = OURS
    return {**base, **given, "preset": preset, "n_transforms": int(o["n_transforms"])}


def _rp2_kwargs(r: dict[str, Any]) -> dict[str, Any]:
    return {k: r[k] for k in RP2_KEYS + ("preset", "n_transforms")}


def _settings_key(r: dict[str, Any]) -> dict[str, Any]:
    """The cache key's part for RP2's settings: exactly the pre-#22 key for the legacy settings (the committed
    GTSRB stickers: our two-bar mask, then called "rectangles"), plus every setting that differs from them."""
    key = {
        "lam": r["lam"],
        "steps": r["steps"],
        "lr": r["lr"],
        "n_transforms": r["n_transforms"],
        "mask": "rectangles" if r["mask"] == "bars" else r["mask"],
    }
    key.update({k: r[k] for k in ("norm_p", "init", "transforms", "nps", "clip") if r[k] != LEGACY[k]})
    return key


def paper_key(model: str) -> str:
    """The paper's row name of a zoo model: "baseline" for an undefended one, else the variant suffix."""
    spec = get_spec(model)
    return model[len(spec.base) + 1 :] if spec.base else "baseline"


def check_trained(cfg: ExperimentConfig, opts: BlurNetOptions) -> None:
    """Before any work: every black- and white-box model has weights (else how to train them)."""
    untrained = [m for m in dict.fromkeys(list(opts.blackbox) + list(opts.whitebox)) if not get_spec(m).available]
    if untrained:
        raise ConfigError(
            f"{cfg.name} [blurnet]: no weights yet for {', '.join(untrained)}; make them with "
            + "; ".join(f"`advguard train {m} --install`" for m in untrained)
        )


@dataclass
class Signs:
    """The test split, the stop signs drawn from it and the attack's target classes."""

    ds: ImageDataset
    #: the signs' indices in the split (sorted) and the images
    idx: NDArray[np.int64]
    x: torch.Tensor
    #: class names (None when the dataset has none) and the targets (every class but the stop sign, or the
    #: configured ones)
    classes: list[str] | None
    targets: list[int]


def draw_signs(cfg: ExperimentConfig, opts: BlurNetOptions) -> Signs:
    ds = load_dataset(cfg.dataset, cfg.split)
    idx = np.flatnonzero(ds.y == int(opts.stop_class))
    if len(idx) < int(opts.n_signs):
        raise ValueError(f"{cfg.name}: only {len(idx)} images of class {opts.stop_class}; lower n_signs")
    idx = np.sort(np.random.default_rng(cfg.seed).choice(idx, int(opts.n_signs), replace=False))
    names = getattr(ds, "classes", None)
    n_classes = len(names) if names is not None else int(ds.y.max()) + 1  # LISA-CNN: 18 outputs, output 0 unnamed
    targets = (
        [t for t in range(n_classes) if t != int(opts.stop_class)]
        if opts.targets == "all"
        else [int(t) for t in opts.targets]
    )
    return Signs(ds=ds, idx=idx, x=torch.from_numpy(ds.x[idx]), classes=names, targets=targets)


def stickers(
    clf: Classifier,
    signs: torch.Tensor,
    targets: list[int],
    chunk: int,
    folder: Path,
    mask: str,
    seed: int,
    progress: bool,
    settings: dict[str, Any],
) -> Stickers:
    """RP2 stickers of every target for ``clf``, fitted in cached chunks of ``chunk`` targets."""
    chunks = [targets[i : i + chunk] for i in range(0, len(targets), chunk)]

    def fit(ch: list[int]) -> dict[str, Array]:
        attack = RP2(clf, **{**_rp2_kwargs(settings), "mask": mask}, seed=seed, progress=False)
        t0 = time.perf_counter()
        sts = attack.fit_many(signs, ch)
        return {
            "delta": torch.stack([s.delta for s in sts]).numpy(),
            "mask": torch.stack([s.mask for s in sts]).numpy(),
            "targets": np.asarray(ch),
            "seconds": np.asarray(time.perf_counter() - t0),
        }

    # each chunk of targets an independent task (in this process, or a Ray task under --executor ray)
    parts = cached_map(
        fit,
        [folder / f"chunk-{j:03d}-{cache_key(ch)}.npz" for j, ch in enumerate(chunks)],
        lambda j: chunks[j],
        classifier=clf,
        desc=f"RP2 on {clf.name}",
        progress=progress,
    )
    return {
        "delta": np.concatenate([p["delta"] for p in parts]),
        "mask": np.concatenate([p["mask"] for p in parts]),
        "targets": np.concatenate([p["targets"] for p in parts]),
        "seconds": np.asarray(sum(float(p["seconds"]) for p in parts)),
    }


@torch.inference_mode()
def evaluate(clf: Classifier, signs: torch.Tensor, st: Stickers, views: int, seed: int) -> Evaluation:
    """Per target: label-changed rate (paper), target rate, L2 dissimilarity, label-changed rate over random views."""
    with clf.exact():
        clean = clf.predict(signs)
    h, w = signs.shape[-2:]
    out: dict[str, list[float]] = {k: [] for k in ("success", "target_rate", "l2", "success_views")}
    g = torch.Generator().manual_seed(seed)
    for delta, mask, t in zip(st["delta"], st["mask"], st["targets"], strict=True):
        x_adv = Sticker(torch.from_numpy(delta), torch.from_numpy(mask), int(t)).apply(signs)
        with clf.exact():
            pred = clf.predict(x_adv)
            rep = x_adv.repeat(views, 1, 1, 1)
            grid = random_warps(len(rep), h, w, g)
            bright = 1 + (torch.rand(len(rep), 1, 1, 1, generator=g) * 2 - 1) * 0.3
            seen = (F.grid_sample(rep, grid, padding_mode="border", align_corners=False) * bright).clamp(0, 1)
            base = (
                F.grid_sample(signs.repeat(views, 1, 1, 1), grid, padding_mode="border", align_corners=False) * bright
            ).clamp(0, 1)
            pv, pb = clf.predict(seen), clf.predict(base)
        out["success"].append(float((pred != clean).float().mean()))
        out["target_rate"].append(float((pred == int(t)).float().mean()))
        out["l2"].append(float(l2_dissimilarity(signs, x_adv).mean()))
        out["success_views"].append(float((pv != pb).float().mean()))
    return {k: np.asarray(v) for k, v in out.items()}


def summarise(ev: Evaluation, targets: Array) -> dict[str, Any]:
    """Average and worst success, target rate, L2, success over views, the attacker's best target (max success,
    then min L2) and the per-target values."""
    best = int(np.lexsort((ev["l2"], -ev["success"]))[0])
    return {
        "avg_success": float(ev["success"].mean()),
        "worst_success": float(ev["success"].max()),
        "avg_target_rate": float(ev["target_rate"].mean()),
        "l2": float(ev["l2"].mean()),
        "avg_success_views": float(ev["success_views"].mean()),
        "best_target": int(targets[best]),
        "per_target": {k: [float(v) for v in ev[k]] for k in ev},
    }
