"""Benchmark configuration: a TOML file (or a dict) describing the grid {attacks} x {detectors} x {decision models}."""
from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

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
                       "size_range": [0.1, 0.5], "detector_batch": None, "misleading": None, "bpda": None}
TAINTRADAR_KEYS = set(TAINTRADAR_DEFAULTS)
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
                    "mask": "rectangles", "n_transforms": 1, "chunk": 7, "eval_views": 10, "l1_mask": True,
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


def _check_keys(d: dict, allowed: set[str], where: str) -> None:
    bad = sorted(set(d) - allowed)
    if bad:
        import difflib

        hints = [f"{b!r} (did you mean {difflib.get_close_matches(b, allowed, 1)[0]!r}?)"
                 if difflib.get_close_matches(b, allowed, 1) else repr(b) for b in bad]
        raise ConfigError(f"{where}: unknown key(s) {', '.join(hints)}; allowed: {', '.join(sorted(allowed))}")


def parse_config(doc: dict, where: str = "config", source_text: str = "") -> BenchConfig:
    """Validate a configuration dict; every name is checked against its registry before anything runs."""
    from ..attacks import ATTACKS
    from ..data import DATASETS
    from ..detectors import DECISION_MODELS, DETECTORS
    from ..models import ZOO

    _check_keys(doc, TOP_KEYS, where)
    for k in ("name", "dataset", "model"):
        if k not in doc:
            raise ConfigError(f"{where}: missing required key {k!r}")
    if doc["dataset"] not in DATASETS:
        raise ConfigError(str(unknown_name("dataset", doc["dataset"], list(DATASETS))) + f" ({where})")
    if doc["model"] not in ZOO:
        raise ConfigError(str(unknown_name("model", doc["model"], list(ZOO))) + f" ({where})")
    attacks = []
    for i, a in enumerate(doc.get("attack", [])):
        _check_keys(a, ATTACK_KEYS, f"{where} [[attack]] #{i + 1}")
        if a.get("name") not in ATTACKS:
            raise ConfigError(str(unknown_name("attack", str(a.get("name")), list(ATTACKS))) + f" ({where})")
        if ATTACKS[a["name"]].targets_required and a.get("target_shift") is None:
            raise ConfigError(f"{where} [[attack]] #{i + 1}: {a['name']} is targeted only; give target_shift")
        attacks.append(AttackSpec(a["name"], a.get("label", a["name"]), dict(a.get("params", {})),
                                  a.get("target_shift"), a.get("group")))
    detectors = []
    for i, d in enumerate(doc.get("detector", [])):
        _check_keys(d, DETECTOR_KEYS, f"{where} [[detector]] #{i + 1}")
        if d.get("name") not in DETECTORS:
            raise ConfigError(str(unknown_name("detector", str(d.get("name")), list(DETECTORS))) + f" ({where})")
        dms = list(d.get("decision_models", []))
        for m in dms:
            if m not in DECISION_MODELS:
                raise ConfigError(str(unknown_name("decision model", m, list(DECISION_MODELS))) + f" ({where})")
        detectors.append(DetectorSpec(d["name"], d.get("label", d["name"]), dict(d.get("params", {})), dms))
    experiment = doc.get("experiment", "grid")
    if experiment not in EXPERIMENTS:
        raise ConfigError(str(unknown_name("experiment", str(experiment), list(EXPERIMENTS))) + f" ({where})")
    if (not attacks and experiment not in ("taintradar", "blurnet")) or (experiment == "grid" and not detectors):
        raise ConfigError(f"{where}: needs at least one [[attack]]" + (" and one [[detector]]"
                                                                       if experiment == "grid" else ""))
    labels = [a.label for a in attacks]
    if len(set(labels)) != len(labels):
        raise ConfigError(f"{where}: attack labels must be unique, got {labels}")
    imageops, cnn = dict(doc.get("imageops", {})), [dict(c) for c in doc.get("cnn", [])]
    if experiment == "imageops":
        _check_imageops(imageops, cnn, where)
    elif imageops or cnn:
        raise ConfigError(f"{where}: [imageops] and [[cnn]] belong to experiment = \"imageops\"")
    sections = {}  # [themis], [segfault], [taintradar]: each belongs to the experiment of its name
    for name, check in (("themis", _check_themis), ("segfault", _check_segfault), ("taintradar", _check_taintradar),
                        ("blurnet", _check_blurnet)):
        sections[name] = dict(doc.get(name, {}))
        if experiment == name:
            check(sections[name], where)
        elif sections[name]:
            raise ConfigError(f"{where}: [{name}] belongs to experiment = \"{name}\"")
    fr = tuple(doc.get("fractions", (0.7, 0.15, 0.15) if experiment == "imageops" else (0.8, 0.2)))
    want = 3 if experiment == "imageops" else 2
    if len(fr) != want:
        raise ConfigError(f"{where}: fractions must be " + ("[fit, test]" if want == 2 else "[train, dev, eval]")
                          + f", got {list(fr)}")
    return BenchConfig(
        name=doc["name"], title=doc.get("title", doc["name"]), dataset=doc["dataset"], model=doc["model"],
        attacks=attacks, detectors=detectors, split=doc.get("split", "test"), n_images=doc.get("n_images", 1000),
        seed=int(doc.get("seed", 0)), fractions=fr, fpr=float(doc.get("fpr", 0.05)),
        roundtrip=doc.get("roundtrip") or None, out=doc.get("out"), dataset_kwargs=dict(doc.get("dataset_kwargs", {})),
        chunk_size=int(doc.get("chunk_size", 256)), bootstrap=int(doc.get("bootstrap", 1000)),
        experiment=experiment, imageops=imageops, cnn=cnn, **sections, source_text=source_text)


