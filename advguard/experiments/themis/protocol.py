"""THEMIS's shared, cached steps: the run's plan (models, attacks, decision models), each target model's sets and
erase-and-restore outputs, the detectors fitted on them, and the adaptive attack's cached chunks.

1. Balanced sets (Section 5): the correctly classified images of the drawn subset are the clean set;
   with ``balanced = true`` each configured attack attacks a disjoint part of them, so the pooled
   adversarial set holds about one image per clean image. 80/20 train/test by clean-image id.
2. The (1 + n) softmax vectors of every image under n erase-and-restore draws are computed once
   with Telea inpainting and once with the 3x3 median baseline (cached); every table slices them:
   the n sweep uses the first n' draws (draws are independent, so this equals running with n').
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from ...advsets import AdvSet, fold_of
from ...detectors import EraseRestore, make_detector
from ...executors import cached_map
from ...models import load_model
from ..common import (
    build_sets,
    cache_key,
    cached_chunks,
    clean_set_key,
    dataset_kwargs,
    feature_key,
    features,
    forward_cost,
)
from ..config import DetectorSpec, ExperimentConfig
from .options import AdaptiveOptions, ClassifierSpec, ThemisOptions, classifier_specs

if TYPE_CHECKING:  # pragma: no cover
    from ...classifier import Classifier
    from ...detectors.base import Detector

RESTORES = ("telea", "median")

#: float64 features or scores, float32 softmax stacks, fold / id arrays
Floats = NDArray[np.floating[Any]]
Ints = NDArray[np.integer[Any]]
Bools = NDArray[np.bool_]
#: a row selection of :meth:`ModelData.raw`: a slice, a boolean mask or indices
Rows = slice | Bools | Ints


@dataclass(frozen=True)
class Plan:
    """What one run does, from the typed options: target models, draws, decision models, attack groups."""

    cfg: ExperimentConfig
    opts: ThemisOptions
    models: list[str]
    n: int
    #: the numbers of draws of Tables 4/5 (n included)
    ns: list[int]
    #: every decision model; ``classifiers``: those used in every table (``all_tables``)
    specs: list[ClassifierSpec]
    classifiers: list[ClassifierSpec]
    #: every attack label; ``cw``: those the detectors of Tables 3-5 train on; ``other``: the rest
    labels: list[str]
    cw: list[str]
    other: list[str]
    #: Table 1's detectors train on these attacks pooled (default all); the others are tested as unseen attacks
    pooled: list[str]

    @classmethod
    def from_config(cls, cfg: ExperimentConfig, opts: ThemisOptions) -> Plan:
        labels = [a.label for a in cfg.attacks]
        train_on = opts.train_on if opts.train_on is not None else [a.label for a in cfg.attacks if a.name == "cw-l2"]
        cw = [lab for lab in train_on if lab in labels]
        specs = classifier_specs(opts.classifiers)
        return cls(
            cfg=cfg,
            opts=opts,
            models=list(opts.models or [cfg.model]),
            n=opts.n,
            ns=sorted({int(v) for v in (opts.ns if opts.ns is not None else [opts.n])} | {opts.n}),
            specs=specs,
            classifiers=[c for c in specs if c["all_tables"]],
            labels=labels,
            cw=cw,
            other=[lab for lab in labels if lab not in cw],
            pooled=[
                lab for lab in (opts.table1_train_on if opts.table1_train_on is not None else labels) if lab in labels
            ],
        )


def chunk_size(x: Floats) -> int:
    """Images per chunk of Erase-and-Restore work: 256 CIFAR-sized images (up to 64 x 64), 16 larger ones."""
    return 256 if x.shape[-1] * x.shape[-2] <= 4096 else 16


def probs_cached(det: EraseRestore, x: Floats, path: Path, desc: str, progress: bool) -> tuple[Floats, dict[str, Any]]:
    """(N, 1 + n, C) float32 softmax outputs of ``x`` and its n restored variants, cached at ``path``."""
    clf = det.classifier

    def probs(xb: Floats) -> Floats:
        return det.probs(clf.validate(xb)).astype(np.float32)

    return cached_chunks(
        path,
        "probs",
        clf,
        x,
        probs,
        np.zeros((0, 1 + det.params["n"], clf.num_classes), np.float32),
        chunk=chunk_size(x),
        desc=desc,
        progress=progress,
    )


def set_probs(
    cfg: ExperimentConfig,
    clf: Classifier,
    x: Floats,
    set_key: str,
    n: int,
    restore: str,
    cache: Path,
    desc: str,
    progress: bool,
) -> tuple[Floats, dict[str, Any]]:
    """:func:`probs_cached` for one image set, with its own mask stream (seeded by the set's cache key: no two
    sets share masks), cached under that key."""
    seed = int(cache_key(cfg.seed, set_key, restore)[:8], 16)
    det = EraseRestore(clf, n=n, restore=restore, seed=seed)
    return probs_cached(det, x, cache / "themis-probs" / f"{cache_key(set_key, n, restore, seed)}.npz", desc, progress)


def feature_cost(clf: Classifier, x: Floats, n: int, restore: str) -> dict[str, Any]:
    """Erase-and-Restore's softmax outputs (the image and its ``n`` restored variants) on ``x``, timed now: ms per
    image and the number of images, as :func:`~advguard.experiments.common.forward_cost` times the floor."""
    det = EraseRestore(clf, n=n, restore=restore, progress=False)
    t = time.perf_counter()
    det.probs(clf.validate(x))
    return {"ms_per_image": 1000 * (time.perf_counter() - t) / len(x), "n_images": len(x)}


def native_threshold(det: EraseRestore) -> float:
    """The decision model's own cut: decision_function > 0 (SVM, AdaBoost) or P(adversarial) > 0.5."""
    return 0.0 if hasattr(det.estimator_, "decision_function") else 0.5


