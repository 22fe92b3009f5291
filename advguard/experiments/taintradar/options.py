"""The ``[taintradar]`` table: defaults (the paper's ImageNet protocol), schema and cross-key checks."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, TypedDict, cast

from ..schema import (
    NONNEG_INT,
    POS_INT,
    POS_NUM,
    SHARE,
    TABLES_HINT,
    Bool,
    List,
    Num,
    OneOf,
    Problems,
    Spec,
    Str,
    Table,
)

if TYPE_CHECKING:  # pragma: no cover
    from ..config import Context


class Variant(TypedDict, total=False):
    """A ``[[taintradar.variants]]`` table (Section VII-A): a patch setting beside the grid (batch 16, size 0.3 unless
    given)."""

    label: str
    batch: int
    size: float
    shape: str
    n_patches: int
    position: str
    multi_size: bool


class ModelEntry(TypedDict):
    """An entry of [taintradar] ``models`` with its defaults filled in (:func:`model_entry`)."""

    model: str
    layer: str | None
    label: str
    note: str


@dataclass
class MisleadingOptions:
    """[taintradar.misleading]: Section VII-B's region-misleading patches (Figure 6), one row per lambda; ``steps``
    None = the grid's."""

    lambdas: list[float] = field(default_factory=lambda: [0.0, 0.2, 0.4, 0.6, 0.8, 0.9])
    batch: int = 16
    size: float = 0.3
    position: str = "bottom-right"
    steps: int | None = None


@dataclass
class BpdaOptions:
    """[taintradar.bpda]: Section VII-B's end-to-end attack on the first ``n`` victims (the paper: 200 images, 7 %
    of the image, 2000 Adam steps, t + 1 every 100)."""

    n: int = 200
    size: float = 0.07
    position: str = "random"
    steps: int = 2000
    lr: float = 0.1
    t_every: int = 100
    check_every: int = 50
    recheck: int = 5


@dataclass
class TaintRadarOptions:
    n_victims: int = 400
    n_calibration: int = 200
    n_eval_clean: int = 400
    target: int = 859
    batch_sizes: list[int] = field(default_factory=lambda: [1, 4, 16])
    multi_size: list[bool] = field(default_factory=lambda: [False, True])
    sizes: list[float] = field(default_factory=lambda: [0.2, 0.3, 0.4])
    positions: list[str] = field(default_factory=lambda: ["bottom-right", "random"])
    steps: int = 500
    lr: float = 0.05
    fprs: list[float] = field(default_factory=lambda: [0.06, 0.03])
    fill: str = "noise"
    layer: str | None = None
    k_max: int | None = None
    sentinet_n_test: int = 100
    variants: list[Variant] = field(default_factory=list)
    size_range: list[float] = field(default_factory=lambda: [0.1, 0.5])
    detector_batch: int | None = None
    #: [taintradar.misleading] as written (:class:`MisleadingOptions` fills it in), None = not run
    misleading: dict[str, Any] | None = None
    #: [taintradar.bpda] as written (:class:`BpdaOptions` fills it in), None = not run
    bpda: dict[str, Any] | None = None
    #: issue #22's ablation: zoo names or tables {model, layer, label, note}; None = the usual grid
    models: list[str | dict[str, Any]] | None = None
    diagnostics: int = 0

    @classmethod
    def from_section(cls, section: dict[str, Any]) -> TaintRadarOptions:
        return cls(**section)

    def misleading_options(self) -> MisleadingOptions | None:
        """[taintradar.misleading] with its defaults, None when not run."""
        return None if self.misleading is None else MisleadingOptions(**self.misleading)

    def bpda_options(self) -> BpdaOptions | None:
        """[taintradar.bpda] with its defaults, None when not run."""
        return None if self.bpda is None else BpdaOptions(**self.bpda)

    def model_entries(self) -> list[ModelEntry]:
        """The ablation's ``models`` as :class:`ModelEntry` (none when this is not an ablation)."""
        return [model_entry(m, self.layer) for m in self.models or []]


#: what a [[taintradar.variants]] table does not give (the paper's Section VII-A: universal patches, batch 16)
VARIANT_DEFAULTS: Variant = {"batch": 16, "size": 0.3}
#: [taintradar] options and their defaults (the paper's ImageNet protocol), as a dict
TAINTRADAR_DEFAULTS = asdict(TaintRadarOptions())
#: [taintradar.misleading]'s defaults as a dict (:class:`MisleadingOptions`)
MISLEADING_DEFAULTS = asdict(MisleadingOptions())
#: [taintradar.bpda]'s defaults as a dict (:class:`BpdaOptions`)
BPDA_DEFAULTS = asdict(BpdaOptions())


