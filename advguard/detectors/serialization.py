"""Saving detectors without pickles: one zip holding JSON, an .npz of arrays and the decision model.

Nothing loaded from a detector file can run code, and nothing in it is trusted blindly:

- **Decision models.** scikit-learn estimators go through skops; at load time *every* node of the skops
  schema must name a type of :data:`ALLOWED_TYPES` (exact names, never prefixes: ``builtins.exec`` is
  not ``builtins.dict``) through a loader of :data:`ALLOWED_LOADERS` (no function, method, partial or
  reduce nodes), and skops' own list of untrusted types must be a subset of the allow-list; anything
  else is refused naming the type. XGBoost models use XGBoost's own JSON format.
- **Sizes.** Member sizes are read from the zip directory and checked before anything is decompressed
  (a small file cannot expand to gigabytes); each array's header is checked against its bytes before it
  is allocated; no object arrays (``allow_pickle=False``).
- **Integrity.** ``detector.json`` records the sha256 of the arrays and of the decision model; a
  mismatch (a bit flip, a truncated or swapped member) is refused.
- **Schema.** ``detector.json`` is validated: known keys only, the types of each, a finite threshold
  inside the range its calibration allows, an ``estimator_format`` we write.
- **Matching.** The file records the classifier's fingerprint (:mod:`advguard.fingerprint`);
  :meth:`advguard.detectors.Detector.load` refuses another network unless told otherwise.

What this cannot do: a file edited by someone who also recomputes the digests, keeping every value
plausible, loads; sign or keep detector files where only you can write them.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import struct
import zipfile
import zlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .._atomic import atomic_path
from ..errors import DetectorFileError

if TYPE_CHECKING:  # pragma: no cover
    from sklearn.base import BaseEstimator

FORMAT_VERSION = 2
READABLE_VERSIONS = (1, 2)
ESTIMATOR_FORMATS = ("skops", "xgb")
MEMBERS = ("detector.json", "arrays.npz", "estimator.bin")

#: Upper bounds on what a detector file may unpack to (bytes); raise them per call for huge detectors.
MAX_JSON_BYTES = 16 * 2**20
MAX_TOTAL_BYTES = 1 * 2**30

#: Exact type names a skops-serialised decision model may contain: the estimators of
#: :data:`advguard.detectors.decision.DECISION_MODELS` and the numpy / builtin types their states use.
ALLOWED_TYPES = frozenset(
    {
        "builtins.dict",
        "builtins.list",
        "builtins.tuple",
        "builtins.str",
        "builtins.int",
        "builtins.float",
        "builtins.bool",
        "builtins.NoneType",
        "builtins.bytes",
        "builtins.set",
        "numpy.ndarray",
        "numpy.dtype",
        "numpy.float64",
        "numpy.float32",
        "numpy.int64",
        "numpy.int32",
        "numpy.bool_",
        "numpy.random.mtrand.RandomState",
        "sklearn.pipeline.Pipeline",
        "sklearn.preprocessing._data.StandardScaler",
        "sklearn.preprocessing._label.LabelBinarizer",
        "sklearn.svm._classes.SVC",
        "sklearn.ensemble._forest.RandomForestClassifier",
        "sklearn.ensemble._weight_boosting.AdaBoostClassifier",
        "sklearn.tree._classes.DecisionTreeClassifier",
        "sklearn.tree._tree.Tree",
        "sklearn.discriminant_analysis.LinearDiscriminantAnalysis",
        "sklearn.linear_model._logistic.LogisticRegression",
        "sklearn.neural_network._multilayer_perceptron.MLPClassifier",
        "sklearn.neural_network._stochastic_optimizers.AdamOptimizer",
        "sklearn.neural_network._stochastic_optimizers.SGDOptimizer",
    }
)
#: skops node kinds that only rebuild data or an allowed class (never call a named function).
ALLOWED_LOADERS = frozenset(
    {
        "DictNode",
        "ListNode",
        "TupleNode",
        "SetNode",
        "JsonNode",
        "TypeNode",
        "NdArrayNode",
        "BytesNode",
        "BytearrayNode",
        "RandomStateNode",
        "ObjectNode",
        "TreeNode",
        "SliceNode",
    }
)

_META_KEYS: dict[str, type | tuple[type, ...]] = {
    "format_version": int,
    "detector": str,
    "params": dict,
    "threshold": (float, int, type(None)),
    "classifier": (str, type(None)),
    "state": dict,
}
_OPTIONAL_META_KEYS: dict[str, type | tuple[type, ...]] = {
    "estimator_format": str,
    "fingerprint": dict,
    "digests": dict,
    "calibration": (dict, type(None)),
}


#: What reading a damaged zip can raise besides BadZipFile (zlib.error for corrupt deflate data, struct.error
#: for a cut header, UnicodeDecodeError for a mangled name, ...).
_ZIP_ERRORS = (
    zlib.error,
    struct.error,
    ValueError,
    OSError,
    EOFError,
    RuntimeError,
    NotImplementedError,
    UnicodeDecodeError,
    OverflowError,
)


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# ---------------------------------------------------------------------------- decision models
def _dump_estimator(model: BaseEstimator) -> tuple[str, bytes]:
    if type(model).__module__.startswith("xgboost"):
        import tempfile

        with tempfile.TemporaryDirectory() as d:
            p = Path(d) / "m.json"
            model.save_model(p)
            meta = {"n_classes": int(getattr(model, "n_classes_", 2))}
            return "xgb", json.dumps({"meta": meta, "model": p.read_text()}).encode()
    import skops.io as sio

    blob = sio.dumps(model)
    bad = sorted(_schema_types(blob)[0] - ALLOWED_TYPES)
    if bad:  # refuse to write what load would refuse to read
        raise DetectorFileError(f"cannot save a decision model with types outside the allow-list: {bad}")
    return "skops", blob


def _read_member(z: zipfile.ZipFile, name: str, limit: int, where: str) -> bytes:
    """Read one zip member after checking its declared size; never read more than ``limit`` bytes."""
    info = z.getinfo(name)
    if info.file_size > limit:
        raise DetectorFileError(
            f"{where}: member {name!r} unpacks to {info.file_size:,} bytes, over the limit of "
            f"{limit:,}; refusing to read it"
        )
    with z.open(info) as f:
        data = f.read(limit + 1)
    if len(data) > limit:
        raise DetectorFileError(f"{where}: member {name!r} is larger than its declared size")
    return data


def _schema_types(blob: bytes, where: str = "decision model") -> tuple[set[str], set[str]]:
    """(type names, loader names) of every node of a skops file's schema."""
    try:
        with zipfile.ZipFile(io.BytesIO(blob)) as z:
            if "schema.json" not in z.namelist():
                raise DetectorFileError(f"{where}: the skops file has no schema.json")
            total = sum(i.file_size for i in z.infolist())
            if total > MAX_TOTAL_BYTES:
                raise DetectorFileError(f"{where}: the skops file unpacks to {total:,} bytes, over the limit")
            schema = json.loads(_read_member(z, "schema.json", MAX_JSON_BYTES, where))
    except DetectorFileError:
        raise
    except (zipfile.BadZipFile, json.JSONDecodeError, KeyError, *_ZIP_ERRORS) as e:
        raise DetectorFileError(f"{where}: not a readable skops file ({type(e).__name__}: {e})") from e
    types, loaders = set(), set()
    stack: list[Any] = [schema]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            if "__loader__" in node or "__class__" in node:
                types.add(f"{node.get('__module__')}.{node.get('__class__')}")
                loaders.add(str(node.get("__loader__")))
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    return types, loaders


