"""Downloading from official sources, unpacking the offline mirror, and verifying unpacked folders.

Every file is written atomically (temporary name, then rename) and, where a
checksum is known, verified before it is accepted.

Offline mirror (issue #20):

* :data:`MIRROR_ARCHIVES` records, for every archive of the mirror, the folder it unpacks to and its
  SHA-256. An archive whose digest differs is refused (:class:`ChecksumError` naming the file and both
  digests). To add an archive, add one line: ``"name.tar.gz": MirrorArchive("folder", "<sha256>")``
  (``folder=None``: the file is copied as-is); ``sha256sum FILE`` gives the digest.
* Unpacking holds an inter-process lock (``filelock``, ``.<folder>.lock`` in the data directory), extracts
  into a fresh ``tempfile.mkdtemp`` folder beside the destination (leftovers of killed runs are removed
  under the lock), resets modes (files 0o644, folders 0o755; links, devices, absolute and ``..`` members
  are refused), checks that every member of the archive arrived with its size, writes a manifest
  (relative path -> size) and a completion marker (count, bytes, archive digest) inside the folder, and
  only then renames the folder into place.
* :func:`verify_folder` checks an unpacked folder against its manifest (count and sizes via
  ``os.scandir``; no hashing). The loaders call it with ``full=False`` (a file count, ~25 ms for
  CIFAR-10's 60,000 files) on every load and with ``full=True`` before they decode the folder into their
  array cache. A folder without a valid marker, or whose files differ, raises
  :class:`~advguard.errors.DatasetNotFoundError` naming the folder and the expected vs found count;
  ``advguard setup`` repairs such a folder (re-extracts it).
* Files copied as-is (``folder=None``, e.g. ``gtsrb32.npz``, ``cifar10-test.npz``) get a marker beside them
  (``.<name>.advguard-complete.json``: digest and size); :func:`verify_copy` checks it (size, or also the
  SHA-256 with ``full=True``). :func:`advguard.data.paths.unpacked` returns a verified folder or copied file
  by name, for code that loads weights from the mirror (``unpacked("cifar10-resnets")``,
  ``unpacked("rp2-lisa")``).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tarfile
import tempfile
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

from tqdm.auto import tqdm

from .._atomic import atomic_path, atomic_write_text
from ..errors import DatasetNotFoundError
from .paths import data_dir, mirror_dir


class MirrorArchive(NamedTuple):
    """One archive of the offline mirror: the folder it unpacks to (None: copied as-is) and its SHA-256."""

    folder: str | None
    sha256: str


#: Archives of the offline mirror: what each one unpacks to and its SHA-256 (computed from the mirror's files,
#: which /work/shared/data/README.md describes; it states no checksums).
MIRROR_ARCHIVES: dict[str, MirrorArchive] = {
    "cifar10-jpeg.tar.gz": MirrorArchive(
        "cifar10-jpeg", "c3da85c47bf2cd7deae445ed286c62485cef8c49394c96ca6614925986f1a4c3"
    ),
    "imagenet-samples.tar.gz": MirrorArchive(
        "imagenet-samples", "5dab475bd3e71b897b50b19aff07a3b945403ad3cd0e4c941a46dd84e148379b"
    ),
    "gtsrb32.npz": MirrorArchive(None, "e2456ef2da656cf841abd3606984f720b7ac25bb1db89fbbe07154cb7b4df7e7"),
    # Issue #21: the lossless CIFAR-10 test set, 1,300 ImageNet validation images, the RP2 authors' material
    # (victim photos, sticker mask, LISA-CNN weights, MIT licence) and akamaster's CIFAR-10 ResNets (BSD-2).
    "cifar10-test.npz": MirrorArchive(None, "6635622262e61d72a3f57194dd37615556ecf1cb088c698f82dd6c596e09c14a"),
    "imagenet-val1300.tar.gz": MirrorArchive(
        "imagenet-val1300", "24ad40fd6bba0640abd3a01cbef31210a8e5e796b09540fe55f6afc0b5c8126d"
    ),
    "rp2-lisa.tar.gz": MirrorArchive("rp2-lisa", "89900f86d69d6f35fc1158f7ce4c151628372c9c8474cc29a0984fd20feb133e"),
    "cifar10-resnets.tar.gz": MirrorArchive(
        "cifar10-resnets", "a483024fb57e7bcfb01544f7deb431e59055f44c8f4b45242a3e2859e45fca81"
    ),
}

#: Inside an unpacked folder: the completion marker (small: count, bytes, source digest) and the manifest.
MARKER = ".advguard-complete.json"
MANIFEST = ".advguard-manifest.json"
_RESERVED = {MARKER, MANIFEST}
#: How long a set-up waits for another one unpacking the same archive (seconds).
LOCK_TIMEOUT = 1800.0


class ChecksumError(DatasetNotFoundError):
    """A mirror archive (or download) does not have the checksum recorded for it."""


def file_digest(path: str | os.PathLike, algorithm: str = "sha256") -> str:
    """Hex digest of a file's bytes, read in 1 MiB blocks."""
    with open(path, "rb") as f:
        return _fileobj_digest(f, algorithm)


