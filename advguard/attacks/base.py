"""The attack interface: ``attack(x, y, targets=None) -> AttackResult``.

Modelled on torchattacks' base class (and Foolbox 3's final ``__call__``): a subclass implements one
abstract method, :meth:`Attack._run`, which attacks one batch; the final template ``__call__`` validates
inputs and targets (``targets_required`` is enforced there), puts the model in eval mode, batches with a
progress bar, seeds torch's and numpy's global random generators for the run (restoring the caller's states
afterwards: ``advguard._seeding``), re-checks success with the classifier itself and computes the
perturbation norms. Epsilons are always in [0, 1] pixel units.

Hooks a subclass may override (never ``__call__``): :meth:`Attack._default_targets` (targets when none
are given), :meth:`Attack._check_inputs`, :meth:`Attack._start` (per-call set-up and checks, e.g. "the
patch is trained"), :meth:`Attack._batch_slices` and :meth:`Attack._finish` (a richer result from what
``_run`` returned besides the images: ``_run`` may return ``(x_adv, extras)``, a dict of per-image arrays,
concatenated over batches and handed to ``_finish``).
"""

from __future__ import annotations

import abc
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar, TypeVar, final

import numpy as np
import torch
from tqdm.auto import tqdm

from .._seeding import seeded_global_rngs
from ..classifier import Classifier
from ..errors import InputError
from ..validation import (
    ParameterError,
    ParameterTypeError,
    as_labels,
    check_batch_size,
    check_bool,
    check_number,
    init_keywords,
)

#: the keywords every attack accepts (``Attack.__init__``)
COMMON_PARAMETERS = ("batch_size", "seed", "progress", "top_k")


@dataclass
class AttackResult:
    """Adversarial images and per-image outcomes of one attack run, as CPU torch tensors (whatever the classifier's
    device and whether the attack was given numpy arrays or tensors): ``x_adv`` float32 (N, C, H, W) in [0, 1],
    ``success`` bool (N,), ``y`` / ``targets`` / ``pred_adv`` int64 (N,), ``norms`` float32 (N,) each.
    :meth:`numpy` gives the same as numpy arrays (for detectors and scikit-learn)."""

    x_adv: torch.Tensor
    success: torch.Tensor  # bool: untargeted -> label changed; targeted -> target reached
    y: torch.Tensor  # labels the attack started from
    targets: torch.Tensor | None
    pred_adv: torch.Tensor  # classifier's top-1 on x_adv
    norms: dict[str, torch.Tensor]  # "l0", "l2", "linf" per image, in [0, 1] pixel units
    attack: str
    params: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.x_adv.shape[0])

    def numpy(self) -> dict[str, Any]:
        """The per-image fields as numpy arrays: ``x_adv``, ``success``, ``y``, ``targets`` (or None), ``pred_adv``
        and ``norms`` (a dict of arrays)."""
        return {
            "x_adv": self.x_adv.numpy(),
            "success": self.success.numpy(),
            "y": self.y.numpy(),
            "targets": None if self.targets is None else self.targets.numpy(),
            "pred_adv": self.pred_adv.numpy(),
            "norms": {k: v.numpy() for k, v in self.norms.items()},
        }

    @property
    def success_rate(self) -> float:
        return float(self.success.float().mean()) if len(self) else 0.0

    def summary(self) -> dict[str, Any]:
        s = self.success
        med = {k: float(v[s].median()) if bool(s.any()) else float("nan") for k, v in self.norms.items()}
        return {
            "attack": self.attack,
            "n": len(self),
            "success_rate": self.success_rate,
            **{f"median_{k}_of_successes": v for k, v in med.items()},
        }


#: Every registered attack class by name (filled by :func:`register_attack`; ``make_attack`` reads it).
ATTACKS: dict[str, type[Attack]] = {}

A = TypeVar("A", bound="type[Attack]")


def register_attack(name: str | None = None) -> Callable[[A], A]:
    """Class decorator: register an :class:`Attack` subclass in :data:`ATTACKS` under ``name`` (default: its ``name``
    attribute), like timm's ``register_model``. A name registered twice is refused::

        @register_attack("my-attack")
        class MyAttack(Attack):
            def _run(self, x, y, targets): ...
    """

    def deco(cls: A) -> A:
        if not (isinstance(cls, type) and issubclass(cls, Attack)):
            raise TypeError(f"register_attack: {cls!r} is not an Attack subclass")
        key = name if name is not None else cls.name
        if not isinstance(key, str) or not key:
            raise TypeError(f"register_attack: the name must be a non-empty str, got {key!r}")
        if key in ATTACKS and ATTACKS[key] is not cls:
            raise ValueError(f"attack {key!r} is already registered ({ATTACKS[key].__qualname__})")
        if cls.name != key:
            cls.name = key
        ATTACKS[key] = cls
        return cls

    return deco


