"""Benchmark configuration: a TOML file (or a dict) describing the grid {attacks} x {detectors} x {decision models}."""
from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

from ..advsets import ROUNDTRIPS
from ..data import cifar10
from ..errors import AdvguardError, unknown_name

TOP_KEYS = {"name", "title", "dataset", "split", "model", "n_images", "seed", "fractions", "fpr", "roundtrip",
            "out", "attack", "detector", "dataset_kwargs", "chunk_size", "bootstrap", "experiment", "imageops", "cnn", "themis",
            "segfault", "taintradar", "blurnet"}
#: experiments: "grid" = {attacks} x {detectors} x {decision models}, one cell per attack (the default);
#: "imageops" = Nguyen et al.'s protocol (all attacks pooled, 70/15/15 train/dev/eval, Tables 1 and 3-6)
#: "themis" = Erase-and-Restore's protocol (balanced clean/adversarial sets on one or more target models,
#: Tables 1-6 of the paper, see :mod:`advguard.bench.themis_experiment`)
#: "segfault" = ML-LOO / Segmentation Fault's protocol (occlusion units x feature flavours x decision models,
#: attack families pooled over their epsilons, Tables 2, 6, 7 and Figure 3, see
#: :mod:`advguard.bench.segfault_experiment`)
#: "taintradar" = TaintRadar's protocol (adversarial-patch grid x SentiNet / TaintRadar, Table II, Figures 3a
#: and 4, see :mod:`advguard.bench.taintradar_experiment`); its [[attack]]s are optional L2 / L-inf extras
#: "blurnet" = BlurNet's protocol (RP2 stickers on stop signs against defended models, Tables 1 and 2,
#: Figures 1, 2 and 4, see :mod:`advguard.bench.blurnet_experiment`); it needs no [[attack]]
EXPERIMENTS = ("grid", "imageops", "themis", "segfault", "taintradar", "blurnet")
IMAGEOPS_KEYS = {"k", "ks", "classifiers", "families"}
THEMIS_KEYS = {"models", "classifiers", "ns", "balanced", "adaptive", "compare", "n", "train_on"}
ADAPTIVE_KEYS = {"label", "n_images", "restarts", "steps", "check_every", "confidence", "stepsize", "const",
                 "init_noise"}
SEGFAULT_KEYS = {"classifiers", "pixel_classifiers", "baseline", "statistic", "batch_images", "unit"}
UNIT_KEYS = {"label", "unit", "params"}
#: [taintradar] options and their defaults (the paper's ImageNet protocol)
TAINTRADAR_DEFAULTS = {"n_victims": 400, "n_calibration": 200, "n_eval_clean": 400, "target": 859,
                       "batch_sizes": [1, 4, 16], "multi_size": [False, True], "sizes": [0.2, 0.3, 0.4],
                       "positions": ["bottom-right", "random"], "steps": 500, "lr": 0.05, "fprs": [0.06, 0.03],
                       "fill": "noise", "layer": None, "k_max": None, "sentinet_n_test": 100, "variants": [],
                       "size_range": [0.1, 0.5], "detector_batch": None, "misleading": None, "bpda": None,
                       "models": None, "diagnostics": 0}
TAINTRADAR_KEYS = set(TAINTRADAR_DEFAULTS)
#: an entry of [taintradar] models (issue #22's ablation): a zoo name, or a table naming the model, the Grad-CAM
#: layer TaintRadar uses (default: [taintradar] layer, else the model's), a row label and a note (the setting)
TAINTRADAR_MODEL_KEYS = {"model", "layer", "label", "note"}
#: [taintradar.misleading]: Section VII-B's region-misleading patches (Figure 6), one row per lambda; ``steps``
#: None = the grid's
MISLEADING_DEFAULTS = {"lambdas": [0.0, 0.2, 0.4, 0.6, 0.8, 0.9], "batch": 16, "size": 0.3,
                       "position": "bottom-right", "steps": None}
#: [taintradar.bpda]: Section VII-B's end-to-end attack on the first ``n`` victims (the paper: 200 images, 7 %
#: of the image, 2000 Adam steps, t + 1 every 100)
BPDA_DEFAULTS = {"n": 200, "size": 0.07, "position": "random", "steps": 2000, "lr": 0.1, "t_every": 100,
                 "check_every": 50, "recheck": 5}
#: [blurnet] options and their defaults (the paper's protocol on GTSRB)
BLURNET_DEFAULTS = {"stop_class": 14, "n_signs": 40, "targets": "all", "lam": 0.002, "steps": 300, "lr": 0.05,
                    "mask": "rp2-rectangles", "n_transforms": 1, "chunk": 7, "eval_views": 10, "l1_mask": True,
                    "l1_share": 0.1, "spectra_blur": 5,
                    "blackbox": ["gtsrb-cnn-input-blur3", "gtsrb-cnn-input-blur5", "gtsrb-cnn-feature-blur3",
                                 "gtsrb-cnn-feature-blur5"],
                    "whitebox": ["gtsrb-cnn-dw3", "gtsrb-cnn-dw5", "gtsrb-cnn-dw7", "gtsrb-cnn-tv1e-4",
                                 "gtsrb-cnn-tv1e-5"]}
