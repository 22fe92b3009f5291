"""TaintRadar's protocol: the shared, cached steps of a run (clean sets, the two detectors and their operating
points, trained and applied patches, the adaptive attacks' arrays). The tables (:mod:`.tables`) read from these.

1. Clean images: the correctly classified ones among ``n_images`` drawn, shuffled (seeded). The first
   ``n_victims`` not of the target class are the victims; of the rest, ``n_calibration`` choose K and Delta_R
   (and fit SentiNet's boundary), ``n_eval_clean`` measure the held-out FPR, ``sentinet_n_test`` are
   SentiNet's overlay images.
2. Table II grid: for each batch size b, single / multiple sizes and patch size, ``n_victims / b`` patches are
   trained, patch j on victims j*b..(j+1)*b-1 (b = 1: the paper's partial attack), targeted at ``target``;
   each is applied to its own victims at every position. SR = successes / attempts; TaintRadar's and
   SentiNet's TPR are over the successes, at each FPR of ``fprs`` (thresholds from the calibration images).
3. Variants (Section VII-A): ``[[taintradar.variants]]`` (two patches, star / lightning shapes, ...).
4. ``[[attack]]`` entries (optional): L2 / L-inf attacks of the harness, on which TaintRadar is measured too
   (it is not designed for them).
5. Figure 3a (calibration FPR vs K for Delta_R = 0..3) and Figure 4 (masks of a benign and an
   adversarial image); trained patches are written as PNG.
6. Adaptive attacks (Section VII-B), at the first FPR's K and Delta_R: ``[taintradar.misleading]`` trains
   region-misleading patches for each lambda (Figure 6: IoU of TaintRadar's estimate with the patch, SR without
   and with TaintRadar); ``[taintradar.bpda]`` runs the end-to-end BPDA attack and, as its baseline, the same
   localized attack without the detector term.

Every cell is cached (patches, rank changes at every K, SentiNet points), so the run resumes.

7. Ablation (issue #22): ``models = [...]`` in ``[taintradar]`` runs steps 1-6 once per listed model (a zoo name,
   or a table {model, layer, label, note}: the same model may appear with several Grad-CAM layers; its patches and
   SentiNet points are shared, only TaintRadar's rank changes are per layer), each into its own sub-folder of
   ``out`` with its own page, then writes one comparison page (operating points, clean FPR vs K, the rank
   change's AUC at every K, TPR at each FPR, SentiNet) and ``auc_vs_k_models.png``. A declared model without
   weights yet (``advguard train NAME --install``) gets a "not yet trained" row instead of a run. ``diagnostics =
   n`` adds, per model, what the final intersection holds at every K on the first n held-out clean images and the
   first n successes of each cell (area, empty share, share inside the patch, whether the true label rises most).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, TypedDict

import numpy as np
import torch
from numpy.typing import NDArray

from ...attacks import AdversarialPatch, RegionMisleadingPatch
from ...attacks.adaptive import RECHECK_PROTOCOL, AdaptiveResult
from ...attacks.taintradar_bpda import TaintRadarBPDA
from ...classifier import Classifier
from ...data import load_dataset
from ...data.cache import cache_lock, cached_arrays, load_npy, save_entry
from ...detectors import SentiNet, TaintRadar
from ...executors import cached_map
from ...fingerprint import weights_hash
from ...metrics import roc_auc, threshold_at_fpr
from ...models import load_model
from ..common import cache_key, dataset_kwargs
from ..config import ExperimentConfig
from .options import BpdaOptions, MisleadingOptions, TaintRadarOptions

Array = NDArray[Any]
#: the cache keys of the clean sets' options (their values feed the run's cache folder name)
SET_KEYS = ("n_victims", "n_calibration", "n_eval_clean", "target", "steps", "lr", "size_range", "sentinet_n_test")


class _SettingKeys(TypedDict):
    label: str
    batch: int
    size: float


class Setting(_SettingKeys, total=False):
    """One patch setting: a Table II cell (``variant`` False), a variant or a region-misleading lambda. Absent keys
    take the grid's values (``position``: every position of the grid; ``steps``: the grid's)."""

    multi_size: bool
    variant: bool
    shape: str
    n_patches: int
    position: str
    steps: int | None


class OperatingPoint(TypedDict):
    """TaintRadar's K and Delta_R and SentiNet's threshold at one target FPR, with their held-out FPRs."""

    k: int
    delta_r: int
    sentinet_threshold: float
    taintradar_eval_fpr: float
    sentinet_eval_fpr: float


@dataclass(frozen=True)
class CleanSets:
    """The run's clean images (step 1), as cached in ``clean-sets.npz`` (same names, same order)."""

    victims: Array
    victims_y: Array
    calibration: Array
    eval_clean: Array
    sentinet_test: Array
    n_correct: int

    @classmethod
    def from_arrays(cls, a: dict[str, Array]) -> CleanSets:
        return cls(
            a["victims"], a["victims_y"], a["calibration"], a["eval_clean"], a["sentinet_test"], int(a["n_correct"])
        )

    def counts(self) -> dict[str, int]:
        """How many images each set holds (the results' ``counts``)."""
        names = ("victims", "victims_y", "calibration", "eval_clean", "sentinet_test")
        return {k: len(getattr(self, k)) for k in names}


