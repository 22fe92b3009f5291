"""What every experiment shares: cache keys and cached chunks, output and cache folders, dataset options, the
adversarial sets of the configured attacks, the classifier's forward cost, software versions.

Everything expensive is cached and resumable: adversarial sets (chunked, see :mod:`advguard.advsets`) and
detector features (one file per set and detector feature configuration; clean features are shared by all
attacks because every attack starts from the same correctly classified clean images). Re-running after Ctrl-C
skips what is done.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from tqdm.auto import tqdm

from ..advsets import AdvSet, AdvSetConfig, build_advset
from ..data import data_dir
from ..data.cache import cache_lock, load_entry, remove_partial, save_entry
from ..executors import cached_map
from ..metrics import CostReport, PeakMemory
from ..models import get_spec
from .config import DetectorSpec, ExperimentConfig

if TYPE_CHECKING:  # pragma: no cover
    from ..classifier import Classifier
    from ..detectors.base import Detector
    from .page import Page

NON_FEATURE_PARAMS = {"fpr", "decision_model", "decision_params"}


def feature_key(spec: DetectorSpec, set_key: str, which: str) -> str:
    params = {k: v for k, v in spec.params.items() if k not in NON_FEATURE_PARAMS}
    doc = json.dumps({"detector": spec.name, "params": params, "set": set_key, "which": which}, sort_keys=True)
    return hashlib.sha256(doc.encode()).hexdigest()[:20]


def cache_key(*parts: object) -> str:
    """A short stable hash of JSON-able ``parts`` (cache file names)."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:20]


def cached_chunks(
    path: Path,
    name: str,
    clf: Classifier,
    x: np.ndarray,
    fn: Callable[[np.ndarray], np.ndarray],
    empty: np.ndarray,
    chunk: int = 256,
    desc: str = "",
    progress: bool = True,
) -> tuple[np.ndarray, dict[str, Any]]:
    """``fn`` applied to ``x`` in chunks of ``chunk`` images and concatenated, with its cost (compute time, ``clf``'s
    model passes, peak memory); loaded from ``path`` (array ``name``) when cached there, else written atomically
    with a checksum (:mod:`advguard.data.cache`). A corrupt cache file is named in a warning, moved aside and
    recomputed; the entry's lock makes concurrent runs compute it once.

    The chunks are independent tasks (:func:`advguard.executors.cached_map`: in this process, or as Ray tasks under
    ``advguard reproduce --executor ray``), each cached in ``<path stem>.partial/`` until the whole entry is written,
    so an interrupted computation resumes from its finished chunks. ``fn`` must give each image a result that does
    not depend on the other images of its chunk (every detector's features do)."""
    with cache_lock(path):
        hit = load_entry(path)  # verified; a corrupt file is named, moved aside and recomputed
        if hit is not None and name in hit and "cost" in hit:
            return hit[name], json.loads(str(hit["cost"]))
        return _compute_chunks(path, name, clf, x, fn, empty, chunk, desc, progress)


def _compute_chunks(
    path: Path,
    name: str,
    clf: Classifier,
    x: np.ndarray,
    fn: Callable[[np.ndarray], np.ndarray],
    empty: np.ndarray,
    chunk: int,
    desc: str,
    progress: bool,
) -> tuple[np.ndarray, dict[str, Any]]:
    if int(chunk) < 1:
        raise ValueError(f"chunk must be at least 1, got {chunk!r}")

    def one(xb: np.ndarray) -> dict[str, np.ndarray]:
        """One chunk's result and its cost: [seconds, model passes, peak MB] (on whichever process computes it)."""
        passes0, t0 = clf.num_passes, time.perf_counter()
        with PeakMemory() as mem:
            out = fn(xb)
        return {name: out, "cost": np.asarray([time.perf_counter() - t0, clf.num_passes - passes0, mem.peak_mb])}

    parts = path.with_suffix(".partial")
    n_chunks = (len(x) + chunk - 1) // chunk
    done = cached_map(
        one,
        [parts / f"chunk-{i:05d}.npz" for i in range(n_chunks)],
        lambda i: x[i * chunk : (i + 1) * chunk],
        classifier=clf,
        desc=desc,
        progress=progress,
    )
    arr = np.concatenate([d[name] for d in done]) if done else empty
    costs = np.asarray([d["cost"] for d in done]).reshape(-1, 3)
    # compute time summed over the chunks (on one process this is the wall time; on a cluster, the work done)
    secs = float(costs[:, 0].sum())
    peak = float(np.nanmax(costs[:, 2])) if len(costs) and not np.isnan(costs[:, 2]).all() else float("nan")
    cost = {**CostReport(len(x), secs, int(costs[:, 1].sum()), peak).as_dict(), "seconds": secs}
    save_entry(path, {name: arr, "cost": np.asarray(json.dumps(cost))})
    remove_partial(parts)
    return arr, cost


