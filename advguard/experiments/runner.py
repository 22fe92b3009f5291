"""Running a configuration: look its experiment up in the registry and execute it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .config import ExperimentConfig
from .registry import get_experiment


def run(
    cfg: ExperimentConfig,
    out: str | Path | None = None,
    cache_dir: str | Path | None = None,
    progress: bool = True,
    publish: bool = False,
) -> dict[str, Any]:
    """Run ``cfg``'s experiment; write its results page into ``out`` (else runs/<name> under the working
    directory; the config's own ``out``, e.g. its committed page under docs/results/, only with ``publish``);
    return the results document."""
    return get_experiment(cfg.experiment).execute(cfg, out=out, cache_dir=cache_dir, progress=progress, publish=publish)