def calibrated_threshold(det: EraseRestore) -> float:
    """The fitted detector's threshold calibrated to its ``fpr`` on training clean images."""
    assert det.threshold_ is not None, "the detector is not fitted"
    return det.threshold_


def label_change_rate(probs: Floats) -> Floats:
    """Share of the n draws whose top-1 label differs from the original image's: the learning-free reference
    (flag an image whose label changes in a majority of draws; the issue's "~2 % FPR with 91-100 % of CW")."""
    top = probs.argmax(-1)
    rate: Floats = (top[:, 1:] != top[:, :1]).mean(1)
    return rate


def flat(p: Floats) -> Floats:
    """(N, k, C) probabilities as (N, k * C) float64 features."""
    return p.reshape(len(p), p.shape[1] * p.shape[2]).astype(np.float64)


@dataclass
class ExtraClean:
    """Correctly classified clean images of the train split (``extra_clean_train``): their E&R outputs per
    restore, their fold (0: added to the training clean images of ``extra_clean`` rows, 1: held out) and what was
    drawn (results.json's ``sets.<model>.extra_clean``)."""

    probs: dict[str, Floats] = field(default_factory=dict)
    fold: Ints = field(default_factory=lambda: np.zeros(0, dtype=int))
    info: dict[str, Any] = field(default_factory=dict)