def features(det: Detector, x: np.ndarray, path: Path, desc: str) -> tuple[np.ndarray, dict[str, Any]]:
    """Features of ``x`` from cache or computed in chunks (with a progress bar); returns (features, cost)."""
    return cached_chunks(path, "features", det.classifier, x, det.extract, np.zeros((0, 0)), desc=desc)


def bench_paths(
    cfg: ExperimentConfig, out: str | Path | None, cache_dir: str | Path | None, *, publish: bool = False
) -> tuple[Path, Path]:
    """The output folder and the cache folder. Output: ``out`` when given; else the config's own ``out``, except
    that an ``out`` under ``docs/results/`` (where the shipped configs keep their committed pages) is used only with
    ``publish`` (``advguard reproduce CONFIG --publish``): without it such a run goes to ``runs/<name>`` under the
    working directory, so that running a shipped config never overwrites a committed page by accident. No ``out``
    at all: ``runs/<name>``."""
    if out is not None:
        folder = Path(out)
    elif cfg.out and (publish or not is_committed_page(cfg.out)):
        folder = Path(cfg.out)
    else:
        folder = Path("runs") / cfg.name
    return folder, Path(cache_dir) if cache_dir is not None else data_dir() / "bench-cache"


def is_committed_page(out: str | Path) -> bool:
    """``out`` lies under a ``docs/results`` folder (the committed results pages)."""
    parts = Path(out).parts
    return any(parts[i : i + 2] == ("docs", "results") for i in range(len(parts) - 1))


def dataset_kwargs(cfg: ExperimentConfig, model: str) -> dict[str, Any]:
    """The dataset options of zoo ``model`` (e.g. the JPEG copy of CIFAR-10), overridden by the config's.

    The model's options apply only to the dataset it was trained on: your own ``image-folder`` gets none of
    them (CIFAR-10's ``source`` would break it) but is read at the model's input size and colour mode unless
    the config says otherwise."""
    spec = get_spec(model)
    if cfg.dataset == spec.dataset:
        return {**spec.dataset_kwargs, **cfg.dataset_kwargs}
    if cfg.dataset == "image-folder":
        kw = {"size": tuple(spec.size), "mode": "L" if spec.channels == 1 else "RGB", **cfg.dataset_kwargs}
        if isinstance(kw.get("size"), list):
            kw["size"] = tuple(kw["size"])
        return kw
    return dict(cfg.dataset_kwargs)


def clean_set_key(cfg: ExperimentConfig, first: AdvSet, ds_kwargs: dict[str, Any]) -> str:
    """Cache key of the clean images every attack of ``cfg`` starts from (model weights + data draw)."""
    return cache_key(first.config["weights"], cfg.dataset, cfg.split, cfg.n_images, cfg.seed, ds_kwargs)


def forward_cost(clf: Classifier, x: np.ndarray, repeats: int = 3) -> dict[str, Any]:
    """The classifier's plain forward pass on ``x`` (the floor every detector is compared with)."""
    clf.logits(x[: min(len(x), 64)])  # warm-up
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        clf.logits(x)
        best = min(best, time.perf_counter() - t)
    return {"ms_per_image": 1000 * best / len(x), "images_per_s": len(x) / best}