def clean_sets(
    cfg: ExperimentConfig, clf: Classifier, o: TaintRadarOptions, ds_kwargs: dict[str, Any]
) -> dict[str, Array]:
    """Step 1's sets as arrays (the cache entry's content)."""
    ds = load_dataset(cfg.dataset, cfg.split, limit=cfg.n_images, seed=cfg.seed, **ds_kwargs)
    with clf.exact():
        ok = clf.predict(ds.x).numpy() == ds.y
    x, y = ds.x[ok], ds.y[ok]
    order = np.random.default_rng(cfg.seed).permutation(len(x))
    x, y = x[order], y[order]
    victim = np.flatnonzero(y != o.target)[: o.n_victims]
    rest = np.setdiff1d(np.arange(len(x)), victim)
    need = o.n_calibration + o.n_eval_clean + o.sentinet_n_test
    if len(victim) < o.n_victims or len(rest) < need:
        raise ValueError(
            f"{cfg.name}: {len(x)} correctly classified images are too few for {o.n_victims} victims "
            f"+ {need} clean; raise n_images"
        )
    a, b = o.n_calibration, o.n_calibration + o.n_eval_clean
    return {
        "victims": x[victim],
        "victims_y": y[victim],
        "calibration": x[rest[:a]],
        "eval_clean": x[rest[a:b]],
        "sentinet_test": x[rest[b : b + o.sentinet_n_test]],
        "n_correct": np.asarray(len(x)),
    }


def dataset_source(cfg: ExperimentConfig, ds_kwargs: dict[str, Any]) -> str:
    """Where the run's pixels come from (the dataset's recorded ``source``, e.g. ``cifar10-lossless``)."""
    source: str = load_dataset(cfg.dataset, cfg.split, limit=cfg.n_images, seed=cfg.seed, **ds_kwargs).source
    return source


def stream(*names: str) -> int:
    """A fixed noise stream per named image set: cached or not, a set always gets the same filling noise."""
    return int(cache_key(*names)[:12], 16)


def iou(est: Array, mask: Array) -> Array:
    """Per image, the IoU of two boolean (N, H, W) masks."""
    inter: Array = (est & mask).sum((1, 2)) / np.maximum((est | mask).sum((1, 2)), 1)
    return inter


@dataclass
class Bench:
    """A run's model, cache folder, clean sets and both detectors, fitted at every operating point (steps 1-2's
    shared part); :meth:`ranks`, :meth:`points` and :meth:`detect` measure image sets (cached by name)."""

    cfg: ExperimentConfig
    o: TaintRadarOptions
    clf: Classifier
    ds_kwargs: dict[str, Any]
    folder: Path
    sets: CleanSets
    tr: TaintRadar
    sn: SentiNet
    dkey: str
    k_max: int
    r_cal: Array
    r_eval: Array
    s_eval: Array
    ops: dict[float, OperatingPoint]
    fpr_table: Array

    def ranks(self, name: str, x: Array) -> Array:
        """TaintRadar's rank changes at every K (cached per detector setting and image set)."""
        return rank_changes(self.tr, self.folder, self.dkey, self.k_max, name, x)

    def points(self, name: str, x: Array) -> Array:
        """SentiNet's points (cached per image set)."""
        return sentinet_points(self.sn, self.folder, name, x)

    @property
    def k0(self) -> int:
        """K at the first FPR (the robustness runs' and the figures' operating point)."""
        return self.ops[self.o.fprs[0]]["k"]

    def detect(self, name: str, x_adv: Array) -> dict[str, Any]:
        """Both detectors on the adversarial images ``x_adv``: TPR at every operating point, the AUC against the
        held-out clean images (TaintRadar's at every K: Figure 3a's K axis)."""
        ra, pa = self.ranks(name, x_adv), self.points(name, x_adv)
        sa = self.sn.statistic(pa) if len(pa) else np.zeros(0)
        row: dict[str, Any] = {"n_adv": int(len(x_adv))}
        for fpr, op in self.ops.items():
            row[f"taintradar_tpr@{fpr}"] = float((ra[:, op["k"] - 1] > op["delta_r"]).mean()) if len(ra) else None
            row[f"sentinet_tpr@{fpr}"] = float((sa > op["sentinet_threshold"]).mean()) if len(sa) else None
        auc_by_k = [roc_auc(self.r_eval[:, k], ra[:, k]) for k in range(self.k_max)] if len(ra) else None
        row["taintradar_auc_by_k"] = auc_by_k
        row["taintradar_auc"] = auc_by_k[self.k0 - 1] if auc_by_k is not None else None
        row["sentinet_auc"] = roc_auc(self.s_eval, sa) if len(sa) else None
        return row

    def fit_first_point(self) -> None:
        """Fit TaintRadar at the first operating point (the paper's FPR 6 %), for the robustness runs."""
        self.tr.fpr = self.o.fprs[0]
        self.tr.fit_features(self.r_cal)