def _fileobj_digest(f, algorithm: str = "sha256") -> str:
    h = hashlib.new(algorithm)
    for chunk in iter(lambda: f.read(1 << 20), b""):
        h.update(chunk)
    return h.hexdigest()


def _check_digest(path: Path, got: str, expected: str | None) -> None:
    if expected is not None and got != expected.lower():
        raise ChecksumError(
            f"checksum mismatch for mirror archive {path}: expected sha256 {expected.lower()}, got {got}. "
            "The file is corrupt or a different version than advguard knows "
            "(advguard.data.fetch.MIRROR_ARCHIVES); refusing to unpack it. Replace it with an intact copy."
        )


def download(url: str, dest: Path, md5: str | None = None, timeout: float = 30.0) -> Path:
    """Download ``url`` to ``dest`` (atomically, with a progress bar); verify the ``md5`` the source publishes.

    ``file://`` URLs work too, which is how the tests exercise this code offline.
    """
    dest = Path(dest)
    if dest.exists() and (md5 is None or file_digest(dest, "md5") == md5):
        return dest
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp, atomic_path(dest) as tmp:
            total = int(resp.headers.get("Content-Length") or 0) or None
            with (
                open(tmp, "wb") as out,
                tqdm(total=total, unit="B", unit_scale=True, desc=f"download {dest.name}", leave=False) as bar,
            ):
                for chunk in iter(lambda: resp.read(1 << 20), b""):
                    out.write(chunk)
                    bar.update(len(chunk))
            if md5 is not None:
                got = file_digest(tmp, "md5")
                if got != md5:
                    raise DatasetNotFoundError(
                        f"checksum mismatch for {url}: expected md5 {md5}, got {got}; the download is corrupt."
                    )
    except (OSError, ValueError) as e:
        if isinstance(e, DatasetNotFoundError):
            raise
        raise DatasetNotFoundError(
            f"could not download {url} ({e}). Without internet, unpack the offline mirror with "
            "`advguard setup --mirror PATH` (or set $ADVGUARD_MIRROR)."
        ) from e
    return dest


# --------------------------------------------------------------------------------------------------------------
# Extraction


def _reset_modes(member: tarfile.TarInfo, path: str) -> tarfile.TarInfo:
    """tarfile's 'data' filter (no setuid/setgid/sticky, no owners, nothing outside the folder), then fixed
    modes: the mirror's own file modes never reach the data directory."""
    m = tarfile.data_filter(member, path)
    return m.replace(mode=0o755 if m.isdir() else 0o644, uid=None, gid=None, uname=None, gname=None, deep=False)


def _safe_extract(tar: tarfile.TarFile, dest: Path) -> dict[str, int]:
    """Extract a tar archive into ``dest``; return {relative path: size} of its regular files.

    Refuses (DatasetNotFoundError) links, devices, FIFOs, absolute paths and members that escape ``dest``;
    files get mode 0o644 and folders 0o755 whatever the archive says (no setuid bit survives).
    """
    dest = Path(dest).resolve()
    members, files = [], {}
    for m in tar.getmembers():
        target = (dest / m.name).resolve()
        if os.path.isabs(m.name) or not target.is_relative_to(dest) or target == dest and not m.isdir():
            raise DatasetNotFoundError(f"refusing unsafe archive member {m.name!r} (outside the destination)")
        if m.issym() or m.islnk():
            raise DatasetNotFoundError(f"refusing unsafe archive member {m.name!r} (a link)")
        if not (m.isfile() or m.isdir()):
            raise DatasetNotFoundError(
                f"refusing unsafe archive member {m.name!r} (a device, FIFO or other special file)"
            )
        if m.isfile():
            files[target.relative_to(dest).as_posix()] = m.size
        members.append(m)
    tar.extractall(dest, members=members, filter=_reset_modes)
    return files


