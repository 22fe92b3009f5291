"""Standard attacks backed by Foolbox 3 (the library the papers used), not rewritten.

Fixed-budget attacks (FGSM, BIM, PGD, L1/L2 iterative) need ``eps``; minimisation attacks
(CW-L2, DeepFool, NewtonFool, EAD) find a small perturbation and accept an optional ``eps``
cap. All epsilons are in [0, 1] pixel units; normalisation lives in the Classifier, so
Foolbox sees the [0, 1] model and the units stay honest (the Segmentation Fault code
silently used normalised units).
"""

from __future__ import annotations

import inspect
import math
from typing import TYPE_CHECKING, Any, TypeVar, cast

import torch

from ..classifier import Classifier
from ..validation import ParameterError, check_bool, check_choice, check_keywords, check_number
from .base import COMMON_PARAMETERS, Attack, register_attack

if TYPE_CHECKING:  # pragma: no cover
    from foolbox.criteria import Criterion, Misclassification

T = TypeVar("T")

#: How each Foolbox parameter is checked at construction: (kind, low, high, low open?) with kind "int",
#: "float", "bool", an optional-number "int?" / "float?" (None allowed) or a tuple of allowed strings.
#: Upper bounds on counts are guards against typos and overflow (1e6 steps of one batch is days of work).
PARAM_SPECS: dict[str, tuple[str | tuple[str, ...], float | None, float | None, bool]] = {
    "steps": ("int", 1, 1_000_000, False),
    "binary_search_steps": ("int", 1, 1_000, False),
    "rel_stepsize": ("float", 0.0, None, True),
    "abs_stepsize": ("float?", 0.0, None, True),
    "stepsize": ("float", 0.0, None, True),
    "initial_stepsize": ("float", 0.0, None, True),
    "confidence": ("float", 0.0, None, False),
    "initial_const": ("float", 0.0, None, True),
    "regularization": ("float", 0.0, None, False),
    "overshoot": ("float", 0.0, None, False),
    "candidates": ("int?", 2, None, False),
    "random_start": ("bool", None, None, False),
    "abort_early": ("bool", None, None, False),
    "loss": (("logits", "crossentropy"), None, None, False),
    "decision_rule": (("EN", "L1"), None, None, False),
}


def max_distance(norm: str, shape: tuple[int, ...], bounds: tuple[float, float] = (0.0, 1.0)) -> float:
    """The largest possible ``norm`` distance between two images of ``shape`` (C, H, W) inside ``bounds``:
    an epsilon above it is no budget at all (a typo, e.g. 0..255 units)."""
    width = bounds[1] - bounds[0]
    d = math.prod(shape)
    return {"linf": width, "l2": width * math.sqrt(d), "l1": width * d}[norm]


