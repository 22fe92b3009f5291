"""Adversarial evaluation sets, built exactly as the common protocol says (docs/methods/README.md).

1. take a deterministic subset of a dataset split; keep only images the model classifies
   correctly; 2. attack them (untargeted, or targeted at ``(label + shift) mod C``); 3. keep
   only successes; 4. optionally round-trip each adversarial image through a lossless 8-bit
   PNG and/or JPEG q=100 and keep only those still adversarial (Nguyen et al.'s procedure).

Sets are cached on disk under a key derived from the full configuration (dataset, split,
subset, model weights hash, attack and parameters, seed, round trip). The attack runs in
chunks, each chunk written atomically, so an interrupted build resumes where it stopped
and a finished one loads instantly. Train/test splits are made by clean-image id with a
seeded hash, so a clean image and all its adversarial versions (across attacks) always fall
in the same fold.

Every file is written with a checksum and verified when read (:mod:`advguard.data.cache`): a damaged
chunk or set is named in a warning, moved aside and rebuilt. A per-key lock makes concurrent builds of
one set (two benches on one cache) build it once; the others wait and load it.
"""

from __future__ import annotations

import hashlib
import io
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ._atomic import atomic_write_text
from .attacks import AdversarialPatch, make_attack, shifted_targets
from .attacks.base import success_of
from .classifier import Classifier
from .data import data_dir, load_dataset
from .data.cache import cache_lock, load_entry, remove_partial, save_entry
from .executors import cached_map
from .fingerprint import weights_hash  # noqa: F401  (re-exported: the bench imports it from here)

ROUNDTRIPS = (None, "png", "jpeg", "png+jpeg")


@dataclass(frozen=True)
class AdvSetConfig:
    dataset: str
    model: str
    attack: str
    params: dict = field(default_factory=dict)
    split: str = "test"
    limit: int | None = None
    seed: int = 0
    target_shift: int | None = None  # None = untargeted; 1 = "next class"
    roundtrip: str | None = None
    dataset_kwargs: dict = field(default_factory=dict)
    #: ``(i, m)``: attack only part i of m disjoint parts of the correctly classified images (by a seeded
    #: hash of the clean id), so m attacks can share one clean set without sharing source images
    #: (balanced clean/adversarial sets, THEMIS's protocol). ``x_clean`` still holds all of them.
    part: tuple[int, int] | None = None
    #: one target class for every image (e.g. RP2's stop -> speed limit 45); the images of that class are not
    #: attacked. Exclusive with ``target_shift``.
    target: int | None = None

    @property
    def targeted(self) -> bool:
        """Whether the attack aims at target classes (a non-zero ``target_shift``, or ``target``)."""
        return bool(self.target_shift) or self.target is not None

    def __post_init__(self):
        if self.target is not None and self.target_shift is not None:
            raise ValueError("give target or target_shift, not both")
        if self.roundtrip not in ROUNDTRIPS:
            raise ValueError(f"roundtrip must be one of {ROUNDTRIPS}, got {self.roundtrip!r}")
        if self.part is not None:
            i, m = (int(v) for v in self.part)
            if not (m >= 1 and 0 <= i < m):
                raise ValueError(f"part must be (i, m) with 0 <= i < m, got {self.part!r}")
            object.__setattr__(self, "part", (i, m))


def config_key(cfg: AdvSetConfig, model_hash: str) -> str:
    d = asdict(cfg)
    for k in ("part", "target"):  # keys of sets built before these fields existed stay valid
        if d[k] is None:
            del d[k]
    doc = json.dumps({**d, "weights": model_hash, "v": 1}, sort_keys=True, default=str)
    return hashlib.sha256(doc.encode()).hexdigest()[:20]


def fold_of(ids: np.ndarray, fractions: tuple[float, ...] = (0.8, 0.2), seed: int = 0) -> np.ndarray:
    """Fold index of each clean-image id: a seeded hash of the id against cumulative ``fractions``.

    Depends only on the id and the seed, so every set built from the same images agrees.
    """
    fr = np.asarray(fractions, dtype=np.float64)
    if np.any(fr <= 0) or abs(fr.sum() - 1) > 1e-9:
        raise ValueError(f"fractions must be positive and sum to 1, got {fractions}")
    ids = np.asarray(ids, dtype=np.uint64)
    # splitmix64 of (id, seed): a well-mixed 64-bit hash, vectorised.
    with np.errstate(over="ignore"):
        z = ids + np.uint64(0x9E3779B97F4A7C15) * np.uint64(seed + 1)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
    u = (z >> np.uint64(11)).astype(np.float64) / float(2**53)
    return np.searchsorted(np.cumsum(fr)[:-1], u, side="right")


