"""On-disk caches: verified entries, per-key locks, and the decoded-array cache of the dataset loaders.

Every cache file advguard writes (decoded datasets, adversarial sets and their chunks, detector features,
experiment intermediates) goes through :func:`save_entry` / :func:`load_entry` (or :func:`cached_arrays`,
which combines them under a lock):

* an entry is written atomically (temporary file + rename), then its checksum is written, also atomically,
  to a sidecar ``<name>.sha256`` in ``sha256sum`` format (``sha256sum -c`` checks it by hand);
* on reading, the file's SHA-256 must match the sidecar and the arrays must load (``allow_pickle=False``).
  A bit flip, truncation, empty file or a well-formed but tampered entry fails this check: a
  :class:`CacheWarning` names the file, the entry (and its sidecar) are moved aside to
  ``<name>.corrupt-<timestamp>`` (kept for inspection, never read again) and the caller recomputes it;
* **an entry without a sidecar** (written by advguard before checksums existed, or by a process killed
  between the entry's rename and the sidecar's) is *adopted*: it is loaded completely (every array is
  read, so the zip's CRC-32 of each member is checked too); if that succeeds a :class:`CacheWarning`
  says so and its checksum is written, so later reads verify it; if it fails it is moved aside like a
  corrupt entry. Adopting rather than recomputing keeps caches that took hours to build (the committed
  results pages are computed from them), and readable legacy entries hold exactly what they always did.

:func:`cache_lock` is a per-entry inter-process lock (``filelock``, a ``<name>.lock`` file beside the
entry): builders hold it while they check, build and write an entry, so two runs started at the same
moment on one cache compute each entry once and never see each other's half-finished state.
"""

from __future__ import annotations

import os
import shutil
import time
import warnings
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np

from .._atomic import atomic_path, atomic_write_text
from ..errors import AdvguardError

#: what a damaged npz raises inside numpy / zipfile (bit flips, truncation, empty files, bad CRC...)
READ_ERRORS = (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile, zipfile.LargeZipFile, UnicodeDecodeError)


class CacheWarning(UserWarning):
    """A cache entry was corrupt (moved aside, recomputed) or had no checksum (adopted)."""


class CacheCorruptError(AdvguardError, OSError):
    """A file that cannot be rebuilt automatically is damaged; the message names it."""


def checksum_path(path: str | os.PathLike) -> Path:
    p = Path(path)
    return p.with_name(p.name + ".sha256")


def lock_path(path: str | os.PathLike) -> Path:
    p = Path(path)
    return p.with_name(p.name + ".lock")


def file_sha256(path: str | os.PathLike) -> str:
    from .fetch import file_digest

    return file_digest(path)


def cache_lock(path: str | os.PathLike, timeout: float = -1):
    """An inter-process lock for the cache entry (or folder of entries) at ``path`` (``with cache_lock(p): ...``).

    Reentrant within a process (``filelock`` semantics), so nested helpers may take it again."""
    from filelock import FileLock

    lp = lock_path(path)
    lp.parent.mkdir(parents=True, exist_ok=True)
    return FileLock(str(lp), timeout=timeout)


def write_checksum(path: str | os.PathLike, digest: str | None = None) -> None:
    p = Path(path)
    atomic_write_text(checksum_path(p), f"{digest or file_sha256(p)}  {p.name}\n")


def read_checksum(path: str | os.PathLike) -> str | None:
    """The digest recorded in ``path``'s sidecar, None when there is none; '' when the sidecar is unreadable."""
    cp = checksum_path(path)
    try:
        text = cp.read_text(encoding="ascii")
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError):
        return ""
    parts = text.split()
    return parts[0].lower() if parts and len(parts[0]) == 64 else ""


def quarantine(path: str | os.PathLike, why: str) -> Path:
    """Move a bad entry (and its sidecar) aside to ``<name>.corrupt-<timestamp>``; warn naming it."""
    p = Path(path)
    stamp = time.strftime("%Y%m%d-%H%M%S") + f"-{os.getpid()}-{time.monotonic_ns() % 10**6:06d}"
    dest = p.with_name(f"{p.name}.corrupt-{stamp}")
    try:
        os.replace(p, dest)
    except FileNotFoundError:  # another process moved it first
        pass
    cp = checksum_path(p)
    try:
        os.replace(cp, cp.with_name(f"{cp.name}.corrupt-{stamp}"))
    except FileNotFoundError:
        pass
    warnings.warn(
        f"corrupt cache entry {p} ({why}); moved aside to {dest.name} and recomputing", CacheWarning, stacklevel=3
    )
    return dest