class FoolboxAttack(Attack):
    """Runs a Foolbox 3 attack on the classifier's normalised module with bounds (0, 1)."""

    fb_class = ""
    fixed_budget = True
    defaults: dict[str, Any] = {}

    @classmethod
    def foolbox_parameters(cls) -> list[str]:
        """The keyword parameters of the Foolbox attack class underneath."""
        import foolbox as fb

        sig = inspect.signature(getattr(fb.attacks, cls.fb_class).__init__)
        return [p for p in list(sig.parameters)[1:] if sig.parameters[p].kind is not inspect.Parameter.VAR_KEYWORD]

    @classmethod
    def parameters(cls) -> list[str]:
        return sorted({"eps", *COMMON_PARAMETERS, *cls.foolbox_parameters()})

    def __init__(self, classifier: Classifier, *, eps: float | None = None, **kwargs: Any):
        check_keywords(f"attack {self.name!r}", kwargs, self.parameters())
        own = {k: kwargs.pop(k) for k in COMMON_PARAMETERS if k in kwargs}
        params = {**self.defaults, **kwargs}
        for k in list(params):
            params[k] = self._check_param(k, params[k], classifier)
        if self.fixed_budget and eps is None:
            raise ParameterError(f"{self.name} needs eps= (a budget in [0, 1] pixel units, e.g. 8/255)")
        if eps is not None:
            eps = self._check_eps(eps, classifier)
        super().__init__(classifier, **own, eps=eps, **params)
        self.eps = eps
        self._fb_params = params

    def _check_param(self, k: str, v: Any, classifier: Classifier) -> object:
        """The checked value of Foolbox parameter ``k`` (an int, float, bool, str or None)."""
        kind, lo, hi, lo_open = PARAM_SPECS.get(k, (None, None, None, False))
        where = self.name
        if kind is None:
            return v
        if isinstance(kind, tuple):
            return check_choice(k, v, kind, where=where)
        if kind == "bool":
            return check_bool(k, v, where=where)
        if kind.endswith("?") and v is None:
            return None
        if k == "candidates":
            hi = classifier.num_classes
        return check_number(k, v, lo=lo, hi=hi, lo_open=lo_open, integer=kind.startswith("int"), where=where)

    def _check_eps(self, eps: Any, classifier: Classifier) -> float:
        width = classifier.bounds[1] - classifier.bounds[0]
        if self.norm == "linf":
            if isinstance(eps, (int, float)) and not isinstance(eps, bool) and math.isfinite(eps) and eps > width:
                raise ParameterError(
                    f"{self.name}: eps={eps} is outside (0, {width:g}]; L-inf epsilons are in [0, 1] "
                    "pixel units (8/255 = 0.0314), not 0..255"
                )
            return float(check_number("eps", eps, lo=0.0, hi=width, lo_open=True, where=self.name))
        budget = float(check_number("eps", eps, lo=0.0, lo_open=True, where=self.name))
        if classifier.size is not None:
            self._check_eps_fits(budget, (classifier.channels, *classifier.size), classifier.bounds)
        return budget

    def _check_eps_fits(self, eps: float, shape: tuple[int, ...], bounds: tuple[float, float]) -> None:
        top = max_distance(self.norm, shape, bounds)
        if eps > top:
            raise ParameterError(
                f"{self.name}: eps={eps:g} is outside (0, {top:.4g}]: no two {'x'.join(map(str, shape))} images in "
                f"{bounds} are further apart in {self.norm.upper()} (eps is in [0, 1] pixel units, not 0..255)"
            )

    def _check_inputs(self, x: torch.Tensor) -> None:
        if self.eps is not None and self.norm != "linf":
            self._check_eps_fits(self.eps, tuple(x.shape[1:]), self.classifier.bounds)

    def _run(self, x: torch.Tensor, y: torch.Tensor, targets: torch.Tensor | None) -> torch.Tensor:
        import foolbox as fb
        from foolbox.models.pytorch import PyTorchModel

        fmodel = PyTorchModel(self.classifier.module, bounds=self.classifier.bounds, device=x.device)
        attack = getattr(fb.attacks, self.fb_class)(**self._fb_params)
        crit: Criterion
        if targets is not None:
            crit = fb.criteria.TargetedMisclassification(targets)
        elif self.top_k > 1:
            crit = _top_k_misclassification(y, self.top_k)
        else:
            crit = fb.criteria.Misclassification(y)
        # ``run`` + ``clip_perturbation`` is what Foolbox's ``__call__`` does minus its final success check:
        # the base class re-checks success with the classifier anyway, so skipping it saves a forward pass.
        if isinstance(attack, fb.attacks.base.FixedEpsilonAttack):
            assert self.eps is not None  # fixed-budget attacks refuse eps=None in __init__
            xp = attack.run(fmodel, x, crit, epsilon=self.eps)
        else:
            xp = attack.run(fmodel, x, crit)
        if self.eps is not None:
            xp = attack.distance.clip_perturbation(x, xp, self.eps)
        # Foolbox's minimisation attacks (CW-L2, EAD) keep their best adversarial in a zero-initialised tensor and
        # return it as is where they found none: an all-black image, which the classifier may well misclassify,
        # so the success re-check would count it. Those are failures: give the input back instead.
        failed = (xp.flatten(1).abs().amax(1) == 0) & (x.flatten(1).abs().amax(1) > 0)
        if bool(failed.any()):
            xp = torch.where(failed[:, None, None, None], x, xp)
        self.classifier.num_passes += int(x.shape[0])  # Foolbox's passes are not counted; one per call noted
        x_adv: torch.Tensor = xp
        return x_adv


