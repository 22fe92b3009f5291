"""The white-box adaptive attacks' common driver: PGD on a classification margin plus a detector term.

Carlini & Wagner 2017 ("Adversarial examples are not easily detected", Section 4) attack a detector D next to the
classifier F by minimising one combined loss, ``margin(F(x')) + c * detector_loss(x')``; Athalye et al. 2018
replace the non-differentiable parts of a defence by a differentiable stand-in in the backward pass (BPDA) and
average random transformations (EOT); Tramer et al. 2020 ask for a loss whose minimum *is* the goal ("misclassified
and not flagged") and for checking that goal on the real defence. :class:`AdaptivePGD` is that recipe, shared by
the detector-specific attacks (``adaptive_*`` modules, one per detector):

    loss(x') = max(margin(x'), -kappa) + weight * term(x')      (loss="margin", the default)
    loss(x') = -CE(F(x'), y) + weight * term(x')                 (loss="ce"; targeted: +CE(F(x'), t))

with ``margin`` the logit margin of C&W's f_6 (untargeted: Z_y - max_{j != y} Z_j; targeted: max_{j != t} Z_j -
Z_t) and ``term`` a :class:`DetectorTerm`: a differentiable surrogate of one fitted detector that is 0 where the
surrogate judges x' clean (a hinge at the detector's calibrated threshold where the surrogate is the score
itself). Both parts are hinges, so an image that is misclassified (by ``kappa``) *and* judged clean by the surrogate
has no gradient and stays put. The cross-entropy alternative (``loss="ce"``) is Madry et al.'s PGD loss: not a
hinge, it keeps pushing the image into the wrong class (Croce & Hein 2020 run a cross-entropy and a margin-type loss
for such reasons), and a sequence (``loss=("margin", "ce")``, cycled over the restarts) runs both. Being unbounded
it can drown the detector term (against Nguyen's CNN detector on ``cifar10-cnn`` it gives plain PGD's figures); it
suits detectors that a deeper misclassification itself evades (the confidence baseline there at L2 0.5: 95 % bypass
vs the margin's 89 %). Projected gradient descent (Madry et al. 2018) in an L-inf (signed gradient) or L2
(normalised gradient) ball of radius ``eps``, from a uniform random start, ``restarts`` times for the images not
bypassing yet. Every ``check_every`` steps the *real* detector is queried (``evades``): an image counts as a bypass
the first time an iterate is misclassified and judged clean at the detector's calibrated threshold; it is kept and
frozen from then on.

The result's ``success`` is the bypass itself (misclassified, or the target reached, *and* not flagged), re-checked
on the returned images with the classifier (float32) and the detector. The step size is an absolute share of
``eps`` (``rel_stepsize``), not tied to ``steps``, so a run with more steps (or restarts) extends a shorter one and
never bypasses fewer images (the sanity check Carlini et al. 2019 ask for): exactly so, image by image, when both
step counts are multiples of ``check_every`` and the detector's score of an image is deterministic (every detector
here: THEMIS seeds its masks by the image's bytes). With few steps, raise ``rel_stepsize`` (Madry et al.'s rule is
2.5 / steps).
"""

from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import torch
from tqdm.auto import tqdm

from ..classifier import Classifier
from ..errors import unknown_name
from ..validation import ParameterError, ParameterTypeError, check_bool, check_choice, check_keywords, check_number
from .adaptive import AdaptiveResult, evades
from .base import Attack, AttackResult
from .standard import max_distance

if TYPE_CHECKING:  # pragma: no cover
    from ..detectors.base import Detector

#: the norms :class:`AdaptivePGD` projects on
NORMS = ("linf", "l2")
#: the common keywords the adaptive attacks accept (not ``top_k``: the margin and the bypass are top-1)
ADAPTIVE_COMMON = ("batch_size", "seed", "progress")


def logit_margin(z: torch.Tensor, label: torch.Tensor, targeted: bool) -> torch.Tensor:
    """C&W's f_6 per image: targeted, max_{j != t} Z_j - Z_t; untargeted, Z_y - max_{j != y} Z_j (success at < 0)."""
    zl = z.gather(1, label[:, None])[:, 0]
    zo = z.scatter(1, label[:, None], -torch.inf).amax(1)
    return (zo - zl) if targeted else (zl - zo)


