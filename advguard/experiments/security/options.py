"""The ``[security]`` table: budgets, attack strength, the Guard row, sanity checks (defaults, schema, checks)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..schema import (
    NONNEG_INT,
    POS_INT,
    POS_NUM,
    SHARE,
    AnyValue,
    List,
    Num,
    OneOf,
    Problems,
    Spec,
    Str,
    Table,
    param_problems,
)

if TYPE_CHECKING:  # pragma: no cover
    from ..config import Context

#: the norms a budget may have
NORMS = ("linf", "l2")


@dataclass(frozen=True)
class Budget:
    """One column group of the table: a perturbation budget ``eps`` (in [0, 1] pixel units) in ``norm``."""

    norm: str
    eps: float
    label: str = ""

    @property
    def name(self) -> str:
        """``label``, else e.g. ``L-inf 8/255`` or ``L2 0.5``."""
        if self.label:
            return self.label
        if self.norm == "linf":
            k = self.eps * 255
            return f"L-inf {k:g}/255" if abs(k - round(k)) < 1e-6 else f"L-inf {self.eps:g}"
        return f"L2 {self.eps:g}"


def default_budgets() -> list[Budget]:
    """Carlini et al. 2019's usual CIFAR-10 grid: L-inf 2, 4, 8, 16 / 255 and L2 0.5."""
    return [Budget("linf", k / 255) for k in (2, 4, 8, 16)] + [Budget("l2", 0.5)]


@dataclass
class Extra:
    """One ``[[security.extra]]``: a further detector-aware attack (e.g. the black-box ``square-bypass``, or THEMIS's
    own ``detector-aware-cw``) run against some detectors at some budgets, on the first ``n_images`` attack images.
    A localized attack (``norm == "l0"``, e.g. TaintRadar's ``taintradar-bpda``) is a column of the patch rows
    instead: per patch size, a region of that size on the first ``n_images`` patch images, aimed at the patch
    target."""

    label: str
    attack: str
    #: detector labels (empty: every detector, and the Guard when ``guard`` is true)
    detectors: list[str] = field(default_factory=list)
    #: budget names (empty: the sanity budget); the attack gets ``eps`` / ``norm`` of each unless ``budget_free``
    budgets: list[str] = field(default_factory=list)
    params: dict[str, Any] = field(default_factory=dict)
    n_images: int | None = None
    guard: bool = True
    #: the attack takes no eps / norm (e.g. an unbounded CW): it runs once, its distortion reported
    budget_free: bool = False

    @property
    def localized(self) -> bool:
        """A region attack (``norm == "l0"``): a column of the patch rows, not an L-p row's extra."""
        from ...attacks import ATTACKS

        return getattr(ATTACKS.get(self.attack), "norm", None) == "l0"


@dataclass
class ModelRow:
    """One ``[[security.model]]``: a defended classifier (no detector, e.g. a BlurNet model), attacked at every
    budget by PGD crafted on the config's model (transfer, BlurNet's black-box setting) and by PGD through the
    defended model itself (white-box; the blur is a differentiable convolution, so no BPDA is needed)."""

    label: str
    model: str
    note: str = ""