VARIANT_KEYS = {"label", "batch", "size", "shape", "n_patches", "position", "multi_size"}
CNN_KEYS = {"label", "backbone", "softmax_in_training", "epochs", "lr", "batch_size", "widths"}
ATTACK_KEYS = {"name", "label", "params", "target_shift", "group"}
DETECTOR_KEYS = {"name", "label", "params", "decision_models"}


class ConfigError(AdvguardError, ValueError):
    """A benchmark configuration is invalid; the message names the file and key."""


@dataclass
class AttackSpec:
    name: str
    label: str
    params: dict = field(default_factory=dict)
    target_shift: int | None = None
    #: attacks sharing a group form one attack family (pooled; the segfault experiment splits the clean
    #: images between its members)
    group: str | None = None


@dataclass
class DetectorSpec:
    name: str
    label: str
    params: dict = field(default_factory=dict)
    decision_models: list[str] = field(default_factory=list)


@dataclass
class BenchConfig:
    name: str
    dataset: str
    model: str
    attacks: list[AttackSpec]
    detectors: list[DetectorSpec]
    title: str = ""
    split: str = "test"
    n_images: int | None = 1000
    seed: int = 0
    fractions: tuple[float, float] = (0.8, 0.2)
    fpr: float = 0.05
    roundtrip: str | None = None
    out: str | None = None
    dataset_kwargs: dict = field(default_factory=dict)
    chunk_size: int = 256
    bootstrap: int = 1000
    experiment: str = "grid"
    imageops: dict = field(default_factory=dict)
    cnn: list[dict] = field(default_factory=list)
    themis: dict = field(default_factory=dict)
    segfault: dict = field(default_factory=dict)
    taintradar: dict = field(default_factory=dict)
    blurnet: dict = field(default_factory=dict)
    source_text: str = ""


# ------------------------------------------------------------------------------------------ validation
# The whole document is checked before any work starts: types, ranges, names against their registries,
# model/dataset compatibility. Every problem is collected (one line each, naming its key as
# ``section.key`` / ``attack[2].params``) and one ConfigError lists them all.


class _Problems:
    def __init__(self) -> None:
        self.items: list[str] = []

    def add(self, key: str, msg: str) -> None:
        self.items.append(f"{key}: {msg}" if key else msg)


def _join(base: str, key) -> str:
    if isinstance(key, int):
        return f"{base}[{key + 1}]"
    return f"{base}.{key}" if base else str(key)


def _kind(v) -> str:
    if isinstance(v, bool):
        return "a boolean"
    return {int: "an integer", float: "a number", str: "a string", list: "an array", dict: "a table"}.get(
        type(v), type(v).__name__)


class _Spec:
    """A value's expected type and range; ``check`` adds one problem per violation to ``P``."""

    types: tuple = ()

    def type_ok(self, v) -> bool:
        return isinstance(v, self.types) and (bool in self.types or not isinstance(v, bool))

    def check(self, v, key: str, P: _Problems) -> bool:  # pragma: no cover - abstract
        raise NotImplementedError


class _Int(_Spec):
    types = (int,)

    def __init__(self, lo: int | None = None, hi: int | None = None):
        self.lo, self.hi = lo, hi

    def check(self, v, key, P):
        if isinstance(v, bool) or not isinstance(v, int):
            P.add(key, f"must be an integer, got {_kind(v)} {v!r}")
            return False
        if (self.lo is not None and v < self.lo) or (self.hi is not None and v > self.hi):
            rng = (f"at least {self.lo}" if self.hi is None else f"at most {self.hi}" if self.lo is None
                   else f"in {self.lo}..{self.hi}")
            P.add(key, f"must be {rng}, got {v}")
            return False
        return True


class _Num(_Spec):
    """A real number (TOML integer or float) in a range; ``open_lo``/``open_hi`` exclude the ends."""

    types = (int, float)

    def __init__(self, lo: float | None = None, hi: float | None = None, open_lo: bool = False,
                 open_hi: bool = False, what: str = ""):
        self.lo, self.hi, self.open_lo, self.open_hi, self.what = lo, hi, open_lo, open_hi, what

    def check(self, v, key, P):
        import math

        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            P.add(key, f"must be a finite number, got {_kind(v)} {v!r}")
            return False
        bad_lo = self.lo is not None and (v <= self.lo if self.open_lo else v < self.lo)
        bad_hi = self.hi is not None and (v >= self.hi if self.open_hi else v > self.hi)
        if bad_lo or bad_hi:
            if self.lo is not None and self.hi is not None:
                rng = f"in {'(' if self.open_lo else '['}{self.lo}, {self.hi}{')' if self.open_hi else ']'}"
            elif self.lo is not None:
                rng = f"{'>' if self.open_lo else '>='} {self.lo}"
            else:
                rng = f"{'<' if self.open_hi else '<='} {self.hi}"
            P.add(key, f"must be {self.what or rng}, got {v}")
            return False
        return True