def _read_npz(path: Path) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as f:
        return {k: f[k] for k in f.files}


def verified(
    path: str | os.PathLike, loader: Callable[[Path], object] = _read_npz, errors: tuple[type[BaseException], ...] = ()
):
    """``loader(path)`` if the entry at ``path`` is intact, None if it is absent or was corrupt (moved aside).

    Intact: its SHA-256 matches the sidecar and ``loader`` succeeds (raises none of :data:`READ_ERRORS` +
    ``errors``). An entry without a sidecar is adopted when ``loader`` succeeds (see the module docstring)."""
    p = Path(path)
    if not p.exists():
        return None
    expected = read_checksum(p)
    if expected is not None:
        try:
            actual = file_sha256(p)
        except OSError as e:
            quarantine(p, f"unreadable: {e}")
            return None
        if actual != expected:
            quarantine(
                p,
                "checksum mismatch: the file changed after it was written" if expected else "unreadable checksum file",
            )
            return None
    try:
        value = loader(p)
    except READ_ERRORS + tuple(errors) as e:
        quarantine(p, f"{type(e).__name__}: {e}")
        return None
    if expected is None:
        write_checksum(p)
        warnings.warn(
            f"cache entry {p} has no checksum (written by an older advguard); it loads intact, "
            "so it is kept and its checksum recorded",
            CacheWarning,
            stacklevel=3,
        )
    return value


def load_entry(path: str | os.PathLike) -> dict[str, np.ndarray] | None:
    """The arrays of the npz cache entry at ``path``, or None when it is absent or was corrupt (moved aside)."""
    return verified(path, _read_npz)


def save_file(path: str | os.PathLike, write: Callable[[Path], None]) -> None:
    """Write an entry atomically with ``write(tmp_path)``, then its checksum sidecar."""
    p = Path(path)
    checksum_path(p).unlink(missing_ok=True)  # never leave an old checksum beside a new entry
    with atomic_path(p) as tmp:
        write(tmp)
        digest = file_sha256(tmp)
    write_checksum(p, digest)


def load_json(path: str | os.PathLike):
    """The JSON document cached at ``path`` (verified like an npz entry), None when absent or corrupt."""
    import json

    return verified(path, lambda p: json.loads(p.read_text(encoding="utf-8")))


def save_json(path: str | os.PathLike, text: str) -> None:
    """Write a JSON cache entry atomically with its checksum."""
    save_file(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def load_npy(path: str | os.PathLike) -> np.ndarray | None:
    """The array of a ``.npy`` cache entry (verified), None when absent or corrupt."""
    return verified(path, lambda p: np.load(p, allow_pickle=False))


def save_npy(path: str | os.PathLike, array: np.ndarray) -> None:
    save_file(path, lambda tmp: np.save(tmp, array))


def save_entry(path: str | os.PathLike, arrays: dict[str, np.ndarray]) -> None:
    """Store ``arrays`` as an uncompressed npz at ``path`` (atomically, with its checksum)."""
    save_file(path, lambda tmp: np.savez(tmp, **arrays))


def read_arrays(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """The arrays of an npz that cannot be rebuilt here (e.g. a dataset file); a damaged one raises
    :class:`CacheCorruptError` naming the file instead of a raw zip/EOF traceback."""
    try:
        return _read_npz(Path(path))
    except READ_ERRORS as e:
        raise CacheCorruptError(
            f"corrupt file {path} ({type(e).__name__}: {e}); delete it and re-create it "
            "(for the datasets: `advguard setup`)"
        ) from e


def cached_arrays(path: Path, build: Callable[[], dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """The arrays stored at ``path``; built and stored (atomically, with a checksum) if absent or corrupt.

    Holds the entry's lock while it checks and builds, so concurrent callers build it once."""
    path = Path(path)
    with cache_lock(path):
        arrays = load_entry(path)
        if arrays is None:
            arrays = build()
            save_entry(path, arrays)
    return arrays


def remove_partial(parts: Path) -> None:
    """Delete the chunk folder of a finished entry; tolerant of files another process already removed."""
    for p in sorted(parts.glob("*")):
        try:
            p.unlink()
        except FileNotFoundError:
            pass
        except IsADirectoryError:  # pragma: no cover - nothing makes sub-folders here
            shutil.rmtree(p, ignore_errors=True)
    try:
        parts.rmdir()
    except FileNotFoundError:
        pass
    except OSError:  # not empty (a file appeared meanwhile): leave it, it is harmless
        pass