class ModelData:
    """Everything one target model contributes: sets, folds and cached erase-and-restore outputs."""

    def __init__(self, cfg: ExperimentConfig, opts: ThemisOptions, model: str, cache: Path, progress: bool):
        self.name = model
        self.clf = clf = load_model(model, device=cfg.device)
        ds_kwargs = dataset_kwargs(cfg, model)
        self.sets: dict[str, AdvSet] = build_sets(
            cfg, clf, ds_kwargs, cache, progress, model=model, balanced=opts.balanced
        )
        self.first = first = next(iter(self.sets.values()))
        self.fold_c: Ints = fold_of(first.clean_ids, cfg.fractions, cfg.seed)
        self.fold_a: dict[str, Ints] = {
            lab: fold_of(s.adv_ids, cfg.fractions, cfg.seed) for lab, s in self.sets.items()
        }
        ckey = clean_set_key(cfg, first, ds_kwargs)
        #: restore -> "clean" or attack label -> (N, 1 + n, C) softmax outputs
        self.P: dict[str, dict[str, Floats]] = {}
        self.cost: dict[str, dict[str, Any]] = {}
        self._load_probs(cfg, opts.n, ckey, cache, progress)
        self.extra = ExtraClean()
        #: cross-validated params per (label, attacks, n, restore): :func:`fit`
        self.grid_best: dict[tuple[str, tuple[str, ...], int, str], dict[str, Any]] = {}
        if opts.extra_clean_train:
            self.extra = self._extra_clean(cfg, opts.extra_clean_train, opts.n, ds_kwargs, cache, progress)
        # the cost table's two figures, measured side by side on the same images in this run: the feature's cost
        # (what the cached probabilities took to build was measured in another run, under other load) and the
        # plain forward pass it is compared with
        few = first.x_clean[: chunk_size(first.x_clean)]
        self.floor = forward_cost(clf, few)
        self.cost_now = {restore: feature_cost(clf, few, opts.n, restore) for restore in RESTORES}
        #: comparison detectors of the harness (unsupervised, calibrated on training clean images)
        self.compare: dict[str, dict[str, Floats]] = {
            d: self._compare_features(cfg, d, ckey, cache) for d in opts.compare
        }

    def _load_probs(self, cfg: ExperimentConfig, n: int, ckey: str, cache: Path, progress: bool) -> None:
        sources = [("clean", self.first.x_clean, ckey)] + [(lab, s.x_adv, s.key) for lab, s in self.sets.items()]
        for restore in RESTORES:
            self.P[restore] = {}
            for lab, x, key in sources:
                desc = f"{self.name} E&R {restore} {lab}"
                self.P[restore][lab], c = set_probs(cfg, self.clf, x, key, n, restore, cache, desc, progress)
                if lab == "clean":
                    self.cost[restore] = c

    def _extra_clean(
        self, cfg: ExperimentConfig, k: int, n: int, ds_kwargs: dict[str, Any], cache: Path, progress: bool
    ) -> ExtraClean:
        from ...data import load_dataset

        kw = {key: v for key, v in ds_kwargs.items() if key != "source"}
        ds = load_dataset(cfg.dataset, "train", limit=k, seed=cfg.seed, **kw)
        keep = self.clf.predict(ds.x).numpy() == ds.y
        # the dataset's own indices (stable per draw) through the same seeded hash as the test images' ids
        fold = fold_of(np.asarray(ds.indices)[keep], cfg.fractions, cfg.seed)
        info = {
            "split": "train",
            "source": ds.source,
            "drawn": int(len(ds.x)),
            "correct": int(keep.sum()),
            "fit": int((fold == 0).sum()),
            "held_out": int((fold == 1).sum()),
        }
        tkey = cache_key("extra-clean-train", cfg.dataset, ds.source, k, cfg.seed, self.first.config.get("weights"))
        probs = {}
        for restore in RESTORES:
            desc = f"{self.name} E&R {restore} train-split clean"
            probs[restore], _ = set_probs(cfg, self.clf, ds.x[keep], tkey, n, restore, cache, desc, progress)
        return ExtraClean(probs, fold, info)

    def _compare_features(self, cfg: ExperimentConfig, d: str, ckey: str, cache: Path) -> dict[str, Floats]:
        spec_d = DetectorSpec(d, d)
        det = make_detector(d, self.clf, fpr=cfg.fpr, seed=cfg.seed)
        path = cache / "features" / f"{feature_key(spec_d, ckey, 'clean')}.npz"
        out = {"clean": features(det, self.first.x_clean, path, f"{self.name} {d} clean")[0]}
        for lab, s in self.sets.items():
            path = cache / "features" / f"{feature_key(spec_d, s.key, 'adv')}.npz"
            out[lab] = features(det, s.x_adv, path, f"{self.name} {d} {lab}")[0]
        return out

    def raw(self, which: str, n_use: int, restore: str = "telea", rows: Rows = slice(None)) -> Floats:
        """Raw E&R feature (N, (1 + n_use) * C) of ``which`` ("clean" or an attack label), only ``rows``
        (selected before the float64 copy, which matters for 1,000-class stacks)."""
        return flat(self.P[restore][which][rows, : 1 + n_use])

    def extra_raw(self, n_use: int, restore: str = "telea", fold: int = 0) -> Floats:
        """Raw E&R features of the extra clean images from the train split in ``fold`` (0: added to the training
        clean images of ``extra_clean`` rows; 1: held out to measure every row's FPR on images the target model
        was trained on); (0, d) when there are none."""
        p = self.extra.probs.get(restore)
        if p is None:
            return np.zeros((0, (1 + n_use) * self.clf.num_classes))
        return flat(p[self.extra.fold == fold, : 1 + n_use])

    def train_test(self, which: str, fold: int, n_use: int, restore: str = "telea") -> Floats:
        f = self.fold_c if which == "clean" else self.fold_a[which]
        return self.raw(which, n_use, restore, f == fold)


