"""Model zoo: plain-PyTorch architectures, committed weights with model cards, ``load_model``."""

from .registry import ZOO, ModelSpec, build_module, get_spec, load_model

__all__ = ["ZOO", "ModelSpec", "build_module", "get_spec", "load_model"]
