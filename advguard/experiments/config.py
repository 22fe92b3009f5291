"""Experiment configuration: a TOML file (or a dict) naming an experiment, its data, model, attacks and options.

The keys every experiment shares are checked here; each experiment's own tables (``[themis]``, ``[blurnet]`` ...)
are checked by the schema and the cross-key checks it registers (:mod:`advguard.experiments.registry`). The
whole document is validated before any work starts and every problem is listed at once, naming its key.
"""

from __future__ import annotations

import copy
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

from ..advsets import ROUNDTRIPS
from ..data import cifar10
from ..errors import AdvguardError
from .registry import canonical_name, experiment_names, experiments, get_experiment
from .schema import (
    POS_INT,
    SHARE,
    TABLES_HINT,
    Bool,
    Int,
    List,
    OneOf,
    Problems,
    Spec,
    Str,
    Table,
    did_you_mean,
    join_key,
    kind_of,
    no_parameter,
    param_problems,
)

if TYPE_CHECKING:  # pragma: no cover
    from ..data.registry import DatasetInfo

#: the keys every experiment understands (each experiment adds its own tables, see ``Experiment.sections``)
COMMON_KEYS = (
    "name",
    "title",
    "dataset",
    "split",
    "model",
    "n_images",
    "seed",
    "fractions",
    "fpr",
    "roundtrip",
    "out",
    "attack",
    "detector",
    "dataset_kwargs",
    "chunk_size",
    "bootstrap",
    "experiment",
    "device",
)


class ConfigError(AdvguardError, ValueError):
    """A configuration is invalid; the message names the file and key."""


@dataclass
class AttackSpec:
    name: str
    label: str
    params: dict[str, Any] = field(default_factory=dict)
    target_shift: int | None = None
    #: attacks sharing a group form one attack family (pooled; the segfault experiment splits the clean
    #: images between its members)
    group: str | None = None
    #: one target class for every image (exclusive with target_shift)
    target: int | None = None

    @property
    def targeted(self) -> bool:
        """Whether the attack aims at target classes (``target_shift`` or ``target``)."""
        return self.target_shift is not None or self.target is not None

    def as_dict(self) -> dict[str, Any]:
        """JSON-able fields (``target`` only when set, so that documents of configs without it are unchanged)."""
        return {k: v for k, v in vars(self).items() if not (k == "target" and v is None)}


@dataclass
class DetectorSpec:
    name: str
    label: str
    params: dict[str, Any] = field(default_factory=dict)
    decision_models: list[str] = field(default_factory=list)


@dataclass
class ExperimentConfig:
    """A validated configuration. ``sections`` holds the experiment's own tables as written (validated);
    ``options`` the experiment's typed options built from them (None for experiments without any)."""

    name: str
    dataset: str
    model: str
    attacks: list[AttackSpec]
    detectors: list[DetectorSpec]
    title: str = ""
    split: str = "test"
    n_images: int | None = 1000
    seed: int = 0
    fractions: tuple[float, ...] = (0.8, 0.2)
    fpr: float = 0.05
    roundtrip: str | None = None
    out: str | None = None
    dataset_kwargs: dict[str, Any] = field(default_factory=dict)
    chunk_size: int = 256
    bootstrap: int = 1000
    experiment: str = "grid"
    #: where the models run ("cpu", "cuda", "cuda:1"...; None: CUDA when available, else the CPU)
    device: str | None = None
    sections: dict[str, Any] = field(default_factory=dict)
    options: Any = None
    source_text: str = ""

    def section(self, name: str) -> Any:
        """The experiment's table ``name`` as written (``{}`` when absent)."""
        v = self.sections.get(name)
        return {} if v is None else v

    def as_dict(self) -> dict[str, Any]:
        """The configuration as JSON-able data (for results documents)."""
        return {
            "name": self.name,
            "title": self.title,
            "experiment": self.experiment,
            "dataset": self.dataset,
            "split": self.split,
            "model": self.model,
            "n_images": self.n_images,
            "seed": self.seed,
            "fractions": list(self.fractions),
            "fpr": self.fpr,
            "roundtrip": self.roundtrip,
            "out": self.out,
            "dataset_kwargs": self.dataset_kwargs,
            "chunk_size": self.chunk_size,
            "bootstrap": self.bootstrap,
            **({"device": self.device} if self.device is not None else {}),  # absent by default: older pages match
            "attacks": [a.as_dict() for a in self.attacks],
            "detectors": [vars(d) for d in self.detectors],
            **self.sections,
        }