def model_entry(entry: str | dict[str, Any], layer: str | None = None) -> ModelEntry:
    """An entry of [taintradar] ``models`` as a dict {model, layer, label, note}: the layer defaults to ``layer``
    (the section's; None = the model's Grad-CAM layer), the label to the model's name, with " @ layer" when a layer
    is given."""
    e: dict[str, Any] = {"model": entry} if isinstance(entry, str) else dict(entry)
    e.setdefault("layer", layer)
    e.setdefault("label", e["model"] + (f" @ {e['layer']}" if e["layer"] else ""))
    e.setdefault("note", "")
    return cast(ModelEntry, e)  # the keys in the order written: the results' runs keep it


def schema() -> dict[str, Spec]:
    from ...attacks.patch import POSITIONS, SHAPES
    from ...detectors.taintradar import FILLS
    from ...models import ZOO

    zoo = Str(ZOO, "model")
    return {
        "taintradar": Table(
            {
                "n_victims": POS_INT,
                "n_calibration": POS_INT,
                "n_eval_clean": POS_INT,
                "target": NONNEG_INT,
                "batch_sizes": List(POS_INT, min_len=1),
                "multi_size": List(Bool(), min_len=1),
                "sizes": List(SHARE, min_len=1),
                "positions": List(Str(POSITIONS, "patch position"), min_len=1),
                "steps": POS_INT,
                "lr": POS_NUM,
                "fprs": List(SHARE, min_len=1),
                "fill": Str(FILLS, "filling pattern"),
                "layer": Str(nonempty=True),
                "k_max": POS_INT,
                "sentinet_n_test": POS_INT,
                "size_range": List(SHARE, length=2),
                "detector_batch": POS_INT,
                "diagnostics": NONNEG_INT,
                "models": List(
                    OneOf(
                        zoo,
                        Table(
                            {"model": zoo, "layer": Str(nonempty=True), "label": Str(nonempty=True), "note": Str()},
                            required=("model",),
                        ),
                        what='a zoo model name or a table {model = "...", layer = "...", label = "...", note = "..."}',
                    ),
                    min_len=1,
                ),
                "variants": List(
                    Table(
                        {
                            "label": Str(nonempty=True),
                            "batch": POS_INT,
                            "size": SHARE,
                            "shape": Str(SHAPES, "patch shape"),
                            "n_patches": POS_INT,
                            "position": Str(POSITIONS, "patch position"),
                            "multi_size": Bool(),
                        }
                    ),
                    hint=TABLES_HINT.format("taintradar.variants"),
                ),
                "misleading": Table(
                    {
                        "lambdas": List(Num(0, 1, what="weights in [0, 1]"), min_len=1),
                        "batch": POS_INT,
                        "size": SHARE,
                        "position": Str(POSITIONS, "patch position"),
                        "steps": POS_INT,
                    }
                ),
                "bpda": Table(
                    {
                        "n": POS_INT,
                        "size": SHARE,
                        "position": Str(POSITIONS, "region position"),
                        "steps": POS_INT,
                        "lr": POS_NUM,
                        "t_every": POS_INT,
                        "check_every": POS_INT,
                        "recheck": NONNEG_INT,
                    }
                ),
            }
        )
    }


def check(doc: dict[str, Any], ctx: Context, P: Problems) -> None:
    o = {**TAINTRADAR_DEFAULTS, **doc.get("taintradar", {})}
    n, n_classes = o["n_victims"], ctx.n_classes
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
        labels = [model_entry(m, o["layer"])["label"] for m in o["models"]]
        dup = sorted({x for x in labels if labels.count(x) > 1})
        if dup:
            P.add(
                "taintradar.models",
                f'labels must be unique (give label = "..." to tell entries of one model '
                f"apart), repeated: {', '.join(dup)}",
            )
        for i, m in enumerate(o["models"]):
            ctx.compatible(m if isinstance(m, str) else m["model"], f"taintradar.models[{i + 1}]")
    for i, v in enumerate(o["variants"]):
        batch = v.get("batch", VARIANT_DEFAULTS["batch"])
        if n % batch:
            P.add(f"taintradar.variants[{i + 1}].batch", f"batch must divide n_victims = {n}, got {batch}")