def _walk(folder: Path, sizes: bool = True) -> dict[str, int]:
    """{relative path: size (or -1 when ``sizes`` is False)} of the regular files under ``folder``; the marker
    and manifest at the top level are left out. Symlinks count as files (their own size is not followed)."""
    out: dict[str, int] = {}
    stack = [""]
    while stack:
        rel = stack.pop()
        with os.scandir(folder / rel if rel else folder) as it:
            for e in it:
                r = f"{rel}/{e.name}" if rel else e.name
                if e.is_dir(follow_symlinks=False):
                    stack.append(r)
                elif not (rel == "" and e.name in _RESERVED):
                    out[r] = e.stat(follow_symlinks=False).st_size if sizes else -1
    return out


def _count(folder: Path) -> int:
    n, stack = 0, [folder]
    while stack:
        d = stack.pop()
        with os.scandir(d) as it:
            for e in it:
                if e.is_dir(follow_symlinks=False):
                    stack.append(Path(e.path))
                elif not (d == folder and e.name in _RESERVED):
                    n += 1
    return n


def write_manifest(folder: Path, source: str, sha256: str) -> dict:
    """Record what ``folder`` holds now (manifest: relative path -> size) and mark it complete.

    ``source`` names where it came from (an archive), ``sha256`` that source's digest. Written atomically,
    the manifest first, so a marker always has its manifest."""
    folder = Path(folder)
    files = _walk(folder)
    marker = {"format": 1, "source": source, "sha256": sha256, "count": len(files), "bytes": int(sum(files.values()))}
    atomic_write_text(folder / MANIFEST, json.dumps({**marker, "files": files}, sort_keys=True))
    atomic_write_text(folder / MARKER, json.dumps(marker, sort_keys=True, indent=1) + "\n")
    return marker


