"""Attacks: one interface, ``make_attack(name, classifier, **params)(x, y, targets=None)``."""

from __future__ import annotations

from typing import Any

from ..classifier import Classifier
from ..errors import unknown_name
from ..validation import ParameterTypeError, check_keywords
from .base import ATTACKS, Attack, AttackResult, perturbation_norms, register_attack, shifted_targets

# Importing a module registers its attacks (``@register_attack``) in ATTACKS: the Foolbox ones first, then RP2.
# The patch and the adaptive attacks need a fitted patch or detector first and are not registered by name.
# isort: off
from .standard import STANDARD_ATTACKS, FoolboxAttack
from .rp2 import RP2, Sticker
from .patch import AdversarialPatch, shape_mask
from .region_misleading import RegionMisleadingPatch
from .taintradar_bpda import TaintRadarBPDA
# isort: on


def make_attack(name: str, classifier: Classifier, **params: Any) -> Attack:
    """Build attack ``name`` (see :data:`ATTACKS`) for ``classifier``; epsilons in [0, 1] pixel units.

    Every parameter is checked here, before any image is seen: an unknown keyword (the closest valid one is
    named), a wrong type, or a value out of range (steps < 1, eps <= 0 or larger than any distance between two
    images, batch_size < 1...) raises an :class:`~advguard.AdvguardError` naming the parameter and its range."""
    if not isinstance(name, str):
        raise ParameterTypeError(f"the attack name must be a str (one of {', '.join(sorted(ATTACKS))}), got {name!r}")
    if name not in ATTACKS:
        raise unknown_name("attack", name, list(ATTACKS))
    check_keywords(f"attack {name!r}", params, ATTACKS[name].parameters())
    return ATTACKS[name](classifier, **params)


__all__ = [
    "ATTACKS",
    "AdversarialPatch",
    "Attack",
    "RP2",
    "RegionMisleadingPatch",
    "Sticker",
    "TaintRadarBPDA",
    "AttackResult",
    "FoolboxAttack",
    "STANDARD_ATTACKS",
    "make_attack",
    "perturbation_norms",
    "register_attack",
    "shape_mask",
    "shifted_targets",
]
