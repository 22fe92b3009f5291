"""The security table (issue #26): every detector and a :class:`advguard.Guard` of them against a plain and an
adaptive attack at several L-inf and L2 budgets, with Carlini et al. 2019's sanity checks
(``experiment = "security"``).

The protocol is described in :mod:`advguard.experiments.security.run`; the page in ``report``.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..registry import Experiment, Summary, register_experiment
from . import options
from .options import SecurityOptions

if TYPE_CHECKING:  # pragma: no cover
    from ..config import Context, ExperimentConfig
    from ..schema import Problems, Spec


@register_experiment
class SecurityExperiment(Experiment):
    name = "security"
    paper = "adaptive attacks (Carlini et al. 2019): bypass rate per detector and budget, plain vs adaptive"
    sections = ("security",)
    needs_detectors = True
    #: [detector fit, calibration, attack] shares of the clean images (by clean-image id)
    fractions = (0.4, 0.2, 0.4)

    def schema(self) -> dict[str, Spec]:
        return options.schema()

    def check(self, doc: dict[str, Any], ctx: Context, problems: Problems) -> None:
        options.check(doc, ctx, problems)

    def options(self, cfg: ExperimentConfig) -> SecurityOptions:
        return SecurityOptions.from_section(cfg.section("security"))

    def run(self, cfg: ExperimentConfig, out: Path, cache: Path, progress: bool) -> dict[str, Any]:
        from .run import run_security

        return run_security(cfg, out=out, cache_dir=cache, progress=progress)

    def summary(self, doc: dict[str, Any]) -> Summary:
        from .report import summary_table

        return summary_table(doc)
