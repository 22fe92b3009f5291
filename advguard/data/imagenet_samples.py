"""1,000 ImageNet sample photos, one per ILSVRC-2012 class (resize 256 + centre crop 224).

The mirror holds ``imagenet-samples/images/<wnid>.jpg`` and ``classes.tsv`` (index, wnid,
name). With internet, :func:`build_from_github` lays out the public sample repository
(files ``<wnid>_<name>.JPEG``) the same way. Note: the photos may come from ImageNet's
train split, so accuracy on them is optimistic.
"""

from __future__ import annotations

import csv
import io
import os
import re
import shutil
import tempfile
import zipfile
from pathlib import Path

import numpy as np

from .._atomic import atomic_write_bytes, atomic_write_text
from ..errors import DatasetNotFoundError
from .cache import cached_arrays
from .fetch import (
    _lock,
    _locked,
    _remove_leftovers,
    download,
    file_digest,
    folder_is_ready,
    verify_folder,
    write_manifest,
)
from .imageio import load_image_files

FOLDER = "imagenet-samples"
URL = "https://github.com/EliSchwartz/imagenet-sample-images/archive/refs/heads/master.zip"


def build_from_github(zip_path: Path, root: Path) -> Path:
    """Lay out the public sample-image repository archive as ``root/imagenet-samples``.

    Built in a temporary folder under a lock, with a manifest and completion marker (like the mirror's
    folders, see :mod:`advguard.data.fetch`), then renamed into place."""
    out = root / FOLDER
    root.mkdir(parents=True, exist_ok=True)
    with _locked(_lock(root, FOLDER), str(zip_path)):
        if folder_is_ready(out, None):
            return out
        _remove_leftovers(root, FOLDER)
        tmp = Path(tempfile.mkdtemp(prefix=f".{FOLDER}.partial-", dir=root))
        try:
            entries = []
            with zipfile.ZipFile(zip_path) as z:
                for n in z.namelist():
                    m = re.fullmatch(r".*/(n\d{8})_(.+)\.JPEG", n)
                    if m:
                        atomic_write_bytes(tmp / FOLDER / "images" / f"{m.group(1)}.jpg", z.read(n))
                        entries.append((m.group(1), m.group(2)))
            if not entries:
                raise DatasetNotFoundError(f"{zip_path} holds no <wnid>_<name>.JPEG files")
            entries.sort()
            buf = io.StringIO()
            w = csv.writer(buf, delimiter="\t", lineterminator="\n")
            w.writerow(["index", "wnid", "name"])
            for i, (wnid, name) in enumerate(entries):
                w.writerow([i, wnid, name])
            atomic_write_text(tmp / FOLDER / "classes.tsv", buf.getvalue())
            write_manifest(tmp / FOLDER, Path(zip_path).name, file_digest(Path(zip_path)))
            if out.exists():
                shutil.rmtree(out)
            os.rename(tmp / FOLDER, out)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return out


def read_classes(folder: Path) -> list[tuple[int, str, str]]:
    path = folder / "classes.tsv"
    if not path.exists():
        raise DatasetNotFoundError(f"{path} is missing. Run `advguard setup` to unpack the offline mirror.")
    with open(path, encoding="utf-8") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    return [(int(r["index"]), r["wnid"], r["name"]) for r in rows]


def load(root: Path, split: str, url: str | None = URL, size: int = 224, resize: int = 256) -> dict:
    folder = root / FOLDER
    if not folder.exists():
        if url is None:
            raise DatasetNotFoundError(f"ImageNet samples not found in {folder}. Run `advguard setup`.")
        build_from_github(download(url, root / "imagenet-sample-images.zip"), root)
    # A cheap check (file count) on every load; the full one (every file, its size) before decoding.
    marker = verify_folder(folder, full=False)
    rows = read_classes(folder)
    classes = [""] * (max(r[0] for r in rows) + 1)
    for i, _, name in rows:
        classes[i] = name.replace("_", " ")
    present = [(i, w) for i, w, _ in rows if (folder / "images" / f"{w}.jpg").exists()]
    if not present:
        raise DatasetNotFoundError(f"no images in {folder / 'images'}. Re-run `advguard setup`.")

    def build() -> dict[str, np.ndarray]:
        verify_folder(folder, full=True)
        paths = [folder / "images" / f"{w}.jpg" for _, w in present]
        x = load_image_files(paths, "RGB", resize=resize, crop=size, desc="decode ImageNet samples")
        return {"x": x, "y": np.asarray([i for i, _ in present], np.int64)}

    # Named after the verified source: caches decoded from a folder before it was verified are not reused.
    for legacy in (f"imagenet-samples-{resize}-{size}.npz", f"imagenet-samples-{resize}-{size}.npz.sha256"):
        (root / "cache" / legacy).unlink(missing_ok=True)
    arrays = cached_arrays(root / "cache" / f"imagenet-samples-{resize}-{size}-{marker['sha256'][:12]}.npz", build)
    return dict(x=arrays["x"], y=arrays["y"], classes=classes, source="imagenet-samples")
