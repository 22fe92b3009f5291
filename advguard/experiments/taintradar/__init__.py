"""TaintRadar (Li et al.) against adversarial patches, with SentiNet beside it: Table II, Figures 3a, 4 and 6,
Section VII-B's adaptive attacks and issue #22's model ablation (``experiment = "taintradar"``).

The protocol is described in :mod:`advguard.experiments.taintradar.protocol` (entry points in ``run``, tables in
``tables``, pages in ``report``); the paper's figures are in :mod:`advguard.experiments.taintradar.paper`.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..registry import Experiment, Summary, register_experiment
from . import options
from .options import TaintRadarOptions

if TYPE_CHECKING:  # pragma: no cover
    from ..config import Context, ExperimentConfig
    from ..schema import Problems, Spec


@register_experiment
class TaintRadarExperiment(Experiment):
    name = "taintradar"
    paper = (
        "Detecting Localized Adversarial Examples: A Generic Approach using Critical Region Analysis "
        "(Li et al.; TaintRadar)"
    )
    sections = ("taintradar",)
    needs_attacks = False  # its [[attack]]s are optional L2 / L-inf extras

    def schema(self) -> dict[str, Spec]:
        return options.schema()

    def check(self, doc: dict[str, Any], ctx: Context, problems: Problems) -> None:
        options.check(doc, ctx, problems)

    def options(self, cfg: ExperimentConfig) -> TaintRadarOptions:
        return TaintRadarOptions.from_section(cfg.section("taintradar"))

    def run(self, cfg: ExperimentConfig, out: Path, cache: Path, progress: bool) -> dict[str, Any]:
        from .run import run_taintradar

        return run_taintradar(cfg, out=out, cache_dir=cache, progress=progress)

    def summary(self, doc: dict[str, Any]) -> Summary:
        from .report import summary_table

        return summary_table(doc)