class _Str(_Spec):
    """A string; with ``registry``, one of its names (``kind`` names the registry in the message)."""

    types = (str,)

    def __init__(self, registry=None, kind: str = "", nonempty: bool = False):
        self.registry, self.kind, self.nonempty = registry, kind, nonempty

    def check(self, v, key, P):
        if not isinstance(v, str):
            P.add(key, f"must be a string, got {_kind(v)} {v!r}")
            return False
        if self.nonempty and not v.strip():
            P.add(key, "must not be empty")
            return False
        if self.registry is not None and v not in self.registry:
            P.add(key, str(unknown_name(self.kind, v, [str(n) for n in self.registry])))
            return False
        return True


class _Bool(_Spec):
    types = (bool,)

    def check(self, v, key, P):
        if not isinstance(v, bool):
            P.add(key, f"must be true or false, got {_kind(v)} {v!r}")
            return False
        return True


class _Any(_Spec):
    def check(self, v, key, P):
        return True


class _List(_Spec):
    types = (list,)

    def __init__(self, item: _Spec, min_len: int = 0, length: int | None = None, hint: str = ""):
        self.item, self.min_len, self.length, self.hint = item, min_len, length, hint

    def check(self, v, key, P):
        if not isinstance(v, list):
            P.add(key, f"must be an array{self.hint}, got {_kind(v)} {v!r}")
            return False
        if self.length is not None and len(v) != self.length:
            P.add(key, f"must have exactly {self.length} items, got {len(v)}")
            return False
        if len(v) < self.min_len:
            P.add(key, f"needs at least {self.min_len} item(s), got {len(v)}")
            return False
        return all([self.item.check(x, _join(key, i), P) for i, x in enumerate(v)])


class _Table(_Spec):
    """A TOML table with known keys (``schema``; ``None`` = any key, any value) and ``required`` ones."""

    types = (dict,)

    def __init__(self, schema: dict[str, _Spec] | None, required: tuple[str, ...] = (), what: str = "a table",
                 hint: str = ""):
        self.schema, self.required, self.what, self.hint = schema, required, what, hint

    def check(self, v, key, P):
        if not isinstance(v, dict):
            P.add(key, f"must be {self.what}{self.hint}, got {_kind(v)} {v!r}")
            return False
        ok = True
        if self.schema is not None:
            for k in sorted(set(v) - set(self.schema), key=str):
                P.add(_join(key, k), _unknown_key(k, set(self.schema)))
                ok = False
        for k in self.required:
            if k not in v:
                P.add(_join(key, k), "missing required key")
                ok = False
        for k, spec in (self.schema or {}).items():
            if k in v:
                ok = spec.check(v[k], _join(key, k), P) and ok
        return ok


class _OneOf(_Spec):
    def __init__(self, *specs: _Spec, what: str):
        self.specs, self.what = specs, what

    def check(self, v, key, P):
        for s in self.specs:
            trial = _Problems()
            if s.check(v, key, trial):
                return True
        typed = [s for s in self.specs if s.type_ok(v)]
        if len(typed) == 1:  # the right kind of value with a wrong part: report that part
            return typed[0].check(v, key, P)
        P.add(key, f"must be {self.what}, got {_kind(v)} {v!r}")
        return False