def _check_names(names, registry, kind: str, where: str) -> None:
    """Every name must be in ``registry``; the error names the bad one, the choices and the place."""
    for n in names:
        if n not in registry:
            raise ConfigError(str(unknown_name(kind, str(n), list(registry))) + f" ({where})")


def _check_imageops(opts: dict, cnn: list[dict], where: str) -> None:
    from ..detectors import DECISION_MODELS
    from ..detectors.cnn import BACKBONES
    from ..transforms import FAMILY_SETS

    _check_keys(opts, IMAGEOPS_KEYS, f"{where} [imageops]")
    _check_names(opts.get("classifiers", []), DECISION_MODELS, "decision model", where)
    _check_names(opts.get("families", []), FAMILY_SETS, "operation family", where)
    for i, c in enumerate(cnn):
        _check_keys(c, CNN_KEYS, f"{where} [[cnn]] #{i + 1}")
        _check_names([c.get("backbone", "scratch")], BACKBONES, "CNN detector backbone", where)


def _check_themis(opts: dict, where: str) -> None:
    from ..detectors import DECISION_MODELS, DETECTORS
    from ..models import ZOO

    _check_keys(opts, THEMIS_KEYS, f"{where} [themis]")
    _check_names(opts.get("models", []), ZOO, "model", f"{where} [themis] models")
    _check_names(opts.get("classifiers", []), DECISION_MODELS, "decision model", where)
    _check_names(opts.get("compare", []), DETECTORS, "detector", f"{where} [themis] compare")
    ns = [int(v) for v in opts.get("ns", [])]
    if any(v < 1 for v in ns) or (ns and max(ns) > int(opts.get("n", 11))):
        raise ConfigError(f"{where} [themis] ns: every n must be in 1..n (= {opts.get('n', 11)}), got {ns}")
    ad = opts.get("adaptive", [])
    for i, a in enumerate(ad if isinstance(ad, list) else [ad]):  # [themis.adaptive] or [[themis.adaptive]]
        _check_keys(a, ADAPTIVE_KEYS, f"{where} [themis.adaptive] #{i + 1}")


def _check_segfault(opts: dict, where: str) -> None:
    from ..detectors import DECISION_MODELS
    from ..detectors.loo import BASELINES, STATISTICS, UNITS

    _check_keys(opts, SEGFAULT_KEYS, f"{where} [segfault]")
    _check_names(opts.get("classifiers", []) + opts.get("pixel_classifiers", []), DECISION_MODELS,
                 "decision model", where)
    _check_names([opts.get("baseline", "zero")], BASELINES, "occlusion baseline", f"{where} [segfault]")
    _check_names([opts.get("statistic", "iqr")], STATISTICS, "dispersion statistic", f"{where} [segfault]")
    units = opts.get("unit", [])
    if not units:
        raise ConfigError(f"{where}: [segfault] needs at least one [[segfault.unit]]")
    for i, u in enumerate(units):
        _check_keys(u, UNIT_KEYS, f"{where} [[segfault.unit]] #{i + 1}")
        _check_names([u.get("unit")], UNITS, "occlusion unit", f"{where} [[segfault.unit]] #{i + 1}")
    labels = [u.get("label", u["unit"]) for u in units]
    if len(set(labels)) != len(labels):
        raise ConfigError(f"{where}: [[segfault.unit]] labels must be unique, got {labels}")


