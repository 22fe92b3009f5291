"""TaintRadar (Li et al.) against adversarial patches, with SentiNet beside it: Table II, Figures 3a, 4 and 6,
Section VII-B's adaptive attacks and issue #22's model ablation (``experiment = "taintradar"``).

The protocol is described in :mod:`advguard.experiments.taintradar.run`; the paper's figures are in
:mod:`advguard.experiments.taintradar.paper`.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from ..registry import Experiment, register_experiment
from . import options


@register_experiment
class TaintRadarExperiment(Experiment):
    name = "taintradar"
    paper = ("Detecting Localized Adversarial Examples: A Generic Approach using Critical Region Analysis "
             "(Li et al.; TaintRadar)")
    sections = ("taintradar",)
    needs_attacks = False  # its [[attack]]s are optional L2 / L-inf extras

    def schema(self):
        return options.schema()

    def check(self, doc, ctx, problems):
        options.check(doc, ctx, problems)

    def options(self, cfg):
        return options.TaintRadarOptions.from_section(cfg.section("taintradar"))

    def run(self, cfg, out: Path, cache: Path, progress: bool) -> dict[str, Any]:
        from .run import run_taintradar

        return run_taintradar(cfg, out=out, cache_dir=cache, progress=progress)

    def summary(self, doc: dict[str, Any]):
        from .run import summary_table

        return summary_table(doc)
