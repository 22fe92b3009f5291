"""Nguyen et al.'s image-processing detector, label correction and softmax-free CNN detector: Tables 1 and 3-6
(``experiment = "nguyen"``; ``"imageops"`` is its earlier name).

The protocol is described in :mod:`advguard.experiments.nguyen.run` (its steps in ``protocol``, the tables in
``tables``, the page in ``report``); the paper's figures are in :mod:`advguard.experiments.nguyen.paper`.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..registry import Experiment, Summary, register_experiment
from . import options
from .options import NguyenOptions

if TYPE_CHECKING:  # pragma: no cover
    from ..config import ExperimentConfig
    from ..schema import Spec


@register_experiment
class NguyenExperiment(Experiment):
    name = "nguyen"
    paper = (
        "Detecting and Correcting Adversarial Images Using Image Processing Operations and Convolutional "
        "Neural Networks (Nguyen et al.)"
    )
    aliases = ("imageops",)
    sections = ("imageops", "cnn")
    fractions = (0.7, 0.15, 0.15)

    def schema(self) -> dict[str, Spec]:
        return options.schema()

    def options(self, cfg: ExperimentConfig) -> NguyenOptions:
        return NguyenOptions.from_sections(cfg.section("imageops"), cfg.section("cnn") or [])

    def run(self, cfg: ExperimentConfig, out: Path, cache: Path, progress: bool) -> dict[str, Any]:
        from .run import run_imageops

        return run_imageops(cfg, out=out, cache_dir=cache, progress=progress)

    def summary(self, doc: dict[str, Any]) -> Summary:
        from .report import summary_table

        return summary_table(doc)
