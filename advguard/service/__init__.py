"""``advguard serve``: the Guard behind an HTTP service (issue #25). FastAPI + uvicorn, from the ``serve`` extra
(``pip install 'advguard[serve]'``).

- :mod:`.app`: the routes, the bearer token, JSON errors, the warm-up (:func:`create_app`);
- :mod:`.batcher`: micro-batching of concurrent requests into Guard calls in one worker thread;
- :mod:`.limits`: what a request may hold and how its images are read;
- :mod:`.metrics`: the Prometheus counters; :mod:`.page`: the web page; :mod:`.server`: running it with uvicorn;
- :mod:`.settings`: the options (:class:`ServiceSettings`), importable without the extra.
"""

from __future__ import annotations

import importlib.util
from typing import Any

#: The modules of the serve extra (import name -> distribution name).
EXTRA = {
    "fastapi": "fastapi",
    "uvicorn": "uvicorn",
    "python_multipart": "python-multipart",
    "prometheus_client": "prometheus-client",
}


class MissingExtraError(ImportError):
    """The serve extra is not installed; the message names what to install."""


def require_extra() -> None:
    """Raise :class:`MissingExtraError` naming ``pip install 'advguard[serve]'`` when a module of the extra is
    missing."""
    missing = []
    for module, dist in EXTRA.items():
        try:
            found = importlib.util.find_spec(module) is not None
        except (ImportError, ValueError):  # a module set to None in sys.modules, or a broken one
            found = False
        if not found:
            missing.append(dist)
    if missing:
        raise MissingExtraError(
            f"advguard serve needs the serve extra: pip install 'advguard[serve]' (missing: {', '.join(missing)})"
        )


def __getattr__(name: str) -> Any:
    if name == "create_app":
        require_extra()
        from .app import create_app

        return create_app
    if name == "serve":
        require_extra()
        from .server import serve

        return serve
    if name == "ServiceSettings":
        from .settings import ServiceSettings

        return ServiceSettings
    raise AttributeError(f"module 'advguard.service' has no attribute {name!r}")


__all__ = ["EXTRA", "MissingExtraError", "ServiceSettings", "create_app", "require_extra", "serve"]