def label_reached(z: torch.Tensor, y: torch.Tensor, targets: torch.Tensor | None) -> torch.Tensor:
    """Per image, from logits ``z``: misclassified (untargeted: top-1 is not ``y``) or classified as the target."""
    return (z.argmax(1) == targets) if targets is not None else (z.argmax(1) != y)


def best_other(z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per image, the most likely class other than ``y`` (the label an untargeted attack is heading for)."""
    return z.detach().scatter(1, y[:, None], -torch.inf).argmax(1)


def straight_through(x: torch.Tensor, exact: torch.Tensor) -> torch.Tensor:
    """BPDA with the identity (Athalye et al. 2018, Section 4.1): the value of ``exact`` (computed from ``x`` without
    a gradient, e.g. a squeezer, JPEG or inpainting), the gradient of the identity."""
    return x + (exact.to(x.device, x.dtype) - x).detach()


def restart_generator(seed: int, batch: int, restart: int) -> torch.Generator:
    """The CPU generator of one restart of one batch of an attack seeded with ``seed`` (any seed the attacks accept,
    0 .. 2**63 - 1: the mix is taken modulo 2**63, which torch's generators take)."""
    return torch.Generator().manual_seed((seed * 1_000_003 + batch * 1_009 + restart) % 2**63)


#: the misclassification losses of :class:`AdaptivePGD`
LOSSES = ("margin", "ce")


def check_loss(loss: Any, where: str) -> str | tuple[str, ...]:
    """The misclassification loss: ``"margin"`` (C&W's f_6) or ``"ce"`` (cross-entropy), or a non-empty sequence
    of them (one per restart, cycled), as :func:`check_kappa`."""
    if isinstance(loss, (list, tuple)):
        if not loss or len(loss) > 1_000:
            raise ParameterError(f"{where}: loss must be one of {LOSSES} or a non-empty list of them, got {loss!r}")
        return tuple(check_choice("loss", n, LOSSES, where) for n in loss)
    return check_choice("loss", loss, LOSSES, where)


def _cycled(value: Any, r: int) -> Any:
    """Restart ``r``'s entry of a parameter given as one value or a sequence cycled over the restarts."""
    return value[r % len(value)] if isinstance(value, tuple) else value


def check_kappa(kappa: Any, where: str) -> float | tuple[float, ...]:
    """C&W's confidence: a number >= 0, or a non-empty sequence of them (one per restart, cycled)."""
    if isinstance(kappa, (list, tuple)):
        if not kappa or len(kappa) > 1_000:
            raise ParameterError(f"{where}: kappa must be a number >= 0 or a non-empty list of them, got {kappa!r}")
        return tuple(float(check_number("kappa (in logits)", k, lo=0, where=where)) for k in kappa)
    return float(check_number("kappa (in logits)", kappa, lo=0, where=where))


class DetectorTerm(abc.ABC):
    """A differentiable surrogate of one fitted detector for :class:`AdaptivePGD`.

    :meth:`loss` gives one non-negative value per image, 0 where the surrogate judges the image clean.
    ``threshold`` is the score the hinge is taken at (default: the detector's calibrated ``threshold_``; the
    Guard's joint thresholds are set here). :meth:`prepare` is called once per batch with the clean images (terms
    whose target comes from clean data, e.g. ML-LOO's feature level)."""

    #: the detector classes (by ``name``) this term models
    detector_names: ClassVar[tuple[str, ...]] = ()

    def __init__(self, classifier: Classifier, detector: Detector):
        self.classifier = classifier
        self.detector = detector
        threshold = getattr(detector, "threshold_", None)
        if threshold is None:
            raise ParameterError(
                f"the {detector.name} detector has no threshold: fit or calibrate it before attacking it"
            )
        self.threshold = float(threshold)

    def prepare(self, x: torch.Tensor, y: torch.Tensor) -> None:  # noqa: B027 - optional hook, empty by default
        """Hook: per-batch set-up from the clean images ``x`` (labels ``y``)."""

    def restrict(self, rows: torch.Tensor) -> None:  # noqa: B027 - optional hook, empty by default
        """Hook: the following :meth:`loss` calls see only these ``rows`` of the batch given to :meth:`prepare` (the
        driver stops computing on images that bypass already); a term with per-image state selects it here."""

    @abc.abstractmethod
    def loss(self, x: torch.Tensor, z: torch.Tensor, label: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        """(N,) differentiable surrogate loss of images ``x`` (logits ``z`` = classifier(x), in the graph), given
        the adversarial ``label`` the attack heads for (the target, or the most likely wrong class); ``g`` seeds
        any randomness (EOT draws)."""


def check_search(restarts: Any, kappa: Any, weight: Any, where: str) -> dict[str, Any]:
    """The parameters every adaptive search shares, checked: ``restarts`` (a count), ``kappa`` (:func:`check_kappa`)
    and ``weight`` (of the detector term, >= 0)."""
    return {
        "restarts": int(check_number("restarts", restarts, lo=1, hi=1_000_000, integer=True, where=where)),
        "kappa": check_kappa(kappa, where),
        "weight": float(check_number("weight", weight, lo=0, where=where)),
    }


def check_budget(classifier: Classifier, eps: Any, norm: Any, where: str) -> tuple[float, str]:
    """``(eps, norm)`` of an attack in an L-inf or L2 ball, checked: ``norm`` one of :data:`NORMS`, ``eps`` in (0,
    the largest ``norm`` distance between two of the classifier's images] (pixel units; where the classifier's input
    size is unknown, an L2 ``eps`` is checked against the images in :func:`check_budget_fits`)."""
    if not isinstance(norm, str):
        raise ParameterTypeError(f"{where}: norm must be one of {list(NORMS)}, got {norm!r}")
    if norm not in NORMS:
        raise unknown_name("norm", norm, list(NORMS))
    width = classifier.bounds[1] - classifier.bounds[0] if isinstance(classifier, Classifier) else 1.0
    if norm == "linf":
        top: float | None = width
    elif isinstance(classifier, Classifier) and classifier.size is not None:
        top = max_distance("l2", (classifier.channels, *classifier.size), classifier.bounds)
    else:
        top = None
    checked = check_number("eps (in [0, 1] pixel units, e.g. 8/255)", eps, lo=0, hi=top, lo_open=True, where=where)
    return float(checked), norm


def check_budget_fits(where: str, eps: float, norm: str, x: torch.Tensor, bounds: tuple[float, float]) -> None:
    """Refuse an L2 ``eps`` beyond the largest distance between two images of the shape of ``x`` (N, C, H, W)."""
    if norm == "l2":
        top = max_distance("l2", tuple(x.shape[1:]), bounds)
        if eps > top:
            raise ParameterError(f"{where}: eps={eps:g} is outside (0, {top:.4g}] for these images")


def check_detector(detector: Any, names: tuple[str, ...], where: str) -> None:
    """Refuse anything but a fitted detector whose ``name`` is one of ``names``, naming what was given."""
    if not hasattr(detector, "score") or not hasattr(detector, "threshold_"):
        raise ParameterTypeError(f"{where}: detector must be a fitted advguard Detector, got {type(detector).__name__}")
    if names and getattr(detector, "name", None) not in names:
        raise ParameterTypeError(
            f"{where}: attacks the {' / '.join(names)} detector, "
            f"got {getattr(detector, 'name', type(detector).__name__)!r}"
        )
    if detector.threshold_ is None:
        raise ParameterError(f"the {detector.name} detector has no threshold: fit or calibrate it before attacking it")


class _Candidates:
    """Per image, the latest misclassified iterate not yet shown to the detector (iterates oscillate around the
    hinges: the one at a check step need not be misclassified when an earlier one was)."""

    def __init__(self, x: torch.Tensor):
        self.x = x.clone()
        self.step = np.full(x.shape[0], -1)
        self.pending = torch.zeros(x.shape[0], dtype=torch.bool, device=x.device)

    def note(self, xa: torch.Tensor, hit: torch.Tensor, step: int) -> None:
        if bool(hit.any()):
            self.x[hit] = xa.detach()[hit]
            self.step[hit.cpu().numpy()] = step
            self.pending[hit] = True


@dataclass
class BypassResult(AdaptiveResult):
    """:class:`~advguard.attacks.adaptive.AdaptiveResult` of an adaptive attack that counts its work per image. As in
    every adaptive result ``success`` is the **bypass**: misclassified (untargeted) or classified as the target,
    *and* judged clean by the detector at its calibrated threshold, both checked on the returned images (``evaded``
    is an alias of it); ``misclassified`` is the first half alone; ``restart`` / ``step`` where the bypass was found
    (-1: none). ``steps_used``: the work spent on each image, restarts included. For the gradient attacks
    (:class:`AdaptivePGD`) gradient steps, each one forward and one backward pass of the classifier plus the detector
    term's; for the score-based :class:`~advguard.attacks.square_bypass.SquareBypass` queries, each one classifier
    and one detector evaluation of one image."""

    steps_used: torch.Tensor | None = None


def bypass_result(detector: Any, r: AttackResult, extras: dict[str, np.ndarray]) -> BypassResult:
    """The :class:`BypassResult` of an attack on ``detector`` (a fitted Detector or Guard) from the base result
    ``r``: ``success`` re-checked on the returned images with the classifier (``r.success``, decided in float32)
    and the detector; ``extras`` per image: ``restart`` and ``step`` where the bypass was found (-1: none),
    ``used`` the work spent (:attr:`BypassResult.steps_used`)."""
    misclassified = r.success.clone()
    ok = torch.from_numpy(evades(detector, r.x_adv)) if len(r) else torch.zeros(0, dtype=torch.bool)
    bypass = misclassified & ok
    restart = torch.from_numpy(extras.get("restart", np.zeros(0, np.int64)))
    found = restart >= 0
    recheck = torch.where(found, bypass.double(), torch.tensor(float("nan"), dtype=torch.float64))
    return BypassResult(
        **{**r.__dict__, "success": bypass},
        restart=restart,
        step=torch.from_numpy(extras.get("step", np.zeros(0, np.int64))),
        recheck_evasion=recheck,
        misclassified=misclassified,
        steps_used=torch.from_numpy(extras.get("used", np.zeros(0, np.int64))),
    )


class AdaptivePGD(Attack):
    """PGD on ``max(margin, -kappa) + weight * term`` against a fitted detector; see the module docstring.

    Subclasses set ``name``, ``detector_names`` and implement :meth:`_make_term`; one with parameters of its own
    checks them and sets :attr:`term_params` before calling this ``__init__``. Parameters: ``eps`` (the budget,
    in [0, 1] pixel units), ``norm`` (``"linf"`` or ``"l2"``), ``steps``, ``rel_stepsize`` (step = rel_stepsize *
    eps), ``restarts``, ``kappa`` (C&W's confidence, in logits; a sequence is cycled over the restarts, e.g.
    ``restarts=2, kappa=(0, 10)``: a low- and a high-confidence path, since which one evades a detector better depends
    on the detector and the budget), ``loss`` (``"margin"`` or ``"ce"``, or a sequence cycled over the restarts like
    ``kappa``: restart r takes ``loss[r % len(loss)]`` and ``kappa[r % len(kappa)]``, each cycled on its own;
    ``kappa`` applies to the margin only), ``weight`` (of the detector term),
    ``check_every`` (steps between queries of the real detector), ``random_start``."""

    name = "adaptive-pgd"
    requires = ("detector",)
    fixed_budget = True
    #: the detectors (by ``name``) the attack's term models; empty: any
    detector_names: ClassVar[tuple[str, ...]] = ()
    #: a subclass's own parameters, checked by its ``__init__`` before it calls this one (they join ``params``)
    term_params: dict[str, Any]

    def __init__(
        self,
        classifier: Classifier,
        detector: Detector,
        *,
        eps: float = 8 / 255,
        norm: str = "linf",
        steps: int = 50,
        rel_stepsize: float = 0.1,
        restarts: int = 1,
        kappa: float | tuple[float, ...] | list[float] = 0.0,
        weight: float = 1.0,
        check_every: int = 1,
        random_start: bool = True,
        loss: str | tuple[str, ...] | list[str] = "margin",
        **kw: Any,
    ):
        where = self.name
        check_keywords(where, kw, ADAPTIVE_COMMON)
        self.term_params = getattr(self, "term_params", {})
        check_detector(detector, self.detector_names, where)
        eps, norm = check_budget(classifier, eps, norm, where)
        count: dict[str, Any] = dict(lo=1, hi=1_000_000, integer=True, where=where)
        super().__init__(
            classifier,
            eps=eps,
            norm=norm,
            steps=int(check_number("steps", steps, **count)),
            rel_stepsize=float(check_number("rel_stepsize", rel_stepsize, lo=0, hi=10, lo_open=True, where=where)),
            **check_search(restarts, kappa, weight, where),
            check_every=int(check_number("check_every", check_every, **count)),
            random_start=check_bool("random_start", random_start, where=where),
            loss=check_loss(loss, where),
            **self.term_params,
            **kw,
        )
        self.norm = norm
        self.eps = eps
        self.detector = detector
        self.term = self._make_term(detector)
        # the current restart's kappa and loss (restart r takes entry r of each sequence, cycled independently)
        self._kappa: float = _cycled(self.params["kappa"], 0)
        self._loss: str = _cycled(self.params["loss"], 0)

    @classmethod
    def parameters(cls) -> list[str]:
        """As :meth:`Attack.parameters`, without ``top_k`` (the margin and the bypass are top-1)."""
        return [k for k in super().parameters() if k != "top_k"]

    # ------------------------------------------------------------------ subclass hooks
    @abc.abstractmethod
    def _make_term(self, detector: Detector) -> DetectorTerm:
        """The detector term (built once, after the parameters are checked)."""

    # ------------------------------------------------------------------ the attack
    def _check_inputs(self, x: torch.Tensor) -> None:
        check_budget_fits(self.name, self.eps, self.norm, x, self.classifier.bounds)

    def _random_delta(self, x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        eps = self.eps
        if not self.params["random_start"]:
            return torch.zeros_like(x)
        if self.norm == "linf":
            d = (torch.rand(x.shape, generator=g) * 2 - 1) * eps
        else:  # uniform in the L2 ball: a random direction, radius eps * U^(1/d)
            d = torch.randn(x.shape, generator=g)
            d = d / d.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, *[1] * (x.ndim - 1))
            r = torch.rand(x.shape[0], generator=g) ** (1.0 / x[0].numel())
            d = d * (eps * r).view(-1, *[1] * (x.ndim - 1))
        lo, hi = self.classifier.bounds
        return ((x + d.to(x.device)).clamp(lo, hi) - x).detach()

    def _project(self, delta: torch.Tensor) -> torch.Tensor:
        if self.norm == "linf":
            return delta.clamp(-self.eps, self.eps)
        n = delta.flatten(1).norm(dim=1).view(-1, *[1] * (delta.ndim - 1))
        out: torch.Tensor = delta * (self.eps / n.clamp_min(1e-12)).clamp(max=1.0)
        return out

    def _direction(self, grad: torch.Tensor) -> torch.Tensor:
        if self.norm == "linf":
            return grad.sign()
        n = grad.flatten(1).norm(dim=1).view(-1, *[1] * (grad.ndim - 1))
        out: torch.Tensor = grad / n.clamp_min(1e-12)
        return out

    def total_loss(
        self, xa: torch.Tensor, y: torch.Tensor, targets: torch.Tensor | None, g: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(per-image loss, logits) of images ``xa`` (in the graph): ``max(margin, -kappa) + weight * term``, or
        ``-CE + weight * term`` for ``loss="ce"``."""
        p = self.params
        z = self.classifier.forward(xa)
        targeted = targets is not None
        label = targets if targets is not None else best_other(z, y)
        goal = targets if targets is not None else y  # the class to reach (targeted) or to leave
        if self._loss == "ce":
            ce = torch.nn.functional.cross_entropy(z, goal, reduction="none")
            loss = ce if targeted else -ce
        else:
            loss = logit_margin(z, goal, targeted).clamp_min(-self._kappa)
        if p["weight"]:
            loss = loss + p["weight"] * self.term.loss(xa, z, label, g)
        return loss, z

    @staticmethod
    def _spread(hit: torch.Tensor, rows: torch.Tensor, n: int) -> torch.Tensor:
        """(n,) bool: ``hit`` of the computed ``rows``, False elsewhere."""
        out = torch.zeros(n, dtype=torch.bool, device=hit.device)
        out[rows] = hit
        return out

    _hit = staticmethod(label_reached)

    def _run(
        self, x: torch.Tensor, y: torch.Tensor, targets: torch.Tensor | None
    ) -> tuple[torch.Tensor, dict[str, np.ndarray]]:
        p = self.params
        clf = self.classifier
        lo, hi = clf.bounds
        n = x.shape[0]
        step_size = p["rel_stepsize"] * self.eps
        self.term.prepare(x, y)
        best = x.clone()
        done = torch.zeros(n, dtype=torch.bool, device=x.device)
        restart_of, step_of = np.full(n, -1), np.full(n, -1)
        used = np.zeros(n, dtype=np.int64)
        bar = tqdm(total=p["restarts"] * p["steps"], desc=self.name, leave=False, disable=not self.progress)
        for r in range(p["restarts"]):
            if bool(done.all()):
                break
            g = restart_generator(self.seed, self.batch_index_, r)
            delta = self._random_delta(x, g)
            self._kappa, self._loss = _cycled(p["kappa"], r), _cycled(p["loss"], r)
            cand = _Candidates(x)
            for s in range(1, p["steps"] + 1):
                # only the images not bypassing yet are computed (a frozen image's iterate does not move)
                act = torch.nonzero(~done).flatten()
                if len(act) == 0:
                    break
                self.term.restrict(act)
                xs, ys, ts = x[act], y[act], None if targets is None else targets[act]
                xa = (xs + delta[act]).detach().requires_grad_(True)
                with torch.enable_grad():
                    loss, z = self.total_loss(xa, ys, ts, g)
                    (grad,) = torch.autograd.grad(loss.sum(), xa)
                cand.note(x + delta, self._spread(self._hit(z.detach(), ys, ts), act, n), s - 1)  # iterate s - 1
                used[act.cpu().numpy()] += 1
                step = self._project(delta[act] - step_size * self._direction(grad))
                delta[act] = ((xs + step).clamp(lo, hi) - xs).detach()
                bar.update(1)
                if s % p["check_every"] and s != p["steps"]:
                    continue
                with torch.no_grad():  # iterate s, so that a check at step s sees iterates 0..s whatever steps is
                    hit = self._spread(self._hit(clf.forward(xs + delta[act]), ys, ts), act, n)
                    cand.note(x + delta, hit, s)
                idx = torch.nonzero(cand.pending & ~done).flatten()
                if len(idx):
                    ev = torch.from_numpy(evades(self.detector, cand.x[idx])).to(x.device)
                    for i in idx[ev].tolist():
                        done[i] = True
                        restart_of[i], step_of[i] = r, cand.step[i]
                        best[i] = cand.x[i]
                cand.pending[:] = False
                bar.set_postfix(bypassed=int(done.sum()), of=n, restart=r)
                if bool(done.all()):
                    break
            # images not bypassing keep the last restart's final iterate
            best[~done] = (x + delta)[~done].detach()
        bar.close()
        return best, {"restart": restart_of, "step": step_of, "used": used}

    def _finish(self, r: AttackResult, extras: dict[str, np.ndarray]) -> BypassResult:
        """The :class:`BypassResult`: ``success`` re-checked on the returned images (classifier and detector)."""
        return bypass_result(self.detector, r, extras)