def part_of(ids: np.ndarray, m: int, seed: int = 0) -> np.ndarray:
    """Which of ``m`` equal parts each clean id belongs to (a hash independent of :func:`fold_of`'s)."""
    return fold_of(ids, (1.0 / m,) * m, seed + 0x5EED) if m > 1 else np.zeros(len(ids), np.int64)


def roundtrip_images(x: torch.Tensor, kind: str) -> torch.Tensor:
    """Save each image as an 8-bit PNG (lossless) and/or JPEG q=100 with Pillow and read it back.

    JPEG uses Pillow's defaults besides the quality (4:2:0 chroma subsampling), as Nguyen et al.'s
    Pillow-based procedure did.
    """
    out = x
    for step in kind.split("+"):
        arr = (out.clamp(0, 1).numpy() * 255).round().astype(np.uint8).transpose(0, 2, 3, 1)
        back = []
        for a in arr:
            im = Image.fromarray(a[:, :, 0] if a.shape[2] == 1 else a)
            buf = io.BytesIO()
            im.save(buf, format="PNG") if step == "png" else im.save(buf, format="JPEG", quality=100)
            buf.seek(0)
            r = np.asarray(Image.open(buf))
            back.append(r if r.ndim == 3 else r[:, :, None])
        out = torch.from_numpy(np.stack(back).transpose(0, 3, 1, 2).astype(np.float32) / 255)
    return out