def _load_estimator(kind: str, data: bytes, where: str = "decision model") -> BaseEstimator:
    if kind == "xgb":
        import tempfile

        from xgboost import XGBClassifier
        from xgboost.core import XGBoostError

        try:
            obj = json.loads(data)
            text = obj["model"]
            if not isinstance(text, str):
                raise TypeError("model is not a JSON string")
            with tempfile.TemporaryDirectory() as d:
                p = Path(d) / "m.json"
                p.write_text(text)
                m = XGBClassifier()
                m.load_model(p)
        except (ValueError, KeyError, TypeError, XGBoostError) as e:
            raise DetectorFileError(f"{where}: not a readable XGBoost model ({type(e).__name__}: {e})") from e
        return m
    if kind != "skops":
        raise DetectorFileError(f"{where}: unknown estimator format {kind!r}; expected one of {ESTIMATOR_FORMATS}")
    import skops.io as sio

    types, loaders = _schema_types(data, where)
    bad_types = sorted(types - ALLOWED_TYPES)
    if bad_types:
        raise DetectorFileError(
            f"{where}: refusing to load a decision model with types outside the allow-list: {bad_types}"
        )
    bad_loaders = sorted(loaders - ALLOWED_LOADERS)
    if bad_loaders:
        raise DetectorFileError(
            f"{where}: refusing to load a decision model with skops node kinds {bad_loaders} (they call functions)"
        )
    try:
        untrusted = set(sio.get_untrusted_types(data=data))
    except Exception as e:  # skops parses the whole schema here: any failure means a malformed file
        raise DetectorFileError(f"{where}: malformed skops file ({type(e).__name__}: {e})") from e
    bad = sorted(untrusted - ALLOWED_TYPES)
    if bad:
        raise DetectorFileError(f"{where}: refusing to load a decision model with untrusted types: {bad}")
    try:
        return sio.loads(data, trusted=sorted(untrusted))
    except Exception as e:  # a schema of allowed types with inconsistent contents
        raise DetectorFileError(f"{where}: malformed skops file ({type(e).__name__}: {e})") from e


