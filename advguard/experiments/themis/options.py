"""The ``[themis]`` table: defaults, schema and cross-key checks (target models, decision models, adaptive runs)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypedDict

from ..schema import POS_INT, POS_NUM, Bool, List, Num, OneOf, Problems, Spec, Str, Table, kind_of

if TYPE_CHECKING:  # pragma: no cover
    from ..config import Context

#: a ``[themis] classifiers`` entry as written: a decision model's name or a table
ClassifierEntry = str | dict[str, Any]


class ClassifierSpec(TypedDict):
    """A ``classifiers`` entry with its defaults (:func:`classifier_specs`); stored as is in results.json."""

    label: str
    model: str
    params: dict[str, Any]
    grid: dict[str, Any]
    align: bool | None
    extra_clean: bool
    all_tables: bool


@dataclass
class LearningCurveOptions:
    """``[themis.learning_curve]``: AUC vs the number of training pairs per attack family."""

    sizes: list[int] = field(default_factory=lambda: [25, 50, 110, 220, 440])
    repeats: int = 3
    classifiers: list[ClassifierEntry] = field(default_factory=lambda: ["svc", "adaboost"])

    @classmethod
    def from_table(cls, table: dict[str, Any]) -> LearningCurveOptions:
        lc = cls(**table)
        lc.sizes, lc.repeats = [int(v) for v in lc.sizes], int(lc.repeats)
        return lc


@dataclass
class AdaptiveOptions:
    """One ``[[themis.adaptive]]`` run: :class:`~advguard.attacks.adaptive.DetectorAwareCW` against the Table 1 SVM."""

    label: str = "adaptive CW-L2"
    n_images: int = 50
    restarts: int = 150
    steps: int = 100
    check_every: int = 1
    confidence: float = 0.0
    stepsize: float = 0.01
    const: float = 1.0
    #: None = the attack's default start (±8/255), left out of the attack's params (and so of its cache keys)
    init_noise: float | None = None

    @classmethod
    def from_table(cls, table: dict[str, Any]) -> AdaptiveOptions:
        return cls(**table)

    def attack_params(self) -> dict[str, Any]:
        """The attack's keyword arguments, in the order (and with the types) of its cache keys."""
        params: dict[str, Any] = {
            "confidence": float(self.confidence),
            "steps": int(self.steps),
            "restarts": int(self.restarts),
            "check_every": int(self.check_every),
            "const": float(self.const),
            "stepsize": float(self.stepsize),
        }
        if self.init_noise is not None:  # only when set, so caches of runs with the default start stay valid
            params["init_noise"] = float(self.init_noise)
        return params


@dataclass
class ThemisOptions:
    #: target models (None = the config's model)
    models: list[str] | None = None
    #: decision models: names or tables {label, model, params, grid, align, extra_clean, all_tables}
    classifiers: list[ClassifierEntry] = field(default_factory=lambda: ["svc", "adaboost"])
    n: int = 11
    #: the numbers of draws of Table 4 (n is always included)
    ns: list[int] | None = None
    balanced: bool = False
    #: attack labels the detectors are trained on (None = every cw-l2 attack)
    train_on: list[str] | None = None
    #: attack labels pooled for Table 1 (None = all)
    table1_train_on: list[str] | None = None
    extra_clean_train: int = 0
    compare: list[str] = field(default_factory=list)
    #: None when absent or an empty table
    learning_curve: LearningCurveOptions | None = None
    #: the adaptive runs (a table or an array of tables; none when absent or empty)
    adaptive: list[AdaptiveOptions] = field(default_factory=list)

    @classmethod
    def from_section(cls, section: dict[str, Any]) -> ThemisOptions:
        kw = dict(section)
        lc, ad = kw.pop("learning_curve", None), kw.pop("adaptive", None)
        opts = cls(**kw)
        opts.n, opts.extra_clean_train, opts.balanced = int(opts.n), int(opts.extra_clean_train), bool(opts.balanced)
        opts.learning_curve = LearningCurveOptions.from_table(lc) if lc else None
        if ad:
            opts.adaptive = [AdaptiveOptions.from_table(a) for a in (ad if isinstance(ad, list) else [ad])]
        return opts


def classifier_specs(entries: Iterable[ClassifierEntry]) -> list[ClassifierSpec]:
    """``[themis] classifiers`` entries as dicts: a name is ``{"label": name, "model": name}`` (used in every
    table); a table names its decision ``model``, ``params``, a ``grid`` to cross-validate, ``align``,
    ``extra_clean`` (add the train-split clean images) and ``all_tables`` (default: Table 1 only). ``align``
    unset = the detector's default (aligned; before issue #22 only on the PCA path), so configs whose pages
    were rendered with raw CIFAR-10 features say ``align = false``."""
    out: list[ClassifierSpec] = []
    for e in entries:
        if isinstance(e, str):
            e = {"model": e, "all_tables": True}
        out.append(
            {
                "label": str(e.get("label", e["model"])),
                "model": e["model"],
                "params": dict(e.get("params", {})),
                "grid": dict(e.get("grid", {})),
                "align": e.get("align"),
                "extra_clean": bool(e.get("extra_clean", False)),
                "all_tables": bool(e.get("all_tables", False)),
            }
        )
    return out