def _top_k_misclassification(labels: torch.Tensor, k: int) -> Misclassification:
    """Foolbox criterion: adversarial once the label is not among the top-k logits (Foolbox 1.x's
    TopKMisclassification, gone from Foolbox 3). A Misclassification subclass, so attacks that read
    ``criterion.labels`` (DeepFool, NewtonFool) accept it."""
    import foolbox as fb
    from eagerpy.astensor import astensor, astensor_

    class TopKMisclassification(fb.criteria.Misclassification):
        def __call__(self, perturbed: T, outputs: T) -> T:
            outputs_, restore_type = astensor_(outputs)
            topk = outputs_.raw.topk(k, dim=-1).indices
            is_adv = ~(topk == self.labels.raw[:, None]).any(-1)
            result: T = restore_type(astensor(is_adv))
            return result

    return TopKMisclassification(labels)


def _make(
    name: str, fb_class: str, norm: str, fixed: bool, targeted_ok: bool = True, **defaults: Any
) -> type[FoolboxAttack]:
    """A registered :class:`FoolboxAttack` subclass for Foolbox attack ``fb_class``."""
    cls = cast(
        "type[FoolboxAttack]",
        type(
            f"{fb_class}Wrapper",
            (FoolboxAttack,),
            {
                "name": name,
                "fb_class": fb_class,
                "norm": norm,
                "fixed_budget": fixed,
                "targeted_ok": targeted_ok,
                "defaults": defaults,
                "__doc__": f"Foolbox {fb_class} ({norm}); "
                + (f"defaults {defaults}." if defaults else "Foolbox's defaults."),
            },
        ),
    )  # type() builds a FoolboxAttack subclass
    return register_attack(name)(cls)


STANDARD_ATTACKS: dict[str, type[FoolboxAttack]] = {
    "fgsm": _make("fgsm", "FGSM", "linf", True, False),  # Foolbox: "unsupported criterion" with targets
    "fgm-l2": _make("fgm-l2", "L2FastGradientAttack", "l2", True, False),
    "bim": _make("bim", "LinfBasicIterativeAttack", "linf", True, steps=10, rel_stepsize=0.2),
    "bim-l2": _make("bim-l2", "L2BasicIterativeAttack", "l2", True, steps=10, rel_stepsize=0.2),
    "bim-l1": _make("bim-l1", "L1BasicIterativeAttack", "l1", True, steps=10, rel_stepsize=0.2),
    "pgd": _make("pgd", "LinfPGD", "linf", True, steps=10, rel_stepsize=0.25, random_start=True),
    "pgd-l2": _make("pgd-l2", "L2PGD", "l2", True, steps=10, rel_stepsize=0.25, random_start=True),
    "cw-l2": _make(
        "cw-l2",
        "L2CarliniWagnerAttack",
        "l2",
        False,
        binary_search_steps=5,
        steps=100,
        stepsize=0.01,
        confidence=0.0,
        initial_const=0.01,
    ),
    "deepfool": _make("deepfool", "L2DeepFoolAttack", "l2", False, False, steps=50, overshoot=0.02),
    "deepfool-linf": _make("deepfool-linf", "LinfDeepFoolAttack", "linf", False, False, steps=50, overshoot=0.02),
    "newtonfool": _make("newtonfool", "NewtonFoolAttack", "l2", False, False, steps=100, stepsize=0.01),
    # EAD's paper budget is 9 x 1000 iterations from c = 0.001; with our 5 x 100 default a larger
    # starting constant is needed, else the search ends before finding any adversarial example.
    "ead": _make(
        "ead",
        "EADAttack",
        "l1",
        False,
        binary_search_steps=5,
        steps=100,
        initial_stepsize=0.01,
        confidence=0.0,
        initial_const=0.1,
        regularization=0.01,
    ),
}
