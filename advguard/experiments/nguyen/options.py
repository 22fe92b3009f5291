"""The ``[imageops]`` and ``[[cnn]]`` tables of Nguyen et al.'s experiment: schema and typed options."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..schema import POS_INT, POS_NUM, TABLES_HINT, Bool, List, Spec, Str, Table

#: the decision models of Table 4 unless [imageops] classifiers says otherwise
DEFAULT_CLASSIFIERS = ("svc", "rf", "lda", "mlp")
#: the k values of the k ablation (the configured k is always added)
DEFAULT_KS = (1, 3, 5)


def _all_families() -> list[str]:
    from ...transforms import FAMILY_SETS

    return list(FAMILY_SETS)


@dataclass
class ImageOpsOptions:
    """[imageops]: the image-processing detector's options."""

    #: length of the top-k label lists (None: ``default_k`` of the model's class count)
    k: int | None = None
    #: the ks of the k ablation
    ks: list[int] = field(default_factory=lambda: list(DEFAULT_KS))
    #: Table 4's decision models
    classifiers: list[str] = field(default_factory=lambda: list(DEFAULT_CLASSIFIERS))
    #: Table 4's operation families
    families: list[str] = field(default_factory=_all_families)

    @classmethod
    def from_section(cls, section: dict[str, Any]) -> ImageOpsOptions:
        return cls(**section)


@dataclass
class CNNOptions:
    """One [[cnn]] table: a CNN detector of the paper's Section 4."""

    #: its row label ("" when the table gives none: the parameters as JSON are shown instead)
    label: str
    #: the CNNDetector's keyword arguments as written (backbone, softmax_in_training, epochs, lr, batch_size,
    #: widths): the detector's cache key is made of them, so unset ones stay absent (CNNDetector's defaults)
    params: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_section(cls, section: dict[str, Any]) -> CNNOptions:
        return cls(label=section.get("label", ""), params={k: v for k, v in section.items() if k != "label"})


@dataclass
class NguyenOptions:
    #: [imageops]: the image-processing detector's options (k, the ks swept, decision models, operation families)
    imageops: ImageOpsOptions = field(default_factory=ImageOpsOptions)
    #: [[cnn]]: one table per CNN detector
    cnn: list[CNNOptions] = field(default_factory=list)

    @classmethod
    def from_sections(cls, imageops: dict[str, Any], cnn: list[dict[str, Any]]) -> NguyenOptions:
        return cls(imageops=ImageOpsOptions.from_section(dict(imageops)), cnn=[CNNOptions.from_section(c) for c in cnn])


def schema() -> dict[str, Spec]:
    from ...detectors import DECISION_MODELS
    from ...detectors.cnn import BACKBONES
    from ...transforms import FAMILY_SETS

    dm = Str(DECISION_MODELS, "decision model")
    return {
        "imageops": Table(
            {
                "k": POS_INT,
                "ks": List(POS_INT),
                "classifiers": List(dm),
                "families": List(Str(FAMILY_SETS, "operation family")),
            }
        ),
        "cnn": List(
            Table(
                {
                    "label": Str(nonempty=True),
                    "backbone": Str(BACKBONES, "CNN detector backbone"),
                    "softmax_in_training": Bool(),
                    "epochs": POS_INT,
                    "lr": POS_NUM,
                    "batch_size": POS_INT,
                    "widths": List(List(POS_INT, min_len=1), min_len=1),
                }
            ),
            hint=TABLES_HINT.format("cnn"),
        ),
    }
