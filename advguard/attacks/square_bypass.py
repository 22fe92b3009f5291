"""Square Attack (Andriushchenko et al., ECCV 2020) on the full system: a classifier and a fitted detector or Guard.

A gradient-free, score-based attack that only *queries* the classifier's logits and the detector's score, so it
works against any fitted :class:`~advguard.detectors.Detector` or :class:`~advguard.guard.Guard` and catches
gradient masking in the white-box adaptive attacks (Athalye et al. 2018, Section 3.1; Tramer et al. 2020: a
black-box attack that beats the white-box one means the gradients were misleading). Loss per image, minimised:

    max(margin(x'), -kappa) + weight * max(0, score(x') - threshold)

with ``margin`` C&W's logit margin (untargeted: Z_y - max_{j != y} Z_j; targeted: max_{j != t} Z_j - Z_t) and
``score`` / ``threshold`` the detector's score and calibrated threshold (the guard's combined score and joint
threshold). The random search is the paper's (Section 3; Algorithm 1, L-inf; Algorithm 3, L2): from a random
start, each iteration proposes one update of a random square window and keeps it when the loss goes down. L-inf
(Section 3.1): vertical stripes of +-eps as the start, the window set to +-eps per channel. L2 (Section 3.2): a
grid of "pseudo-Gaussian" bumps as the start; the update moves mass from a second random window into the first, so
the perturbation keeps L2 norm eps (before clipping to the image's range). The window's side covers a share ``p``
of the image, ``p_init`` halved on the paper's schedule (Appendix: after 10, 50, 200, 500, 1000, 2000, 4000, 6000
and 8000 iterations). An image is done (frozen) the first time a query finds it misclassified (or classified as the
target) *and* judged clean (score at or below the threshold); the images not done after ``queries`` start again
from a fresh random start, ``restarts`` times.

Queries are counted honestly: every evaluated image (the start and each candidate) is one query, i.e. one
classifier forward pass and one detector score of that image; ``steps_used`` of the result is the number of
queries each image used, restarts included (at most ``restarts * queries``).

Deviations, stated. The detector term and the freezing at the first bypass are ours (the paper attacks a
classifier alone, stopping at the first misclassification). The margin loss serves targeted calls too (the paper
uses cross-entropy there). The schedule of ``p`` is the paper's, laid out over the paper's 10,000 queries whatever
``queries`` is (the reference code rescales it to the budget): so a run with more queries extends a shorter one
query by query and never bypasses fewer images (same seed, ``restarts=1``, a deterministic detector score; every
detector here is). Each image draws its own window positions (the reference code's L2 attack draws one per
iteration for the whole batch), the positions include the last row and column (the reference code leaves them
out), and the paper's default ``p_init`` (0.05 L-inf, 0.1 L2, for ImageNet) applies to any image size.

Why not ART's ``SquareAttack`` (it does take a custom ``loss`` and ``adv_criterion`` on the estimator's
predictions): it evaluates every image three times per iteration (the criterion on all current images, then the
loss on the current images again, then on the candidates), i.e. three detector queries where the search needs one;
it draws one window position per iteration for the whole batch; its L2 start draws from Python's ``random``
module, which the attack's seeding does not cover; and it reports no per-image query counts. This search is
written for the detector query, the expensive part, to happen once per image and iteration.
"""

from __future__ import annotations

import bisect
import math
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from tqdm.auto import tqdm

from ..classifier import Classifier
from ..validation import ParameterError, ParameterTypeError, check_keywords, check_number
from .adaptive_pgd import (
    ADAPTIVE_COMMON,
    BypassResult,
    bypass_result,
    check_budget,
    check_budget_fits,
    check_search,
    label_reached,
    logit_margin,
    restart_generator,
)
from .base import Attack, AttackResult, register_attack

if TYPE_CHECKING:  # pragma: no cover
    from ..detectors.base import Detector
    from ..guard import Guard

#: the paper's schedule (Appendix; ``p_selection`` of the reference code): ``p_init`` is halved once the iteration
#: index passes each of these (laid out over 10,000 queries)
P_HALVINGS = (10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000)
#: the paper's ``p_init`` per norm (Section 4, ImageNet): the default
P_INIT = {"linf": 0.05, "l2": 0.1}
#: L-inf: how often a window that would not change the image is redrawn (the reference code loops until it does)
REDRAWS = 16


def p_schedule(p_init: float, it: int) -> float:
    """The share of the image's pixels the square covers at iteration ``it`` (0-based, after the start): ``p_init``
    halved after 10, 50, 200, ... 8000 iterations (:data:`P_HALVINGS`), p_init / 512 from then on."""
    return math.ldexp(p_init, -bisect.bisect_left(P_HALVINGS, it))