@dataclass
class SecurityOptions:
    budgets: list[Budget] = field(default_factory=default_budgets)
    #: correctly classified clean images of the attack fold attacked in every cell
    n_attack: int = 200
    steps: int = 50
    restarts: int = 1
    rel_stepsize: float = 0.1
    kappa: float | list[float] = 0.0
    check_every: int = 5
    batch_size: int = 50
    #: adaptive-attack parameters per detector label (e.g. ``{ "Nguyen image-ops" = { eot_samples = 8 } }``)
    attack_params: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: the detectors (labels) the Guard row holds; empty: every detector the adaptive Guard attack can model
    guard: list[str] = field(default_factory=list)
    guard_row: bool = True
    #: the sanity checks run at this budget (name; default: the middle L-inf budget) on the first sanity_images
    sanity_budget: str = ""
    sanity_images: int = 50
    #: the adaptive attack again with steps x steps_factor (0: skipped)
    steps_factor: int = 2
    #: the adaptive attack with an unbounded L-inf budget (eps = 1): it must reach 100 %
    unbounded: bool = True
    #: the unbounded check's absolute step (0: 1 / the row's steps, so that its steps together can cross the pixel
    #: range while none jumps far); it starts from the clean image: a uniform start in the eps = 1 ball is a noise
    #: image (Segmentation Fault on cifar10-cnn: 8 % from there). On cifar10-cnn from the clean image, steps of
    #: 0.1 left image-ops at 96 % and THEMIS at 98 %, steps of 16/255 x 0.1 THEMIS at 98 %, steps of 0.02 none.
    unbounded_step: float = 0.0
    extra: list[Extra] = field(default_factory=list)
    #: defended models (rows without a detector: bypass = misclassified by the defended model)
    model: list[ModelRow] = field(default_factory=list)
    #: patch detectors (TaintRadar, SentiNet): their rows are patch sizes (shares of the image area), each a
    #: universal patch trained on a batch of ``patch_batch`` attack images and pasted on them (TaintRadar Table II)
    patch_sizes: list[float] = field(default_factory=lambda: [0.2, 0.3])
    patch_target: int = 3
    patch_steps: int = 200
    patch_batch: int = 16
    patch_position: str = "random"
    #: the adaptive patch attacks' weight of the detector term (``lam``)
    patch_lam: float = 0.5

    @classmethod
    def from_section(cls, section: dict[str, Any]) -> SecurityOptions:
        s = dict(section)
        budgets = [Budget(**b) for b in s.pop("budgets", [])] or default_budgets()
        extra = [Extra(**e) for e in s.pop("extra", [])]
        models = [ModelRow(**m) for m in s.pop("model", [])]
        return cls(budgets=budgets, extra=extra, model=models, **s)

    def unbounded_abs_step(self, steps: int | None = None) -> float:
        """The unbounded check's step per iteration (L-inf) for a run of ``steps`` (default: the table's)."""
        return self.unbounded_step or 1.0 / (steps or self.steps)

    def sanity(self) -> Budget:
        """The budget the sanity checks run at."""
        if self.sanity_budget:
            return next(b for b in self.budgets if b.name == self.sanity_budget)
        linf = [b for b in self.budgets if b.norm == "linf"] or self.budgets
        return sorted(linf, key=lambda b: b.eps)[len(linf) // 2]


def schema() -> dict[str, Spec]:
    from ...attacks import ATTACKS
    from ...attacks.patch import POSITIONS
    from ...models import ZOO

    budget = Table({"norm": Str(NORMS, "norm"), "eps": POS_NUM, "label": Str(nonempty=True)}, required=("norm", "eps"))
    extra = Table(
        {
            "label": Str(nonempty=True),
            "attack": Str(sorted(ATTACKS), "attack"),
            "detectors": List(Str(nonempty=True)),
            "budgets": List(Str(nonempty=True)),
            "params": Table(None),
            "n_images": POS_INT,
            "guard": AnyValue(),
            "budget_free": AnyValue(),
        },
        required=("label", "attack"),
    )
    model = Table({"label": Str(nonempty=True), "model": Str(ZOO, "model"), "note": Str()}, required=("label", "model"))
    kappa = OneOf(Num(0), List(Num(0), min_len=1), what="a number >= 0 or a list of them")
    return {
        "security": Table(
            {
                "budgets": List(budget, min_len=1),
                "n_attack": POS_INT,
                "steps": POS_INT,
                "restarts": POS_INT,
                "rel_stepsize": POS_NUM,
                "kappa": kappa,
                "check_every": POS_INT,
                "batch_size": POS_INT,
                "attack_params": Table(None),
                "guard": List(Str(nonempty=True)),
                "guard_row": AnyValue(),
                "sanity_budget": Str(nonempty=True),
                "sanity_images": POS_INT,
                "steps_factor": NONNEG_INT,
                "unbounded": AnyValue(),
                "unbounded_step": Num(0, 1),
                "extra": List(extra),
                "model": List(model),
                "patch_sizes": List(SHARE, min_len=1),
                "patch_target": NONNEG_INT,
                "patch_steps": POS_INT,
                "patch_batch": POS_INT,
                "patch_position": Str(POSITIONS, "patch position"),
                "patch_lam": Num(0, 1),
            }
        )
    }


def check(doc: dict[str, Any], ctx: Context, P: Problems) -> None:
    """Labels named in the table exist; budgets are unique and inside their norm's range."""
    from ...attacks import ATTACKS
    from .run import ADAPTIVE, PATCH_ADAPTIVE

    sec = doc.get("security") or {}
    labels = [d.get("label", d.get("name")) for d in doc.get("detector", []) if isinstance(d, dict)]
    names: list[str] = []
    for i, b in enumerate(sec.get("budgets", [])):
        if not isinstance(b, dict) or b.get("norm") not in NORMS or not isinstance(b.get("eps"), (int, float)):
            continue
        if b["norm"] == "linf" and b["eps"] > 1:
            P.add(f"security.budgets[{i + 1}].eps", f"an L-inf budget is in (0, 1] pixel units, got {b['eps']}")
        name = Budget(b["norm"], float(b["eps"]), str(b.get("label", ""))).name
        if name in names:
            P.add(f"security.budgets[{i + 1}]", f"repeated budget {name!r}")
        names.append(name)
    names = names or [b.name for b in default_budgets()]
    kinds = {d.get("label", d.get("name")): d.get("name") for d in doc.get("detector", []) if isinstance(d, dict)}
    for key, value in (sec.get("attack_params") or {}).items():
        if key not in labels:
            P.add(f"security.attack_params.{key}", f"{key!r} is not the label of a [[detector]] (have: {labels})")
        elif not isinstance(value, dict):
            P.add(f"security.attack_params.{key}", "must be a table of the adaptive attack's parameters")
        else:
            adaptive = ADAPTIVE.get(str(kinds.get(key))) or PATCH_ADAPTIVE.get(str(kinds.get(key)))
            _check_attack_params(f"security.attack_params.{key}", adaptive, value, P)
    for j, name in enumerate(sec.get("guard", [])):
        if name not in labels:
            P.add(f"security.guard[{j + 1}]", f"{name!r} is not the label of a [[detector]] (have: {labels})")
    if "sanity_budget" in sec and sec["sanity_budget"] not in names:
        P.add("security.sanity_budget", f"{sec['sanity_budget']!r} is not a budget's name (have: {names})")
    for flag in ("guard_row", "unbounded"):
        if flag in sec and not isinstance(sec[flag], bool):
            P.add(f"security.{flag}", f"must be true or false, got {sec[flag]!r}")
    _check_model_rows(sec, ctx, P)
    for key, e in _labelled(sec, "extra", P):
        attack = ATTACKS.get(str(e.get("attack")))
        if attack is not None and "detector" not in getattr(attack, "requires", ()):
            P.add(f"{key}.attack", f"{e['attack']!r} does not take a detector: an extra attack must know the detector")
        if attack is not None and isinstance(e.get("params"), dict):
            _check_attack_params(f"{key}.params", str(e["attack"]), e["params"], P)
        for j, name in enumerate(e.get("detectors", [])):
            if name not in labels:
                P.add(f"{key}.detectors[{j + 1}]", f"{name!r} is not the label of a [[detector]] (have: {labels})")
        for j, name in enumerate(e.get("budgets", [])):
            if name not in names:
                P.add(f"{key}.budgets[{j + 1}]", f"{name!r} is not a budget's name (have: {names})")
        for flag in ("guard", "budget_free"):
            if flag in e and not isinstance(e[flag], bool):
                P.add(f"{key}.{flag}", f"must be true or false, got {e[flag]!r}")
        if attack is not None and getattr(attack, "norm", None) == "l0":  # a localized attack: patch rows only
            patch = [d.get("label", d.get("name")) for d in doc.get("detector", []) if d.get("name") in PATCH_ADAPTIVE]
            if e.get("budgets"):
                P.add(f"{key}.budgets", f"{e['attack']!r} is localized: it runs at every patch size, not at budgets")
            wrong = [n for n in e.get("detectors", []) if n in labels and n not in patch]
            if wrong or not patch:
                P.add(
                    f"{key}.detectors",
                    f"{e['attack']!r} is localized: it is a column of the patch detectors' rows "
                    f"(have: {patch}); not of {wrong or labels}",
                )


#: an attack's parameters the security bench sets itself, whatever a config says
BENCH_SET = {"detector": "the row's fitted detector", "progress": "its own progress bars"}


def _check_attack_params(key: str, attack: str | None, params: dict[str, Any], P: Problems) -> None:
    """Before any image is attacked (a wrong key would fail hours into a run): every key is a parameter of
    ``attack`` (the closest one suggested), and the adaptive search's ``loss`` and ``kappa`` values are valid."""
    from ...attacks import ATTACKS
    from ...attacks.adaptive_pgd import AdaptivePGD, check_kappa, check_loss
    from ...errors import AdvguardError

    cls = ATTACKS.get(attack or "")
    if cls is None:
        return
    for name, msg in param_problems(str(attack), params, cls.parameters(), BENCH_SET):
        P.add(f"{key}.{name}", msg)
    if issubclass(cls, AdaptivePGD):
        for name, check in (("loss", check_loss), ("kappa", check_kappa)):
            if name in params:
                try:
                    check(params[name], attack or "")
                except AdvguardError as err:
                    P.add(f"{key}.{name}", str(err))


def _labelled(sec: dict[str, Any], table: str, P: Problems) -> Iterator[tuple[str, dict[str, Any]]]:
    """The entries of the list of tables ``security.<table>`` (with their key), each label used once."""
    seen: set[str] = set()
    for i, e in enumerate(sec.get(table, [])):
        if not isinstance(e, dict):
            continue
        key = f"security.{table}[{i + 1}]"
        if e.get("label") in seen:
            P.add(f"{key}.label", f"repeated label {e.get('label')!r}")
        seen.add(str(e.get("label")))
        yield key, e


def _check_model_rows(sec: dict[str, Any], ctx: Context, P: Problems) -> None:
    """A defended model must classify the config's dataset (same dataset and classes); labels are unique."""
    from ...models import ZOO, get_spec

    for key, m in _labelled(sec, "model", P):
        name = m.get("model")
        if name in ZOO and ctx.dataset is not None and get_spec(str(name)).dataset != ctx.dataset:
            P.add(
                f"{key}.model", f"{name!r} classifies {get_spec(str(name)).dataset!r}, not the config's {ctx.dataset!r}"
            )