def rank_changes(tr: TaintRadar, folder: Path, dkey: str, k_max: int, name: str, x: Array) -> Array:
    path = folder / f"ranks-{dkey}-{name}.npz"
    return cached_arrays(
        path, lambda: {"r": tr.rank_changes(x, stream=stream(name)) if len(x) else np.zeros((0, k_max), int)}
    )["r"]


def sentinet_points(sn: SentiNet, folder: Path, name: str, x: Array) -> Array:
    return cached_arrays(folder / f"sentinet-{name}.npz", lambda: {"p": sn.points(x) if len(x) else np.zeros((0, 2))})[
        "p"
    ]


def bench_key(cfg: ExperimentConfig, clf: Classifier, o: TaintRadarOptions) -> str:
    """The cache folder of one model's run: its data and set options, and the weights' hash, not only the model's
    name (retrained or re-stored weights never reuse another's patches and scores)."""
    opts = {k: getattr(o, k) for k in SET_KEYS}
    ds_kwargs = dataset_kwargs(cfg, cfg.model)
    return cache_key(
        cfg.model, clf.name, weights_hash(clf.model), cfg.dataset, cfg.split, cfg.n_images, cfg.seed, ds_kwargs, opts
    )


def prepare(cfg: ExperimentConfig, o: TaintRadarOptions, cache: Path, progress: bool) -> Bench:
    """Load the model, build (or read) the clean sets, set up TaintRadar and SentiNet and choose their operating
    points on the calibration images."""
    clf: Classifier = load_model(cfg.model, device=cfg.device)
    ds_kwargs = dataset_kwargs(cfg, cfg.model)
    folder = cache / "taintradar" / bench_key(cfg, clf, o)
    folder.mkdir(parents=True, exist_ok=True)
    sets = CleanSets.from_arrays(cached_arrays(folder / "clean-sets.npz", lambda: clean_sets(cfg, clf, o, ds_kwargs)))
    tr = TaintRadar(
        clf, fill=o.fill, layer=o.layer, k_max=o.k_max, batch_size=o.detector_batch, seed=cfg.seed, progress=progress
    )
    k_max: int = tr.params["k_max"]
    dkey = cache_key(o.fill, tr.params["layer"], k_max)
    sn = SentiNet(clf, n_test=o.sentinet_n_test, batch_size=o.detector_batch, seed=cfg.seed, progress=progress)
    sn.test_images_ = torch.from_numpy(sets.sentinet_test)
    r_cal = rank_changes(tr, folder, dkey, k_max, "calibration", sets.calibration)
    r_eval = rank_changes(tr, folder, dkey, k_max, "eval-clean", sets.eval_clean)
    p_cal = sentinet_points(sn, folder, "calibration", sets.calibration)
    p_eval = sentinet_points(sn, folder, "eval-clean", sets.eval_clean)
    sn._fit_features(p_cal)
    s_cal, s_eval = sn.statistic(p_cal), sn.statistic(p_eval)
    ops = {fpr: operating_point(tr, r_cal, r_eval, s_cal, s_eval, fpr) for fpr in o.fprs}
    assert tr.fpr_table_ is not None
    return Bench(cfg, o, clf, ds_kwargs, folder, sets, tr, sn, dkey, k_max, r_cal, r_eval, s_eval, ops, tr.fpr_table_)


