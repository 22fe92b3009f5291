"""Single-pixel occlusions through a CNN's first layers by local patching (ML-LOO's cost, issue #4).

Occluding one pixel changes only a small window of each early feature map: a 3x3 window after a 3x3
convolution, 5x5 after two, about half that after a 2x2 pooling. :class:`LocalOcclusion` computes the
clean image's feature maps once, then, for a batch of occlusions, evaluates each early layer only on the
window of its output that can differ from the clean map (from the exact input region around it: clean
values, with the previous layer's window overlaid), and materialises full maps only where the window
stops being small; the rest of the network runs unchanged on the batch. The result equals the plain
forward pass up to float rounding (tests compare them). Nothing here is in the paper, which ran one
full forward pass per occluded pixel.

The prefix that can be patched is found by tracing the model with ``torch.fx``: a chain (each node used
once, by the next) of ``Conv2d`` (zero padding), ``MaxPool2d`` / ``AvgPool2d`` (no padding, no
ceil mode) and per-position modules (batch norm in eval mode, activations, dropout in eval mode, identity).
It ends at the first other node, or where an output window would cover more than ``max_fraction`` of
its map. Models that cannot be traced, or whose first layer is not patchable, get ``None`` from
:meth:`LocalOcclusion.build` and callers use the plain path.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..classifier import Classifier

#: one patched step: (module name, kind, _Spatial or the module, output shape (C, H, W), window (h, w))
Step = tuple[str, str, Any, tuple[int, ...], tuple[int, ...]]
#: a spatial step's window geometry (see LocalOcclusion._windows)
Window = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, tuple[int, int]]

#: modules that act on each spatial position independently (in eval mode)
POINTWISE = (
    nn.BatchNorm2d,
    nn.ReLU,
    nn.ReLU6,
    nn.LeakyReLU,
    nn.ELU,
    nn.GELU,
    nn.SiLU,
    nn.Sigmoid,
    nn.Tanh,
    nn.Hardswish,
    nn.Hardsigmoid,
    nn.Mish,
    nn.PReLU,
    nn.Identity,
    nn.Dropout,
    nn.Dropout2d,
)


def _pair(v: Any) -> tuple[int, int]:  # a module's size attribute: an int or a pair
    return (int(v), int(v)) if isinstance(v, int) else (int(v[0]), int(v[1]))


class _Spatial:
    """Geometry of one windowed layer: kernel, stride, padding, dilation per axis, and the pad value."""

    def __init__(self, module: nn.Module):
        self.module = module
        if isinstance(module, nn.Conv2d):
            self.k, self.s, self.p, self.d = (
                _pair(module.kernel_size),
                _pair(module.stride),
                _pair(module.padding),
                _pair(module.dilation),
            )
            self.fill = 0.0
        else:
            self.k, self.s, self.p = (
                _pair(module.kernel_size),
                _pair(module.stride or module.kernel_size),
                _pair(module.padding),
            )
            self.d = _pair(getattr(module, "dilation", 1))
            self.fill = float("-inf") if isinstance(module, nn.MaxPool2d) else 0.0

    def out_size(self, n: int, axis: int) -> int:
        """How many outputs an input window of ``n`` positions can change (at most)."""
        return -(-(n + self.d[axis] * (self.k[axis] - 1)) // self.s[axis])

    def region(self, win: tuple[int, int], axis: int) -> int:
        """Input positions needed for an output window of ``win`` positions along ``axis``."""
        return (win[axis] - 1) * self.s[axis] + self.d[axis] * (self.k[axis] - 1) + 1

    def apply(self, region: torch.Tensor) -> torch.Tensor:
        m = self.module
        if isinstance(m, nn.Conv2d):
            return F.conv2d(region, m.weight, m.bias, m.stride, 0, m.dilation, m.groups)
        if isinstance(m, nn.MaxPool2d):
            return F.max_pool2d(region, self.k, self.s, 0, self.d)
        return F.avg_pool2d(region, self.k, self.s, 0)


def _supported(m: nn.Module) -> str | None:
    if isinstance(m, nn.Conv2d):
        return "spatial" if m.padding_mode == "zeros" and not isinstance(m.padding, str) else None
    if isinstance(m, nn.MaxPool2d):
        return "spatial" if not m.ceil_mode and not m.return_indices and _pair(m.padding) == (0, 0) else None
    if isinstance(m, nn.AvgPool2d):
        return "spatial" if not m.ceil_mode and _pair(m.padding) == (0, 0) else None
    if isinstance(m, nn.BatchNorm2d):
        return "pointwise" if not m.training and m.track_running_stats else None
    if isinstance(m, POINTWISE):
        return "pointwise" if not m.training or not isinstance(m, (nn.Dropout, nn.Dropout2d)) else None
    return None


def _overlay(dst: torch.Tensor, v: torch.Tensor, r0: torch.Tensor, c0: torch.Tensor) -> torch.Tensor:
    """Write window ``v`` (B, C, h, w) into ``dst`` (B, H, W, C, contiguous) at rows r0[b].., cols c0[b]..;
    return ``dst`` as an NCHW view (channels-last memory, as oneDNN convolves fastest)."""
    b, hh, ww, c = dst.shape
    h, w = v.shape[2:]
    pos = (r0[:, None] + torch.arange(h))[:, :, None] * ww + (c0[:, None] + torch.arange(w))[:, None, :]
    src = v.permute(0, 2, 3, 1).reshape(b, h * w, c)  # no copy when v is channels-last
    dst.view(b, hh * ww, c).scatter_(1, pos.view(b, h * w, 1).expand(b, h * w, c), src)
    return dst.permute(0, 3, 1, 2)


class LocalOcclusion:
    """``LocalOcclusion.build(classifier)`` -> patcher or None; ``prepare(x)`` once per image, then
    ``logits(values, rows, cols)`` for a batch of single-position occlusions (pixel values in [0, 1])."""

    def __init__(self, classifier: Classifier, steps: list[Step], tail: nn.Module | None):
        self.classifier = classifier
        self.steps = steps  # [(module name, kind, _Spatial | module, out (C, H, W), window (h, w))]
        self.tail = tail
        self.regions: list[tuple[torch.Tensor, int] | None] = []
        self.outputs: list[torch.Tensor] = []

    @property
    def layer_names(self) -> list[str]:
        """Module names of the patched prefix, in order."""
        return [s[0] for s in self.steps]

    # ------------------------------------------------------------------ build
    @classmethod
    def build(cls, classifier: Classifier, max_fraction: float = 0.6) -> LocalOcclusion | None:
        """Trace ``classifier.model``; None when no first layer can be patched (callers use the plain path)."""
        import torch.fx as fx

        model = classifier.model
        try:
            gm = fx.symbolic_trace(model)
        except Exception:  # noqa: BLE001 - any untraceable model just uses the plain path
            return None
        nodes = list(gm.graph.nodes)
        if not nodes or nodes[0].op != "placeholder" or len([n for n in nodes if n.op == "placeholder"]) != 1:
            return None
        modules = dict(model.named_modules())
        h, w = classifier.size or (32, 32)
        shape = (classifier.channels, h, w)
        window = (1, 1)
        steps: list[Step] = []
        chain, prev = [], nodes[0]
        x = torch.zeros(1, *shape)
        for node in nodes[1:]:
            if node.op != "call_module" or node.args != (prev,) or node.kwargs or len(prev.users) != 1:
                break
            m = modules[node.target]
            kind = _supported(m)
            if kind is None:
                break
            with torch.inference_mode():
                y = m.forward(x)
            if kind == "spatial":
                geo = _Spatial(m)
                win = tuple(min(geo.out_size(window[a], a), y.shape[2 + a]) for a in (0, 1))
                if win[0] * win[1] > max_fraction * y.shape[2] * y.shape[3]:
                    break
                steps.append((node.target, kind, geo, tuple(y.shape[1:]), win))
                window = win
            else:
                steps.append((node.target, kind, m, tuple(y.shape[1:]), window))
            chain.append(node)
            x, prev = y, node
        # every pixel's changed window must lie inside the region each next window is computed from
        probe = cls(classifier, steps, None)
        rr, cc = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
        for j, (step, step_geo) in enumerate(zip(steps, probe._windows(rr.flatten(), cc.flatten()), strict=True)):
            if step_geo is not None:
                _o_r, _o_c, rel_r, rel_c, (wh, ww) = step_geo
                op, win = step[2], step[4]
                if (
                    rel_r.min() < 0
                    or rel_c.min() < 0
                    or (rel_r + wh).max() > op.region(win, 0)
                    or (rel_c + ww).max() > op.region(win, 1)
                ):
                    steps, chain = steps[:j], chain[:j]
                    break
        if not any(s[1] == "spatial" for s in steps):
            return None
        prev = chain[-1]
        # the rest of the graph, fed with the last patched node's output
        graph = fx.Graph()
        env = {prev: graph.placeholder("h")}
        after = False
        for node in nodes:
            if after:
                env[node] = graph.node_copy(node, lambda a: env[a])
            after = after or node is prev
        tail = fx.GraphModule(gm, graph)
        return cls(classifier, steps, tail)

    # ---------------------------------------------------------------- forward
    def _windows(self, rows: torch.Tensor, cols: torch.Tensor) -> Iterator[Window | None]:
        """For single-position changes at (rows, cols), per step in order: None for a per-position step, else
        (new window's row and column offsets in the step's output, which are also its input region's start in
        padded input coordinates divided by the stride; the old window's row and column offsets inside that
        region; the old window's size)."""
        r0, c0, (h, w) = rows.long(), cols.long(), (1, 1)
        for _target, kind, op, shape, win in self.steps:
            if kind != "spatial":
                yield None
                continue
            (kh, kw), (sh, sw), (dh, dw) = op.k, op.s, op.d
            o_r = torch.div(r0 + op.p[0] - dh * (kh - 1) + sh - 1, sh, rounding_mode="floor").clamp(
                0, shape[1] - win[0]
            )
            o_c = torch.div(c0 + op.p[1] - dw * (kw - 1) + sw - 1, sw, rounding_mode="floor").clamp(
                0, shape[2] - win[1]
            )
            yield o_r, o_c, r0 + op.p[0] - o_r * sh, c0 + op.p[1] - o_c * sw, (h, w)
            r0, c0, (h, w) = o_r, o_c, win

    def prepare(self, x: torch.Tensor) -> None:
        """Compute and keep the clean image's maps (x: (1, C, H, W) in [0, 1]): every spatial step's input
        regions at every window offset (unfolded, so a batch's regions are one row gather) and outputs."""
        t = self.classifier.module.normalize(x.float())
        self.regions, self.outputs = [], []
        for _target, kind, op, shape, win in self.steps:
            if kind == "spatial":
                tp = F.pad(t, (op.p[1], op.p[1], op.p[0], op.p[0]), value=op.fill)
                rh, rw = op.region(win, 0), op.region(win, 1)
                u = tp[0].unfold(1, rh, op.s[0]).unfold(2, rw, op.s[1])
                u = u[:, : shape[1] - win[0] + 1, : shape[2] - win[1] + 1]
                # (offsets, R, R', C): a gathered batch of regions is channels-last for _overlay
                self.regions.append(
                    (u.permute(1, 2, 3, 4, 0).reshape(-1, rh, rw, tp.shape[1]).contiguous(), u.shape[2])
                )
                t = op.apply(tp)
            else:
                self.regions.append(None)
                t = op.forward(t.clone())
            self.outputs.append(t[0].clone())

    def logits(
        self,
        values: torch.Tensor,
        rows: torch.Tensor,
        cols: torch.Tensor,
        capture: dict[str, torch.Tensor] | None = None,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Logits (B, K) of the prepared image with position (rows[b], cols[b]) set to ``values[b]`` (C,);
        ``capture`` {prefix module name: flat indices into its (C, H, W) output} -> values (B, n) each."""
        b = values.shape[0]
        v = self.classifier.module.normalize(values.float().view(b, -1, 1, 1))  # (B, C, 1, 1): the changed window
        r0, c0 = rows.long(), cols.long()
        got: dict[str, torch.Tensor] = {}
        steps_windows = zip(self.steps, self._windows(rows, cols), strict=True)
        for i, ((target, kind, op, _shape, _win), geo) in enumerate(steps_windows):
            if kind == "spatial":
                region_i = self.regions[i]
                assert geo is not None and region_i is not None  # a spatial step has both
                o_r, o_c, rel_r, rel_c, _ = geo
                patches, n_c = region_i
                region = patches.index_select(0, o_r * n_c + o_c)  # (B, R, R', C) clean values
                v = op.apply(_overlay(region, v, rel_r, rel_c))  # with the old window on top
                r0, c0 = o_r, o_c
            else:
                v = op.forward(v)
            if capture and target in capture:
                got[target] = self._pick(i, v, r0, c0, capture[target])
        out = self.outputs[-1]
        full = out.permute(1, 2, 0)[None].expand(b, *out.shape[1:], out.shape[0]).clone()  # (B, H, W, C)
        self.classifier.num_passes += b
        assert self.tail is not None  # build() returns no patcher without a tail
        logits: torch.Tensor = self.tail(_overlay(full, v, r0, c0))
        return logits, got

    def _pick(self, i: int, v: torch.Tensor, r0: torch.Tensor, c0: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        """Values (B, n) of step i's output at flat indices ``idx``: window values inside it, clean ones outside."""
        _, hh, ww = self.outputs[i].shape
        ch, r, c = idx // (hh * ww), (idx // ww) % hh, idx % ww
        h, w = v.shape[2:]
        dr, dc = r[None] - r0[:, None], c[None] - c0[:, None]
        inside = (dr >= 0) & (dr < h) & (dc >= 0) & (dc < w)
        win = v[torch.arange(v.shape[0])[:, None], ch[None], dr.clamp(0, h - 1), dc.clamp(0, w - 1)]
        return torch.where(inside, win, self.outputs[i][ch, r, c][None])
