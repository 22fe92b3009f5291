"""``advguard bench``: run a grid of attacks x detectors x decision models from a TOML file."""
from .config import BenchConfig, ConfigError, load_config, parse_config
from .runner import run_bench

__all__ = ["BenchConfig", "ConfigError", "load_config", "parse_config", "run_bench"]
