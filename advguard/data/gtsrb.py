"""GTSRB traffic signs (Stallkamp et al. 2012) at 32x32 RGB, full-frame resizes.

The offline mirror ships ``gtsrb32.npz`` (complete official test set, 9 evenly spaced
frames of every training track). With internet, :func:`build_from_official` makes the
same file from the official archives. Validation is split by physical-sign track,
never randomly, because the frames of one track show the same sign.
"""

from __future__ import annotations

import csv
import io
import zipfile
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

from .._atomic import atomic_path
from ..errors import DatasetNotFoundError
from .fetch import download

CLASSES = [
    "speed limit 20",
    "speed limit 30",
    "speed limit 50",
    "speed limit 60",
    "speed limit 70",
    "speed limit 80",
    "end of speed limit 80",
    "speed limit 100",
    "speed limit 120",
    "no passing",
    "no passing for trucks",
    "right of way at next intersection",
    "priority road",
    "yield",
    "stop",
    "no vehicles",
    "trucks prohibited",
    "no entry",
    "general caution",
    "dangerous curve left",
    "dangerous curve right",
    "double curve",
    "bumpy road",
    "slippery road",
    "road narrows on the right",
    "road work",
    "traffic signals",
    "pedestrians",
    "children crossing",
    "bicycles crossing",
    "beware of ice/snow",
    "wild animals crossing",
    "end of all limits",
    "turn right ahead",
    "turn left ahead",
    "ahead only",
    "go straight or right",
    "go straight or left",
    "keep right",
    "keep left",
    "roundabout mandatory",
    "end of no passing",
    "end of no passing for trucks",
]
STOP = 14
FILE = "gtsrb32.npz"
FRAMES_PER_TRACK = 9
BASE_URL = "https://sid.erda.dk/public/archives/daaeac0d7ce1152aea9b61d9f1e19370/"
ARCHIVES = ["GTSRB_Final_Training_Images.zip", "GTSRB_Final_Test_Images.zip", "GTSRB_Final_Test_GT.zip"]
VAL_FRACTION = 0.1


def _resize(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as im:
        return np.asarray(im.convert("RGB").resize((32, 32), Image.BILINEAR))


def build_from_official(train_zip: Path, test_zip: Path, test_gt_zip: Path, out: Path) -> Path:
    """Convert the official GTSRB archives into ``gtsrb32.npz`` (the mirror's layout).

    Training: ``FRAMES_PER_TRACK`` evenly spaced frames of every track, track-major order,
    so that ``index // FRAMES_PER_TRACK`` is the track. Test: all images, labels from the GT csv.
    """
    xs, ys = [], []
    with zipfile.ZipFile(train_zip) as z:
        tracks: dict[tuple[int, int], list[str]] = {}
        for n in z.namelist():
            if n.endswith(".ppm"):
                cls = int(Path(n).parent.name)
                track = int(Path(n).stem.split("_")[0])
                tracks.setdefault((cls, track), []).append(n)
        for (cls, _), files in sorted(tracks.items()):
            files.sort()
            pick = np.linspace(0, len(files) - 1, FRAMES_PER_TRACK).round().astype(int)
            for i in pick:
                xs.append(_resize(z.read(files[i])))
                ys.append(cls)
    with zipfile.ZipFile(test_gt_zip) as z:
        gt_name = next(n for n in z.namelist() if n.endswith(".csv"))
        rows = list(csv.DictReader(io.TextIOWrapper(z.open(gt_name), "utf-8"), delimiter=";"))
    labels = {r["Filename"]: int(r["ClassId"]) for r in rows}
    xt, yt = [], []
    with zipfile.ZipFile(test_zip) as z:
        names = sorted(n for n in z.namelist() if n.endswith(".ppm"))
        for n in names:
            xt.append(_resize(z.read(n)))
            yt.append(labels[Path(n).name])
    with atomic_path(out) as tmp:
        np.savez(
            tmp,
            x_train=np.stack(xs),
            y_train=np.asarray(ys, np.int64),
            x_test=np.stack(xt),
            y_test=np.asarray(yt, np.int64),
        )
    return out


def val_tracks(track_ids: np.ndarray, labels: np.ndarray, seed: int = 0) -> np.ndarray:
    """Deterministically pick ~``VAL_FRACTION`` of each class's tracks (at least one) for validation."""
    rng = np.random.default_rng(seed)
    chosen = []
    for c in np.unique(labels):
        t = np.unique(track_ids[labels == c])
        k = max(1, int(round(VAL_FRACTION * len(t))))
        chosen.append(rng.choice(t, size=k, replace=False))
    return np.sort(np.concatenate(chosen))


def load(root: Path, split: str, url: str | None = BASE_URL) -> dict:
    path = root / FILE
    if not path.exists():
        if url is None:
            raise DatasetNotFoundError(f"GTSRB not found at {path}. Run `advguard setup` to unpack the offline mirror.")
        zips = [download(url + a, root / "gtsrb-official" / a) for a in ARCHIVES]
        build_from_official(*zips, out=path)
    try:
        with np.load(path, allow_pickle=False) as f:
            part = "test" if split == "test" else "train"
            x, y = f[f"x_{part}"], f[f"y_{part}"].astype(np.int64)
    except (OSError, KeyError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as e:
        raise DatasetNotFoundError(
            f"corrupt GTSRB file {path} ({type(e).__name__}: {e}); delete it and re-run `advguard setup`."
        ) from e
    x = x.transpose(0, 3, 1, 2).copy()
    if split == "test":
        return dict(x=x, y=y, classes=CLASSES, source="gtsrb32", groups=None)
    tracks = np.arange(len(y)) // FRAMES_PER_TRACK
    if split == "trainval":
        keep = np.ones(len(y), bool)
    else:
        is_val = np.isin(tracks, val_tracks(tracks, y))
        keep = is_val if split == "val" else ~is_val
    idx = np.nonzero(keep)[0]
    return dict(x=x[idx], y=y[idx], classes=CLASSES, source="gtsrb32", groups=tracks[idx], positions=idx)