def _check_taintradar(opts: dict, where: str) -> None:
    from ..attacks.patch import POSITIONS, SHAPES
    from ..detectors.taintradar import FILLS

    _check_keys(opts, TAINTRADAR_KEYS, f"{where} [taintradar]")
    opts = {**TAINTRADAR_DEFAULTS, **opts}
    _check_names(opts["positions"], POSITIONS, "patch position", f"{where} [taintradar]")
    _check_names([opts["fill"]], FILLS, "filling pattern", f"{where} [taintradar]")
    for s in opts["sizes"]:
        if not 0 < float(s) < 1:
            raise ConfigError(f"{where} [taintradar] sizes: each is a share of the image area in (0, 1), got {s}")
    n, batches = int(opts["n_victims"]), [int(b) for b in opts["batch_sizes"]]
    if any(b < 1 or n % b for b in batches):
        raise ConfigError(f"{where} [taintradar] batch_sizes must divide n_victims = {n}, got {batches}")
    if opts["misleading"] is not None:
        mis = {**MISLEADING_DEFAULTS, **opts["misleading"]}
        _check_keys(opts["misleading"], set(MISLEADING_DEFAULTS), f"{where} [taintradar.misleading]")
        _check_names([mis["position"]], POSITIONS, "patch position", f"{where} [taintradar.misleading]")
        if any(not 0 <= float(v) <= 1 for v in mis["lambdas"]) or not mis["lambdas"]:
            raise ConfigError(f"{where} [taintradar.misleading] lambdas: one or more weights in [0, 1], "
                              f"got {mis['lambdas']}")
        if n % int(mis["batch"]):
            raise ConfigError(f"{where} [taintradar.misleading] batch must divide n_victims = {n}")
    if opts["bpda"] is not None:
        bp = {**BPDA_DEFAULTS, **opts["bpda"]}
        _check_keys(opts["bpda"], set(BPDA_DEFAULTS), f"{where} [taintradar.bpda]")
        _check_names([bp["position"]], POSITIONS, "region position", f"{where} [taintradar.bpda]")
        if not 1 <= int(bp["n"]) <= n:
            raise ConfigError(f"{where} [taintradar.bpda] n must be in 1..n_victims = {n}, got {bp['n']}")
        if not 0 < float(bp["size"]) < 1:
            raise ConfigError(f"{where} [taintradar.bpda] size is a share of the image area in (0, 1), "
                              f"got {bp['size']}")
    for i, v in enumerate(opts["variants"]):
        _check_keys(v, VARIANT_KEYS, f"{where} [[taintradar.variants]] #{i + 1}")
        _check_names([v.get("shape", "square")], SHAPES, "patch shape", f"{where} [[taintradar.variants]] #{i + 1}")
        _check_names([v.get("position", "bottom-right")], POSITIONS, "patch position",
                     f"{where} [[taintradar.variants]] #{i + 1}")
        if n % int(v.get("batch", 16)):
            raise ConfigError(f"{where} [[taintradar.variants]] #{i + 1}: batch must divide n_victims = {n}")


def _check_blurnet(opts: dict, where: str) -> None:
    from ..attacks.rp2 import MASKS
    from ..models import ZOO

    _check_keys(opts, set(BLURNET_DEFAULTS), f"{where} [blurnet]")
    o = {**BLURNET_DEFAULTS, **opts}
    _check_names(list(o["blackbox"]) + list(o["whitebox"]), ZOO, "model", f"{where} [blurnet]")
    _check_names([o["mask"]], MASKS, "RP2 mask", f"{where} [blurnet]")
    if o["targets"] != "all" and (not isinstance(o["targets"], list) or int(o["stop_class"]) in o["targets"]):
        raise ConfigError(f"{where} [blurnet] targets: \"all\" or a list of classes other than the stop class, "
                          f"got {o['targets']!r}")
    for k in ("n_signs", "steps", "chunk", "eval_views", "n_transforms"):
        if int(o[k]) < 1:
            raise ConfigError(f"{where} [blurnet] {k} must be at least 1, got {o[k]}")


def load_config(path: str | Path) -> BenchConfig:
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"benchmark config not found: {p}")
    text = p.read_text(encoding="utf-8")
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{p}: invalid TOML: {e}") from e
    return parse_config(doc, where=str(p), source_text=text)