# ---------------------------------------------------------------------------- arrays
def _read_npz(data: bytes, where: str) -> dict[str, np.ndarray]:
    """Arrays of an in-memory .npz, each header checked against its bytes before allocation."""
    out = {}
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as z:
            for info in z.infolist():
                if not info.filename.endswith(".npy"):
                    raise DetectorFileError(f"{where}: unexpected member {info.filename!r} in arrays.npz")
                raw = _read_member(z, info.filename, MAX_TOTAL_BYTES, where)
                f = io.BytesIO(raw)
                version = np.lib.format.read_magic(f)
                read_header = (
                    np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
                )
                shape, fortran, dtype = read_header(f)
                if dtype.hasobject:
                    raise DetectorFileError(f"{where}: array {info.filename!r} holds Python objects; refused")
                need = math.prod(shape) * dtype.itemsize
                if need != len(raw) - f.tell():
                    raise DetectorFileError(
                        f"{where}: array {info.filename!r} declares {shape} {dtype} "
                        f"({need:,} bytes) but holds {len(raw) - f.tell():,}"
                    )
                f.seek(0)
                out[info.filename[:-4]] = np.lib.format.read_array(f, allow_pickle=False)
    except DetectorFileError:
        raise
    except (zipfile.BadZipFile, *_ZIP_ERRORS) as e:
        raise DetectorFileError(f"{where}: arrays.npz is corrupt ({type(e).__name__}: {e})") from e
    return out


# ---------------------------------------------------------------------------- metadata
def validate_meta(meta: Any, where: str = "detector file") -> dict[str, Any]:
    """Check ``detector.json``'s structure and values; raise :class:`DetectorFileError` naming the key."""
    if not isinstance(meta, dict):
        raise DetectorFileError(f"{where}: detector.json must hold an object, got {type(meta).__name__}")
    problems = []
    for key, typ in _META_KEYS.items():
        if key not in meta:
            problems.append(f"missing key {key!r}")
        elif not isinstance(meta[key], typ) or isinstance(meta[key], bool):
            problems.append(f"{key!r} has type {type(meta[key]).__name__}")
    for key, typ in _OPTIONAL_META_KEYS.items():
        if key in meta and not isinstance(meta[key], typ):
            problems.append(f"{key!r} has type {type(meta[key]).__name__}")
    unknown = sorted(set(meta) - set(_META_KEYS) - set(_OPTIONAL_META_KEYS))
    if unknown:
        problems.append(f"unknown key(s) {unknown}")
    if problems:
        raise DetectorFileError(f"{where}: invalid detector.json: {'; '.join(problems)}")
    if meta["format_version"] not in READABLE_VERSIONS:
        raise DetectorFileError(
            f"{where}: detector format {meta['format_version']}; this advguard reads {list(READABLE_VERSIONS)}"
        )
    if "estimator_format" in meta and meta["estimator_format"] not in ESTIMATOR_FORMATS:
        raise DetectorFileError(
            f"{where}: estimator_format {meta['estimator_format']!r} is not one advguard writes {ESTIMATOR_FORMATS}"
        )
    thr = meta["threshold"]
    if thr is not None:
        if not math.isfinite(thr):
            raise DetectorFileError(f"{where}: threshold {thr!r} is not a finite number")
        cal = meta.get("calibration")
        if cal is not None:
            lo, hi = cal.get("min"), cal.get("max")
            if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in (lo, hi)):
                raise DetectorFileError(f"{where}: calibration range {lo!r}..{hi!r} is not two finite numbers")
            if not lo <= thr <= hi:
                raise DetectorFileError(
                    f"{where}: threshold {thr!r} lies outside the range its calibration allows "
                    f"[{lo!r}, {hi!r}]; the file is corrupt or was edited"
                )
    return meta


