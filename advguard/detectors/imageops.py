"""Nguyen et al.'s image-processing detector (Section 3.2): top-k label changes under 38 operations.

For an image, ``L`` is the classifier's top-k labels and ``L_i`` the top-k labels after
operation ``i`` (:mod:`advguard.transforms`). Two features:

- **counting** (eq. 1): for each position p = 1..k, the number of ops whose p-th label equals the
  original p-th label (k numbers);
- **differences** (eq. 2): the binary k x n matrix ``Delta(L[p], L_i[p])`` (1 = changed), flattened
  op-major.

A supervised decision model (``svc``, ``rf`` with 100 trees of depth 2, ``lda``, ``mlp``: the
paper's four; any of :data:`advguard.detectors.DECISION_MODELS`) separates clean from
adversarial feature vectors. Op families are selectable: ``jpeg``, ``blur``, ``rotate``,
``scale``, ``jpeg+scale``, ``all`` or explicit op names.

Choice of k (paper: top-5 of ImageNet's 1,000 classes): :func:`default_k` keeps the paper's k = 5,
capped at the class count. With 10 classes a top-5 list covers half of all labels, so we measured
k = 1, 3, 5 on CIFAR-10 (``docs/results/nguyen/cifar10``, dev set): the lower ranks still carry
signal (SVC on all 38 ops, differences feature: 90.0 / 94.9 / 97.8 % dev accuracy for k = 1 / 3 / 5),
so k = 5 is kept for 10 and 43 classes alike.

Cost: 1 + n model passes per image. All variants of a batch are made on a thread pool (Pillow
releases the GIL) and classified in large batches.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from .._progress import progress_bar
from ..classifier import Classifier
from ..transforms import ImageOp, apply_ops, parse_ops
from ..validation import check_bool, check_choice
from .base import Detector, _check_decision_params, check_count, register_detector

FEATURES = ("count", "diff")
#: the paper's random forest: 100 trees, maximum depth 2
PAPER_DECISION_PARAMS = {"rf": {"n_estimators": 100, "max_depth": 2}}


def default_k(num_classes: int) -> int:
    """Top-k length: the paper's 5, capped at the class count (see the module docstring for the measurement)."""
    return min(num_classes, 5)


def counting_feature(labels: np.ndarray) -> np.ndarray:
    """Eq. 1. ``labels``: (N, 1 + n, k) top-k labels of the image then of each op -> (N, k) counts."""
    labels = np.asarray(labels)
    counts: np.ndarray = (labels[:, 1:, :] == labels[:, :1, :]).sum(1).astype(np.float64)
    return counts


def differences_feature(labels: np.ndarray) -> np.ndarray:
    """Eq. 2. ``labels``: (N, 1 + n, k) -> (N, n * k) binary, op-major (op 1's k flags first)."""
    labels = np.asarray(labels)
    flags: np.ndarray = (labels[:, 1:, :] != labels[:, :1, :]).reshape(len(labels), -1).astype(np.float64)
    return flags


#: the most bytes of transformed variants :func:`label_matrix` holds at once (float32; their copies on top)
VARIANTS_BYTES = 512 * 2**20


