"""The hybrid detector (THEMIS paper, Table 7; issue #25): :class:`advguard.Guard` combinations against every
attack family beside each single detector, at one clean false-positive rate (``experiment = "guard"``).

The protocol is described in :mod:`advguard.experiments.guard.run`; the page in ``report``.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..registry import Experiment, Summary, register_experiment
from . import options
from .options import GuardOptions

if TYPE_CHECKING:  # pragma: no cover
    from ..config import Context, ExperimentConfig
    from ..schema import Problems, Spec


@register_experiment
class GuardExperiment(Experiment):
    name = "guard"
    paper = "hybrid detector (Zuo & Zeng, THEMIS, Table 7): Guard combinations vs every single detector per family"
    sections = ("guard",)
    needs_detectors = True
    #: [detector fit, combination fit + calibration, test] shares of the clean images (by clean-image id)
    fractions = (0.3, 0.3, 0.4)

    def schema(self) -> dict[str, Spec]:
        return options.schema()

    def check(self, doc: dict[str, Any], ctx: Context, problems: Problems) -> None:
        options.check(doc, ctx, problems)

    def options(self, cfg: ExperimentConfig) -> GuardOptions:
        return GuardOptions.from_section(cfg.section("guard"))

    def run(self, cfg: ExperimentConfig, out: Path, cache: Path, progress: bool) -> dict[str, Any]:
        from .run import run_guard

        return run_guard(cfg, out=out, cache_dir=cache, progress=progress)

    def summary(self, doc: dict[str, Any]) -> Summary:
        from .report import summary_table

        return summary_table(doc)
