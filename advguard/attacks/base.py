"""The attack interface: ``attack(x, y, targets=None) -> AttackResult``.

Modelled on torchattacks' base class: a subclass overrides one method, :meth:`Attack._run`,
which attacks one batch; ``__call__`` validates inputs, puts the model in eval mode, batches
with a progress bar, seeds the random generators, re-checks success with the classifier
itself and computes the perturbation norms. Epsilons are always in [0, 1] pixel units.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from tqdm.auto import tqdm

from ..classifier import Classifier
from ..validation import as_labels


@dataclass
class AttackResult:
    """Adversarial images and per-image outcomes of one attack run (CPU tensors)."""

    x_adv: torch.Tensor
    success: torch.Tensor  # bool: untargeted -> label changed; targeted -> target reached
    y: torch.Tensor  # labels the attack started from
    targets: torch.Tensor | None
    pred_adv: torch.Tensor  # classifier's top-1 on x_adv
    norms: dict[str, torch.Tensor]  # "l0", "l2", "linf" per image, in [0, 1] pixel units
    attack: str
    params: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.x_adv.shape[0])

    @property
    def success_rate(self) -> float:
        return float(self.success.float().mean()) if len(self) else 0.0

    def summary(self) -> dict:
        s = self.success
        med = {k: float(v[s].median()) if bool(s.any()) else float("nan") for k, v in self.norms.items()}
        return {"attack": self.attack, "n": len(self), "success_rate": self.success_rate,
                **{f"median_{k}_of_successes": v for k, v in med.items()}}


def perturbation_norms(x: torch.Tensor, x_adv: torch.Tensor) -> dict[str, torch.Tensor]:
    """L0 (pixel positions where any channel changed by more than 1e-6), L2 and L-inf of ``x_adv - x``."""
    d = (x_adv - x).flatten(2)  # N, C, HW
    l0 = (d.abs() > 1e-6).any(1).sum(1).float()
    flat = d.flatten(1)
    return {"l0": l0, "l2": flat.norm(p=2, dim=1), "linf": flat.abs().amax(1)}


class Attack:
    """Base class. Subclasses set ``name``, ``norm``, ``targeted_ok`` and implement :meth:`_run`."""

    name = "attack"
    norm = "linf"
    targeted_ok = True
    #: the attack only makes sense with targets= (RP2)
    targets_required = False
    #: the attack works within a given epsilon (FGSM, PGD...) rather than minimising the perturbation
    fixed_budget = False

    def __init__(self, classifier: Classifier, *, batch_size: int = 128, seed: int = 0, progress: bool = True,
                 top_k: int = 1, **params):
        self.classifier = classifier
        self.batch_size = int(batch_size)
        self.seed = int(seed)
        self.progress = progress
        if not 1 <= int(top_k) < classifier.num_classes:
            raise ValueError(f"top_k must be in 1..{classifier.num_classes - 1}, got {top_k}")
        #: untargeted success criterion: the true label leaves the top-k (Nguyen et al.: top-5 on ImageNet)
        self.top_k = int(top_k)
        self.params = params if self.top_k == 1 else {**params, "top_k": self.top_k}

    def __repr__(self) -> str:
        ps = ", ".join(f"{k}={v!r}" for k, v in self.params.items())
        return f"{type(self).__name__}({self.name}{', ' if ps else ''}{ps})"

    def _run(self, x: torch.Tensor, y: torch.Tensor, targets: torch.Tensor | None) -> torch.Tensor:
        """Attack one batch (on the classifier's device); return adversarial images in [0, 1]."""
        raise NotImplementedError

    def __call__(self, x: np.ndarray | torch.Tensor, y: np.ndarray | torch.Tensor,
                 targets: np.ndarray | torch.Tensor | None = None) -> AttackResult:
        clf = self.classifier
        xt = clf.validate(x)
        yt = as_labels(y, xt.shape[0], clf.num_classes)
        tt = None
        if targets is not None:
            if not self.targeted_ok:
                raise ValueError(f"{self.name} is untargeted only; drop targets=")
            tt = as_labels(targets, xt.shape[0], clf.num_classes, name="targets")
        clf.module.eval()
        torch.manual_seed(self.seed)
        np.random.seed(self.seed % 2**32)
        outs = []
        bar = tqdm(range(0, xt.shape[0], self.batch_size), desc=f"attack {self.name}", leave=False,
                   disable=not self.progress)
        for i in bar:
            sl = slice(i, i + self.batch_size)
            xb = xt[sl].to(clf.device)
            adv = self._run(xb, yt[sl].to(clf.device), None if tt is None else tt[sl].to(clf.device))
            outs.append(adv.detach().clamp(*clf.bounds).cpu())
        return self._result(xt, torch.cat(outs), yt, tt)

    def _result(self, x: torch.Tensor, x_adv: torch.Tensor, y: torch.Tensor, targets: torch.Tensor | None
                ) -> AttackResult:
        """Predictions, success (decided in float32) and perturbation norms of ``x_adv`` made from ``x``."""
        clf = self.classifier
        with clf.exact():  # adversarial examples sit at the boundary: decide success in float32
            pred = clf.predict(x_adv, batch_size=self.batch_size)
            success = success_of(clf, x_adv, y, targets, self.top_k, pred=pred, batch_size=self.batch_size)
        return AttackResult(x_adv=x_adv, success=success, y=y, targets=targets, pred_adv=pred,
                            norms=perturbation_norms(x, x_adv), attack=self.name, params=dict(self.params))


def success_of(clf: Classifier, x_adv: torch.Tensor, y: torch.Tensor, targets: torch.Tensor | None, top_k: int = 1,
               pred: torch.Tensor | None = None, batch_size: int | None = None) -> torch.Tensor:
    """Targeted: the target is top-1. Untargeted: the true label is not among the top-``top_k``."""
    y = torch.as_tensor(np.asarray(y)).long()
    if targets is not None:
        p = pred if pred is not None else clf.predict(x_adv, batch_size=batch_size)
        return p == torch.as_tensor(np.asarray(targets)).long()
    if top_k == 1:
        p = pred if pred is not None else clf.predict(x_adv, batch_size=batch_size)
        return p != y
    _, lab = clf.top_k(x_adv, top_k, batch_size=batch_size)
    return ~(lab == y[:, None]).any(1)


def shifted_targets(y: np.ndarray | torch.Tensor, num_classes: int, shift: int = 1) -> torch.Tensor:
    """Targets ``(y + shift) mod num_classes`` ("next class" is shift 1)."""
    if shift % num_classes == 0:
        raise ValueError(f"shift {shift} maps every label onto itself with {num_classes} classes")
    return (torch.as_tensor(np.asarray(y)).long() + shift) % num_classes