def _unknown_key(k, allowed: set[str]) -> str:
    import difflib

    close = difflib.get_close_matches(str(k), sorted(allowed), 1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return f"unknown key {str(k)!r}{hint}; allowed: {', '.join(sorted(allowed))}"


def _check_keys(d: dict, allowed: set[str], where: str) -> None:
    bad = sorted(set(d) - allowed)
    if bad:
        import difflib

        hints = [f"{b!r} (did you mean {difflib.get_close_matches(b, allowed, 1)[0]!r}?)"
                 if difflib.get_close_matches(b, allowed, 1) else repr(b) for b in bad]
        raise ConfigError(f"{where}: unknown key(s) {', '.join(hints)}; allowed: {', '.join(sorted(allowed))}")


POS_INT, NONNEG_INT, POS_NUM = _Int(1), _Int(0), _Num(0, open_lo=True)
SHARE = _Num(0, 1, open_lo=True, open_hi=True)  # a share of the image area / a rate, strictly inside (0, 1)
TABLES_HINT = " of tables: write [[{0}]] (double brackets) for each entry, not [{0}]"


def _schemas() -> dict[str, _Spec]:
    """The type schema of every section, built from the registries (imported lazily)."""
    from ..attacks import ATTACKS
    from ..attacks.patch import POSITIONS, SHAPES
    from ..attacks.rp2 import INITS, MASKS, PRESETS
    from ..data import DATASETS
    from ..detectors import DECISION_MODELS, DETECTORS
    from ..detectors.cnn import BACKBONES
    from ..detectors.loo import BASELINES, STATISTICS, UNITS
    from ..detectors.taintradar import FILLS
    from ..models import ZOO
    from ..transforms import FAMILY_SETS

    dm = _Str(DECISION_MODELS, "decision model")
    zoo = _Str(ZOO, "model")
    adaptive = _Table({"label": _Str(), "n_images": POS_INT, "restarts": POS_INT, "steps": POS_INT,
                       "check_every": POS_INT, "confidence": _Num(0), "stepsize": POS_NUM, "const": POS_NUM,
                       "init_noise": _Num(0, 1)})
    themis_clf = _OneOf(dm, _Table({"label": _Str(nonempty=True), "model": dm, "params": _Table(None),
                                    "grid": _Table(None), "align": _Bool(), "extra_clean": _Bool(),
                                    "all_tables": _Bool()}, required=("model",)),
                        what="a decision model name or a table {model, label, params, grid, align, extra_clean, "
                             "all_tables}")
    return {
        "top": _Table({
            "name": _Str(nonempty=True), "title": _Str(), "dataset": _Str(DATASETS, "dataset"), "split": _Str(),
            "model": zoo, "n_images": POS_INT, "seed": _Int(0, 2 ** 32 - 1),
            "fractions": _List(SHARE, min_len=2), "fpr": SHARE,
            "roundtrip": _OneOf(_Str([r for r in ROUNDTRIPS if r] + [""], "round trip"), _Bool(),
                                what=f"one of {', '.join(repr(r) for r in ROUNDTRIPS if r)} (or false)"),
            "out": _Str(nonempty=True),
            "attack": _List(_Table({"name": _Str(ATTACKS, "attack"), "label": _Str(nonempty=True),
                                    "params": _Table(None), "target_shift": _Int(1), "group": _Str(nonempty=True)},
                                   required=("name",)), hint=TABLES_HINT.format("attack")),
            "detector": _List(_Table({"name": _Str(DETECTORS, "detector"), "label": _Str(nonempty=True),
                                      "params": _Table(None),
                                      "decision_models": _List(dm, hint=' of names, e.g. ["svc"]')},
                                     required=("name",)), hint=TABLES_HINT.format("detector")),
            "dataset_kwargs": _Table(None), "chunk_size": POS_INT, "bootstrap": POS_INT,
            "experiment": _Str(EXPERIMENTS, "experiment"),
            "imageops": _Table({"k": POS_INT, "ks": _List(POS_INT), "classifiers": _List(dm),
                                "families": _List(_Str(FAMILY_SETS, "operation family"))}),
            "cnn": _List(_Table({"label": _Str(nonempty=True), "backbone": _Str(BACKBONES, "CNN detector backbone"),
                                 "softmax_in_training": _Bool(), "epochs": POS_INT, "lr": POS_NUM,
                                 "batch_size": POS_INT, "widths": _List(_List(POS_INT, min_len=1), min_len=1)}),
                         hint=TABLES_HINT.format("cnn")),
            "themis": _Table({"models": _List(zoo), "classifiers": _List(themis_clf), "ns": _List(POS_INT),
                              "extra_clean_train": POS_INT, "table1_train_on": _List(_Str(), min_len=1),
                              "learning_curve": _Table({"sizes": _List(POS_INT, min_len=1), "repeats": POS_INT,
                                                        "classifiers": _List(themis_clf, min_len=1)}),
                              "balanced": _Bool(), "n": POS_INT, "compare": _List(_Str(DETECTORS, "detector")),
                              "train_on": _List(_Str()),
                              "adaptive": _OneOf(adaptive, _List(adaptive),
                                                 what="a table [themis.adaptive] or tables [[themis.adaptive]]")}),
            "segfault": _Table({"classifiers": _List(dm), "pixel_classifiers": _List(dm),
                                "baseline": _Str(BASELINES, "occlusion baseline"),
                                "statistic": _Str(STATISTICS, "dispersion statistic"), "batch_images": POS_INT,
                                "timing_images": POS_INT,
                                "segment_counts": _Table({"images": POS_INT,
                                                          "value_ranges": _List(POS_NUM, min_len=1)}),
                                "unit": _List(_Table({"label": _Str(nonempty=True),
                                                      "unit": _Str(UNITS, "occlusion unit"), "params": _Table(None),
                                                      "paper": _Str(nonempty=True)},
                                                     required=("unit",)), min_len=1,
                                              hint=TABLES_HINT.format("segfault.unit"))}),
            "taintradar": _Table({
                "n_victims": POS_INT, "n_calibration": POS_INT, "n_eval_clean": POS_INT, "target": NONNEG_INT,
                "batch_sizes": _List(POS_INT, min_len=1), "multi_size": _List(_Bool(), min_len=1),
                "sizes": _List(SHARE, min_len=1), "positions": _List(_Str(POSITIONS, "patch position"), min_len=1),
                "steps": POS_INT, "lr": POS_NUM, "fprs": _List(SHARE, min_len=1),
                "fill": _Str(FILLS, "filling pattern"), "layer": _Str(nonempty=True), "k_max": POS_INT,
                "sentinet_n_test": POS_INT, "size_range": _List(SHARE, length=2), "detector_batch": POS_INT,
                "diagnostics": NONNEG_INT,
                "models": _List(_OneOf(zoo, _Table({"model": zoo, "layer": _Str(nonempty=True),
                                                    "label": _Str(nonempty=True), "note": _Str()},
                                                   required=("model",)),
                                       what='a zoo model name or a table {model = "...", layer = "...", '
                                            'label = "...", note = "..."}'), min_len=1),
                "variants": _List(_Table({"label": _Str(nonempty=True), "batch": POS_INT, "size": SHARE,
                                          "shape": _Str(SHAPES, "patch shape"), "n_patches": POS_INT,
                                          "position": _Str(POSITIONS, "patch position"), "multi_size": _Bool()}),
                                  hint=TABLES_HINT.format("taintradar.variants")),
                "misleading": _Table({"lambdas": _List(_Num(0, 1, what="weights in [0, 1]"), min_len=1), "batch": POS_INT, "size": SHARE,
                                      "position": _Str(POSITIONS, "patch position"), "steps": POS_INT}),
                "bpda": _Table({"n": POS_INT, "size": SHARE, "position": _Str(POSITIONS, "region position"),
                                "steps": POS_INT, "lr": POS_NUM, "t_every": POS_INT, "check_every": POS_INT,
                                "recheck": NONNEG_INT}),
            }),
            "blurnet": _Table({
                "stop_class": NONNEG_INT, "n_signs": POS_INT,
                "targets": _OneOf(_Str(["all"], "targets"), _List(NONNEG_INT, min_len=1),
                                  what='"all" or an array of class numbers'),
                "lam": _Num(0), "steps": POS_INT, "lr": POS_NUM, "mask": _Str(MASKS, "RP2 mask"),
                "n_transforms": POS_INT, "chunk": POS_INT, "eval_views": POS_INT, "l1_mask": _Bool(),
                "l1_share": _Num(0, 1, open_lo=True), "spectra_blur": POS_INT,
                "blackbox": _List(zoo), "whitebox": _List(zoo),
                # RP2 options (issue #22; advguard.attacks.RP2): a preset's values unless set here
                "preset": _Str(PRESETS, "RP2 preset"), "init": _Str(INITS, "RP2 init"), "transforms": _Bool(),
                "nps": _Bool(), "norm_p": _Int(1, 2), "clip": POS_NUM}),
        }, required=("name", "dataset", "model")),
    }


def validate_config(doc) -> list[str]:
    """Every problem of configuration ``doc``, one line each naming its key (empty when it is valid)."""
    from ..attacks import ATTACKS
    from ..data import DATASETS
    from ..detectors import DETECTORS
    from ..detectors.base import parameter_names
    from ..models import ZOO

    P = _Problems()
    if not isinstance(doc, dict):
        return [f"a configuration is a TOML table, got {_kind(doc)}"]
    if not _schemas()["top"].check(doc, "", P):
        bad_top = {item.split(":")[0].split(".")[0].split("[")[0] for item in P.items}
    else:
        bad_top = set()

    def ok(*keys: str) -> bool:  # the keys are present (or defaulted) and well-typed
        return not any(k in bad_top for k in keys)

    experiment = doc.get("experiment", "grid") if ok("experiment") else None
    dataset = doc.get("dataset") if ok("dataset") else None
    model = doc.get("model") if ok("model") else None
    info = DATASETS.get(dataset) if isinstance(dataset, str) else None
    n_classes = info.num_classes if info is not None and info.num_classes > 0 else None
    if n_classes is None and isinstance(model, str) and model in ZOO and ZOO[model].dataset in DATASETS:
        n_classes = DATASETS[ZOO[model].dataset].num_classes or None

    # the model is for this dataset (any zoo model may classify your own image-folder)
    def compatible(name: str, key: str) -> None:
        if info is not None and dataset != "image-folder" and name in ZOO and ZOO[name].dataset != dataset:
            P.add(key, f"model {name!r} is for dataset {ZOO[name].dataset!r}, not {dataset!r}")

    if model is not None and dataset is not None:
        compatible(model, "model")
    if info is not None and ok("split") and dataset != "image-folder" and "split" in doc \
            and doc["split"] not in info.splits:
        P.add("split", f"dataset {dataset!r} has no split {doc['split']!r}; splits: {', '.join(info.splits)}")
    if info is not None and ok("dataset_kwargs"):
        _check_dataset_kwargs(doc.get("dataset_kwargs", {}), dataset, info, P)

    attacks = doc.get("attack", []) if ok("attack") else None
    for i, a in enumerate(doc.get("attack") if isinstance(doc.get("attack"), list) else []):
        if isinstance(a, dict):
            key = _join("attack", i)
            name = a.get("name") if isinstance(a.get("name"), str) else None
            if name in ATTACKS and ATTACKS[name].targets_required and "target_shift" not in a:
                P.add(f"{key}.target_shift", f"{a['name']} is targeted only; give target_shift")
            params = a.get("params", {})
            names = getattr(ATTACKS[name], "parameters", None) if name in ATTACKS else None
            if isinstance(params, dict) and callable(names):
                allowed = set(names())
                for k in sorted(params, key=str):
                    if k in ("seed", "progress"):
                        P.add(f"{key}.params.{k}", f"{k} is set by the bench (seed: the config's top-level seed)")
                    elif k not in allowed:
                        P.add(f"{key}.params.{k}", f"{name} has no parameter {k!r}" + _did_you_mean(k, allowed)
                              + f"; its parameters: {', '.join(sorted(allowed - {'seed', 'progress'}))}")
            ts = a.get("target_shift")
            if isinstance(ts, int) and n_classes and ts % n_classes == 0:
                P.add(f"{key}.target_shift", f"{ts} is a multiple of the {n_classes} classes: every target would "
                      "be the true label")
    if attacks is not None:
        labels = [a.get("label", a.get("name")) for a in attacks]
        dup = sorted({str(x) for x in labels if labels.count(x) > 1})
        if dup:
            P.add("attack", f"attack labels must be unique, repeated: {', '.join(dup)}")
    detectors = doc.get("detector", []) if ok("detector") else None
    for i, d in enumerate(doc.get("detector") if isinstance(doc.get("detector"), list) else []):
        if isinstance(d, dict):
            key = _join("detector", i)
            cls = DETECTORS.get(d["name"]) if isinstance(d.get("name"), str) else None
            params = d.get("params", {})
            if cls is None or not isinstance(params, dict):
                continue
            allowed = parameter_names(cls)
            for k in sorted(params, key=str):
                if k in ("fpr", "seed"):
                    P.add(f"{key}.params.{k}", f"set {k} at the top level of the config (it applies to every "
                          "detector)")
                elif k == "decision_model" and d.get("decision_models"):
                    P.add(f"{key}.params.{k}", "give decision_models or params.decision_model, not both")
                elif allowed is not None and k not in allowed:
                    P.add(f"{key}.params.{k}", f"{d['name']} has no parameter {k!r}"
                          + _did_you_mean(k, allowed) + f"; its parameters: {', '.join(sorted(allowed))}")
    if experiment is not None:
        need_attacks = experiment not in ("taintradar", "blurnet")
        if attacks is not None and need_attacks and not attacks:
            P.add("attack", "needs at least one [[attack]]" + (" and one [[detector]]" if experiment == "grid" else ""))
        if detectors is not None and experiment == "grid" and not detectors:
            P.add("detector", "needs at least one [[attack]] and one [[detector]]")
        if ok("fractions"):
            fr = doc.get("fractions", (0.7, 0.15, 0.15) if experiment == "imageops" else (0.8, 0.2))
            want = 3 if experiment == "imageops" else 2
            if len(fr) != want:
                P.add("fractions", ("must be [fit, test]" if want == 2 else "must be [train, dev, eval]")
                      + f", got {list(fr)}")
            elif abs(sum(fr) - 1) > 1e-6:
                P.add("fractions", f"must sum to 1, got {list(fr)} (sum {sum(fr):g})")
        if experiment != "imageops":
            for k in ("imageops", "cnn"):
                if doc.get(k) and ok(k):
                    P.add(k, "[imageops] and [[cnn]] belong to experiment = \"imageops\"")
        for name in ("themis", "segfault", "taintradar", "blurnet"):
            if experiment != name and doc.get(name):
                P.add(name, f"[{name}] belongs to experiment = \"{name}\"")
        if experiment == "themis" and ok("themis"):
            opts = doc.get("themis", {})
            for i, m in enumerate(opts.get("models", [])):
                compatible(m, f"themis.models[{i + 1}]")
            _check_themis_classifiers(opts.get("classifiers", []), "themis.classifiers", P)
            _check_themis_classifiers((opts.get("learning_curve") or {}).get("classifiers", []),
                                      "themis.learning_curve.classifiers", P)
            ns, n = opts.get("ns", []), opts.get("n", 11)
            if any(v > n for v in ns):
                P.add("themis.ns", f"every n must be in 1..n (= {n}), got {ns}")
            if attacks is not None:
                labels = {a.get("label", a.get("name")) for a in attacks}
                for key in ("train_on", "table1_train_on"):
                    for i, lab in enumerate(opts.get(key, [])):
                        if lab not in labels:
                            P.add(f"themis.{key}[{i + 1}]", f"{lab!r} is not the label of an [[attack]]; labels: "
                                  + ", ".join(sorted(map(str, labels))))
        if experiment == "segfault" and ok("segfault"):
            units = doc.get("segfault", {}).get("unit")
            if not units:
                P.add("segfault.unit", "[segfault] needs at least one [[segfault.unit]]")
            else:
                from ..detectors.loo import UNIT_PARAMS, check_unit_params

                for i, u in enumerate(units):
                    allowed = set(UNIT_PARAMS.get(u["unit"], {}))
                    bad = False
                    for k in sorted(u.get("params", {}), key=str):
                        if k not in allowed and k != "value_range":  # check_unit_params says why not
                            bad = True
                            P.add(f"segfault.unit[{i + 1}].params.{k}", f"occlusion unit {u['unit']!r} has no "
                                  f"parameter {k!r}" + _did_you_mean(k, allowed)
                                  + (f"; its parameters: {', '.join(sorted(allowed))}" if allowed else
                                     "; it takes none"))
                    if not bad and u["unit"] in UNIT_PARAMS:
                        try:  # the values too (ranges, value_range), as LeaveOneOut would check them
                            check_unit_params(u["unit"], dict(u.get("params", {})))
                        except AdvguardError as e:
                            P.add(f"segfault.unit[{i + 1}].params", str(e))
                labels = [u.get("label", u.get("unit")) for u in units]
                if len(set(labels)) != len(labels):
                    P.add("segfault.unit", f"[[segfault.unit]] labels must be unique, got {labels}")
        if experiment == "taintradar" and ok("taintradar"):
            _check_taintradar(doc.get("taintradar", {}), n_classes, P)
            for i, m in enumerate(doc.get("taintradar", {}).get("models") or []):
                compatible(m if isinstance(m, str) else m["model"], f"taintradar.models[{i + 1}]")
        if experiment == "blurnet" and ok("blurnet"):
            o = {**BLURNET_DEFAULTS, **doc.get("blurnet", {})}
            for k in ("blackbox", "whitebox"):
                for i, m in enumerate(o[k]):
                    compatible(m, f"blurnet.{k}[{i + 1}]")
            if n_classes and o["stop_class"] >= n_classes:
                P.add("blurnet.stop_class", f"must be a class of {dataset} (0..{n_classes - 1}), got {o['stop_class']}")
            if o["targets"] != "all":
                if o["stop_class"] in o["targets"]:
                    P.add("blurnet.targets", f"\"all\" or a list of classes other than the stop class, "
                          f"got {o['targets']!r}")
                if n_classes and any(t >= n_classes for t in o["targets"]):
                    P.add("blurnet.targets", f"classes must be in 0..{n_classes - 1}, got {o['targets']!r}")
    return P.items


def _did_you_mean(k: str, allowed) -> str:
    import difflib

    close = difflib.get_close_matches(str(k), sorted(allowed), 1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _check_dataset_kwargs(kw: dict, dataset: str, info, P: _Problems) -> None:
    """Options a dataset's loader accepts; image-folder needs ``path``."""
    import inspect

    params = list(inspect.signature(info.loader).parameters)
    allowed = set(params[1:] if dataset == "image-folder" else params[2:]) | ({"path"} if dataset == "image-folder"
                                                                             else set())
    allowed.discard("url")
    allowed.discard("md5")
    for k in sorted(kw, key=str):
        if k not in allowed:
            P.add(f"dataset_kwargs.{k}", f"dataset {dataset!r} has no option {k!r}" + _did_you_mean(k, allowed)
                  + (f"; options: {', '.join(sorted(allowed))}" if allowed else "; it takes none"))
    if dataset == "image-folder":
        if not isinstance(kw.get("path"), str) or not kw.get("path"):
            P.add("dataset_kwargs.path", "image-folder needs path = \"<folder with one sub-folder per class>\"")
        if "size" in kw and not (isinstance(kw["size"], list) and len(kw["size"]) == 2
                                 and all(isinstance(v, int) and not isinstance(v, bool) and v > 0
                                         for v in kw["size"])):
            P.add("dataset_kwargs.size", f"must be [height, width], got {kw['size']!r}")
        if "mode" in kw and kw["mode"] not in ("RGB", "L"):
            P.add("dataset_kwargs.mode", f"must be \"RGB\" or \"L\", got {kw['mode']!r}")
        for k in ("resize", "crop"):
            if k in kw:
                _Int(1).check(kw[k], f"dataset_kwargs.{k}", P)
    elif dataset == "cifar10" and "source" in kw and kw["source"] not in cifar10.SOURCES:
        P.add("dataset_kwargs.source", f"must be one of {list(cifar10.SOURCES)}, got {kw['source']!r}")
    elif dataset == "imagenet-samples":
        for k in ("size", "resize"):
            if k in kw:
                _Int(1).check(kw[k], f"dataset_kwargs.{k}", P)


def _check_themis_classifiers(entries: list, where: str, P: _Problems) -> None:
    """Decision-model tables of [themis]: unique labels, params the model accepts, grid values as non-empty
    arrays of accepted values."""
    from ..detectors.decision import make_decision_model

    seen: set[str] = set()
    for i, e in enumerate(entries):
        key = f"{where}[{i + 1}]"
        well_typed = isinstance(e, str) or (isinstance(e, dict) and isinstance(e.get("model"), str)
                                            and isinstance(e.get("params", {}), dict)
                                            and isinstance(e.get("grid", {}), dict))
        if not well_typed:
            continue  # the type check reported it
        e = classifier_specs([e])[0]
        if e["label"] in seen:
            P.add(key, f"label {e['label']!r} is used twice (give each decision model a distinct label)")
        seen.add(e["label"])
        grid = e["grid"]
        bad = [k for k, v in grid.items() if not isinstance(v, list) or not v]
        for k in bad:
            P.add(f"{key}.grid.{k}", f"must be a non-empty array of values, got {_kind(grid[k])} {grid[k]!r}")
        if bad:
            continue
        try:
            for j in range(max([1] + [len(v) for v in grid.values()])):
                make_decision_model(e["model"], **e["params"], **{k: v[min(j, len(v) - 1)] for k, v in grid.items()})
        except Exception as err:  # noqa: BLE001  (any refusal of the estimator is a config problem)
            P.add(key, f"decision model {e['model']!r} refuses these params / grid values: {err}")


def classifier_specs(entries) -> list[dict]:
    """``[themis] classifiers`` entries as dicts: a name is ``{"label": name, "model": name}`` (used in every
    table); a table names its decision ``model``, ``params``, a ``grid`` to cross-validate, ``align``,
    ``extra_clean`` (add the train-split clean images) and ``all_tables`` (default: Table 1 only). ``align``
    unset = the detector's default (aligned; before issue #22 only on the PCA path), so configs whose pages
    were rendered with raw CIFAR-10 features say ``align = false``."""
    out = []
    for e in entries:
        if isinstance(e, str):
            e = {"model": e, "all_tables": True}
        out.append({"label": str(e.get("label", e["model"])), "model": e["model"], "params": dict(e.get("params", {})),
                    "grid": dict(e.get("grid", {})), "align": e.get("align"),
                    "extra_clean": bool(e.get("extra_clean", False)), "all_tables": bool(e.get("all_tables", False))})
    return out



def _check_taintradar(opts: dict, n_classes: int | None, P: _Problems) -> None:
    o = {**TAINTRADAR_DEFAULTS, **opts}
    n = o["n_victims"]
    if n_classes and o["target"] >= n_classes:
        P.add("taintradar.target", f"must be a class (0..{n_classes - 1}), got {o['target']}")
    if any(n % b for b in o["batch_sizes"]):
        P.add("taintradar.batch_sizes", f"batch_sizes must divide n_victims = {n}, got {o['batch_sizes']}")
    lo, hi = o["size_range"]
    if lo >= hi:
        P.add("taintradar.size_range", f"must be [low, high] with low < high, got {o['size_range']}")
    if o["misleading"] is not None:
        mis = {**MISLEADING_DEFAULTS, **o["misleading"]}
        if n % mis["batch"]:
            P.add("taintradar.misleading.batch", f"batch must divide n_victims = {n}, got {mis['batch']}")
    if o["bpda"] is not None:
        bp = {**BPDA_DEFAULTS, **o["bpda"]}
        if bp["n"] > n:
            P.add("taintradar.bpda.n", f"n must be in 1..n_victims = {n}, got {bp['n']}")
    if o["models"] is not None:
        labels = [taintradar_model_entry(m, o["layer"])["label"] for m in o["models"]]
        dup = sorted({x for x in labels if labels.count(x) > 1})
        if dup:
            P.add("taintradar.models", f"labels must be unique (give label = \"...\" to tell entries of one model "
                  f"apart), repeated: {', '.join(dup)}")
    for i, v in enumerate(o["variants"]):
        if n % v.get("batch", 16):
            P.add(f"taintradar.variants[{i + 1}].batch", f"batch must divide n_victims = {n}, got {v.get('batch', 16)}")


def taintradar_model_entry(entry: str | dict, layer: str | None = None) -> dict:
    """An entry of [taintradar] ``models`` as a dict {model, layer, label, note}: the layer defaults to ``layer``
    (the section's; None = the model's Grad-CAM layer), the label to the model's name, with " @ layer" when a layer
    is given."""
    e = {"model": entry} if isinstance(entry, str) else dict(entry)
    e.setdefault("layer", layer)
    e.setdefault("label", e["model"] + (f" @ {e['layer']}" if e["layer"] else ""))
    e.setdefault("note", "")
    return e


def parse_config(doc: dict, where: str = "config", source_text: str = "") -> BenchConfig:
    """Validate a configuration dict completely, then build it; every problem is reported at once.

    Raises :class:`ConfigError` listing one line per problem, each naming its key (``fpr``,
    ``attack[2].target_shift``, ``taintradar.bpda.n`` ...) before any work starts."""
    problems = validate_config(doc)
    if problems:
        if len(problems) == 1:
            raise ConfigError(f"{where}: {problems[0]}")
        raise ConfigError(f"{where}: {len(problems)} problems:\n" + "\n".join(f"  - {p}" for p in problems))
    experiment = doc.get("experiment", "grid")
    attacks = [AttackSpec(a["name"], a.get("label", a["name"]), dict(a.get("params", {})), a.get("target_shift"),
                          a.get("group")) for a in doc.get("attack", [])]
    detectors = [DetectorSpec(d["name"], d.get("label", d["name"]), dict(d.get("params", {})),
                              list(d.get("decision_models", []))) for d in doc.get("detector", [])]
    fr = tuple(doc.get("fractions", (0.7, 0.15, 0.15) if experiment == "imageops" else (0.8, 0.2)))
    sections = {name: dict(doc.get(name, {})) for name in ("themis", "segfault", "taintradar", "blurnet")}
    return BenchConfig(
        name=doc["name"], title=doc.get("title", doc["name"]), dataset=doc["dataset"], model=doc["model"],
        attacks=attacks, detectors=detectors, split=doc.get("split", "test"), n_images=doc.get("n_images", 1000),
        seed=int(doc.get("seed", 0)), fractions=fr, fpr=float(doc.get("fpr", 0.05)),
        roundtrip=doc.get("roundtrip") or None, out=doc.get("out"), dataset_kwargs=dict(doc.get("dataset_kwargs", {})),
        chunk_size=int(doc.get("chunk_size", 256)), bootstrap=int(doc.get("bootstrap", 1000)),
        experiment=experiment, imageops=dict(doc.get("imageops", {})), cnn=[dict(c) for c in doc.get("cnn", [])],
        **sections, source_text=source_text)


def load_config(path: str | Path) -> BenchConfig:
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"benchmark config not found: {p}")
    try:
        text = p.read_bytes().decode("utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(f"{p}: not a text (UTF-8) TOML file: {e}") from e
    except OSError as e:
        raise ConfigError(f"{p}: cannot read the config: {e}") from e
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{p}: invalid TOML: {e}") from e
    return parse_config(doc, where=str(p), source_text=text)