#: the name used before the experiments became plug-ins (``advguard.bench``)
BenchConfig = ExperimentConfig


@dataclass
class Context:
    """What an experiment's cross-key checks may need to know about the rest of the document."""

    doc: dict[str, Any]
    dataset: str | None
    model: str | None
    info: Any  # the dataset's DatasetInfo, when the name is known
    n_classes: int | None
    #: the [[attack]] tables (None when that list itself is ill-typed)
    attacks: list[dict[str, Any]] | None
    compatible: Callable[[str, str], None]  # compatible(model_name, key): the model is for the config's dataset


def _common_schema() -> dict[str, Spec]:
    from ..attacks import ATTACKS
    from ..data import DATASETS
    from ..detectors import DECISION_MODELS, DETECTORS
    from ..models import ZOO

    dm = Str(DECISION_MODELS, "decision model")
    return {
        "name": Str(nonempty=True),
        "title": Str(),
        "dataset": Str(DATASETS, "dataset"),
        "split": Str(),
        "model": Str(ZOO, "model"),
        "n_images": POS_INT,
        "seed": Int(0, 2**32 - 1),
        "fractions": List(SHARE, min_len=2),
        "fpr": SHARE,
        "roundtrip": OneOf(
            Str([r for r in ROUNDTRIPS if r] + [""], "round trip"),
            Bool(),
            what=f"one of {', '.join(repr(r) for r in ROUNDTRIPS if r)} (or false)",
        ),
        "device": Str(nonempty=True),
        "out": Str(nonempty=True),
        "attack": List(
            Table(
                {
                    "name": Str(ATTACKS, "attack"),
                    "label": Str(nonempty=True),
                    "params": Table(None),
                    "target_shift": Int(1),
                    "target": Int(0),
                    "group": Str(nonempty=True),
                },
                required=("name",),
            ),
            hint=TABLES_HINT.format("attack"),
        ),
        "detector": List(
            Table(
                {
                    "name": Str(DETECTORS, "detector"),
                    "label": Str(nonempty=True),
                    "params": Table(None),
                    "decision_models": List(dm, hint=' of names, e.g. ["svc"]'),
                },
                required=("name",),
            ),
            hint=TABLES_HINT.format("detector"),
        ),
        "dataset_kwargs": Table(None),
        "chunk_size": POS_INT,
        "bootstrap": POS_INT,
        "experiment": Str(experiment_names(with_aliases=True), "experiment"),
    }


def _top_schema() -> Table:
    """The whole document's schema: the common keys and every registered experiment's tables."""
    schema = _common_schema()
    for exp in experiments().values():
        for section, spec in exp.schema().items():
            if section in schema:
                raise AdvguardError(f"experiment {exp.name!r} declares table [{section}], a common key")
            schema[section] = spec
    return Table(schema, required=("name", "dataset", "model"))


def validate_config(doc: object) -> list[str]:
    """Every problem of configuration ``doc``, one line each naming its key (empty when it is valid)."""
    from ..data import DATASETS
    from ..models import ZOO
    from .registry import section_owners

    P = Problems()
    if not isinstance(doc, dict):
        return [f"a configuration is a TOML table, got {kind_of(doc)}"]
    if not _top_schema().check(doc, "", P):
        bad_top = {item.split(":")[0].split(".")[0].split("[")[0] for item in P.items}
    else:
        bad_top = set()

    def ok(*keys: str) -> bool:  # the keys are present (or defaulted) and well-typed
        return not any(k in bad_top for k in keys)

    experiment = get_experiment(doc.get("experiment", "grid")) if ok("experiment") else None
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
    if (
        info is not None
        and ok("split")
        and dataset != "image-folder"
        and "split" in doc
        and doc["split"] not in info.splits
    ):
        P.add("split", f"dataset {dataset!r} has no split {doc['split']!r}; splits: {', '.join(info.splits)}")
    if ok("device") and "device" in doc:
        from ..devices import resolve_device

        try:
            resolve_device(doc["device"], where="device")
        except AdvguardError as e:
            P.add("device", str(e))
    if info is not None and ok("dataset_kwargs"):
        assert isinstance(dataset, str)  # info is None otherwise
        _check_dataset_kwargs(doc.get("dataset_kwargs", {}), dataset, info, P)

    attacks = doc.get("attack", []) if ok("attack") else None
    _check_attacks(doc, n_classes, P)
    detectors = doc.get("detector", []) if ok("detector") else None
    _check_detectors(doc, P)
    if experiment is not None:
        if attacks is not None and experiment.needs_attacks and not attacks:
            P.add(
                "attack",
                "needs at least one [[attack]]" + (" and one [[detector]]" if experiment.needs_detectors else ""),
            )
        if detectors is not None and experiment.needs_detectors and not detectors:
            P.add("detector", "needs at least one [[attack]] and one [[detector]]")
        if ok("fractions"):
            fr = doc.get("fractions", experiment.fractions)
            want = len(experiment.fractions)
            if len(fr) != want:
                P.add(
                    "fractions",
                    ("must be [fit, test]" if want == 2 else "must be [train, dev, eval]") + f", got {list(fr)}",
                )
            elif abs(sum(fr) - 1) > 1e-6:
                P.add("fractions", f"must sum to 1, got {list(fr)} (sum {sum(fr):g})")
        for section, owner in section_owners().items():
            if owner != experiment.name and doc.get(section):
                what = f"[[{section}]]" if isinstance(doc.get(section), list) else f"[{section}]"
                P.add(section, f'{what} belongs to experiment = "{owner}"')
        if ok(*experiment.sections):
            ctx = Context(
                doc=doc,
                dataset=dataset,
                model=model,
                info=info,
                n_classes=n_classes,
                attacks=attacks,
                compatible=compatible,
            )
            experiment.check(doc, ctx, P)
    return P.items


