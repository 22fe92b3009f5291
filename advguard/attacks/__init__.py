"""Attacks: one interface, ``make_attack(name, classifier, **params)(x, y, targets=None)``."""
from __future__ import annotations

from ..errors import unknown_name
from .patch import AdversarialPatch, shape_mask
from .region_misleading import RegionMisleadingPatch
from .rp2 import RP2, Sticker
from .taintradar_bpda import TaintRadarBPDA
from .base import Attack, AttackResult, perturbation_norms, shifted_targets
from .standard import STANDARD_ATTACKS, FoolboxAttack

ATTACKS: dict[str, type[Attack]] = {**STANDARD_ATTACKS, "rp2": RP2}


def make_attack(name: str, classifier, **params) -> Attack:
    """Build attack ``name`` (see :data:`ATTACKS`) for ``classifier``; epsilons in [0, 1] pixel units."""
    if name not in ATTACKS:
        raise unknown_name("attack", name, list(ATTACKS))
    return ATTACKS[name](classifier, **params)


__all__ = ["ATTACKS", "AdversarialPatch", "Attack", "RP2", "RegionMisleadingPatch", "Sticker", "TaintRadarBPDA", "AttackResult", "FoolboxAttack", "make_attack", "perturbation_norms",
           "shape_mask", "shifted_targets"]
