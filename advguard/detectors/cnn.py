"""A binary CNN on the input image, trained with and without a final softmax (Nguyen et al., Section 4).

The detector network maps an image to two logits (normal, adversarial). The paper's finding
is that training "without the final softmax layer" works far better, especially from
scratch. Read against the released code (a 2-logit head trained with PyTorch's
``nn.CrossEntropyLoss``, which applies log-softmax itself), eq. 3 "with raw logits" is the
cross-entropy of the logits; the "with softmax" baseline is a network whose last layer *is*
a softmax, trained with that same loss, so the loss sees ``log_softmax(softmax(z))``: its
gradients vanish once the probabilities saturate and its outputs cannot separate by more than
``log_softmax`` of values in [0, 1] allows. ``softmax_in_training=True`` reproduces that
baseline; ``False`` (default) is the paper's proposal. At test time both report the softmax
probability of "adversarial"; the score is the logit difference (monotone in it).

Backbones: ``"scratch"`` (a VGG-style conv-BN-ReLU net, widths configurable; the paper used
XceptionNet / ResNet-50 on 224 px ImageNet images, too large for our CPU budget) or
``"classifier"``: fine-tune a copy of the protected classifier's own network with its last
linear layer replaced by a 2-way one (the paper fine-tuned ImageNet-pretrained networks).
Adam with the paper's learning rate 5e-4. The development set (given, or 15 % of the fitting
data) selects the epoch, as the paper's dev set selected the model, and calibrates the
threshold at the target FPR on its clean images.

``class_weight``: ``None`` (default, the paper's) trains with the plain cross-entropy on the
images as given and selects the epoch on dev accuracy; the paper's database was 83.9 %
adversarial and it trained on it as drawn. ``"balanced"`` (our deviation, for imbalanced
fits such as the guard's 207 clean images against about 1,000 adversarial ones pooled from
five attack families) weighs each class's loss by ``n / (2 n_class)`` (scikit-learn's
``"balanced"``) and selects the epoch on dev *balanced* accuracy (the mean of the clean and
the adversarial accuracy). Without it such a fit keeps the epoch that first answers the
majority class throughout (dev accuracy = the majority share, which later epochs must
strictly beat), i.e. an untrained network. On exactly balanced data both settings train the
same network (no weights, selection on plain accuracy: the two are then the same criterion).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, NoReturn

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from .._seeding import seeded_global_rngs
from ..classifier import Classifier, ImageInput
from ..errors import InputError, ParameterError
from ..validation import check_bool
from .base import Detector, check_count, check_rate, register_detector

if TYPE_CHECKING:  # pragma: no cover
    from typing_extensions import Self

BACKBONES = ("scratch", "classifier")
CLASS_WEIGHTS = (None, "balanced")


def _replace_last_linear(model: nn.Module, out_features: int) -> nn.Module:
    last = None
    for name, m in model.named_modules():
        if isinstance(m, nn.Linear):
            last = name
    if last is None:
        raise InputError("fine-tuning needs a classifier whose head is an nn.Linear layer; use backbone='scratch'")
    parent = model
    *path, leaf = last.split(".")
    for p in path:
        parent = getattr(parent, p)
    old = getattr(parent, leaf)
    setattr(parent, leaf, nn.Linear(old.in_features, out_features))
    return model


def _check_backbone(backbone: Any, p: dict[str, Any], det: Detector) -> str:
    if not isinstance(backbone, str) or backbone not in BACKBONES:
        from ..errors import unknown_name

        raise unknown_name("CNN detector backbone", backbone, list(BACKBONES))
    return backbone


def _no_decision_model(value: Any, p: dict[str, Any], det: Detector) -> None:
    """The detector network decides (its logit difference is the score): a decision model would be ignored."""
    if value is not None:
        raise ParameterError(
            f"{det.name}: decision_model={value!r} has no effect: the detector network itself decides (the score is "
            "its logit difference, the threshold calibrated on its dev set). Leave decision_model out"
        )


def _no_decision_params(value: Any, p: dict[str, Any], det: Detector) -> dict[str, Any]:
    """No decision model, so no decision-model parameters: given ones would be silently ignored."""
    if value:
        raise ParameterError(
            f"{det.name}: decision_params={value!r} has no effect: the detector network itself decides (no decision "
            "model). Train it with epochs / lr / batch_size / widths / class_weight instead"
        )
    return {}


def _check_class_weight(value: Any, p: dict[str, Any], det: Detector) -> str | None:
    if value is not None and value != "balanced":
        raise ParameterError(f"{det.name}: class_weight must be None (the paper's) or 'balanced', got {value!r}")
    return value  # type: ignore[no-any-return]


def _check_widths(widths: Any, p: dict[str, Any], det: Detector) -> list[list[int]]:
    try:
        widths = [[check_count("widths", c, low=1) for c in stage] for stage in widths]
    except TypeError as e:
        raise ParameterError(f"widths must be a list of lists of channel counts, got {widths!r}") from e
    if not widths or not all(widths):
        raise ParameterError(f"widths must be a non-empty list of non-empty stages, got {widths!r}")
    return [list(w) for w in widths]


@register_detector()
class CNNDetector(Detector):
    """``CNNDetector(clf, backbone="scratch", softmax_in_training=False).fit(x_clean, x_adv)``."""

    name = "cnn"
    _parameter_constraints = {
        **Detector._parameter_constraints,
        "decision_model": _no_decision_model,
        "decision_params": _no_decision_params,
        "backbone": _check_backbone,
        "softmax_in_training": lambda v, p, det: check_bool("softmax_in_training", v, where=det.name),
        "epochs": lambda v, p, det: int(check_count("epochs", v, low=1)),
        "lr": lambda v, p, det: float(check_rate("lr", v, low=0.0, high=float("inf"))),
        "batch_size": lambda v, p, det: int(check_count("batch_size", v, low=1)),
        "widths": _check_widths,
        "dev_fraction": lambda v, p, det: float(check_rate("dev_fraction", v)),
        "class_weight": _check_class_weight,
    }
    _ignored_params = ("decision_model",)
    _unsaved_params = ("progress",)

    def __init__(
        self,
        classifier: Classifier,
        *,
        backbone: str = "scratch",
        softmax_in_training: bool = False,
        epochs: int = 15,
        lr: float = 5e-4,
        batch_size: int = 64,
        widths: tuple[tuple[int, ...], ...] | list[Sequence[int]] = ((32, 32), (64, 64), (128, 128)),
        dev_fraction: float = 0.15,
        class_weight: str | None = None,
        progress: bool = True,
        **kw: Any,
    ):
        self.backbone, self.softmax_in_training, self.epochs, self.lr = backbone, softmax_in_training, epochs, lr
        self.batch_size, self.widths, self.dev_fraction, self.progress = batch_size, widths, dev_fraction, progress
        self.class_weight = class_weight
        super().__init__(classifier, **kw)
        self.net_: nn.Module | None = None
        self.history_: list[dict[str, Any]] = []

    @property
    def supervised(self) -> bool:
        """Always: the detector network learns from clean and adversarial images (no decision model to name)."""
        return True

    # ------------------------------------------------------------------ network
    def _build(self) -> nn.Module:
        clf = self.classifier
        if self.params["backbone"] == "classifier":
            net = _replace_last_linear(copy.deepcopy(clf.module).cpu(), 2)
        else:
            from ..classifier import Normalize
            from ..models.architectures import VGGLike

            body = VGGLike(clf.channels, 2, tuple(tuple(w) for w in self.params["widths"]))
            net = nn.Sequential(Normalize(clf.mean, clf.std), body)
        for p in net.parameters():
            p.requires_grad_(True)
        return net.to(clf.device)

    def _logits(self, x: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
        net = self.net_
        assert net is not None  # callers check that the detector is trained
        net.eval()
        dev = self.classifier.device
        out: list[torch.Tensor] = []
        with torch.inference_mode():
            for i in range(0, x.shape[0], batch_size):
                out.append(net(x[i : i + batch_size].to(dev)).float().cpu())
        self.classifier.num_passes += int(x.shape[0])
        return torch.cat(out) if out else torch.zeros(0, 2)

    def _loss(self, z: torch.Tensor, y: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
        if self.params["softmax_in_training"]:
            z = z.softmax(1)  # the network's last layer is a softmax; the loss applies log-softmax again
        return F.cross_entropy(z, y, weight=weight)

    # ------------------------------------------------------------------ protocol
    def _fit_images(  # type: ignore[override]  # takes dev= (fit(..., dev=...)) instead of any **fit_params
        self,
        x_clean: ImageInput,
        x_adv: ImageInput | None = None,
        dev: tuple[np.ndarray | torch.Tensor, np.ndarray | torch.Tensor] | None = None,
    ) -> Self:
        """Train on clean (label 0) + adversarial (label 1) images; ``dev = (x_clean_dev, x_adv_dev)``."""
        if x_adv is None:
            raise InputError("the CNN detector is supervised: fit(x_clean, x_adv) needs adversarial examples")
        clf = self.classifier
        xc, xa = clf.validate(x_clean), clf.validate(x_adv, name="x_adv")
        if len(xc) < 2 or len(xa) < 2:
            raise InputError("the CNN detector needs at least 2 clean and 2 adversarial images")
        gen = torch.Generator().manual_seed(self._checked_params()["seed"])
        if dev is None:
            pc, pa = torch.randperm(len(xc), generator=gen), torch.randperm(len(xa), generator=gen)
            nc = max(1, round(len(xc) * self.params["dev_fraction"]))
            na = max(1, round(len(xa) * self.params["dev_fraction"]))
            dev = (xc[pc[:nc]], xa[pa[:na]])
            xc, xa = xc[pc[nc:]], xa[pa[na:]]
        dc, da = clf.validate(dev[0], name="dev clean"), clf.validate(dev[1], name="dev adversarial")
        x = torch.cat([xc, xa])
        y = torch.cat([torch.zeros(len(xc), dtype=torch.long), torch.ones(len(xa), dtype=torch.long)])
        xd = torch.cat([dc, da])
        yd = np.r_[np.zeros(len(dc)), np.ones(len(da))]
        balanced = self.params["class_weight"] == "balanced"
        # "balanced": n / (2 n_class) per class (None where the classes are equal: the plain loss, bit for bit)
        weight = None
        if balanced and len(xc) != len(xa):
            weight = torch.tensor([len(x) / (2.0 * len(xc)), len(x) / (2.0 * len(xa))], device=clf.device)

        # weights initialised (and any dropout drawn) from the seeded global generators; the caller's are restored
        with seeded_global_rngs(self._checked_params()["seed"], clf.device):
            self.net_ = self._build()
            opt = torch.optim.Adam(self.net_.parameters(), lr=self.params["lr"])
            bs, dev_ = self.params["batch_size"], clf.device
            best, best_state, self.history_ = -math.inf, None, []
            bar = tqdm(range(self.params["epochs"]), desc=f"train {self.name} detector", disable=not self.progress)
            for epoch in bar:
                self.net_.train()
                perm = torch.randperm(len(x), generator=gen)
                tot = 0.0
                for i in range(0, len(perm), bs):
                    idx = perm[i : i + bs]
                    z = self.net_(x[idx].to(dev_))
                    loss = self._loss(z, y[idx].to(dev_), weight)
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
                    tot += float(loss.detach()) * len(idx)
                zd = self._logits(xd)
                hit = (zd[:, 1] > zd[:, 0]).numpy() == yd
                acc = float(hit.mean())
                entry = {"epoch": epoch + 1, "train_loss": tot / len(x), "dev_accuracy": acc}
                if balanced and len(dc) != len(da):  # the epoch is selected on the mean of the classes' dev accuracies
                    acc = entry["dev_balanced_accuracy"] = float((hit[yd == 0].mean() + hit[yd == 1].mean()) / 2)
                self.history_.append(entry)
                bar.set_postfix(loss=f"{tot / len(x):.3f}", dev_acc=f"{acc:.3f}")
                if acc > best:
                    best, best_state = acc, copy.deepcopy(self.net_.state_dict())
        assert best_state is not None  # every epoch beats -inf
        self.net_.load_state_dict(best_state)
        self.net_.eval()
        self._set_threshold(self.statistic(self._logits(dc).numpy()))
        return self

    def fit_features(self, f_clean: np.ndarray, f_adv: np.ndarray | None = None) -> NoReturn:
        raise InputError("the CNN detector learns from images: call fit(x_clean, x_adv)")

    def features(self, x: torch.Tensor) -> np.ndarray:
        """The detector's two logits (normal, adversarial)."""
        if self.net_ is None:
            from .base import NotFittedError

            raise NotFittedError("the CNN detector is not trained: call fit(x_clean, x_adv) first")
        return self._logits(x).numpy()

    def statistic(self, features: np.ndarray) -> np.ndarray:
        """Logit difference adversarial - normal (monotone in the softmax probability of 'adversarial')."""
        diff: np.ndarray = features[:, 1] - features[:, 0]
        return diff

    def score_features(self, f: np.ndarray) -> np.ndarray:
        """The logit difference of the trained network (no decision model: the network is the decision)."""
        return np.asarray(self.statistic(np.asarray(f, dtype=np.float64)), dtype=np.float64)

    def feature_names(self, d: int) -> list[str]:
        return ["logit_normal", "logit_adversarial"]

    # ------------------------------------------------------------------ persistence
    def _state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        if self.net_ is None:
            return {}, {}
        arrays = {f"net.{k}": v.detach().cpu().numpy() for k, v in self.net_.state_dict().items()}
        return {"history": self.history_}, arrays

    def _set_state(self, meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
        if not arrays:
            return
        self.net_ = self._build()
        self.net_.load_state_dict({k[4:]: torch.from_numpy(np.asarray(v)) for k, v in arrays.items()})
        self.net_.eval()
        self.history_ = meta.get("history", [])
