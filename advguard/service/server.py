"""Running the service with uvicorn (what ``advguard serve`` calls)."""

from __future__ import annotations

import copy
import ipaddress
import sys
from collections.abc import Sequence
from typing import Any

import uvicorn

from ..guard import Guard
from .app import create_app
from .settings import ServiceSettings


def is_loopback(host: str) -> bool:
    """Whether ``host`` only accepts connections from this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def serve(
    guard: Guard,
    settings: ServiceSettings,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    model: str | None = None,
    class_names: Sequence[str] | None = None,
    log_level: str = "info",
) -> None:
    """Serve ``guard`` on ``host``:``port`` until interrupted (loopback only unless told otherwise; a warning is
    printed when another interface is opened without a token)."""
    if not is_loopback(host) and settings.token is None:
        print(
            f"advguard serve: warning: listening on {host} without a token: anyone who can reach this port can use "
            "the model (give --token-file)",
            file=sys.stderr,
        )
    if settings.workers > 1 and guard.classifier.device.type == "cpu":
        # each worker's batch runs its own torch ops: split the intra-op threads among them (process-wide)
        import torch

        per = max(1, torch.get_num_threads() // settings.workers)
        torch.set_num_threads(per)
        print(f"advguard serve: {settings.workers} workers, {per} torch thread(s) each", file=sys.stderr)
    app = create_app(guard, settings, model=model, class_names=class_names)
    shown = f"[{host}]" if ":" in host else host
    print(f"advguard serve: http://{shown}:{port}/ (API description at /docs)", file=sys.stderr, flush=True)
    uvicorn.run(app, host=host, port=port, log_config=log_config(), log_level=log_level, timeout_graceful_shutdown=10)


def log_config() -> dict[str, Any]:
    """uvicorn's logging configuration, with the service's own logger (warm-up, unexpected errors) beside its."""
    from uvicorn.config import LOGGING_CONFIG

    cfg = copy.deepcopy(LOGGING_CONFIG)
    cfg["loggers"]["advguard.service"] = {"handlers": ["default"], "level": "INFO", "propagate": False}
    return cfg
