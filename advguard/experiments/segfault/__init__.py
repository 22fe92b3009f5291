"""ML-LOO (Yang et al.) / Segmentation Fault (Al Bared & Nassar): occlusion units x feature flavours
x decision models, Tables 2, 6, 7 and Figure 3 (``experiment = "segfault"``).

The protocol is described in :mod:`advguard.experiments.segfault.run` (its steps in ``protocol``, the tables in
``tables``, the page in ``report``); the paper's figures are in :mod:`advguard.experiments.segfault.paper`.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..registry import Experiment, Summary, register_experiment
from . import options
from .options import SegfaultOptions

if TYPE_CHECKING:  # pragma: no cover
    from ..config import Context, ExperimentConfig
    from ..schema import Problems, Spec


@register_experiment
class SegfaultExperiment(Experiment):
    name = "segfault"
    paper = (
        "Segmentation Fault: A Cheap Defense Against Adversarial Machine Learning (Al Bared & Nassar), extending ML-LOO"
    )
    sections = ("segfault",)

    def schema(self) -> dict[str, Spec]:
        return options.schema()

    def check(self, doc: dict[str, Any], ctx: Context, problems: Problems) -> None:
        options.check(doc, ctx, problems)

    def options(self, cfg: ExperimentConfig) -> SegfaultOptions:
        return SegfaultOptions.from_section(cfg.section("segfault"))

    def run(self, cfg: ExperimentConfig, out: Path, cache: Path, progress: bool) -> dict[str, Any]:
        from .run import run_segfault

        return run_segfault(cfg, out=out, cache_dir=cache, progress=progress)

    def summary(self, doc: dict[str, Any]) -> Summary:
        from .report import summary_table

        return summary_table(doc)
