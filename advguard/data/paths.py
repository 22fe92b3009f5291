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


def unpacked(folder_name: str, root: str | os.PathLike | None = None, full: bool = False) -> Path:
    """The folder ``folder_name`` unpacked from the offline mirror into the data directory, verified.

    E.g. ``unpacked("cifar10-resnets")`` or ``unpacked("rp2-lisa")`` (the folder names of
    :data:`advguard.data.fetch.MIRROR_ARCHIVES`; a file copied as-is, e.g. ``"cifar10-test.npz"``, works too
    and is checked against its copy marker: size, or size and SHA-256 with ``full=True``). Checks the folder against
    its completion marker and manifest (``full=False``: the number of files, cheap; ``full=True``: every file with
    its size). Raises :class:`~advguard.errors.DatasetNotFoundError` naming ``advguard setup`` when the folder is
    absent, was never completed or differs from what was unpacked. ``root``: the data directory (default
    :func:`data_dir`).
    """
    from .fetch import verify_copy, verify_folder  # fetch imports this module

    path = data_dir(root) / folder_name
    if path.is_file():  # a file copied as-is (e.g. "cifar10-test.npz"): checked against its marker
        verify_copy(path, full=full)
    else:
        verify_folder(path, full=full)
    return path