def check_system(detector: Any, where: str) -> None:
    """Refuse anything but a fitted advguard Detector or Guard (what is queried), naming what was given."""
    from ..detectors.base import Detector
    from ..guard import Guard

    if not isinstance(detector, (Detector, Guard)):
        raise ParameterTypeError(
            f"{where}: detector must be a fitted advguard Detector or Guard, got {type(detector).__name__}"
        )
    if detector.threshold_ is None:
        what = "guard" if isinstance(detector, Guard) else f"{detector.name} detector"
        raise ParameterError(f"{where}: the {what} has no threshold: fit or calibrate it before attacking it")


def _bump(a: int, b: int) -> torch.Tensor:
    """The reference code's ``pseudo_gaussian_pert_rectangles``: an (a, b) bump, nested rectangles weighted
    1 / (k + 1)^2, unit L2 norm."""
    d = torch.zeros(a, b, dtype=torch.float64)
    r0, c0 = a // 2, b // 2
    for k in range(max(a // 2 + 1, b // 2 + 1)):
        d[max(r0 - k, 0) : min(r0 + k + 1, a), max(c0 - k, 0) : min(c0 + k + 1, b)] += 1.0 / (k + 1) ** 2
    out: torch.Tensor = d / d.norm().clamp_min(1e-12)
    return out


def square_bump(s: int) -> torch.Tensor:
    """The reference code's ``meta_pseudo_gaussian_pert`` (before its random transpose): an (s, s) float64 pattern,
    a bump on the top half and a negative one on the bottom half, unit L2 norm (Section 3.2, Figure 2)."""
    d = torch.zeros(s, s, dtype=torch.float64)
    d[: s // 2] = _bump(s // 2, s)
    d[s // 2 :] = -_bump(s - s // 2, s)
    out: torch.Tensor = d / d.norm().clamp_min(1e-12)
    return out


def _signs(shape: tuple[int, ...], g: torch.Generator) -> torch.Tensor:
    return (torch.randint(0, 2, shape, generator=g) * 2 - 1).double()


def _bumps(n: int, s: int, g: torch.Generator) -> torch.Tensor:
    """(n, 1, s, s) float64: :func:`square_bump` per image, transposed for a random half of them."""
    b = square_bump(s)
    flip = torch.rand(n, generator=g) < 0.5
    return torch.where(flip.view(n, 1, 1), b.T, b)[:, None]


def _positions(n: int, s: int, h: int, w: int, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Per image, the top-left corner (row, column) of a random s x s window inside an h x w image."""
    return torch.randint(0, h - s + 1, (n,), generator=g), torch.randint(0, w - s + 1, (n,), generator=g)


def _mask(rows: torch.Tensor, cols: torch.Tensor, s: int, h: int, w: int) -> torch.Tensor:
    """(n, 1, h, w) bool: the s x s window at (rows, cols) per image."""
    ar, ac = torch.arange(h), torch.arange(w)
    in_r = (ar[None] >= rows[:, None]) & (ar[None] < rows[:, None] + s)
    in_c = (ac[None] >= cols[:, None]) & (ac[None] < cols[:, None] + s)
    return (in_r[:, :, None] & in_c[:, None, :])[:, None]


def _window(rows: torch.Tensor, cols: torch.Tensor, s: int) -> tuple[torch.Tensor | slice, ...]:
    """Indices of the s x s window per image: ``t[idx]`` is (n, s, s, C) for a (n, C, H, W) tensor."""
    ar = torch.arange(s)
    rr, cc = (rows[:, None] + ar)[:, :, None], (cols[:, None] + ar)[:, None, :]
    return torch.arange(len(rows))[:, None, None], slice(None), rr, cc


def _l2_normalise(d: torch.Tensor, eps: float) -> torch.Tensor:
    n = d.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, *[1] * (d.ndim - 1))
    out: torch.Tensor = d / n * eps
    return out


@register_attack()
class SquareBypass(Attack):
    """``SquareBypass(clf, detector, eps=8/255, queries=1000)(x, y)`` -> :class:`BypassResult` against any fitted
    :class:`~advguard.detectors.Detector` or :class:`~advguard.guard.Guard`; see the module docstring.

    Parameters: ``eps`` (the budget, [0, 1] pixel units), ``norm`` (``"linf"`` or ``"l2"``), ``queries`` (per
    image and restart; each is one classifier and one detector evaluation of the image), ``p_init`` (the square's
    initial share of the image's pixels, in (0, 1]; default the paper's 0.05 L-inf, 0.1 L2), ``restarts`` (fresh
    random starts for the images not bypassing yet), ``kappa`` (C&W's confidence in logits; a sequence is cycled over
    the restarts), ``weight`` (of the detector term). ``steps_used`` of the result: queries used per image."""

    name = "square-bypass"
    requires = ("detector",)
    fixed_budget = True

    def __init__(
        self,
        classifier: Classifier,
        detector: Detector | Guard,
        *,
        eps: float = 8 / 255,
        norm: str = "linf",
        queries: int = 1000,
        p_init: float | None = None,
        restarts: int = 1,
        kappa: float | tuple[float, ...] | list[float] = 0.0,
        weight: float = 1.0,
        **kw: Any,
    ):
        where = self.name
        check_keywords(where, kw, ADAPTIVE_COMMON)
        check_system(detector, where)
        eps, norm = check_budget(classifier, eps, norm, where)
        queries = check_number(
            "queries (per image and restart)", queries, lo=1, hi=1_000_000, integer=True, where=where
        )
        share = P_INIT[norm] if p_init is None else p_init
        share = check_number("p_init (a share of the pixels)", share, lo=0, hi=1, lo_open=True, where=where)
        super().__init__(
            classifier,
            eps=eps,
            norm=norm,
            queries=int(queries),
            p_init=float(share),
            **check_search(restarts, kappa, weight, where),
            **kw,
        )
        self.norm, self.eps = norm, eps
        self.detector = detector
        self.threshold = float(detector.threshold_)  # type: ignore[arg-type]  # check_system: fitted

    @classmethod
    def parameters(cls) -> list[str]:
        """As :meth:`Attack.parameters`, without ``top_k`` (the margin and the bypass are top-1)."""
        return [k for k in super().parameters() if k != "top_k"]

    def _check_inputs(self, x: torch.Tensor) -> None:
        check_budget_fits(self.name, self.eps, self.norm, x, self.classifier.bounds)

    # ------------------------------------------------------------------ one query
    def query(
        self, xa: torch.Tensor, y: torch.Tensor, targets: torch.Tensor | None, kappa: float
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(loss, bypass) per image of ``xa``: one classifier and one detector query of each image."""
        with torch.no_grad():
            z = self.classifier.forward(xa)
        margin = logit_margin(z, targets if targets is not None else y, targets is not None)
        score = torch.from_numpy(self.detector.score(xa.detach().cpu())).to(z.device)
        loss = margin.double().clamp_min(-kappa) + self.params["weight"] * (score - self.threshold).clamp_min(0)
        return loss, label_reached(z, y, targets) & ~(score > self.threshold)

    # ------------------------------------------------------------------ the random search
    def _side(self, it: int, h: int, w: int) -> int:
        """The window's side at iteration ``it``: sqrt(p * H * W), at least 1 (L-inf) or 3 and odd (L2), at most the
        image's smaller side less one (the reference code's bounds)."""
        s = int(round(math.sqrt(p_schedule(self.params["p_init"], it) * h * w)))
        top = max(min(h, w) - 1, 1)
        if self.norm == "linf":
            return min(max(s, 1), top)
        s = max(s, 3)
        s += 1 - s % 2
        return min(s, top)

    def _init_delta(self, x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        """The random start (float64 perturbation of x, before clipping): L-inf vertical stripes of +-eps per
        channel (Section 3.1); L2 a grid of (H // 5)-pixel bumps with a random sign per channel, norm eps (3.2)."""
        n, c, h, w = x.shape
        if self.norm == "linf":
            return self.eps * _signs((n, c, 1, w), g).expand(n, c, h, w).clone()
        s = max(min(h, w) // 5, 1)
        d = torch.zeros(n, c, h, w, dtype=torch.float64)
        r0, c0 = (h - s * (h // s)) // 2, (w - s * (w // s)) // 2
        for i in range(h // s):
            for j in range(w // s):
                rr, cc = r0 + i * s, c0 + j * s
                d[:, :, rr : rr + s, cc : cc + s] += _bumps(n, s, g) * _signs((n, c, 1, 1), g)
        return _l2_normalise(d, self.eps)

    def _candidate(
        self, x: torch.Tensor, cur: torch.Tensor, live: torch.Tensor, it: int, g: torch.Generator
    ) -> torch.Tensor:
        """A candidate perturbation (float64, before clipping) per image of ``x`` from the current images ``cur``
        (both float64 on the CPU) at iteration ``it``. Algorithm 1 (L-inf): one window set to +-eps per channel, the
        signs redrawn (up to :data:`REDRAWS` times) for the ``live`` images where that would not change the image;
        Algorithm 3 (L2): mass moved from a second window into the first, total norm eps."""
        n, c, h, w = x.shape
        lo, hi = self.classifier.bounds
        s = self._side(it, h, w)
        delta = cur - x
        rows, cols = _positions(n, s, h, w, g)
        if self.norm == "linf":
            m = _mask(rows, cols, s, h, w)
            signs = self.eps * _signs((n, c, 1, 1), g)
            for _ in range(REDRAWS):
                cand = torch.where(m, signs, delta)
                same = (((x + cand).clamp(lo, hi) - cur).abs() < 1e-7).flatten(1).all(1) & live
                if not bool(same.any()):
                    break
                signs = torch.where(same.view(n, 1, 1, 1), self.eps * _signs((n, c, 1, 1), g), signs)
            return cand
        rows2, cols2 = _positions(n, s, h, w, g)
        m1, m2 = _mask(rows, cols, s, h, w), _mask(rows2, cols2, s, h, w)
        idx = _window(rows, cols, s)
        norm_w1 = (delta * m1).flatten(2).norm(dim=2)[:, :, None, None]  # (n, c, 1, 1)
        norm_img = delta.flatten(1).norm(dim=1).view(n, 1, 1, 1)
        norm_w12 = (delta * (m1 | m2)).flatten(2).norm(dim=2)[:, :, None, None]
        new = _bumps(n, s, g) * _signs((n, c, 1, 1), g) + delta[idx].permute(0, 3, 1, 2) / (1e-10 + norm_w1)
        room = ((self.eps**2 - norm_img**2).clamp_min(0) / c + norm_w12**2).sqrt()
        new = new / new.flatten(2).norm(dim=2).clamp_min(1e-12)[:, :, None, None] * room
        delta = delta.masked_fill(m2, 0.0)
        delta[idx] = new.permute(0, 2, 3, 1)
        return _l2_normalise(delta, self.eps)

    def _run(
        self, x: torch.Tensor, y: torch.Tensor, targets: torch.Tensor | None
    ) -> tuple[torch.Tensor, dict[str, np.ndarray]]:
        p = self.params
        lo, hi = self.classifier.bounds
        n = x.shape[0]
        xd = x.detach().cpu().double()  # the search in float64 on the CPU; queries on the classifier's device

        def images(delta: torch.Tensor) -> torch.Tensor:
            return (xd + delta).clamp(lo, hi)

        best = x.clone()
        done = torch.zeros(n, dtype=torch.bool)
        restart_of, step_of = np.full(n, -1), np.full(n, -1)
        used = np.zeros(n, dtype=np.int64)
        kappas = p["kappa"] if isinstance(p["kappa"], tuple) else (p["kappa"],)
        bar = tqdm(total=p["restarts"] * p["queries"], desc=self.name, leave=False, disable=not self.progress)

        def ask(xa: torch.Tensor, idx: torch.Tensor, kappa: float, r: int, q: int) -> torch.Tensor:
            """Query images ``xa`` of the batch's images ``idx`` (query ``q`` of restart ``r``): their losses; the
            bypassing ones are done, kept as they are."""
            dev = idx.to(x.device)
            loss, hit = self.query(xa.to(x.device, x.dtype), y[dev], None if targets is None else targets[dev], kappa)
            used[idx.numpy()] += 1
            for j in torch.nonzero(hit.cpu()).flatten().tolist():
                i = int(idx[j])
                done[i] = True
                best[i] = xa[j].to(x.device, x.dtype)
                restart_of[i], step_of[i] = r, q
            return loss.cpu()

        for r in range(p["restarts"]):
            if bool(done.all()):
                break
            g = restart_generator(self.seed, self.batch_index_, r)
            kappa = kappas[r % len(kappas)]
            cur = images(self._init_delta(xd, g))  # drawn for every image: its draws do not depend on the others'
            cur_loss = torch.full((n,), math.inf, dtype=torch.float64)
            idx = torch.nonzero(~done).flatten()
            cur_loss[idx] = ask(cur[idx], idx, kappa, r, 1)
            q = 1
            while q < p["queries"] and not bool(done.all()):
                idx = torch.nonzero(~done).flatten()
                cand = images(self._candidate(xd, cur, ~done, q - 1, g))
                loss = ask(cand[idx], idx, kappa, r, q + 1)
                better = (loss < cur_loss[idx]) | done[idx]  # a bypass is kept whatever its loss
                cur[idx[better]], cur_loss[idx[better]] = cand[idx[better]], loss[better]
                q += 1
                bar.update(1)
                bar.set_postfix(bypassed=int(done.sum()), of=n, restart=r)
            bar.update(p["queries"] - q + 1)
            out = ~done  # images not bypassing keep the last restart's best iterate
            best[out.to(x.device)] = cur[out].to(x.device, x.dtype)
        bar.close()
        return best, {"restart": restart_of, "step": step_of, "used": used}

    def _finish(self, r: AttackResult, extras: dict[str, np.ndarray]) -> BypassResult:
        """The :class:`BypassResult`: ``success`` (the bypass) re-checked on the returned images with the classifier
        (float32) and the detector; ``steps_used`` the queries each image used; ``step`` the query (1-based, within
        its restart) that found the bypass."""
        return bypass_result(self.detector, r, extras)


__all__ = ["P_HALVINGS", "P_INIT", "SquareBypass", "check_system", "p_schedule", "square_bump"]