def label_matrix(
    classifier: Classifier, x: torch.Tensor, ops: Sequence[ImageOp], k: int, chunk: int = 256, progress: bool = False
) -> np.ndarray:
    """(N, 1 + len(ops), k) top-k labels of each image and of each of its transformed variants (a progress bar
    after a few seconds with ``progress``). At most ``chunk`` images at a time, fewer for large images: every
    image's variants are held at once, so a chunk is capped at :data:`VARIANTS_BYTES` of them (ImageNet at 224
    px with the paper's 30 operations: 26 images, ~0.5 GB; 256 CIFAR-10 images hold 0.1 GB)."""
    per_image = (1 + len(ops)) * int(np.prod(tuple(x.shape[1:]))) * 4
    chunk = max(1, min(chunk, VARIANTS_BYTES // max(per_image, 1)))
    out = np.empty((x.shape[0], 1 + len(ops), k), dtype=np.int64)
    for i in progress_bar(range(0, x.shape[0], chunk), desc="image-ops", enabled=progress):
        xb = x[i : i + chunk]
        variants = apply_ops(xb, ops)  # (n_ops, b, C, H, W)
        allx = torch.cat([xb.unsqueeze(0).float(), variants]).flatten(0, 1)
        _, lab = classifier.top_k(allx, k)
        out[i : i + len(xb)] = lab.view(1 + len(ops), len(xb), k).permute(1, 0, 2).numpy()
    return out


def _check_ops(ops: Any, p: dict[str, Any], det: Detector) -> str | list[str]:
    op_list = parse_ops(ops)  # unknown names raise here
    return ops if isinstance(ops, str) else [o.name for o in op_list]


def _check_feature(feature: Any, p: dict[str, Any], det: Detector) -> str:
    return check_choice("feature", feature, FEATURES, where=det.name)


def _check_paper_decision_params(value: Any, p: dict[str, Any], det: Detector) -> dict[str, Any]:
    """None: the paper's settings for its decision model (the random forest's 100 trees of depth 2)."""
    dm = p["decision_model"]
    paper = PAPER_DECISION_PARAMS.get(dm) if isinstance(dm, str) else None  # a user's estimator keeps its own
    return _check_decision_params(paper if value is None else value, p, det)


@register_detector()
class ImageOps(Detector):
    """``ImageOps(clf, ops="all", feature="diff", decision_model="svc")``; see the module docstring.

    Parameters ``ops`` and ``k`` are stored as ``ops_param`` / ``k_param``: the properties :attr:`ops` (the parsed
    operations) and :attr:`k` (the top-k length in use) have their names."""

    name = "image-ops"
    default_decision_model = "svc"
    _parameter_constraints = {
        **Detector._parameter_constraints,
        "decision_params": _check_paper_decision_params,
        "ops": _check_ops,
        "feature": _check_feature,
        "k": lambda k, p, det: check_count("k", k, low=1, high=det.classifier.num_classes, optional=True),
        "progress": lambda v, p, det: check_bool("progress", v, where=det.name),
    }
    _param_attributes = {"ops": "ops_param", "k": "k_param"}
    _unsaved_params = ("progress",)

    def __init__(
        self,
        classifier: Classifier,
        *,
        ops: str | Sequence[str] = "all",
        feature: str = "diff",
        k: int | None = None,
        decision_model: str | None = "svc",
        decision_params: dict[str, Any] | None = None,
        progress: bool = True,
        **kw: Any,
    ):
        self.ops_param, self.feature, self.k_param, self.progress = ops, feature, k, progress
        super().__init__(classifier, decision_model=decision_model, decision_params=decision_params, **kw)

    @property
    def ops(self) -> list[ImageOp]:
        return parse_ops(self.params["ops"])

    @property
    def k(self) -> int:
        return int(self.params["k"] or default_k(self.classifier.num_classes))

    def labels(self, x: torch.Tensor) -> np.ndarray:
        """(N, 1 + n, k) label matrix (validated input)."""
        return label_matrix(
            self.classifier, self.classifier.validate(x), self.ops, self.k, progress=self._checked_params()["progress"]
        )

    def features_from_labels(self, labels: np.ndarray) -> np.ndarray:
        return counting_feature(labels) if self.params["feature"] == "count" else differences_feature(labels)

    def features(self, x: torch.Tensor) -> np.ndarray:
        progress = self._checked_params()["progress"]
        return self.features_from_labels(label_matrix(self.classifier, x, self.ops, self.k, progress=progress))

    def feature_names(self, d: int) -> list[str]:
        if self.params["feature"] == "count":
            return [f"count_top{p + 1}" for p in range(self.k)]
        return [f"changed_{op.name}_top{p + 1}" for op in self.ops for p in range(self.k)]