def _check_attacks(doc: dict[str, Any], n_classes: int | None, P: Problems) -> None:
    """Each [[attack]]: an attack that needs only the classifier, targeted attacks have a target shift, params the
    attack accepts, unique labels."""
    from ..attacks import ATTACKS, config_attacks

    listed = doc.get("attack")
    attacks = listed if isinstance(listed, list) else []
    for i, a in enumerate(attacks):
        if isinstance(a, dict):
            key = join_key("attack", i)
            name = a.get("name") if isinstance(a.get("name"), str) else None
            if name in ATTACKS and ATTACKS[name].requires:
                P.add(
                    f"{key}.name",
                    f"{name} needs the fitted detector it evades: the experiments that evaluate it run it (an "
                    f"[[attack]] may name one of {', '.join(config_attacks())})",
                )
            if name in ATTACKS and ATTACKS[name].targets_required and "target_shift" not in a and "target" not in a:
                P.add(f"{key}.target_shift", f"{a['name']} is targeted only; give target_shift or target")
            if "target_shift" in a and "target" in a:
                P.add(f"{key}.target", "give target (one class for every image) or target_shift, not both")
            tg = a.get("target")
            if isinstance(tg, int) and not isinstance(tg, bool) and n_classes and tg >= n_classes:
                P.add(f"{key}.target", f"{tg} is not a class of this dataset (0 to {n_classes - 1})")
            params = a.get("params", {})
            names = getattr(ATTACKS[name], "parameters", None) if name in ATTACKS else None
            if isinstance(params, dict) and callable(names):
                bench_set = dict.fromkeys(("seed", "progress"), "seed: the config's top-level seed")
                for k, msg in param_problems(str(name), sorted(params, key=str), names(), bench_set):
                    P.add(f"{key}.params.{k}", msg)
            ts = a.get("target_shift")
            if isinstance(ts, int) and n_classes and ts % n_classes == 0:
                P.add(
                    f"{key}.target_shift",
                    f"{ts} is a multiple of the {n_classes} classes: every target would be the true label",
                )
    if all(isinstance(a, dict) for a in attacks):
        labels = [a.get("label", a.get("name")) for a in attacks]
        dup = sorted({str(x) for x in labels if labels.count(x) > 1})
        if dup:
            P.add("attack", f"attack labels must be unique, repeated: {', '.join(dup)}")


def _check_detectors(doc: dict[str, Any], P: Problems) -> None:
    """Each [[detector]]: params the detector accepts, fpr / seed only at the top level."""
    from ..detectors import DETECTORS
    from ..detectors.base import parameter_names

    listed = doc.get("detector")
    for i, d in enumerate(listed if isinstance(listed, list) else []):
        if isinstance(d, dict):
            key = join_key("detector", i)
            cls = DETECTORS.get(d["name"]) if isinstance(d.get("name"), str) else None
            params = d.get("params", {})
            if cls is None or not isinstance(params, dict):
                continue
            allowed = parameter_names(cls)
            for k in sorted(params, key=str):
                if k in ("fpr", "seed"):
                    P.add(f"{key}.params.{k}", f"set {k} at the top level of the config (it applies to every detector)")
                elif k == "decision_model" and d.get("decision_models"):
                    P.add(f"{key}.params.{k}", "give decision_models or params.decision_model, not both")
                elif allowed is not None and k not in allowed and k not in cls._renamed_params:  # old names warn
                    P.add(f"{key}.params.{k}", no_parameter(d["name"], k, allowed))