def perturbation_norms(x: np.ndarray | torch.Tensor, x_adv: np.ndarray | torch.Tensor) -> dict[str, torch.Tensor]:
    """L0 (pixel positions where any channel changed by more than 1e-6), L2 and L-inf of ``x_adv - x``: float32
    tensors (N,) (on the inputs' device; the CPU for numpy arrays). ``x`` and ``x_adv`` must be image batches
    (N, C, H, W) of the same shape (an :class:`InputError` otherwise)."""
    xt, at = torch.as_tensor(x), torch.as_tensor(x_adv)
    if xt.shape != at.shape or xt.ndim != 4:
        raise InputError(
            f"perturbation_norms: x and x_adv must be image batches (N, C, H, W) of the same shape, got "
            f"{tuple(xt.shape)} and {tuple(at.shape)}"
        )
    d = (at.to(xt.device, torch.float32) - xt.float()).flatten(2)  # N, C, HW
    l0 = (d.abs() > 1e-6).any(1).sum(1).float()
    flat = d.flatten(1)
    return {"l0": l0, "l2": flat.norm(p=2, dim=1), "linf": flat.abs().amax(1)}


class Attack(abc.ABC):
    """Abstract base class. Subclasses set ``name``, ``norm``, ``targeted_ok`` (``targets_required``) and implement
    :meth:`_run`; ``__call__`` is final (see the module docstring for the hooks).

    :attr:`batch_index_` is the index of the batch being attacked during a call (0, 1, ...), for attacks that
    seed per batch."""

    name = "attack"
    norm = "linf"
    targeted_ok = True
    #: the attack only makes sense with targets= (RP2)
    targets_required = False
    #: the attack works within a given epsilon (FGSM, PGD...) rather than minimising the perturbation
    fixed_budget = False
    #: objects beyond the classifier that :func:`make_attack` must be given (``("detector",)``: the adaptive attacks
    #: need the fitted detector they evade)
    requires: ClassVar[tuple[str, ...]] = ()
    #: the attack is trained with ``fit(x_train, ...)`` before it is applied (the adversarial patches)
    needs_fit: ClassVar[bool] = False

    def __init__(
        self,
        classifier: Classifier,
        *,
        batch_size: int = 128,
        seed: int = 0,
        progress: bool = True,
        top_k: int = 1,
        **params: Any,
    ):
        if not isinstance(classifier, Classifier):
            raise ParameterTypeError(
                f"{self.name}: classifier must be an advguard.Classifier, got "
                f"{type(classifier).__name__} (wrap a model with advguard.Classifier(...))"
            )
        self.classifier = classifier
        self.batch_size = check_batch_size(batch_size, where=self.name)
        self.seed = int(check_number("seed", seed, lo=0, hi=2**63 - 1, integer=True, where=self.name))
        self.progress = check_bool("progress", progress, where=self.name)
        #: untargeted success criterion: the true label leaves the top-k (Nguyen et al.: top-5 on ImageNet)
        self.top_k = int(
            check_number("top_k", top_k, lo=1, hi=classifier.num_classes - 1, integer=True, where=self.name)
        )
        self.params = params if self.top_k == 1 else {**params, "top_k": self.top_k}

    @classmethod
    def parameters(cls) -> list[str]:
        """The keyword parameters this attack accepts (read from the ``__init__`` signatures up the class
        tree, as far as each passes its ``**kwargs`` on); :func:`make_attack` refuses any other."""
        return sorted(init_keywords(cls, Attack, exclude=("classifier", "detector")))

    def _check_targets(self, y: torch.Tensor, targets: torch.Tensor | None) -> None:
        """Refuse targeted calls without targets (``targets_required``: RP2...), targets for an untargeted-only
        attack, and targets that equal the true label (such an image would be counted as an instant success)."""
        if targets is None:
            if self.targets_required:
                raise ParameterError(f"{self.name} is a targeted attack: pass targets= (one target class per image)")
            return
        if not self.targeted_ok:
            raise InputError(f"{self.name} is untargeted only; drop targets=")
        check_targets_differ(y, targets)

    def _check_inputs(self, x: torch.Tensor) -> None:  # noqa: B027 - optional hook, empty by default
        """Hook: refuse a validated batch the attack's parameters do not fit (before any work)."""

    def _default_targets(self, n: int) -> torch.Tensor | None:
        """Hook: the targets of a call without ``targets=`` (None: untargeted)."""
        return None

    def _start(self, x: torch.Tensor, y: torch.Tensor, targets: torch.Tensor | None) -> None:  # noqa: B027 - optional hook, empty by default
        """Hook: per-call set-up and checks, after the inputs are validated and before the first batch."""

    def _batch_slices(self, n: int) -> list[slice]:
        """Hook: the batches a call of ``n`` images is attacked in (default: ``batch_size`` at a time)."""
        return [slice(i, i + self.batch_size) for i in range(0, n, self.batch_size)]

    def _finish(self, result: AttackResult, extras: dict[str, np.ndarray]) -> AttackResult:
        """Hook: the call's result from the base result and the per-image ``extras`` ``_run`` returned (concatenated
        over batches in image order)."""
        return result

    def __repr__(self) -> str:
        ps = ", ".join(f"{k}={v!r}" for k, v in self.params.items())
        return f"{type(self).__name__}({self.name}{', ' if ps else ''}{ps})"

    @abc.abstractmethod
    def _run(
        self, x: torch.Tensor, y: torch.Tensor, targets: torch.Tensor | None
    ) -> torch.Tensor | tuple[torch.Tensor, dict[str, np.ndarray]]:
        """Attack one batch (on the classifier's device); return adversarial images in [0, 1], or (images, a dict of
        per-image numpy arrays for :meth:`_finish`)."""

    @final
    def __call__(
        self,
        x: np.ndarray | torch.Tensor,
        y: np.ndarray | torch.Tensor,
        targets: np.ndarray | torch.Tensor | None = None,
    ) -> AttackResult:
        """Attack images ``x`` (float32 NCHW in [0, 1]) with labels ``y`` (and ``targets``, one class per image,
        for a targeted attack); returns an :class:`AttackResult` (or the subclass's richer result)."""
        clf = self.classifier
        xt = clf.validate(x)  # a detached float32 tensor: inputs that require grad are fine
        yt = as_labels(y, xt.shape[0], clf.num_classes)
        if targets is None:
            tt = self._default_targets(xt.shape[0])
        else:
            tt = as_labels(targets, xt.shape[0], clf.num_classes, name="targets")
        self._check_targets(yt, tt)
        self._check_inputs(xt)
        self._start(xt, yt, tt)
        clf.module.eval()
        outs: list[torch.Tensor] = []
        extras: dict[str, list[np.ndarray]] = {}
        bar = tqdm(self._batch_slices(xt.shape[0]), desc=f"attack {self.name}", leave=False, disable=not self.progress)
        # torch's (and numpy's) global generators seeded for the run, the caller's states restored after it
        # ... and the model's parameters frozen (no gradient is computed for or accumulated in them)
        with seeded_global_rngs(self.seed, clf.device, numpy=True), clf.frozen():
            for b, sl in enumerate(bar):
                self.batch_index_ = b
                xb = xt[sl].to(clf.device)
                out = self._run(xb, yt[sl].to(clf.device), None if tt is None else tt[sl].to(clf.device))
                adv, more = out if isinstance(out, tuple) else (out, {})
                outs.append(adv.detach().clamp(*clf.bounds).cpu())
                for k, v in more.items():
                    extras.setdefault(k, []).append(np.asarray(v))
        x_adv = torch.cat(outs) if outs else xt.clone()
        return self._finish(self._result(xt, x_adv, yt, tt), {k: np.concatenate(v) for k, v in extras.items()})

    def _result(
        self, x: torch.Tensor, x_adv: torch.Tensor, y: torch.Tensor, targets: torch.Tensor | None
    ) -> AttackResult:
        """Predictions, success (decided in float32) and perturbation norms of ``x_adv`` made from ``x``."""
        clf = self.classifier
        with clf.exact():  # adversarial examples sit at the boundary: decide success in float32
            pred = clf.predict(x_adv, batch_size=self.batch_size)
            success = success_of(clf, x_adv, y, targets, self.top_k, pred=pred, batch_size=self.batch_size)
        return AttackResult(
            x_adv=x_adv,
            success=success,
            y=y,
            targets=targets,
            pred_adv=pred,
            norms=perturbation_norms(x, x_adv),
            attack=self.name,
            params=dict(self.params),
        )


