"""Adaptive attacks that know the detector (paper: ``erase-and-restore-themis`` Section 6).

:class:`DetectorAwareCW` is THEMIS's adaptive attack, itself modelled on He et al.'s attack on
non-differentiable detectors: CW-L2 (Adam in tanh space, loss ``||x' - x||^2 + c * max(max_{j != t} Z_j
- Z_t, -kappa)``) whose intermediate images are checked against the detector; an image counts as a
bypass the first time an intermediate image is adversarial for the model *and* judged clean by the
detector. Each image gets up to ``restarts`` optimisation paths, each from a random start.

The detector is not differentiated (THEMIS is random and non-differentiable); it is only queried.
Any :class:`~advguard.detectors.Detector` with a threshold works, not just THEMIS.

Deviations from the paper, stated: the detector is checked every ``check_every`` steps (the paper:
after every step); each restart draws its constant c log-uniformly in [c/10, 10 c] around ``const`` in
addition to the random start (the paper does not say how paths were diversified beyond the random
start); and because the detector is random, every bypassing image is re-checked with ``recheck`` fresh
draws of the detector (:func:`fresh_evasion`: its seed replaced, since a seeded detector repeats an image's
draw) and the share of re-checks it evades is reported (a bypass of one draw is a weaker bypass than one that
evades every draw).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from tqdm.auto import tqdm

from ..classifier import Classifier
from ..validation import ParameterError, ParameterTypeError, check_keywords, check_number
from .base import COMMON_PARAMETERS, Attack, AttackResult, register_attack

if TYPE_CHECKING:  # pragma: no cover
    from ..detectors.base import Detector


@dataclass
class AdaptiveResult(AttackResult):
    """:class:`AttackResult` of an adaptive attack (one that knows the detector; ``Attack.requires ==
    ("detector",)``). In every adaptive result ``success`` is the attack's goal, the **bypass**: misclassified
    (untargeted) or classified as the target, *and* judged clean by the detector at its threshold when found (a
    bypass found on an image the classifier, re-checked in float32, no longer misclassifies is no success).

    Per image besides: ``misclassified`` (the first half alone: misclassified, or the target reached, whether or
    not the detector flags the image), ``restart`` (0-based index of the optimisation path that first bypassed, -1
    if none), ``step`` (the step it was found at, -1 if none) and ``recheck_evasion`` (share of fresh detector draws
    the bypassing image also evades; NaN where there was no bypass). ``evaded`` is an alias of ``success``, kept
    for compatibility (before issue #26 ``detector-aware-cw`` and ``taintradar-bpda`` reported the
    misclassification in ``success`` and the bypass in ``evaded``)."""

    restart: torch.Tensor | None = None
    step: torch.Tensor | None = None
    recheck_evasion: torch.Tensor | None = None
    misclassified: torch.Tensor | None = None

    @property
    def evaded(self) -> torch.Tensor:
        """The bypass per image: an alias of ``success``."""
        return self.success

    def bypass_curve(self, restarts: int) -> np.ndarray:
        """Cumulative bypass rate after 1..``restarts`` optimisation paths (the paper's Figure 6): the share of
        images that bypass (``success``) and were found by one of the first ``t`` paths, for t = 1..``restarts``."""
        assert self.restart is not None  # set by the attack that returns this result
        r, s = self.restart.numpy(), self.success.numpy()
        return np.array([float(((r >= 0) & (r < t) & s).mean()) for t in range(1, restarts + 1)])


def evades(detector: Detector, x: torch.Tensor) -> np.ndarray:
    """Per image: does the fitted ``detector`` judge it clean (score at or below its threshold)?"""
    return ~(detector.score(x.detach().cpu()) > detector.threshold_)


#: how :func:`fresh_evasion` draws afresh; part of the experiments' cache keys for ``recheck_evasion``, so that
#: values computed before the re-check used fresh draws (they re-scored the same draw) are never reused
RECHECK_PROTOCOL = "fresh-seeds"


def fresh_evasion(detector: Detector, x: torch.Tensor, draws: int) -> np.ndarray:
    """Per image: the share of ``draws`` fresh random draws of the fitted ``detector`` that judge it clean.

    A random detector (Erase-and-Restore's masks, TaintRadar's noise fill, SentiNet's inert noise) seeds each
    image's draw from its ``seed`` and the image's bytes, so re-scoring the same image repeats the same draw.
    Draw ``j`` (1..``draws``) scores a shallow copy of the detector with ``seed + j`` instead (the fitted decision
    model and threshold shared; ``detector`` itself unchanged): the same detector deployed with another seed. A
    deterministic detector gives 0 or 1."""
    if draws < 1:
        raise ParameterError(f"fresh_evasion: draws must be >= 1, got {draws}")
    x = x.detach().cpu()
    params = detector.get_params(deep=False)
    if params.get("seed") is None:  # a detector without a seed parameter: its own randomness, if any, is fresh
        same: np.ndarray = np.mean([evades(detector, x) for _ in range(draws)], axis=0)
        return same
    base = int(params["seed"])
    hits = np.zeros(x.shape[0])
    for j in range(1, draws + 1):
        hits += evades(copy.copy(detector).set_params(seed=base + j), x)
    return hits / draws


@register_attack()
class DetectorAwareCW(Attack):
    """``DetectorAwareCW(clf, detector, confidence=0, steps=100, restarts=150, check_every=1)(x, y, targets)`` ->
    :class:`AdaptiveResult`: ``success`` is the bypass, ``misclassified`` the target reached (untargeted: the label
    changed) alone."""

    name = "detector-aware-cw"
    norm = "l2"
    requires = ("detector",)

    def __init__(
        self,
        classifier: Classifier,
        detector: Detector,
        *,
        confidence: float = 0.0,
        steps: int = 100,
        restarts: int = 150,
        check_every: int = 1,
        const: float = 1.0,
        stepsize: float = 0.01,
        init_noise: float = 8 / 255,
        recheck: int = 10,
        **kw: Any,
    ):
        where = self.name
        check_keywords(where, kw, COMMON_PARAMETERS)
        if not hasattr(detector, "threshold_") or not hasattr(detector, "score"):
            raise ParameterTypeError(f"{where}: detector must be an advguard Detector, got {type(detector).__name__}")
        if detector.threshold_ is None:
            raise ParameterError("the detector has no threshold: fit or calibrate it before attacking it")
        count: dict[str, Any] = dict(lo=1, hi=1_000_000, integer=True, where=where)
        super().__init__(
            classifier,
            confidence=float(check_number("confidence", confidence, lo=0, where=where)),
            steps=int(check_number("steps", steps, **count)),
            restarts=int(check_number("restarts", restarts, **count)),
            check_every=int(check_number("check_every", check_every, **count)),
            const=float(check_number("const", const, lo=0, lo_open=True, where=where)),
            stepsize=float(check_number("stepsize", stepsize, lo=0, lo_open=True, where=where)),
            init_noise=float(check_number("init_noise", init_noise, lo=0, hi=1, where=where)),
            recheck=int(check_number("recheck", recheck, lo=0, hi=1_000_000, integer=True, where=where)),
            **kw,
        )
        self.detector = detector

    # ------------------------------------------------------------------ one batch
    @staticmethod
    def _margin(z: torch.Tensor, onehot: torch.Tensor, targeted: bool) -> torch.Tensor:
        """How far from success each image is, in logits: targeted, max_{j != t} Z_j - Z_t; untargeted,
        Z_y - max_{j != y} Z_j (success at margin <= -kappa, resp. < 0)."""
        zt = z[onehot]
        zo = z.masked_fill(onehot, -float("inf")).amax(1)
        return (zo - zt) if targeted else (zt - zo)

    def _evades(self, x: torch.Tensor) -> np.ndarray:
        return evades(self.detector, x)

    def _run(
        self, x: torch.Tensor, y: torch.Tensor, targets: torch.Tensor | None
    ) -> tuple[torch.Tensor, dict[str, np.ndarray]]:
        p = self.params
        model = self.classifier.module
        n = x.shape[0]
        rng = np.random.default_rng([self.seed, self.batch_index_])
        best = x.clone()
        restart_of = np.full(n, -1)
        step_of = np.full(n, -1)
        recheck = np.full(n, np.nan)
        targeted = targets is not None
        onehot_t = torch.nn.functional.one_hot(targets if targets is not None else y, self.classifier.num_classes)
        bar = tqdm(range(p["restarts"]), desc=f"{self.name} restarts", leave=False, disable=not self.progress)
        for r in bar:
            active = np.flatnonzero(restart_of < 0)
            if len(active) == 0:
                break
            idx = torch.from_numpy(active).to(x.device)
            x0, oh = x[idx], onehot_t[idx].bool()
            noise = torch.from_numpy(rng.uniform(-p["init_noise"], p["init_noise"], x0.shape).astype(np.float32))
            start = (x0 + noise.to(x.device)).clamp(0, 1)
            w = torch.atanh((2 * start - 1).clamp(-1 + 1e-6, 1 - 1e-6)).detach().requires_grad_(True)
            c = torch.from_numpy(p["const"] * 10 ** rng.uniform(-1, 1, len(active))).float().to(x.device)
            opt = torch.optim.Adam([w], lr=p["stepsize"])
            done = np.zeros(len(active), bool)
            for s in range(1, p["steps"] + 1):
                xa = (torch.tanh(w) + 1) / 2
                # targeted: push Z_t above the rest by kappa; untargeted: push the true label below the rest
                loss_adv = torch.clamp(self._margin(model(xa), oh, targeted), min=-p["confidence"])
                l2 = (xa - x0).flatten(1).pow(2).sum(1)
                loss = (l2 + c * loss_adv).masked_fill(torch.from_numpy(done).to(x.device), 0.0).sum()
                opt.zero_grad()
                loss.backward()
                opt.step()
                if s % p["check_every"] and s != p["steps"]:
                    continue
                with torch.no_grad():
                    xa = (torch.tanh(w) + 1) / 2
                    margin = self._margin(model(xa), oh, targeted)
                    adv = ((margin <= -p["confidence"]) if targeted else (margin < 0)).cpu().numpy()
                cand = np.flatnonzero(adv & ~done)
                if len(cand) == 0:
                    continue
                ev = self._evades(xa[torch.from_numpy(cand).to(x.device)])
                for j in cand[ev]:
                    i = active[j]
                    done[j] = True
                    restart_of[i], step_of[i] = r, s
                    best[i] = xa[j].detach()
                if done.all():
                    break
            # images still not bypassing keep the last restart's final iterate (for the norms only)
            for j in np.flatnonzero(~done):
                best[active[j]] = ((torch.tanh(w[j]) + 1) / 2).detach()
            bar.set_postfix(bypassed=int((restart_of >= 0).sum()), of=n)
        found = np.flatnonzero(restart_of >= 0)
        if p["recheck"] and len(found):
            recheck[found] = fresh_evasion(self.detector, best[torch.from_numpy(found).to(x.device)], p["recheck"])
        return best, {"restart": restart_of, "step": step_of, "recheck": recheck}

    def _finish(self, r: AttackResult, extras: dict[str, np.ndarray]) -> AdaptiveResult:
        """The :class:`AdaptiveResult`: ``success`` = the bypass (found by a path *and* still misclassified, or
        classified as the target, in the float32 re-check), ``misclassified`` = the re-check alone."""
        restart, step, recheck = extras["restart"], extras["step"], extras["recheck"]
        misclassified = r.success.clone()
        bypass = torch.from_numpy(restart >= 0) & misclassified
        return AdaptiveResult(
            **{**r.__dict__, "success": bypass},
            restart=torch.from_numpy(restart),
            step=torch.from_numpy(step),
            recheck_evasion=torch.from_numpy(recheck),
            misclassified=misclassified,
        )