def _check_dataset_kwargs(kw: dict[str, Any], dataset: str, info: DatasetInfo, P: Problems) -> None:
    """Options a dataset's loader accepts; image-folder needs ``path``."""
    import inspect

    params = list(inspect.signature(info.loader).parameters)
    allowed = set(params[1:] if dataset == "image-folder" else params[2:]) | (
        {"path"} if dataset == "image-folder" else set()
    )
    allowed.discard("url")
    allowed.discard("md5")
    for k in sorted(kw, key=str):
        if k not in allowed:
            P.add(
                f"dataset_kwargs.{k}",
                f"dataset {dataset!r} has no option {k!r}"
                + did_you_mean(k, allowed)
                + (f"; options: {', '.join(sorted(allowed))}" if allowed else "; it takes none"),
            )
    if dataset == "image-folder":
        if not isinstance(kw.get("path"), str) or not kw.get("path"):
            P.add("dataset_kwargs.path", 'image-folder needs path = "<folder with one sub-folder per class>"')
        if "size" in kw and not (
            isinstance(kw["size"], list)
            and len(kw["size"]) == 2
            and all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in kw["size"])
        ):
            P.add("dataset_kwargs.size", f"must be [height, width], got {kw['size']!r}")
        if "mode" in kw and kw["mode"] not in ("RGB", "L"):
            P.add("dataset_kwargs.mode", f'must be "RGB" or "L", got {kw["mode"]!r}')
        for k in ("resize", "crop"):
            if k in kw:
                Int(1).check(kw[k], f"dataset_kwargs.{k}", P)
    elif dataset == "cifar10" and "source" in kw and kw["source"] not in cifar10.SOURCES:
        P.add("dataset_kwargs.source", f"must be one of {list(cifar10.SOURCES)}, got {kw['source']!r}")
    elif dataset == "imagenet-samples":
        for k in ("size", "resize"):
            if k in kw:
                Int(1).check(kw[k], f"dataset_kwargs.{k}", P)


def parse_config(doc: dict[str, Any], where: str = "config", source_text: str = "") -> ExperimentConfig:
    """Validate a configuration dict completely, then build it; every problem is reported at once.

    Raises :class:`ConfigError` listing one line per problem, each naming its key (``fpr``,
    ``attack[2].target_shift``, ``taintradar.bpda.n`` ...) before any work starts."""
    problems = validate_config(doc)
    if problems:
        if len(problems) == 1:
            raise ConfigError(f"{where}: {problems[0]}")
        raise ConfigError(f"{where}: {len(problems)} problems:\n" + "\n".join(f"  - {p}" for p in problems))
    exp = get_experiment(doc.get("experiment", "grid"))
    attacks = [
        AttackSpec(
            a["name"],
            a.get("label", a["name"]),
            dict(a.get("params", {})),
            a.get("target_shift"),
            a.get("group"),
            a.get("target"),
        )
        for a in doc.get("attack", [])
    ]
    detectors = [
        DetectorSpec(
            d["name"], d.get("label", d["name"]), dict(d.get("params", {})), list(d.get("decision_models", []))
        )
        for d in doc.get("detector", [])
    ]
    cfg = ExperimentConfig(
        name=doc["name"],
        title=doc.get("title", doc["name"]),
        dataset=doc["dataset"],
        model=doc["model"],
        attacks=attacks,
        detectors=detectors,
        split=doc.get("split", "test"),
        n_images=doc.get("n_images", 1000),
        seed=int(doc.get("seed", 0)),
        fractions=tuple(doc.get("fractions", exp.fractions)),
        fpr=float(doc.get("fpr", 0.05)),
        roundtrip=doc.get("roundtrip") or None,
        out=doc.get("out"),
        dataset_kwargs=dict(doc.get("dataset_kwargs", {})),
        chunk_size=int(doc.get("chunk_size", 256)),
        bootstrap=int(doc.get("bootstrap", 1000)),
        device=doc.get("device"),
        experiment=canonical_name(doc.get("experiment", "grid")),
        sections={s: copy.deepcopy(doc[s]) for s in exp.sections if s in doc},
        source_text=source_text,
    )
    cfg.options = exp.options(cfg)
    return cfg


def load_config(path: str | Path) -> ExperimentConfig:
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"experiment config not found: {p}")
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
