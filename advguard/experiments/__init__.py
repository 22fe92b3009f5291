"""The papers' experiments as plug-ins: ``advguard reproduce CONFIG`` (alias ``advguard reproduce``).

One sub-package per paper (``nguyen``, ``segfault``, ``blurnet``, ``themis``, ``taintradar``) and the generic
``grid``, each registered with :func:`register_experiment`; the configuration validator, :func:`run` and the CLI
read the registry only. See CONTRIBUTING.md, "Add a paper's experiment".
"""

from .config import AttackSpec, BenchConfig, ConfigError, DetectorSpec, ExperimentConfig, load_config, parse_config
from .registry import Experiment, experiments, get_experiment, register_experiment
from .runner import run

__all__ = [
    "AttackSpec",
    "BenchConfig",
    "ConfigError",
    "DetectorSpec",
    "Experiment",
    "ExperimentConfig",
    "experiments",
    "get_experiment",
    "load_config",
    "parse_config",
    "register_experiment",
    "run",
]