def success_of(
    clf: Classifier,
    x_adv: torch.Tensor,
    y: torch.Tensor,
    targets: torch.Tensor | None,
    top_k: int = 1,
    pred: torch.Tensor | None = None,
    batch_size: int | None = None,
) -> torch.Tensor:
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


def check_targets_differ(y: torch.Tensor, targets: torch.Tensor) -> None:
    """Refuse targets equal to the true label: a targeted attack "towards" an image's own class succeeds without
    changing anything, and would be reported as a success (issue #20). The error names the images."""
    same = torch.nonzero(torch.as_tensor(targets).cpu() == torch.as_tensor(y).cpu()).flatten().tolist()
    if same:
        shown = ", ".join(map(str, same[:10])) + (", ..." if len(same) > 10 else "")
        raise InputError(
            f"targets equal the true labels y for {len(same)} of {len(y)} images (indices {shown}): a "
            "targeted attack towards an image's own class would count as a success without doing "
            "anything. Give each image a target other than its label (e.g. shifted_targets(y, "
            "num_classes)) or leave those images out."
        )


def shifted_targets(y: np.ndarray | torch.Tensor, num_classes: int, shift: int = 1) -> torch.Tensor:
    """Targets ``(y + shift) mod num_classes`` ("next class" is shift 1)."""
    num_classes = int(check_number("num_classes", num_classes, lo=2, integer=True, where="shifted_targets"))
    shift = int(check_number("shift", shift, integer=True, where="shifted_targets"))
    if shift % num_classes == 0:
        raise InputError(f"shift {shift} maps every label onto itself with {num_classes} classes")
    try:
        n = len(y)
    except TypeError:  # a scalar: as_labels names the shape problem
        n = -1
    yt = as_labels(y, n, num_classes)
    return (yt + shift) % num_classes
