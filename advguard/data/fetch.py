"""Downloading from official sources and unpacking the offline mirror.

Every file is written atomically (temporary name, then rename) and, where a
checksum is known, verified before it is accepted.
"""
from __future__ import annotations

import hashlib
import shutil
import tarfile
import urllib.request
from pathlib import Path

from tqdm.auto import tqdm

from .._atomic import atomic_path
from ..errors import DatasetNotFoundError
from .paths import data_dir, mirror_dir

#: Archives of the offline mirror and the folder each one unpacks to.
MIRROR_ARCHIVES = {
    "cifar10-jpeg.tar.gz": "cifar10-jpeg",
    "imagenet-samples.tar.gz": "imagenet-samples",
    "gtsrb32.npz": None,  # copied as-is
}


def file_digest(path: Path, algorithm: str = "sha256") -> str:
    h = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


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
            with open(tmp, "wb") as out, tqdm(
                total=total, unit="B", unit_scale=True, desc=f"download {dest.name}", leave=False
            ) as bar:
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


def _safe_extract(tar: tarfile.TarFile, dest: Path) -> None:
    """Extract a tar archive refusing members that escape ``dest`` (absolute paths, '..', links)."""
    dest = dest.resolve()
    members = []
    for m in tar.getmembers():
        target = (dest / m.name).resolve()
        if not target.is_relative_to(dest) or m.issym() or m.islnk():
            raise DatasetNotFoundError(f"refusing unsafe archive member {m.name!r}")
        if m.isfile() or m.isdir():
            members.append(m)
    tar.extractall(dest, members=members)


def extract_tar(archive: Path, dest_parent: Path, folder: str) -> Path:
    """Unpack ``archive`` (which holds ``folder/...``) into ``dest_parent/folder`` atomically."""
    final = dest_parent / folder
    if final.is_dir():
        return final
    dest_parent.mkdir(parents=True, exist_ok=True)
    tmp = dest_parent / f".{folder}.partial"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    try:
        with tarfile.open(archive) as tar:
            _safe_extract(tar, tmp)
        inner = tmp / folder
        if not inner.is_dir():
            raise DatasetNotFoundError(f"{archive} does not contain a top-level folder {folder!r}")
        inner.rename(final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final


def unpack_mirror(mirror: str | Path | None = None, dest: str | Path | None = None) -> list[str]:
    """Unpack every archive of the offline mirror into the data directory; return what was set up.

    Archives already unpacked are skipped, so this is cheap to re-run.
    """
    src = Path(mirror) if mirror is not None else mirror_dir()
    if src is None or not src.is_dir():
        raise DatasetNotFoundError(
            "no offline mirror found: pass --mirror PATH or set $ADVGUARD_MIRROR "
            "(on a machine with internet, datasets download on first use instead)."
        )
    out = data_dir(dest)
    done = []
    for archive, folder in MIRROR_ARCHIVES.items():
        path = src / archive
        if not path.exists():
            continue
        if folder is None:
            target = out / archive
            if not target.exists() or target.stat().st_size != path.stat().st_size:
                with atomic_path(target) as tmp:
                    shutil.copyfile(path, tmp)
        else:
            extract_tar(path, out, folder)
        done.append(archive)
    return done