def build_sets(
    cfg: ExperimentConfig,
    clf: Classifier,
    ds_kwargs: dict[str, Any],
    cache: Path,
    progress: bool = True,
    model: str | None = None,
    balanced: bool = False,
) -> dict[str, AdvSet]:
    """The adversarial set of every configured attack, by attack label (built or loaded from ``cache``).

    ``balanced``: attack j attacks only part j of len(attacks) disjoint parts of the clean images, so the
    pooled adversarial images number about as many as the clean ones, one per source image. Attacks with
    a ``group`` split the clean images among the members of their group the same way.
    """
    sets: dict[str, AdvSet] = {}
    m = len(cfg.attacks)
    for j, a in enumerate(tqdm(cfg.attacks, desc="adversarial sets", disable=not progress)):
        part = (j, m) if balanced and m > 1 else None
        if a.group is not None:  # member i of an attack family of k splits the clean images with the others
            family = [b.label for b in cfg.attacks if b.group == a.group]
            part = (family.index(a.label), len(family)) if len(family) > 1 else None
        acfg = AdvSetConfig(
            dataset=cfg.dataset,
            model=model or cfg.model,
            attack=a.name,
            params=a.params,
            split=cfg.split,
            limit=cfg.n_images,
            seed=cfg.seed,
            target_shift=a.target_shift,
            target=a.target,
            roundtrip=cfg.roundtrip,
            dataset_kwargs=ds_kwargs,
            part=part,
        )
        sets[a.label] = build_advset(
            acfg, clf, cache_dir=cache / "advsets", chunk_size=cfg.chunk_size, progress=progress
        )
    return sets


def shared_folds(
    cfg: ExperimentConfig, sets: dict[str, AdvSet], experiment: str
) -> tuple[AdvSet, np.ndarray, dict[str, np.ndarray]]:
    """For experiments whose attacks all start from the same clean images (not a balanced split): the first set,
    the fold of each clean image and, per attack label, the fold of each adversarial image (by clean-image id, so an
    adversarial image goes to its source image's fold)."""
    first = next(iter(sets.values()))
    for aset in sets.values():
        if not np.array_equal(aset.clean_ids, first.clean_ids):
            raise AssertionError(f"the {experiment} experiment needs every attack to start from the same clean images")
    c_fold = first.folds(cfg.fractions, cfg.seed)[0]
    return first, c_fold, {k: s.folds(cfg.fractions, cfg.seed)[1] for k, s in sets.items()}


def data_summary(cfg: ExperimentConfig, first: AdvSet) -> dict[str, Any]:
    """The ``"data"`` entry of a results document: dataset, split, pixel source and image counts of the clean set
    the attacks of ``cfg`` start from (``first``: any of its adversarial sets)."""
    return {
        "dataset": cfg.dataset,
        "split": cfg.split,
        "source": first.config.get("source"),
        "n_images": first.counts["n_images"],
        "n_correct": first.counts["n_correct"],
    }


def versions() -> dict[str, Any]:
    import importlib.metadata as md

    out: dict[str, Any] = {}
    for p in (
        "advguard",
        "torch",
        "numpy",
        "scikit-learn",
        "scikit-image",
        "opencv-python-headless",
        "foolbox",
        "xgboost",
        "pillow",
    ):
        try:
            out[p] = md.version(p)
        except md.PackageNotFoundError:
            pass
    return out


#: the version of the results documents' shared envelope (``results_header``)
RESULTS_SCHEMA = 1


def results_header(cfg: ExperimentConfig) -> dict[str, Any]:
    """The envelope every results document starts with: schema version, experiment, the whole configuration
    (as data and as written), provenance (machine, commit, date, command) and software versions."""
    from ..report import provenance

    return {
        "schema": RESULTS_SCHEMA,
        "experiment": cfg.experiment,
        "config": cfg.as_dict(),
        "config_toml": cfg.source_text,
        "provenance": provenance(),
        "software": versions(),
    }


def jsonable(o: object) -> object:
    """``o`` with numpy arrays and scalars as lists and numbers, tuple keys joined with " / " (JSON-ready)."""
    if isinstance(o, dict):
        return {(" / ".join(map(str, k)) if isinstance(k, tuple) else k): jsonable(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [jsonable(v) for v in o]
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, Path):
        return str(o)
    return o


def write_results(doc: dict[str, Any], out: Path) -> Path:
    """Write ``doc`` as ``out/results.json`` atomically (one format for every experiment: indent 1, numpy
    values as numbers); returns the path."""
    from .._atomic import atomic_write_text

    out.mkdir(parents=True, exist_ok=True)
    return atomic_write_text(out / "results.json", json.dumps(jsonable(doc), indent=1, allow_nan=True) + "\n")


def write_page(doc: dict[str, Any], out: Path, page: Page) -> dict[str, Path]:
    """``results.json`` (:func:`write_results`) and ``page`` as results.md, report.html and its figures, each
    written atomically; returns their paths."""
    paths = {"json": write_results(doc, out)}
    paths.update(page.write(out))
    return paths
