"""Running a configuration: look its experiment up in the registry and execute it."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..executors import use_executor
from .config import ExperimentConfig
from .registry import get_experiment

if TYPE_CHECKING:  # pragma: no cover
    from ..executors import ChunkExecutor


def run(
    cfg: ExperimentConfig,
    out: str | Path | None = None,
    cache_dir: str | Path | None = None,
    progress: bool = True,
    publish: bool = False,
    executor: ChunkExecutor | None = None,
) -> dict[str, Any]:
    """Run ``cfg``'s experiment; write its results page into ``out`` (else runs/<name> under the working
    directory; the config's own ``out``, e.g. its committed page under docs/results/, only with ``publish``);
    return the results document. ``executor`` runs the chunked work (:mod:`advguard.executors`; default: in this
    process); the results do not depend on it."""
    exp = get_experiment(cfg.experiment)
    with use_executor(executor):
        return exp.execute(cfg, out=out, cache_dir=cache_dir, progress=progress, publish=publish)