def _grid_search(spec: ClassifierSpec, f: Floats, y: Ints, seed: int) -> dict[str, Any]:
    """Best ``spec["grid"]`` values by 5-fold stratified cross-validated ROC AUC on the training features."""
    from sklearn.model_selection import GridSearchCV, StratifiedKFold
    from sklearn.pipeline import Pipeline

    from ...detectors.decision import make_decision_model

    est = make_decision_model(spec["model"], seed=seed, **spec["params"])
    prefix = est.steps[-1][0] + "__" if isinstance(est, Pipeline) else ""
    gs = GridSearchCV(
        est,
        {prefix + k: v for k, v in spec["grid"].items()},
        scoring="roc_auc",
        cv=StratifiedKFold(5, shuffle=True, random_state=seed),
        n_jobs=1,
    ).fit(f, y)
    return {k[len(prefix) :]: (v.item() if isinstance(v, np.generic) else v) for k, v in gs.best_params_.items()}


@dataclass
class Fitted:
    """A fitted detector and the decision model's params it was fitted with (the grid's best included)."""

    det: EraseRestore
    params: dict[str, Any]


def fit(
    md: ModelData, attacks: list[str], spec: ClassifierSpec, n_use: int, cfg: ExperimentConfig, restore: str = "telea"
) -> Fitted:
    """The detector of decision model ``spec`` on ``md``'s training clean images and ``attacks``' training
    adversarial images pooled, with the first ``n_use`` draws of ``restore``."""
    f_clean = md.train_test("clean", 0, n_use, restore)
    if spec["extra_clean"]:
        f_clean = np.concatenate([f_clean, md.extra_raw(n_use, restore)])
    f_adv = np.concatenate([md.train_test(a, 0, n_use, restore) for a in attacks])
    params = dict(spec["params"])
    if spec["grid"]:
        key = (spec["label"], tuple(attacks), n_use, restore)
        if key not in md.grid_best:
            probe = EraseRestore(md.clf, n=n_use, restore=restore, align=spec["align"])
            f = probe._reduce(np.concatenate([f_clean, f_adv]))
            md.grid_best[key] = _grid_search(
                spec, f, np.r_[np.zeros(len(f_clean)), np.ones(len(f_adv))].astype(int), cfg.seed
            )
        params.update(md.grid_best[key])
    det = EraseRestore(
        md.clf,
        n=n_use,
        restore=restore,
        decision_model=spec["model"],
        decision_params=params or None,
        align=spec["align"],
        fpr=cfg.fpr,
        seed=cfg.seed,
    )
    det.fit_features(f_clean, f_adv)
    return Fitted(det, params)


def score(det: Detector, f: Floats) -> Floats:
    """``det.score_features(f)``; empty for no images (scikit-learn refuses empty arrays)."""
    return det.score_features(f) if len(f) else np.zeros(0)


