"""Erase-and-Restore / THEMIS (Zuo & Zeng): erase, inpaint and watch the label, Tables 1-6 and Figure 5
(``experiment = "themis"``).

The protocol is described in :mod:`advguard.experiments.themis.run` (its steps in ``protocol``, the tables in
``tables``, the page in ``report``); the paper's figures are in :mod:`advguard.experiments.themis.paper`.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..registry import Experiment, Summary, register_experiment
from . import options
from .options import ThemisOptions

if TYPE_CHECKING:  # pragma: no cover
    from ..config import Context, ExperimentConfig
    from ..schema import Problems, Spec


@register_experiment
class ThemisExperiment(Experiment):
    name = "themis"
    paper = "Exploiting the Sensitivity of L2 Adversarial Examples to Erase-and-Restore (Zuo & Zeng; THEMIS)"
    sections = ("themis",)

    def schema(self) -> dict[str, Spec]:
        return options.schema()

    def check(self, doc: dict[str, Any], ctx: Context, problems: Problems) -> None:
        options.check(doc, ctx, problems)

    def options(self, cfg: ExperimentConfig) -> ThemisOptions:
        return ThemisOptions.from_section(cfg.section("themis"))

    def run(self, cfg: ExperimentConfig, out: Path, cache: Path, progress: bool) -> dict[str, Any]:
        from .run import run_themis

        return run_themis(cfg, out=out, cache_dir=cache, progress=progress)

    def summary(self, doc: dict[str, Any]) -> Summary:
        from .report import summary_table

        return summary_table(doc)
