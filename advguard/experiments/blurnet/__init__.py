"""BlurNet (Raju & Lipasti) against RP2 stickers: Tables 1 and 2, Figures 1, 2 and 4 (``experiment = "blurnet"``).

The protocol is described in :mod:`advguard.experiments.blurnet.run` (its steps in ``protocol``, the tables in
``tables``, the page in ``report``); the paper's figures are in :mod:`advguard.experiments.blurnet.paper`.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..registry import Experiment, Summary, register_experiment
from . import options
from .options import BlurNetOptions

if TYPE_CHECKING:  # pragma: no cover
    from ..config import Context, ExperimentConfig
    from ..schema import Problems, Spec


@register_experiment
class BlurNetExperiment(Experiment):
    name = "blurnet"
    paper = "BlurNet: Defense by Filtering the Feature Maps (Raju & Lipasti), against RP2 stickers"
    sections = ("blurnet",)
    needs_attacks = False

    def schema(self) -> dict[str, Spec]:
        return options.schema()

    def check(self, doc: dict[str, Any], ctx: Context, problems: Problems) -> None:
        options.check(doc, ctx, problems)

    def options(self, cfg: ExperimentConfig) -> BlurNetOptions:
        return BlurNetOptions.from_section(cfg.section("blurnet"))

    def run(self, cfg: ExperimentConfig, out: Path, cache: Path, progress: bool) -> dict[str, Any]:
        from .run import run_blurnet

        return run_blurnet(cfg, out=out, cache_dir=cache, progress=progress)

    def summary(self, doc: dict[str, Any]) -> Summary:
        from .report import summary_table

        return summary_table(doc)
