"""Saving detectors without pickles: one zip holding JSON, an .npz of arrays and the decision model.

scikit-learn estimators go through skops (only scikit-learn/numpy/scipy types are trusted at
load time); XGBoost models use XGBoost's own JSON format. Nothing in the file can run code.
"""
from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import numpy as np

from .._atomic import atomic_path
from ..errors import AdvguardError

FORMAT_VERSION = 1
TRUSTED_PREFIXES = ("sklearn.", "numpy.", "scipy.", "builtins.", "collections.")


def _dump_estimator(model) -> tuple[str, bytes]:
    if type(model).__module__.startswith("xgboost"):
        import tempfile

        with tempfile.TemporaryDirectory() as d:
            p = Path(d) / "m.json"
            model.save_model(p)
            meta = {"n_classes": int(getattr(model, "n_classes_", 2))}
            return "xgb", json.dumps({"meta": meta, "model": p.read_text()}).encode()
    import skops.io as sio

    return "skops", sio.dumps(model)


def _load_estimator(kind: str, data: bytes):
    if kind == "xgb":
        from xgboost import XGBClassifier

        import tempfile

        obj = json.loads(data)
        with tempfile.TemporaryDirectory() as d:
            p = Path(d) / "m.json"
            p.write_text(obj["model"])
            m = XGBClassifier()
            m.load_model(p)
        return m
    import skops.io as sio

    untrusted = sio.get_untrusted_types(data=data)
    bad = [t for t in untrusted if not t.startswith(TRUSTED_PREFIXES)]
    if bad:
        raise AdvguardError(f"refusing to load a decision model with untrusted types: {bad}")
    return sio.loads(data, trusted=untrusted)


def save_detector(path: str | Path, meta: dict, arrays: dict[str, np.ndarray], estimator=None) -> Path:
    """Write a detector file atomically."""
    path = Path(path)
    with atomic_path(path) as tmp, zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as z:
        doc = {"format_version": FORMAT_VERSION, **meta}
        if estimator is not None:
            kind, blob = _dump_estimator(estimator)
            doc["estimator_format"] = kind
            z.writestr("estimator.bin", blob)
        z.writestr("detector.json", json.dumps(doc, indent=2, default=_json_default))
        buf = io.BytesIO()
        np.savez(buf, **arrays)
        z.writestr("arrays.npz", buf.getvalue())
    return path


def load_detector_file(path: str | Path) -> tuple[dict, dict[str, np.ndarray], object]:
    """Read a detector file: (metadata, arrays, estimator or None)."""
    path = Path(path)
    if not path.is_file():
        raise AdvguardError(f"detector file not found: {path}")
    try:
        with zipfile.ZipFile(path) as z:
            meta = json.loads(z.read("detector.json"))
            with np.load(io.BytesIO(z.read("arrays.npz")), allow_pickle=False) as f:
                arrays = {k: f[k] for k in f.files}
            est = _load_estimator(meta["estimator_format"], z.read("estimator.bin")) \
                if "estimator_format" in meta else None
    except (zipfile.BadZipFile, KeyError, json.JSONDecodeError) as e:
        raise AdvguardError(f"{path} is not an advguard detector file ({e})") from e
    if meta.get("format_version") != FORMAT_VERSION:
        raise AdvguardError(f"{path} has detector format {meta.get('format_version')}; expected {FORMAT_VERSION}")
    return meta, arrays, est


def _json_default(o):
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, (tuple, set)):
        return list(o)
    raise TypeError(f"cannot store {type(o).__name__} in detector.json")