# ---------------------------------------------------------------------------- files
def save_detector(
    path: str | Path, meta: dict[str, Any], arrays: dict[str, np.ndarray], estimator: BaseEstimator | None = None
) -> Path:
    """Write a detector file atomically (nothing half-written is left under ``path``)."""
    path = Path(path)
    buf = io.BytesIO()
    np.savez(buf, **arrays)  # type: ignore[arg-type]  # numpy's stub: **kwds meets the allow_pickle: bool keyword
    array_bytes = buf.getvalue()
    doc = {"format_version": FORMAT_VERSION, **meta, "digests": {"arrays.npz": _sha256(array_bytes)}}
    blob = None
    if estimator is not None:
        kind, blob = _dump_estimator(estimator)
        doc["estimator_format"] = kind
        doc["digests"]["estimator.bin"] = _sha256(blob)
    text = json.dumps(doc, indent=2, default=_json_default, allow_nan=False)
    validate_meta(json.loads(text), str(path))
    with atomic_path(path) as tmp, zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as z:
        if blob is not None:
            z.writestr("estimator.bin", blob)
        z.writestr("detector.json", text)
        z.writestr("arrays.npz", array_bytes)
    return path


def load_detector_file(
    path: str | Path, max_bytes: int = MAX_TOTAL_BYTES
) -> tuple[dict[str, Any], dict[str, np.ndarray], object]:
    """Read and check a detector file: (metadata, arrays, estimator or None). See the module docstring."""
    path = Path(path)
    where = str(path)
    if path.is_dir():
        raise DetectorFileError(f"{where} is a directory, not a detector file")
    if not path.is_file():
        raise DetectorFileError(f"detector file not found: {where}")
    try:
        with zipfile.ZipFile(path) as z:
            infos = z.infolist()
            names = [i.filename for i in infos]
            if "guard.json" in names and "detector.json" not in names:
                raise DetectorFileError(
                    f"{where} is a Guard file (it holds guard.json), not a detector file: load it with "
                    "advguard.Guard.load(path, classifier), or use it with advguard detect --guard"
                )
            unknown = sorted(set(names) - set(MEMBERS))
            if unknown or len(names) != len(set(names)):
                raise DetectorFileError(
                    f"{where}: unexpected or repeated members {unknown or names}; a detector file holds {list(MEMBERS)}"
                )
            total = sum(i.file_size for i in infos)
            if total > max_bytes:
                raise DetectorFileError(
                    f"{where} unpacks to {total:,} bytes, over the limit of {max_bytes:,} (pass max_bytes= to allow it)"
                )
            for need in ("detector.json", "arrays.npz"):
                if need not in names:
                    raise DetectorFileError(f"{where} is not an advguard detector file (no {need})")
            try:
                meta = json.loads(
                    _read_member(z, "detector.json", MAX_JSON_BYTES, where), parse_constant=lambda c: float(c)
                )
            except (json.JSONDecodeError, UnicodeDecodeError) as e:
                raise DetectorFileError(f"{where}: detector.json is not valid JSON ({e})") from e
            validate_meta(meta, where)
            array_bytes = _read_member(z, "arrays.npz", max_bytes, where)
            has_est = "estimator_format" in meta
            if has_est != ("estimator.bin" in names):
                raise DetectorFileError(f"{where}: estimator_format and the estimator.bin member disagree")
            est_bytes = _read_member(z, "estimator.bin", max_bytes, where) if has_est else None
    except DetectorFileError:
        raise
    except zipfile.BadZipFile as e:
        raise DetectorFileError(f"{where} is not an advguard detector file ({e})") from e
    except _ZIP_ERRORS as e:  # truncated / corrupt compressed data / encrypted / odd members
        raise DetectorFileError(f"{where} is unreadable ({type(e).__name__}: {e})") from e
    digests = meta.get("digests", {})
    for name, data in (("arrays.npz", array_bytes), ("estimator.bin", est_bytes)):
        if data is None:
            continue
        want = digests.get(name)
        if want is None and meta["format_version"] >= 2:
            raise DetectorFileError(f"{where}: detector.json records no digest for {name}")
        if want is not None and want != _sha256(data):
            raise DetectorFileError(f"{where}: {name} does not match its recorded sha256 (corrupt or tampered)")
    arrays = _read_npz(array_bytes, where)
    est = _load_estimator(meta["estimator_format"], est_bytes, where) if est_bytes is not None else None  # has_est
    return meta, arrays, est


def _json_default(o: object) -> object:
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, (tuple, set)):
        return list(o)
    raise TypeError(f"cannot store {type(o).__name__} in detector.json")