def read_marker(folder: Path) -> dict | None:
    """The completion marker of ``folder``, or None when it has none or it is unreadable."""
    try:
        m = json.loads((Path(folder) / MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(m, dict) or not isinstance(m.get("count"), int) or not isinstance(m.get("sha256"), str):
        return None
    return m


def _rerun(folder: Path) -> str:
    return f"Re-run `advguard setup` to repair it (it re-extracts {folder.name} from the offline mirror)."


def verify_folder(folder: Path, full: bool = True) -> dict:
    """Check an unpacked dataset folder against its completion marker; return the marker.

    ``full=False``: the number of files only (cheap: no ``stat`` per file). ``full=True``: every file of
    the manifest is present with its size (extra files are tolerated). A count mismatch in the cheap check
    falls through to the full one, which says what is missing.
    Raises :class:`~advguard.errors.DatasetNotFoundError` naming the folder, the expected vs found number of
    files and what to run.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise DatasetNotFoundError(
            f"dataset folder {folder} not found. Run `advguard setup` to unpack the offline mirror."
        )
    marker = read_marker(folder)
    if marker is None:
        found = _count(folder)
        raise DatasetNotFoundError(
            f"dataset folder {folder} has no valid completion marker ({MARKER}; {found} files found): "
            "it was unpacked by an older advguard or its unpacking did not finish, so it may be incomplete. "
            + _rerun(folder)
        )
    if not full and _count(folder) == marker["count"]:
        return marker
    try:
        manifest = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))["files"]
        if not isinstance(manifest, dict):
            raise ValueError("'files' is not a mapping")
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise DatasetNotFoundError(
            f"dataset folder {folder} has a marker but no readable manifest ({MANIFEST}: {e}). " + _rerun(folder)
        ) from e
    found = _walk(folder)
    missing = sorted(set(manifest) - set(found))
    changed = sorted(k for k, v in manifest.items() if k in found and found[k] != v)
    if len(manifest) != marker["count"] or missing or changed:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing, e.g. {', '.join(missing[:3])}")
        if changed:
            parts.append(f"{len(changed)} with a different size, e.g. {', '.join(changed[:3])}")
        raise DatasetNotFoundError(
            f"dataset folder {folder} is incomplete or damaged: expected {marker['count']} files, found "
            f"{len(found)} of which {len(manifest) - len(missing) - len(changed)} as recorded"
            f"{' (' + '; '.join(parts) + ')' if parts else ''}. " + _rerun(folder)
        )
    return marker


def _lock(dest_parent: Path, name: str):
    from filelock import FileLock

    return FileLock(str(dest_parent / f".{name}.lock"), timeout=LOCK_TIMEOUT)


def _locked(lock, what: str):
    from filelock import Timeout

    try:
        lock.acquire()
    except Timeout as e:
        raise DatasetNotFoundError(
            f"timed out after {LOCK_TIMEOUT:.0f} s waiting for another `advguard setup` "
            f"unpacking {what} (lock file {lock.lock_file})"
        ) from e
    return lock


def _remove_leftovers(dest_parent: Path, name: str) -> None:
    """Remove temporary folders/files of killed runs (only called under the archive's lock)."""
    for p in list(dest_parent.glob(f".{name}.partial*")) + list(dest_parent.glob(f".{name}.old-*")):
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink(missing_ok=True)


def folder_is_ready(final: Path, sha256: str | None) -> bool:
    """Whether ``final`` holds a complete, verified copy of the archive with digest ``sha256``."""
    m = read_marker(final)
    if m is None or (sha256 is not None and m["sha256"] != sha256.lower()):
        return False
    try:
        verify_folder(final, full=True)
    except DatasetNotFoundError:
        return False
    return True


def extract_tar(
    archive: Path, dest_parent: Path, folder: str, sha256: str | None = None, log: Callable[[str], None] | None = None
) -> Path:
    """Unpack ``archive`` (which holds ``folder/...``) into ``dest_parent/folder``; return that folder.

    Safe to run from several processes at once (a lock; a unique temporary folder per run). Skipped when the
    folder is already complete (marker from the same archive digest, all files present with their sizes);
    otherwise (no marker, missing or changed files) the folder is re-extracted and replaced. ``sha256``, if
    given, is checked while unpacking (:class:`ChecksumError` on a mismatch).
    """
    archive, dest_parent = Path(archive), Path(dest_parent)
    final = dest_parent / folder
    dest_parent.mkdir(parents=True, exist_ok=True)
    with _locked(_lock(dest_parent, folder), str(archive)):
        if folder_is_ready(final, sha256):
            if log:
                log(f"{folder}: verified, already complete")
            return final
        repairing = final.exists()
        _remove_leftovers(dest_parent, folder)
        tmp = Path(tempfile.mkdtemp(prefix=f".{folder}.partial-", dir=dest_parent))
        old = None
        try:
            with open(archive, "rb") as f:
                digest = _fileobj_digest(f)
                _check_digest(archive, digest, sha256)
                f.seek(0)
                try:
                    with tarfile.open(fileobj=f, mode="r:*") as tar:
                        expected = _safe_extract(tar, tmp)
                except (tarfile.TarError, EOFError, OSError) as e:
                    if isinstance(e, DatasetNotFoundError):
                        raise
                    raise DatasetNotFoundError(f"cannot unpack {archive}: {e}") from e
            inner = tmp / folder
            if not inner.is_dir():
                raise DatasetNotFoundError(f"{archive} does not contain a top-level folder {folder!r}")
            expected = {k[len(folder) + 1 :]: v for k, v in expected.items() if k.startswith(folder + "/")}
            got = _walk(inner)
            if got != expected:
                bad = sorted(set(expected) ^ set(got))
                bad += sorted(k for k, v in expected.items() if got.get(k, v) != v)
                raise DatasetNotFoundError(
                    f"unpacking {archive} did not produce what it lists: {len(expected)} files expected, "
                    f"{len(got)} found (e.g. {', '.join(bad[:3])})"
                )
            write_manifest(inner, archive.name, digest)
            if final.exists() or final.is_symlink():
                old = Path(tempfile.mkdtemp(prefix=f".{folder}.old-", dir=dest_parent))
                os.rename(final, old / folder)
            os.rename(inner, final)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
            if old is not None:
                shutil.rmtree(old, ignore_errors=True)
    if log:
        log(
            f"{folder}: {'repaired (re-extracted)' if repairing else 'unpacked'} from {archive.name}, "
            f"{len(got)} files verified"
        )
    return final


def copy_verified(src: Path, target: Path, sha256: str | None = None, log: Callable[[str], None] | None = None) -> Path:
    """Copy ``src`` to ``target`` atomically, checking its SHA-256; skipped when a marker beside ``target``
    (``.<name>.advguard-complete.json``) records the expected digest and the target's size."""
    src, target = Path(src), Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    marker_path = copy_marker_path(target)
    with _locked(_lock(target.parent, target.name), str(src)):
        try:
            m = json.loads(marker_path.read_text(encoding="utf-8"))
            ok = (
                m.get("sha256") == (sha256 or m.get("sha256"))
                and target.is_file()
                and target.stat().st_size == m.get("bytes")
            )
        except (OSError, ValueError, AttributeError):
            ok = False
        if ok:
            if log:
                log(f"{target.name}: verified, already complete")
            return target
        repairing = target.exists()
        _remove_leftovers(target.parent, target.name)
        marker_path.unlink(missing_ok=True)
        h = hashlib.sha256()
        with open(src, "rb") as f, atomic_path(target) as tmp:
            with open(tmp, "wb") as out:
                for chunk in iter(lambda: f.read(1 << 20), b""):
                    h.update(chunk)
                    out.write(chunk)
            _check_digest(src, h.hexdigest(), sha256)
            os.chmod(tmp, 0o644)
        atomic_write_text(
            marker_path,
            json.dumps(
                {"format": 1, "source": src.name, "sha256": h.hexdigest(), "count": 1, "bytes": target.stat().st_size}
            )
            + "\n",
        )
    if log:
        log(f"{target.name}: {'repaired (copied again)' if repairing else 'copied'}, checksum verified")
    return target


def copy_marker_path(target: Path) -> Path:
    """Where :func:`copy_verified` records a copied file's digest and size: ``.<name>.advguard-complete.json``."""
    target = Path(target)
    return target.parent / f".{target.name}{MARKER}"


def verify_copy(target: Path, full: bool = False) -> dict:
    """Check a file copied from the offline mirror (e.g. ``cifar10-test.npz``) against its marker; return it.

    ``full=False``: the marker exists and records the file's size (cheap); ``full=True``: also the SHA-256.
    Raises :class:`~advguard.errors.DatasetNotFoundError` naming the file and ``advguard setup``."""
    target = Path(target)
    if not target.is_file():
        raise DatasetNotFoundError(f"{target} not found. Run `advguard setup` to unpack the offline mirror.")
    try:
        m = json.loads(copy_marker_path(target).read_text(encoding="utf-8"))
        if not isinstance(m, dict) or not isinstance(m.get("sha256"), str):
            raise ValueError("not a marker")
    except (OSError, ValueError) as e:
        raise DatasetNotFoundError(
            f"{target} has no valid completion marker ({copy_marker_path(target).name}): it was not copied by "
            "`advguard setup` or the copy did not finish. Re-run `advguard setup` to repair it."
        ) from e
    size = target.stat().st_size
    if size != m.get("bytes") or full and file_digest(target) != m["sha256"]:
        raise DatasetNotFoundError(
            f"{target} is damaged: expected {m.get('bytes')} bytes with sha256 {m['sha256']}, found {size} bytes"
            f"{'' if size != m.get('bytes') else ' with another digest'}. Re-run `advguard setup` to repair it."
        )
    return m


def unpack_mirror(
    mirror: str | Path | None = None,
    dest: str | Path | None = None,
    archives: dict[str, MirrorArchive] | None = None,
    log: Callable[[str], None] | None = None,
) -> list[str]:
    """Unpack every archive of the offline mirror into the data directory; return what is set up.

    ``archives`` defaults to :data:`MIRROR_ARCHIVES`. Each archive's SHA-256 is checked when it is unpacked
    or copied; complete, verified folders are skipped, so this is cheap to re-run; incomplete or damaged
    ones are repaired. An archive with a wrong checksum is refused (the others are still set up, then
    :class:`ChecksumError` names every refused file).
    """
    src = Path(mirror) if mirror is not None else mirror_dir()
    if src is None or not src.is_dir():
        raise DatasetNotFoundError(
            "no offline mirror found: pass --mirror PATH or set $ADVGUARD_MIRROR "
            "(on a machine with internet, datasets download on first use instead)."
        )
    out = data_dir(dest)
    done, failed = [], []
    for archive, spec in (MIRROR_ARCHIVES if archives is None else archives).items():
        if isinstance(spec, str) or spec is None:  # the old table's form: folder only, no checksum
            spec = MirrorArchive(spec, None)  # type: ignore[arg-type]
        path = src / archive
        if not path.exists():
            continue
        try:
            if spec.folder is None:
                copy_verified(path, out / archive, spec.sha256, log=log)
            else:
                extract_tar(path, out, spec.folder, spec.sha256, log=log)
        except ChecksumError as e:
            failed.append(str(e))
            continue
        done.append(archive)
    if failed:
        raise ChecksumError(" ".join(failed) + (f" (set up: {', '.join(done)})" if done else ""))
    return done