def schema() -> dict[str, Spec]:
    from ...detectors import DECISION_MODELS, DETECTORS
    from ...models import ZOO

    dm = Str(DECISION_MODELS, "decision model")
    zoo = Str(ZOO, "model")
    adaptive = Table(
        {
            "label": Str(),
            "n_images": POS_INT,
            "restarts": POS_INT,
            "steps": POS_INT,
            "check_every": POS_INT,
            "confidence": Num(0),
            "stepsize": POS_NUM,
            "const": POS_NUM,
            "init_noise": Num(0, 1),
        }
    )
    clf = OneOf(
        dm,
        Table(
            {
                "label": Str(nonempty=True),
                "model": dm,
                "params": Table(None),
                "grid": Table(None),
                "align": Bool(),
                "extra_clean": Bool(),
                "all_tables": Bool(),
            },
            required=("model",),
        ),
        what="a decision model name or a table {model, label, params, grid, align, extra_clean, all_tables}",
    )
    return {
        "themis": Table(
            {
                "models": List(zoo),
                "classifiers": List(clf),
                "ns": List(POS_INT),
                "extra_clean_train": POS_INT,
                "table1_train_on": List(Str(), min_len=1),
                "learning_curve": Table(
                    {"sizes": List(POS_INT, min_len=1), "repeats": POS_INT, "classifiers": List(clf, min_len=1)}
                ),
                "balanced": Bool(),
                "n": POS_INT,
                "compare": List(Str(DETECTORS, "detector")),
                "train_on": List(Str()),
                "adaptive": OneOf(
                    adaptive, List(adaptive), what="a table [themis.adaptive] or tables [[themis.adaptive]]"
                ),
            }
        )
    }


def check(doc: dict[str, Any], ctx: Context, P: Problems) -> None:
    opts = doc.get("themis", {})
    for i, m in enumerate(opts.get("models", [])):
        ctx.compatible(m, f"themis.models[{i + 1}]")
    check_classifiers(opts.get("classifiers", []), "themis.classifiers", P)
    check_classifiers((opts.get("learning_curve") or {}).get("classifiers", []), "themis.learning_curve.classifiers", P)
    ns, n = opts.get("ns", []), opts.get("n", ThemisOptions.n)
    if any(v > n for v in ns):
        P.add("themis.ns", f"every n must be in 1..n (= {n}), got {ns}")
    if ctx.attacks is not None:
        labels = {a.get("label", a.get("name")) for a in ctx.attacks}
        for key in ("train_on", "table1_train_on"):
            for i, lab in enumerate(opts.get(key, [])):
                if lab not in labels:
                    P.add(
                        f"themis.{key}[{i + 1}]",
                        f"{lab!r} is not the label of an [[attack]]; labels: " + ", ".join(sorted(map(str, labels))),
                    )


def check_classifiers(entries: list[Any], where: str, P: Problems) -> None:
    """Decision-model tables of [themis]: unique labels, params the model accepts, grid values as non-empty
    arrays of accepted values."""
    from ...detectors.decision import make_decision_model

    seen: set[str] = set()
    for i, e in enumerate(entries):
        key = f"{where}[{i + 1}]"
        well_typed = isinstance(e, str) or (
            isinstance(e, dict)
            and isinstance(e.get("model"), str)
            and isinstance(e.get("params", {}), dict)
            and isinstance(e.get("grid", {}), dict)
        )
        if not well_typed:
            continue  # the type check reported it
        spec = classifier_specs([e])[0]
        if spec["label"] in seen:
            P.add(key, f"label {spec['label']!r} is used twice (give each decision model a distinct label)")
        seen.add(spec["label"])
        grid = spec["grid"]
        bad = [k for k, v in grid.items() if not isinstance(v, list) or not v]
        for k in bad:
            P.add(f"{key}.grid.{k}", f"must be a non-empty array of values, got {kind_of(grid[k])} {grid[k]!r}")
        if bad:
            continue
        try:
            for j in range(max([1] + [len(v) for v in grid.values()])):
                make_decision_model(
                    spec["model"], **spec["params"], **{k: v[min(j, len(v) - 1)] for k, v in grid.items()}
                )
        except Exception as err:  # noqa: BLE001  (any refusal of the estimator is a config problem)
            P.add(key, f"decision model {spec['model']!r} refuses these params / grid values: {err}")
