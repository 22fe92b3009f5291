"""The ``[guard]`` table: the Guard combinations to evaluate (defaults, schema, cross-key checks)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..schema import POS_INT, List, Problems, Spec, Str, Table

if TYPE_CHECKING:  # pragma: no cover
    from ..config import Context


@dataclass
class Combination:
    """One ``[[guard.combination]]``: a :class:`~advguard.Guard` rule over some of the config's detectors."""

    label: str
    combine: str = "any"
    #: detector labels of the config's [[detector]] list (empty: all of them)
    detectors: list[str] = field(default_factory=list)
    #: the stacked rule's meta-model (a decision model name)
    meta_model: str = "logreg"


def default_combinations() -> list[Combination]:
    return [Combination("any (all detectors)", "any"), Combination("stacked (all detectors)", "stacked")]


@dataclass
class GuardOptions:
    combinations: list[Combination] = field(default_factory=default_combinations)
    #: the stacked meta-model's cross-validation folds (its clean out-of-fold scores set the threshold)
    folds: int = 5

    @classmethod
    def from_section(cls, section: dict[str, Any]) -> GuardOptions:
        combos = section.get("combination")
        return cls(
            combinations=[Combination(**c) for c in combos] if combos else default_combinations(),
            folds=int(section.get("folds", cls.folds)),
        )


def schema() -> dict[str, Spec]:
    from ...detectors import DECISION_MODELS
    from ...guard import COMBINES

    combo = Table(
        {
            "label": Str(nonempty=True),
            "combine": Str(COMBINES, "combination rule"),
            "detectors": List(Str(nonempty=True)),
            "meta_model": Str(DECISION_MODELS, "decision model"),
        },
        required=("label",),
    )
    return {"guard": Table({"combination": List(combo, min_len=1), "folds": POS_INT})}


def check(doc: dict[str, Any], ctx: Context, P: Problems) -> None:
    """Combination labels are unique and name only configured detectors; the three folds are given."""
    labels = [d.get("label", d.get("name")) for d in doc.get("detector", []) if isinstance(d, dict)]
    seen: set[str] = set()
    for i, c in enumerate((doc.get("guard") or {}).get("combination", [])):
        if not isinstance(c, dict):
            continue
        key = f"guard.combination[{i + 1}]"
        label = str(c.get("label"))
        if label in seen:
            P.add(f"{key}.label", f"repeated combination label {label!r}")
        seen.add(label)
        for j, name in enumerate(c.get("detectors", [])):
            if name not in labels:
                P.add(f"{key}.detectors[{j + 1}]", f"{name!r} is not the label of a [[detector]] (have: {labels})")
    fr = doc.get("fractions")
    if isinstance(fr, list) and len(fr) != 3:
        P.add("fractions", "the guard experiment needs three shares: [detector fit, combination fit, test]")
    if (doc.get("guard") or {}).get("folds", 5) < 2:
        P.add("guard.folds", "at least 2 folds")