@dataclass
class AdvSet:
    """Clean images (correctly classified) and the successful adversarial examples made from them."""

    x_clean: np.ndarray  # (Nc, C, H, W) float32
    clean_ids: np.ndarray  # dataset indices of the clean images
    y_clean: np.ndarray
    x_adv: np.ndarray  # (Na, C, H, W) float32, successes only
    adv_ids: np.ndarray  # clean id each adversarial image came from
    y_adv: np.ndarray  # true label of each adversarial image
    pred_adv: np.ndarray
    targets: np.ndarray | None
    norms: dict[str, np.ndarray]
    config: dict
    counts: dict
    key: str

    def folds(self, fractions: tuple[float, ...] = (0.8, 0.2), seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """(fold of each clean image, fold of each adversarial image), by clean id."""
        return fold_of(self.clean_ids, fractions, seed), fold_of(self.adv_ids, fractions, seed)

    def summary(self) -> dict:
        return {
            "key": self.key,
            **self.counts,
            **{f"median_{k}": float(np.median(v)) if len(v) else float("nan") for k, v in self.norms.items()},
        }


def _chunk_path(folder: Path, i: int) -> Path:
    return folder / f"chunk-{i:05d}.npz"


def build_advset(
    cfg: AdvSetConfig,
    classifier: Classifier | None = None,
    cache_dir: str | Path | None = None,
    chunk_size: int = 256,
    progress: bool = True,
) -> AdvSet:
    """Build (or load from cache) the adversarial set described by ``cfg``.

    ``classifier`` defaults to the zoo model ``cfg.model``; a custom one is keyed by its weights hash.
    """
    if classifier is None:
        from .models import load_model

        classifier = load_model(cfg.model)
    mhash = weights_hash(classifier.model)
    key = config_key(cfg, mhash)
    root = Path(cache_dir) if cache_dir is not None else data_dir() / "advsets"
    final = root / f"{key}.npz"
    # One builder per key at a time (two benches on one cache): the second waits, then loads the finished set.
    with cache_lock(final):
        arrays = load_entry(final)
        if arrays is None:
            arrays = _build(cfg, classifier, mhash, key, root, final, chunk_size, progress)
    return _from_arrays(arrays)


def _build(
    cfg: AdvSetConfig,
    classifier: Classifier,
    mhash: str,
    key: str,
    root: Path,
    final: Path,
    chunk_size: int,
    progress: bool,
) -> dict[str, np.ndarray]:
    if int(chunk_size) < 1:
        raise ValueError(f"chunk_size must be at least 1, got {chunk_size!r}")
    ds = load_dataset(cfg.dataset, cfg.split, limit=cfg.limit, seed=cfg.seed, **cfg.dataset_kwargs)
    with classifier.exact():
        pred = classifier.predict(ds.x).numpy()
    correct = pred == ds.y
    x_all, y_all, ids_all = ds.x[correct], ds.y[correct], ds.indices[correct]
    if cfg.part is not None:
        i, m = cfg.part
        chosen = part_of(ids_all, m, cfg.seed) == i
    else:
        chosen = np.ones(len(ids_all), bool)
    if cfg.target is not None:  # an image of the target class cannot be moved to it
        chosen &= y_all != cfg.target
    x_clean, y_clean, ids = x_all[chosen], y_all[chosen], ids_all[chosen]
    attack = make_attack(cfg.attack, classifier, seed=cfg.seed, progress=False, **cfg.params)
    parts = root / f"{key}.partial"
    parts.mkdir(parents=True, exist_ok=True)
    atomic_write_text(parts / "config.json", json.dumps({**asdict(cfg), "weights": mhash}, indent=2, default=str))
    n_chunks = (len(y_clean) + chunk_size - 1) // chunk_size

    def attack_chunk(item: tuple[np.ndarray, np.ndarray]) -> dict[str, np.ndarray]:
        """One chunk attacked (a pure function of its images: the attack re-seeds at every call)."""
        xb, yb = item
        if cfg.target is not None:
            tb: np.ndarray | None = np.full(len(yb), int(cfg.target))
        else:
            tb = shifted_targets(yb, classifier.num_classes, cfg.target_shift).numpy() if cfg.target_shift else None
        if isinstance(attack, AdversarialPatch):  # needs_fit: one patch trained on each chunk it then attacks
            attack.fit(xb, yb)
        r = attack(xb, yb, targets=tb)
        x_adv, ok = r.x_adv, r.success.numpy()
        n_success = int(ok.sum())
        if cfg.roundtrip:
            x_adv = roundtrip_images(x_adv, cfg.roundtrip)
            with classifier.exact():
                p2 = classifier.predict(x_adv).numpy()
                ok = ok & success_of(classifier, x_adv, yb, tb, attack.top_k, pred=torch.from_numpy(p2)).numpy()
        return dict(
            x_adv=x_adv.numpy()[ok],
            ok=ok,
            n_success=np.asarray(n_success),
            pred=r.pred_adv.numpy()[ok] if not cfg.roundtrip else p2[ok],
            targets=tb[ok] if tb is not None else np.zeros(0, int),
            **{f"norm_{k}": v.numpy()[ok] for k, v in r.norms.items()},
        )

    def chunk_images(c: int) -> tuple[np.ndarray, np.ndarray]:
        sl = slice(c * chunk_size, (c + 1) * chunk_size)
        return x_clean[sl], y_clean[sl]

    # finished chunks of an interrupted build are read, the others computed (in this process, or as Ray tasks
    # under `advguard reproduce --executor ray`), each written atomically and returned as read back
    chunks = cached_map(
        attack_chunk,
        [_chunk_path(parts, c) for c in range(n_chunks)],
        chunk_images,
        classifier=classifier,
        desc=f"advset {cfg.attack}",
        progress=progress,
    )
    ok = np.concatenate([c["ok"] for c in chunks]) if chunks else np.zeros(0, bool)
    counts = {
        "n_images": len(ds),
        "n_correct": int(correct.sum()),
        "n_attacked": int(len(y_clean)),
        "n_success": int(sum(int(c["n_success"]) for c in chunks)),
        "n_adv": int(ok.sum()),
    }
    arrays = {
        "x_clean": x_all,
        "clean_ids": ids_all,
        "y_clean": y_all,
        "x_adv": np.concatenate([c["x_adv"] for c in chunks]) if chunks else np.zeros((0, *ds.x.shape[1:]), np.float32),
        "adv_ids": ids[ok],
        "y_adv": y_clean[ok],
        "pred_adv": np.concatenate([c["pred"] for c in chunks]) if chunks else np.zeros(0, int),
        "targets": np.concatenate([c["targets"] for c in chunks]) if chunks and cfg.targeted else np.zeros(0, int),
        **{f"norm_{k}": np.concatenate([c[f"norm_{k}"] for c in chunks]) for k in ("l0", "l2", "linf")},
    }
    meta = {"config": {**asdict(cfg), "weights": mhash, "source": ds.source}, "counts": counts, "key": key}
    save_entry(final, {"meta": np.asarray(json.dumps(meta, default=str)), **arrays})
    remove_partial(parts)
    out = load_entry(final)
    if out is None:  # pragma: no cover - the file we just wrote and verified vanished or changed
        raise OSError(f"adversarial set {final} could not be read back after writing it")
    return out


def _from_arrays(arrays: dict[str, np.ndarray]) -> AdvSet:
    a = dict(arrays)
    meta = json.loads(str(a.pop("meta")))
    has_targets = meta["config"].get("target_shift") is not None or meta["config"].get("target") is not None
    return AdvSet(
        x_clean=a["x_clean"],
        clean_ids=a["clean_ids"],
        y_clean=a["y_clean"],
        x_adv=a["x_adv"],
        adv_ids=a["adv_ids"],
        y_adv=a["y_adv"],
        pred_adv=a["pred_adv"],
        targets=a["targets"] if has_targets else None,
        norms={k: a[f"norm_{k}"] for k in ("l0", "l2", "linf")},
        config=meta["config"],
        counts=meta["counts"],
        key=meta["key"],
    )


def _load(path: Path) -> AdvSet:
    """The adversarial set stored at ``path`` (verified; a damaged file raises an error naming it)."""
    arrays = load_entry(path)
    if arrays is None:
        raise FileNotFoundError(f"no intact adversarial set at {path} (absent, or corrupt and moved aside)")
    return _from_arrays(arrays)
