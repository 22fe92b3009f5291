"""BlurNet's tables, one function each (:mod:`.protocol` makes and evaluates the stickers); each returns the
JSON-able rows of the results document.

Table 2 (white box): each model's own stickers, per model accuracy on the clean signs and on the full test split,
average and worst (max over targets) success, eq. 1's L2 dissimilarity and the success under random views; the
row of RP2's two-stage L1 mask on the undefended model. Table 1 (black box): the undefended model's stickers
classified by each ``blackbox`` model.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from ...classifier import Classifier
from ...fingerprint import weights_hash
from ...models import get_spec, load_model
from ..common import cache_key
from ..config import ExperimentConfig
from .options import BlurNetOptions
from .protocol import Evaluation, Signs, Stickers, _settings_key, evaluate, paper_key, stickers, summarise

#: one row of a table in the results document (JSON data)
Row = dict[str, Any]


@dataclass
class WhiteBox:
    """Table 2's rows by model (and "l1"), with each model's stickers, classifier and evaluation."""

    rows: dict[str, Row] = field(default_factory=dict)
    stickers: dict[str, Stickers] = field(default_factory=dict)
    clfs: dict[str, Classifier] = field(default_factory=dict)
    evals: dict[str, Evaluation] = field(default_factory=dict)


def table2(
    cfg: ExperimentConfig, opts: BlurNetOptions, settings: dict[str, Any], signs: Signs, cache: Path, progress: bool
) -> WhiteBox:
    """Table 2: RP2 against the undefended model and every ``whitebox`` model, each with its own stickers."""
    wb = WhiteBox()
    idx, y_signs, ds = signs.idx, signs.ds.y[signs.idx], signs.ds
    for name in tqdm(
        list(dict.fromkeys([cfg.model] + list(opts.whitebox))), desc="white-box models", disable=not progress
    ):
        clf = wb.clfs[name] = load_model(name, device=cfg.device)
        key = cache_key(weights_hash(clf.model), cfg.dataset, idx.tolist(), _settings_key(settings), cfg.seed)
        folder = cache / "blurnet" / name / key
        st = wb.stickers[name] = stickers(
            clf, signs.x, signs.targets, int(opts.chunk), folder, settings["mask"], cfg.seed, progress, settings
        )
        ev = wb.evals[name] = evaluate(clf, signs.x, st, int(opts.eval_views), cfg.seed)
        with clf.exact():
            acc_signs = float(clf.accuracy(signs.x, y_signs))
            acc_test = float(clf.accuracy(ds.x, ds.y))
        wb.rows[name] = {
            "model": name,
            "paper_row": paper_key(name),
            "defense": get_spec(name).defense,
            "acc_signs": acc_signs,
            "acc_test": acc_test,
            "rp2_seconds": float(st["seconds"]),
            "train_seconds": get_spec(name).card().get("wall_time_s"),
            "mask_share": float(st["mask"].mean()),
            **summarise(ev, st["targets"]),
        }
    return wb


def l1_row(
    cfg: ExperimentConfig,
    opts: BlurNetOptions,
    settings: dict[str, Any],
    signs: Signs,
    wb: WhiteBox,
    cache: Path,
    progress: bool,
) -> None:
    """Table 2's row of RP2's two-stage (L1) mask on the undefended model, added to ``wb`` as "l1"."""
    clf = wb.clfs[cfg.model]
    sk = {k: v for k, v in _settings_key(settings).items() if k != "mask"}
    key = cache_key(weights_hash(clf.model), cfg.dataset, signs.idx.tolist(), sk, "l1", opts.l1_share, cfg.seed)
    folder = cache / "blurnet" / f"{cfg.model}-l1" / key
    st = wb.stickers["l1"] = stickers(
        clf, signs.x, signs.targets, int(opts.chunk), folder, "l1", cfg.seed, progress, settings
    )
    base = wb.rows[cfg.model]
    wb.rows["l1"] = {
        "model": cfg.model,
        "paper_row": None,
        "mask": "l1",
        "acc_signs": base["acc_signs"],
        "acc_test": base["acc_test"],
        "rp2_seconds": float(st["seconds"]),
        "mask_share": float(st["mask"].mean()),
        **summarise(evaluate(clf, signs.x, st, int(opts.eval_views), cfg.seed), st["targets"]),
    }


def table1(cfg: ExperimentConfig, opts: BlurNetOptions, signs: Signs, wb: WhiteBox) -> list[Row]:
    """Table 1: the undefended model's stickers classified by each ``blackbox`` model (the undefended model's
    own row is its white-box evaluation); success for the attacker's best target and over all targets."""
    src = wb.stickers[cfg.model]
    b = int(np.flatnonzero(src["targets"] == wb.rows[cfg.model]["best_target"])[0])
    rows = []
    for name in [cfg.model] + list(opts.blackbox):
        if name == cfg.model:
            ev, acc = wb.evals[name], wb.rows[name]["acc_signs"]
        else:
            clf = load_model(name, device=cfg.device)
            ev = evaluate(clf, signs.x, src, int(opts.eval_views), cfg.seed)
            with clf.exact():
                acc = float(clf.accuracy(signs.x, signs.ds.y[signs.idx]))
        rows.append(
            {
                "model": name,
                "paper_row": paper_key(name),
                "acc_signs": acc,
                "success_best_target": float(ev["success"][b]),
                "avg_success": float(ev["success"].mean()),
                "worst_success": float(ev["success"].max()),
                "avg_success_views": float(ev["success_views"].mean()),
            }
        )
    return rows
