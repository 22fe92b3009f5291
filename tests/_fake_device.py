"""A fake accelerator for device-placement tests on a machine without a GPU (tests/test_devices.py).

:class:`FakeDevice` is a ``TorchFunctionMode`` that treats ``torch.device("cpu:0")`` (:data:`FAKE`) as a separate
device while every tensor really stays in CPU memory. It tracks which tensors "live on" the fake device: the
classifier's parameters and buffers (marked by :meth:`FakeDevice.put`), the results of ``.to(FAKE)`` and of
factories called with ``device=FAKE``, and the result of any operation with a tracked operand (except moves to
the CPU: ``.cpu()``, ``.to("cpu")``). A tracked tensor reports ``FAKE`` as its ``.device``, so code that writes
``device=x.device`` is followed correctly. It raises :class:`DeviceMix` where a CUDA run would fail with
"Expected all tensors to be on the same device": an operation mixing tracked and untracked tensors with more than
zero dimensions (0-dim CPU tensors and CPU index tensors mix with CUDA tensors in PyTorch, so they are allowed
here too), and ``.numpy()`` on a tracked tensor.

What this proves, and what not: every torch operation advguard runs on the tensors that flow from the
classifier's device is checked, so a tensor built on the CPU (``torch.zeros(n)``, ``torch.from_numpy``, a
generator's ``torch.rand``) and then combined with the model's tensors is caught. It does not run CUDA kernels:
bugs that only a real device shows (a CUDA-only dtype, non-deterministic kernels, memory) are not covered, and
operations outside torch's function protocol (numpy, Pillow, Foolbox's eagerpy calls that end in torch ops are
covered) are not seen.
"""

from __future__ import annotations

from typing import Any

import torch
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_flatten, tree_map
from torch.utils.weak import WeakIdKeyDictionary

FAKE = torch.device("cpu", 0)
CPU = torch.device("cpu")


class DeviceMix(AssertionError):
    """An operation mixed tensors on the fake device with CPU tensors."""


def _as_device(v: Any) -> torch.device | None:
    if isinstance(v, torch.device):
        return v
    if isinstance(v, str):
        try:
            return torch.device(v)
        except RuntimeError:
            return None
    return None


_INDEXING = {"__getitem__", "__setitem__", "index_put_", "index_put", "index_select", "index", "take"}
_TO_CPU = {"cpu"}
_ALLOWED_MIX = {
    "copy_",
    "to",
    "set_",
    "detach",
    "__repr__",
    "__format__",
    "__str__",
    "_has_compatible_shallow_copy_type",  # nn.Module.to() comparing a parameter with its moved copy
}


class FakeDevice(TorchFunctionMode):
    """See the module docstring. ``with FakeDevice() as fd: fd.put(clf.module); ...``; :attr:`ops` counts the
    checked operations, :attr:`mixed_ok` the 0-dim / index mixes that were allowed."""

    def __init__(self) -> None:
        super().__init__()
        self.on: WeakIdKeyDictionary = WeakIdKeyDictionary()
        self.ops = 0
        self.tracked_ops = 0

    # ---------------------------------------------------------------- tracking
    def tracked(self, t: Any) -> bool:
        return isinstance(t, torch.Tensor) and t in self.on

    def mark(self, t: Any) -> None:
        if isinstance(t, torch.Tensor):
            self.on[t] = True

    def put(self, module: torch.nn.Module) -> None:
        """Mark a module's parameters and buffers as living on the fake device."""
        for t in list(module.parameters()) + list(module.buffers()):
            self.mark(t)

    def _fresh(self, out: Any, inputs: list[torch.Tensor]) -> Any:
        """``out``, or a clone when it is one of the inputs (a move that was a no-op in CPU memory must still give
        a tensor of its own: on a real device the source stays where it was)."""
        if isinstance(out, torch.Tensor) and any(out is t for t in inputs):
            with torch.no_grad() if not out.requires_grad else _null():
                return out.clone()
        return out

    # ---------------------------------------------------------------- the mode
    def __torch_function__(self, func: Any, types: Any, args: tuple[Any, ...] = (), kwargs: Any = None) -> Any:
        kwargs = kwargs or {}
        name = getattr(func, "__name__", "")
        self.ops += 1
        if name == "__get__":
            owner = getattr(getattr(func, "__self__", None), "__name__", "")
            out = func(*args, **kwargs)
            if owner == "device" and self.tracked(args[0]):
                return FAKE
            if owner in ("grad", "data", "T", "mT", "H", "real", "imag") and self.tracked(args[0]):
                self.mark(out)
            return out
        if name == "__set__":  # ``param.data = moved`` (nn.Module.to): the parameter moves with its data
            owner = getattr(getattr(func, "__self__", None), "__name__", "")
            if owner == "data" and len(args) > 1:
                if self.tracked(args[1]):
                    self.mark(args[0])
                elif self.tracked(args[0]):
                    del self.on[args[0]]
            return func(*args, **kwargs)
        flat, _ = tree_flatten((args, kwargs))
        tensors = [t for t in flat if isinstance(t, torch.Tensor)]
        on = [t for t in tensors if self.tracked(t)]
        target: torch.device | None = None
        if "device" in kwargs:
            target = _as_device(kwargs["device"])
        if name == "to":
            for a in list(args[1:]) + [kwargs.get("device")]:
                if isinstance(a, torch.Tensor):
                    target = FAKE if self.tracked(a) else CPU
                elif _as_device(a) is not None:
                    target = _as_device(a)
        if name in _TO_CPU:
            target = CPU
        if name == "numpy" and on:
            raise DeviceMix("Tensor.numpy() on a tensor on the accelerator (call .cpu() first)")
        if on and name not in _ALLOWED_MIX and target is None:
            self.tracked_ops += 1
            if name in _INDEXING:
                off = [t for t in tensors[1:] if not self.tracked(t) and t.ndim > 0 and t.dtype != torch.bool]
                off = [t for t in off if t.is_floating_point()] if self.tracked(args[0]) else off
                if self.tracked(args[0]) and off:
                    raise DeviceMix(f"{name}: a CPU value {tuple(off[0].shape)} written into a tensor on the device")
                if not self.tracked(args[0]) and args[0].ndim > 0:
                    raise DeviceMix(
                        f"{name}: a CPU tensor {tuple(args[0].shape)} indexed / written with device tensors"
                    )
            else:
                off = [t for t in tensors if not self.tracked(t) and t.ndim > 0]
                if off:
                    raise DeviceMix(
                        f"{getattr(func, '__qualname__', name)}: tensors on the device mixed with CPU tensors of shape "
                        f"{[tuple(t.shape) for t in off[:3]]}"
                    )
        out = func(*args, **kwargs)
        if target is not None and target.type == "cpu":
            if target == FAKE:
                out = self._fresh(out, [t for t in tensors if not self.tracked(t)])
                tree_map(self.mark, out)
            else:
                out = self._fresh(out, on)
        elif on:
            tree_map(self.mark, out)
        return out


class _null:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *a: Any) -> None:
        return None
