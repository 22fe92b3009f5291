"""TaintRadar's protocol as an ``advguard reproduce`` experiment (``experiment = "taintradar"``): the entry points.

Paper: ``taintradar`` Sections VI-B, VI-C, VII-A (docs/methods/taintradar.md). The protocol (steps 1-7) is
described in :mod:`.protocol`; the tables are built by :mod:`.tables` and the pages written by :mod:`.report`.
:func:`run_taintradar` runs one model (or, with ``models = [...]``, issue #22's ablation: :func:`run_ablation`).
"""

from __future__ import annotations

import dataclasses
import re
import time
from pathlib import Path
from typing import Any

from ...models import get_spec
from ..common import bench_paths, results_header, write_results
from ..config import ExperimentConfig
from . import tables
from .options import TaintRadarOptions, model_entry
from .protocol import dataset_source, prepare
from .report import auc_cell, summary_table, write_ablation_page, write_page
from .tables import ablation_summary

__all__ = [
    "ablation_summary",
    "auc_cell",
    "dataset_source",
    "get_spec",
    "model_entry",
    "run_ablation",
    "run_taintradar",
    "summary_table",
]


def typed_options(cfg: ExperimentConfig) -> TaintRadarOptions:
    """The run's typed ``[taintradar]`` options (``cfg.options``, else built from the section)."""
    o = cfg.options
    return o if isinstance(o, TaintRadarOptions) else TaintRadarOptions.from_section(cfg.section("taintradar"))


def run_taintradar(
    cfg: ExperimentConfig, out: str | Path | None = None, cache_dir: str | Path | None = None, progress: bool = True
) -> dict[str, Any]:
    """One model's run (steps 1-6): results.json and the page in ``out``; with ``models``, the ablation."""
    out, cache = bench_paths(cfg, out, cache_dir)
    o = typed_options(cfg)
    if o.models:
        return run_ablation(cfg, out, cache_dir, progress)
    b = prepare(cfg, o, cache, progress)
    grid = tables.table2(b, progress)
    b.fit_first_point()  # the robustness runs use the first operating point (the paper: FPR 6 %)
    misleading = tables.misleading(b, progress)
    bpda = tables.bpda(b, progress)
    attacks = tables.attacks(b, cache, progress)
    doc = {
        **results_header(cfg),
        "model": cfg.model,
        "dataset": cfg.dataset,
        "options": dataclasses.asdict(o),
        "layer": b.tr.params["layer"],
        "layer_shape": b.tr.layer_shape(),
        "dataset_source": dataset_source(cfg, b.ds_kwargs),
        "counts": b.sets.counts(),
        "n_correct": b.sets.n_correct,
        "operating_points": {str(k): v for k, v in b.ops.items()},
        "fpr_table": b.fpr_table.tolist(),
        "k_max": b.k_max,
        "cells": grid.cells,
        "diagnostics": grid.diagnostics,
        "attacks": attacks,
        "misleading": misleading,
        "bpda": bpda,
    }
    out.mkdir(parents=True, exist_ok=True)
    write_results(doc, out)
    write_page(cfg, doc, out, b, grid)
    return doc


def _slug(label: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", label).strip("-") or "model"


def run_ablation(
    cfg: ExperimentConfig, out: str | Path | None = None, cache_dir: str | Path | None = None, progress: bool = True
) -> dict[str, Any]:
    """Issue #22's ablation: the per-model protocol for every entry of ``[taintradar] models`` (each into
    ``out/<label>/``), then one comparison page in ``out``."""
    out, _cache = bench_paths(cfg, out, cache_dir)
    o = typed_options(cfg)
    runs: list[dict[str, Any]] = []
    for e in o.model_entries():
        spec = get_spec(e["model"])
        if not spec.available:
            how = f"advguard train {e['model']} --install"
            runs.append({**e, "status": "not yet trained", "description": spec.description, "how": how})
            continue
        sub_out = out / _slug(e["label"])
        section = {**cfg.section("taintradar"), "models": None, "layer": e["layer"]}
        sub = dataclasses.replace(
            cfg,
            model=e["model"],
            title=f"{cfg.title}: {e['label']}",
            out=str(sub_out),
            sections={**cfg.sections, "taintradar": section},
            options=TaintRadarOptions.from_section(section),
        )
        t0 = time.perf_counter()
        d = run_taintradar(sub, sub_out, cache_dir, progress)
        page = f"{sub_out.name}/results.md"
        seconds = time.perf_counter() - t0
        runs.append(
            {
                **e,
                "status": "run",
                "description": spec.description,
                "page": page,
                "seconds": seconds,
                **ablation_summary(d),
            }
        )
    doc = {**results_header(cfg), "dataset": cfg.dataset, "options": dataclasses.asdict(o), "runs": runs}
    out.mkdir(parents=True, exist_ok=True)
    write_results(doc, out)
    write_ablation_page(cfg, doc, out)
    return doc
