"""A guard built from a TOML file: ``advguard guard fit GUARD.toml -o guard.zip`` (issue #25).

The file names the model, the detectors, the clean images that fit and calibrate them, the target FPR and, when
a detector is supervised or the combination is ``stacked``, the attack that makes the adversarial images they
learn from. Every key is checked before any work (unknown keys, types, ranges, detector parameters: all problems
in one error)::

    model = "cifar10-cnn"
    fpr = 0.05
    combine = "any"                 # or "stacked"

    [data]                          # a dataset split, or `images = "folder/"` (image files, any layout)
    dataset = "cifar10"
    split = "train"
    n_images = 500

    [adversarial]                   # needed by supervised detectors and by combine = "stacked"
    attack = "pgd"
    params = { eps = 0.0314, steps = 10 }

    [[detector]]
    name = "feature-squeezing"

    [[detector]]
    name = "confidence"

The clean images are used as they come (no filtering on the classifier's answer: that is what a deployed guard
sees); the attack's labels are the classifier's own predictions, and only successful adversarial images are kept.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

from .errors import AdvguardError

#: the largest guard config read (bytes): a config is a few lines
MAX_CONFIG_BYTES = 1 << 20


class GuardConfigError(AdvguardError, ValueError):
    """A guard config that cannot be used: every problem, one per line, each naming its key."""


@dataclass
class GuardConfig:
    model: str
    detectors: list[tuple[str, dict[str, Any]]]
    data: dict[str, Any]
    fpr: float = 0.05
    combine: str = "any"
    seed: int = 0
    calibration: float = 0.3
    meta_model: str = "logreg"
    folds: int = 5
    threshold_rule: str = "empirical"
    correct: bool = False
    device: str | None = None
    adversarial: dict[str, Any] | None = None
    source: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


def _schema() -> Any:
    from .attacks import ATTACKS, config_attacks
    from .data import DATASETS
    from .detectors import DECISION_MODELS, DETECTORS
    from .experiments.schema import POS_INT, SHARE, Bool, Int, List, Num, Str, Table
    from .guard import COMBINES
    from .metrics import THRESHOLD_RULES
    from .models import ZOO

    return Table(
        {
            "model": Str(ZOO, "model"),
            "fpr": Num(0, 1, open_hi=True),
            "combine": Str(COMBINES, "combination rule"),
            "seed": Int(0, 2**32 - 1),
            "calibration": SHARE,
            "meta_model": Str(DECISION_MODELS, "decision model"),
            "folds": Int(2, 100),
            "threshold_rule": Str(THRESHOLD_RULES, "threshold rule"),
            "correct": Bool(),
            "device": Str(nonempty=True),
            "data": Table(
                {
                    "dataset": Str(DATASETS, "dataset"),
                    "split": Str(nonempty=True),
                    "n_images": POS_INT,
                    "dataset_kwargs": Table(None),
                    "images": Str(nonempty=True),
                    "resize": Str(("resize", "center-crop"), "resize policy"),
                }
            ),
            "adversarial": Table(
                {"attack": Str([n for n in ATTACKS if n in config_attacks()], "attack"), "params": Table(None)},
                required=("attack",),
            ),
            "detector": List(
                Table({"name": Str(DETECTORS, "detector"), "params": Table(None)}, required=("name",)),
                min_len=1,
                hint=" of tables: write [[detector]] (double brackets) for each detector",
            ),
        },
        required=("model", "data", "detector"),
    )


def parse_guard_config(doc: dict[str, Any], where: str = "guard config", source: str = "") -> GuardConfig:
    """Check ``doc`` (a parsed TOML document) and return it typed; :class:`GuardConfigError` lists every problem."""
    from .detectors import DETECTORS
    from .detectors.base import parameter_names
    from .experiments.schema import Problems, did_you_mean

    P = Problems()
    _schema().check(doc, "", P)
    data: dict[str, Any] = doc["data"] if isinstance(doc.get("data"), dict) else {}
    if isinstance(doc.get("data"), dict) and ("dataset" in data) == ("images" in data):
        P.add("data", "give either dataset (with split, n_images) or images (a folder of image files)")
    if "images" in data:
        for k in ("split", "dataset_kwargs"):
            if k in data:
                P.add(f"data.{k}", "goes with data.dataset, not data.images")
    elif "resize" in data:
        P.add("data.resize", "goes with data.images (a dataset is read at the model's input size)")
    for i, d in enumerate(doc.get("detector", []) if isinstance(doc.get("detector"), list) else []):
        if not isinstance(d, dict) or d.get("name") not in DETECTORS or not isinstance(d.get("params", {}), dict):
            continue
        allowed = parameter_names(DETECTORS[d["name"]])
        for k in sorted(d.get("params", {})):
            if k in ("fpr", "seed", "progress"):
                P.add(f"detector[{i + 1}].params.{k}", f"{k} is set for the whole guard (top level), not per detector")
            elif allowed is not None and k not in allowed and k not in DETECTORS[d["name"]]._renamed_params:
                P.add(
                    f"detector[{i + 1}].params.{k}",
                    f"{d['name']} has no parameter {k!r}{did_you_mean(k, allowed)}; its parameters: "
                    + ", ".join(sorted(allowed)),
                )
    if P.items:
        raise GuardConfigError(f"{where}: {len(P.items)} problem(s):\n  " + "\n  ".join(P.items))
    return GuardConfig(
        model=doc["model"],
        detectors=[(d["name"], dict(d.get("params", {}))) for d in doc["detector"]],
        data=dict(data),
        fpr=float(doc.get("fpr", 0.05)),
        combine=doc.get("combine", "any"),
        seed=int(doc.get("seed", 0)),
        calibration=float(doc.get("calibration", 0.3)),
        meta_model=doc.get("meta_model", "logreg"),
        folds=int(doc.get("folds", 5)),
        threshold_rule=doc.get("threshold_rule", "empirical"),
        correct=bool(doc.get("correct", False)),
        device=doc.get("device"),
        adversarial=dict(doc["adversarial"]) if "adversarial" in doc else None,
        source=source,
    )


def load_guard_config(path: str | Path) -> GuardConfig:
    """Read and check a guard config file (UTF-8 TOML, at most :data:`MAX_CONFIG_BYTES`)."""
    p = Path(path)
    if not p.is_file():
        raise GuardConfigError(f"guard config not found: {p}")
    if p.stat().st_size > MAX_CONFIG_BYTES:
        raise GuardConfigError(f"{p}: {p.stat().st_size} bytes is too large for a guard config")
    try:
        text = p.read_bytes().decode("utf-8")
        doc = tomllib.loads(text)
    except UnicodeDecodeError as e:
        raise GuardConfigError(f"{p}: not a text (UTF-8) TOML file: {e}") from e
    except tomllib.TOMLDecodeError as e:
        raise GuardConfigError(f"{p}: invalid TOML: {e}") from e
    return parse_guard_config(doc, where=str(p), source=text)


def clean_images(cfg: GuardConfig, clf: Any) -> np.ndarray:
    """The config's clean images as float32 NCHW in [0, 1] at the classifier's input size."""
    d = cfg.data
    if "images" in d:
        from .images import load_images

        x = load_images(d["images"], clf.size, d.get("resize"), channels=clf.channels)
        return x[: d["n_images"]] if "n_images" in d else x
    from .data import load_dataset

    ds = load_dataset(
        d["dataset"], d.get("split", "test"), limit=d.get("n_images"), seed=cfg.seed, **d.get("dataset_kwargs", {})
    )
    return np.asarray(ds.x, dtype=np.float32)


def build_guard(cfg: GuardConfig, progress: bool = True) -> Any:
    """Load the model, build the detectors, make the adversarial images if needed, fit the guard."""
    import torch

    from .attacks import AdversarialPatch, make_attack
    from .detectors import make_detector
    from .guard import Guard
    from .models import load_model

    clf = load_model(cfg.model, device=cfg.device)
    dets = [make_detector(n, clf, fpr=cfg.fpr, seed=cfg.seed, **p) for n, p in cfg.detectors]
    need_adv = cfg.combine == "stacked" or any(d.supervised for d in dets)
    if need_adv and cfg.adversarial is None:
        who = "combine = 'stacked'" if cfg.combine == "stacked" else "a supervised detector"
        raise GuardConfigError(f"{who} learns from adversarial images: add an [adversarial] table (attack, params)")
    x = clean_images(cfg, clf)
    x_adv = None
    if need_adv and cfg.adversarial is not None:
        attack = make_attack(
            cfg.adversarial["attack"], clf, seed=cfg.seed, progress=progress, **cfg.adversarial.get("params", {})
        )
        labels = clf.predict(x)
        if isinstance(attack, AdversarialPatch):  # a patch (needs_fit): trained on these images first
            attack.fit(x, labels)
        r = attack(x, labels)
        x_adv = r.x_adv[r.success].numpy() if isinstance(r.x_adv, torch.Tensor) else r.x_adv[r.success]
        if len(x_adv) < 2:
            raise GuardConfigError(
                f"[adversarial] {cfg.adversarial['attack']} succeeded on {len(x_adv)} of {len(x)} images: too few"
            )
    correct = None
    if cfg.correct:
        from .defenses import LabelCorrection

        correct = LabelCorrection(clf)
    guard = Guard(
        clf,
        dets,
        combine=cfg.combine,
        fpr=cfg.fpr,
        correct=correct,
        calibration=cfg.calibration,
        meta_model=cfg.meta_model,
        folds=cfg.folds,
        seed=cfg.seed,
        threshold_rule=cfg.threshold_rule,
    )
    return guard.fit(x, x_adv)
