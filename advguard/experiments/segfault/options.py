"""The ``[segfault]`` table: defaults, schema and cross-key checks (occlusion units, decision models)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypedDict

from ..schema import POS_INT, POS_NUM, TABLES_HINT, List, Problems, Spec, Str, Table, did_you_mean

if TYPE_CHECKING:  # pragma: no cover
    from ..config import Context


class _UnitRequired(TypedDict):
    unit: str


class UnitTable(_UnitRequired, total=False):
    """One [[segfault.unit]] table as written (a dict: the timing cache keys are made of it)."""

    label: str
    #: the occlusion unit's parameters (LeaveOneOut unit_params; value_range included)
    params: dict[str, Any]
    #: the paper's row it reproduces
    paper: str


def unit_label(unit: UnitTable) -> str:
    """A ``[[segfault.unit]]``'s label (its ``label``, else its unit name)."""
    return unit.get("label", unit["unit"])


def paper_label(unit: UnitTable) -> str:
    """The paper's row a ``[[segfault.unit]]`` reproduces (its ``paper``, else its label)."""
    return unit.get("paper", unit_label(unit))


@dataclass
class SegmentCountsOptions:
    """[segfault.segment_counts]: segments per clean image of the paper's grid at several value ranges."""

    images: int = 500
    #: as written (an int and a float give different cache keys)
    value_ranges: list[float] = field(default_factory=lambda: [1, 255])


@dataclass
class SegfaultOptions:
    #: the occlusion units ([[segfault.unit]] tables: label, unit, params, paper)
    unit: list[UnitTable] = field(default_factory=list)
    classifiers: list[str] = field(default_factory=lambda: ["xgb"])
    pixel_classifiers: list[str] = field(default_factory=lambda: ["xgb", "rf", "svc"])
    baseline: str = "zero"
    statistic: str = "iqr"
    batch_images: int = 128
    #: images timed per unit (None = batch_images)
    timing_images: int | None = None
    #: segment counts of the segmentation units at several pixel scales (None: not counted; an empty table
    #: counts nothing either)
    segment_counts: SegmentCountsOptions | None = None

    @classmethod
    def from_section(cls, section: dict[str, Any]) -> SegfaultOptions:
        sc = section.get("segment_counts")
        return cls(**{**section, "segment_counts": SegmentCountsOptions(**sc) if sc else None})

    def models(self, unit: UnitTable) -> list[str]:
        """The decision models trained on ``unit``'s features (Table 2's for the pixel unit, else Table 6's)."""
        return list(self.pixel_classifiers if unit["unit"] == "pixel" else self.classifiers)


def schema() -> dict[str, Spec]:
    from ...detectors import DECISION_MODELS
    from ...detectors.loo import BASELINES, STATISTICS, UNITS

    dm = Str(DECISION_MODELS, "decision model")
    return {
        "segfault": Table(
            {
                "classifiers": List(dm),
                "pixel_classifiers": List(dm),
                "baseline": Str(BASELINES, "occlusion baseline"),
                "statistic": Str(STATISTICS, "dispersion statistic"),
                "batch_images": POS_INT,
                "timing_images": POS_INT,
                "segment_counts": Table({"images": POS_INT, "value_ranges": List(POS_NUM, min_len=1)}),
                "unit": List(
                    Table(
                        {
                            "label": Str(nonempty=True),
                            "unit": Str(UNITS, "occlusion unit"),
                            "params": Table(None),
                            "paper": Str(nonempty=True),
                        },
                        required=("unit",),
                    ),
                    min_len=1,
                    hint=TABLES_HINT.format("segfault.unit"),
                ),
            }
        )
    }


def check(doc: dict[str, Any], ctx: Context, P: Problems) -> None:
    from ...detectors.loo import UNIT_PARAMS, check_unit_params
    from ...errors import AdvguardError

    units = doc.get("segfault", {}).get("unit")
    if not units:
        P.add("segfault.unit", "[segfault] needs at least one [[segfault.unit]]")
        return
    for i, u in enumerate(units):
        allowed = set(UNIT_PARAMS.get(u["unit"], {}))
        bad = False
        for k in sorted(u.get("params", {}), key=str):
            if k not in allowed and k != "value_range":  # check_unit_params says why not
                bad = True
                P.add(
                    f"segfault.unit[{i + 1}].params.{k}",
                    f"occlusion unit {u['unit']!r} has no "
                    f"parameter {k!r}"
                    + did_you_mean(k, allowed)
                    + (f"; its parameters: {', '.join(sorted(allowed))}" if allowed else "; it takes none"),
                )
        if not bad and u["unit"] in UNIT_PARAMS:
            try:  # the values too (ranges, value_range), as LeaveOneOut would check them
                check_unit_params(u["unit"], dict(u.get("params", {})))
            except AdvguardError as e:
                P.add(f"segfault.unit[{i + 1}].params", str(e))
    labels = [u.get("label", u.get("unit")) for u in units]
    if len(set(labels)) != len(labels):
        P.add("segfault.unit", f"[[segfault.unit]] labels must be unique, got {labels}")
