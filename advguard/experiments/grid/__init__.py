"""The generic grid (``experiment = "grid"``, the default): every [[attack]] x every [[detector]] x its decision
models on your own model and data. See :mod:`advguard.experiments.grid.run`."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..registry import Experiment, Summary, register_experiment

if TYPE_CHECKING:  # pragma: no cover
    from ..config import ExperimentConfig


@register_experiment
class GridExperiment(Experiment):
    name = "grid"
    paper = "none: any detectors against any attacks on one model (AUC, TPR at fixed FPRs, cost)"
    needs_detectors = True
    artefacts = "results.json, results.csv, results.md, roc-*.png, report.html"

    def run(self, cfg: ExperimentConfig, out: Path, cache: Path, progress: bool) -> dict[str, Any]:
        from .run import run_grid

        return run_grid(cfg, out=out, cache_dir=cache, progress=progress)

    def summary(self, doc: dict[str, Any]) -> Summary:
        from .report import results_table

        return results_table(doc)