def operating_point(
    tr: TaintRadar, r_cal: Array, r_eval: Array, s_cal: Array, s_eval: Array, fpr: float
) -> OperatingPoint:
    """Fit TaintRadar at ``fpr`` on the calibration rank changes (it keeps that fit) and take SentiNet's threshold
    there; both held-out FPRs."""
    tr.fpr = fpr
    tr.fit_features(r_cal)
    assert tr.k_ is not None and tr.delta_r_ is not None
    threshold = threshold_at_fpr(s_cal, fpr)
    return {
        "k": tr.k_,
        "delta_r": tr.delta_r_,
        "sentinet_threshold": threshold,
        "taintradar_eval_fpr": float((r_eval[:, tr.k_ - 1] > tr.delta_r_).mean()),
        "sentinet_eval_fpr": float((s_eval > threshold).mean()),
    }


def training_label(setting: Setting, size_range: list[float]) -> str:
    """The cache folder of a setting's patches. A multiple-size patch is trained at sizes drawn from
    ``size_range`` whatever the size it is applied at (up to the range's top), so the grid's patch sizes share
    one set of multiple-size patches per batch size (trained once, applied at 0.2 / 0.3 / 0.4)."""
    if setting.get("multi_size") and not setting["variant"] and float(setting["size"]) <= size_range[1]:
        return f"multi-b{setting['batch']}"
    return setting["label"]


def positions(o: TaintRadarOptions, setting: Setting) -> list[str]:
    """The positions a setting's patches are applied at (its own, else the grid's)."""
    return [setting["position"]] if "position" in setting else o.positions


def patch_cell(
    b: Bench,
    setting: Setting,
    folder: Path,
    progress: bool,
    attack: type[AdversarialPatch] = AdversarialPatch,
    **extra: Any,
) -> dict[str, Array]:
    """Train the setting's patches (cached one by one) and apply each at every position (``first_patch``: the
    first patch); ``attack`` and ``extra`` (keyword arguments) choose the patch attack (the region-misleading one
    takes ``lam``, ...). Patch j is trained on victim batch j with seed j: the patches are independent tasks (in
    this process, or Ray tasks under ``--executor ray``); applying them is cheap and stays here."""
    o, bs, clf = b.o, int(setting["batch"]), b.clf
    victims = b.sets.victims
    xv, yv = torch.from_numpy(victims), torch.from_numpy(b.sets.victims_y)
    where = positions(o, setting)
    kwargs: dict[str, Any] = dict(
        target=o.target,
        size=float(setting["size"]),
        shape=setting.get("shape", "square"),
        multi_size=bool(setting.get("multi_size", False)),
        size_range=(o.size_range[0], o.size_range[1]),
        steps=int(setting.get("steps") or o.steps),
        lr=float(o.lr),
        n_patches=int(setting.get("n_patches", 1)),
        progress=False,
        **extra,
    )

    def train(item: tuple[int, Array]) -> dict[str, Array]:
        j, xb = item
        ap = attack(clf, seed=j, **kwargs)
        ap.fit(xb)
        assert ap.patch_ is not None
        return {"patch": ap.patch_.numpy()}

    n = len(victims) // bs
    paths = [_patch_file(folder, j) for j in range(n)]
    trained = cached_map(
        train,
        paths,
        lambda j: (j, victims[j * bs : (j + 1) * bs]),
        classifier=clf,
        desc=f"patches {setting['label']}",
        progress=progress,
    )
    out: dict[str, list[Array]] = {f"{p}/{k}": [] for p in where for k in ("x_adv", "success", "mask")}
    patches = []
    for j, t in enumerate(trained):
        ap = attack(clf, seed=j, **kwargs)
        ap.patch_ = torch.from_numpy(t["patch"])
        patches.append(ap)
        sl = slice(j * bs, (j + 1) * bs)
        for p in where:
            ap.position = p
            res = ap(xv[sl], yv[sl])
            assert ap.last_masks_ is not None
            out[f"{p}/x_adv"].append(res.x_adv.numpy())
            out[f"{p}/success"].append(res.success.numpy())
            out[f"{p}/mask"].append(ap.last_masks_.numpy())
    res_ = {k: np.concatenate(v) for k, v in out.items()}
    if patches:
        assert patches[0].patch_ is not None
        res_["first_patch"] = patches[0].patch_.numpy()
        if not (folder / "patch-0000.png").exists():
            patches[0].save_png(folder / "patch-0000.png")
    return res_


def _patch_file(folder: Path, j: int) -> Path:
    """Patch j's cache entry, ``patch-<j>.npz``; a patch cached by earlier versions as ``patch-<j>.npy`` is adopted
    into it (verified first; the old file is left in place)."""
    path = folder / f"patch-{j:04d}.npz"
    legacy = path.with_suffix(".npy")
    if legacy.exists() and not path.exists():
        with cache_lock(path):
            arr = load_npy(legacy)  # None when corrupt (moved aside): the patch is trained again
            if arr is not None and not path.exists():
                save_entry(path, {"patch": arr})
    return path


