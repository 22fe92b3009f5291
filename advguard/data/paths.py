"""Where datasets live: ``--data-dir`` > ``$ADVGUARD_DATA`` > the user cache dir; where the offline mirror is."""
from __future__ import annotations

import os
from pathlib import Path

import platformdirs

_override: Path | None = None


def set_data_dir(path: str | os.PathLike | None) -> None:
    """Override the data directory for this process (what the CLI's ``--data-dir`` does)."""
    global _override
    _override = Path(path).expanduser().resolve() if path is not None else None


def data_dir(path: str | os.PathLike | None = None) -> Path:
    """Resolve the data directory: explicit argument, then override, then ``$ADVGUARD_DATA``, then cache dir."""
    if path is not None:
        return Path(path).expanduser().resolve()
    if _override is not None:
        return _override
    env = os.environ.get("ADVGUARD_DATA")
    if env:
        return Path(env).expanduser().resolve()
    return Path(platformdirs.user_cache_dir("advguard")) / "data"


def mirror_dir() -> Path | None:
    """The offline dataset mirror: ``$ADVGUARD_MIRROR``, else ``../shared/data`` beside the source checkout."""
    env = os.environ.get("ADVGUARD_MIRROR")
    candidates = [Path(env)] if env else []
    repo_root = Path(__file__).resolve().parents[2]
    candidates += [repo_root.parent / "shared" / "data", Path.cwd().parent / "shared" / "data"]
    for c in candidates:
        if c.is_dir():
            return c.resolve()
    return None