# ==================================================================== adaptive attack (Figure 6): cached chunks
#: the per-image arrays of one adaptive run (each chunk's, concatenated)
ADAPTIVE_ARRAYS = ("restart", "step", "evaded", "recheck", "l2", "success")


@dataclass
class AdaptiveRun:
    """One adaptive run's outcome: the plain detector's false alarms on the attacked clean images, the per-image
    arrays (:data:`ADAPTIVE_ARRAYS`) of every chunk concatenated, and the chunks' attack seconds."""

    n_images: int
    clean_flag: Bools
    arrays: dict[str, NDArray[Any]]
    seconds: float


def adaptive_run(
    cfg: ExperimentConfig, a: AdaptiveOptions, md: ModelData, det: EraseRestore, cache: Path, progress: bool
) -> AdaptiveRun:
    """:class:`~advguard.attacks.adaptive.DetectorAwareCW` at the detector's own decision (set on ``det``) on the
    first ``a.n_images`` clean test images (never seen by the detector), in chunks of 10 cached under
    ``cache/themis-adaptive`` (resumable)."""
    from ...attacks import shifted_targets
    from ...attacks.adaptive import RECHECK_PROTOCOL, AdaptiveResult, DetectorAwareCW

    params = a.attack_params()
    det.threshold_ = native_threshold(det)  # the paper's operating point: the SVM's own decision
    test = np.flatnonzero(md.fold_c == 1)[: int(a.n_images)]  # clean test images: never seen by the detector
    x, y = md.first.x_clean[test], md.first.y_clean[test]
    t = shifted_targets(y, md.clf.num_classes, 1).numpy()
    # the plain detector on these clean images (its false alarms are not bypasses to be won)
    clean_flag = det.score_features(md.raw("clean", det.params["n"], rows=test)) > det.threshold_
    chunk = 10
    starts = list(range(0, len(x), chunk))
    clf = md.clf  # what the chunk function closes over is shipped with it: the classifier, never all of ``md``

    def build(i: int) -> dict[str, NDArray[Any]]:
        """The chunk of images starting at ``i`` (its attack seeded by ``i``: any worker computes the same)."""
        t0 = time.perf_counter()
        atk = DetectorAwareCW(clf, det, seed=cfg.seed + i, progress=progress, **params)
        r = atk(x[i : i + chunk], y[i : i + chunk], t[i : i + chunk])
        assert isinstance(r, AdaptiveResult)
        return dict(
            restart=_np(r.restart),
            step=_np(r.step),
            evaded=_np(r.evaded),  # the bypass (= r.success since issue #26)
            recheck=_np(r.recheck_evasion),
            l2=r.norms["l2"].numpy(),
            success=_np(r.misclassified),  # the cached array keeps its name: the target reached, detector or not
            seconds=np.asarray(time.perf_counter() - t0),
        )

    def path(i: int) -> Path:
        key = cache_key(
            md.first.config["weights"], md.first.key, params, test[i : i + chunk].tolist(), cfg.seed, RECHECK_PROTOCOL
        )
        return cache / "themis-adaptive" / f"{key}.npz"

    # each chunk an independent task (in this process, or a Ray task under --executor ray), verified and locked
    # (advguard.data.cache): a corrupt chunk is named, moved aside and recomputed
    parts = cached_map(
        build,
        [path(i) for i in starts],
        lambda j: starts[j],
        classifier=clf,
        desc="adaptive attack chunks",
        progress=progress,
    )
    return AdaptiveRun(
        n_images=int(len(x)),
        clean_flag=clean_flag,
        arrays={k: np.concatenate([p[k] for p in parts]) for k in ADAPTIVE_ARRAYS},
        seconds=float(sum(float(p["seconds"]) for p in parts)),
    )


def _np(t: Any) -> NDArray[Any]:
    """A tensor field the adaptive attack always sets, as an array."""
    assert t is not None
    arr: NDArray[Any] = t.numpy()
    return arr