def diagnostic_arrays(b: Bench, name: str, x: Array, patch: Array | None = None) -> dict[str, Array]:
    """TaintRadar's final intersections at every K = 1..k_max on images ``x`` (the first ones of a cached set, with
    the set's own noise stream, so the rank changes equal the cached ones): area, rank change, the label that rose
    most, and (``patch``: the images' patch masks) the area inside the patch. Cached."""
    inside = None if patch is None else patch.astype(bool)

    def go() -> dict[str, Array]:
        r = b.tr.analyse(x, list(range(1, b.k_max + 1)), stream=stream(name))
        fm = r.final_masks.numpy()
        a = {
            "area": fm.sum((2, 3)),
            "rank": r.rank_change.numpy(),
            "top_label": r.labels[:, 0].numpy(),
            "pixels": np.asarray(fm.shape[-2] * fm.shape[-1]),
        }
        if inside is not None:
            a["in_patch"] = (fm & inside[:, None]).sum((2, 3))
        return a

    return cached_arrays(b.folder / f"diagnostics-{cache_key(b.dkey, name, len(x), patch is not None)}.npz", go)


def misleading_setting(m: MisleadingOptions, lam: float) -> Setting:
    """The region-misleading patches' setting at weight ``lam`` (it is part of their cache key)."""
    return {
        "label": f"misleading lambda={float(lam):g}",
        "batch": int(m.batch),
        "size": float(m.size),
        "position": m.position,
        "steps": m.steps,
    }


def misleading_arrays(b: Bench, m: MisleadingOptions, lam: float, progress: bool) -> dict[str, Array]:
    """Figure 6's patches at weight ``lam`` (trained against TaintRadar's Grad-CAM layer), applied to their own
    victims: success, IoU of TaintRadar's estimated region with the patch, rank change at the fitted K. Cached."""
    layer, temp = b.tr.params["layer"], b.tr.params["temperature"]
    st = misleading_setting(m, lam)
    sfold = b.folder / "misleading" / cache_key(st, layer, temp)
    sfold.mkdir(parents=True, exist_ok=True)
    k = b.tr.k_
    assert k is not None

    def evaluate() -> dict[str, Array]:
        res = patch_cell(b, st, sfold, progress, RegionMisleadingPatch, lam=float(lam), layer=layer, temperature=temp)
        x_adv, mask = res[f"{m.position}/x_adv"], res[f"{m.position}/mask"]
        r = b.tr.analyse(x_adv, [k], stream=stream(st["label"]))
        return {
            "success": res[f"{m.position}/success"],
            "iou": iou(r.est_mask.numpy(), mask),
            "rank_change": r.rank_change[:, 0].numpy(),
        }

    return cached_arrays(sfold / f"eval-{cache_key(b.dkey, k)}.npz", evaluate)


BPDA_ROWS = (("localized attack, no detector term", 0.0), ("BPDA end-to-end", 1.0))


def bpda_arrays(b: Bench, bp: BpdaOptions, weight: float, progress: bool) -> dict[str, Array]:
    """Section VII-B's end-to-end attack on the first ``bp.n`` victims (``weight`` 0: the same localized attack
    without the detector term), targeted at ``target``. Cached."""
    n = int(bp.n)
    x, y = b.sets.victims[:n], b.sets.victims_y[:n]

    def go() -> dict[str, Array]:
        atk = TaintRadarBPDA(
            b.clf,
            b.tr,
            evasion_weight=weight,
            progress=progress,
            size=bp.size,
            position=bp.position,
            steps=bp.steps,
            lr=bp.lr,
            t_every=bp.t_every,
            check_every=bp.check_every,
            recheck=bp.recheck,
        )
        t0 = time.perf_counter()
        r = atk(x, y, np.full(n, b.o.target))
        assert isinstance(r, AdaptiveResult)
        assert r.misclassified is not None and r.recheck_evasion is not None and r.step is not None
        return {  # cached arrays, names unchanged: "success" the target reached (r.misclassified since issue #26)
            "success": r.misclassified.numpy(),
            "evaded": r.evaded.numpy(),  # the bypass: target reached and undetected (= r.success)
            "pred": r.pred_adv.numpy(),
            "recheck": r.recheck_evasion.numpy(),
            "step": r.step.numpy(),
            "l0": r.norms["l0"].numpy(),
            "seconds": np.asarray(time.perf_counter() - t0),
        }

    key = cache_key(b.dkey, b.tr.k_, b.tr.delta_r_, asdict(bp), weight, RECHECK_PROTOCOL)
    return cached_arrays(b.folder / f"bpda-{key}.npz", go)
