"""The ``[imageops]`` and ``[[cnn]]`` tables of Nguyen et al.'s experiment: schema and typed options."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..schema import POS_INT, POS_NUM, TABLES_HINT, Bool, List, Spec, Str, Table


@dataclass
class NguyenOptions:
    #: [imageops]: the image-processing detector's options (k, the ks swept, decision models, operation families)
    imageops: dict[str, Any] = field(default_factory=dict)
    #: [[cnn]]: one table per CNN detector (label, backbone, softmax_in_training, epochs, lr, batch_size, widths)
    cnn: list[dict[str, Any]] = field(default_factory=list)


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
