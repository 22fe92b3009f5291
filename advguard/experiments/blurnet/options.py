"""The ``[blurnet]`` table: its defaults (the paper's protocol on GTSRB), schema and cross-key checks."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from ..schema import NONNEG_INT, POS_INT, POS_NUM, Bool, Int, List, Num, OneOf, Problems, Spec, Str, Table

if TYPE_CHECKING:  # pragma: no cover
    from ..config import Context


@dataclass
class BlurNetOptions:
    stop_class: int = 14
    n_signs: int = 40
    targets: str | list[int] = "all"
    lam: float = 0.002
    steps: int = 300
    lr: float = 0.05
    mask: str = "rp2-rectangles"
    n_transforms: int = 1
    chunk: int = 7
    eval_views: int = 10
    l1_mask: bool = True
    l1_share: float = 0.1
    spectra_blur: int = 5
    blackbox: list[str] = field(
        default_factory=lambda: [
            "gtsrb-cnn-input-blur3",
            "gtsrb-cnn-input-blur5",
            "gtsrb-cnn-feature-blur3",
            "gtsrb-cnn-feature-blur5",
        ]
    )
    whitebox: list[str] = field(
        default_factory=lambda: [
            "gtsrb-cnn-dw3",
            "gtsrb-cnn-dw5",
            "gtsrb-cnn-dw7",
            "gtsrb-cnn-tv1e-4",
            "gtsrb-cnn-tv1e-5",
        ]
    )
    # RP2 settings a preset provides unless set here (None = unset; see run.rp2_settings)
    preset: str | None = None
    init: str | None = None
    transforms: bool | None = None
    nps: bool | None = None
    norm_p: int | None = None
    clip: float | None = None

    @classmethod
    def from_section(cls, section: dict[str, Any]) -> BlurNetOptions:
        return cls(**section)


#: the RP2 settings with no default of their own in [blurnet]
PRESET_KEYS = ("preset", "init", "transforms", "nps", "norm_p", "clip")
#: [blurnet] options and their defaults, as a dict (without the unset preset keys)
BLURNET_DEFAULTS = {k: v for k, v in asdict(BlurNetOptions()).items() if k not in PRESET_KEYS}


def schema() -> dict[str, Spec]:
    from ...attacks.rp2 import INITS, MASKS, PRESETS
    from ...models import ZOO

    zoo = Str(ZOO, "model")
    return {
        "blurnet": Table(
            {
                "stop_class": NONNEG_INT,
                "n_signs": POS_INT,
                "targets": OneOf(
                    Str(["all"], "targets"), List(NONNEG_INT, min_len=1), what='"all" or an array of class numbers'
                ),
                "lam": Num(0),
                "steps": POS_INT,
                "lr": POS_NUM,
                "mask": Str(MASKS, "RP2 mask"),
                "n_transforms": POS_INT,
                "chunk": POS_INT,
                "eval_views": POS_INT,
                "l1_mask": Bool(),
                "l1_share": Num(0, 1, open_lo=True),
                "spectra_blur": POS_INT,
                "blackbox": List(zoo),
                "whitebox": List(zoo),
                # RP2 options (issue #22; advguard.attacks.RP2): a preset's values unless set here
                "preset": Str(PRESETS, "RP2 preset"),
                "init": Str(INITS, "RP2 init"),
                "transforms": Bool(),
                "nps": Bool(),
                "norm_p": Int(1, 2),
                "clip": POS_NUM,
            }
        )
    }


def check(doc: dict[str, Any], ctx: Context, P: Problems) -> None:
    o = {**BLURNET_DEFAULTS, **doc.get("blurnet", {})}
    for k in ("blackbox", "whitebox"):
        for i, m in enumerate(o[k]):
            ctx.compatible(m, f"blurnet.{k}[{i + 1}]")
    n_classes = ctx.n_classes
    if n_classes and o["stop_class"] >= n_classes:
        P.add("blurnet.stop_class", f"must be a class of {ctx.dataset} (0..{n_classes - 1}), got {o['stop_class']}")
    if o["targets"] != "all":
        if o["stop_class"] in o["targets"]:
            P.add("blurnet.targets", f'"all" or a list of classes other than the stop class, got {o["targets"]!r}')
        if n_classes and any(t >= n_classes for t in o["targets"]):
            P.add("blurnet.targets", f"classes must be in 0..{n_classes - 1}, got {o['targets']!r}")
