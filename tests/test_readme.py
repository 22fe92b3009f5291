"""Every ```python block of README.md runs (issue #24), so a snippet whose API drifted fails CI.

How it works:

- :func:`readme_blocks` extracts every fenced ```python block of README.md, in order. Each block is one
  parametrised test (id ``block<N>-<first line>``); a block added to the README later is picked up automatically.
- A block runs in a fresh namespace, a copy of the module-scoped :func:`namespace` fixture: the names the snippets
  assume but do not define (``advguard``, ``clf``, ``ds``, ``x_clean``, ``x_adv``, ``x``, ``y``, ``targets``,
  ``det``, ``x_train``, ``my_model``, ...). A block that needs other values for some names (another classifier)
  gets them from :data:`BLOCK_NAMESPACE`, keyed by the block's first line (its marker: for most blocks its first
  import line), e.g. the BlurNet / RP2 block runs against the GTSRB model and its stop signs.
  **A new block that uses a name it does not define fails with a NameError that says so: add the name to the
  fixture namespace (:func:`namespace`, or :data:`BLOCK_NAMESPACE` for one block).**
- Only parameters are cheapened, by the explicit substitution table :data:`CHEAPER` (block marker -> (old, new)
  text pairs applied to the block's text: fewer images, steps, restarts; a CIFAR-10 class for an ImageNet target).
  API calls are never changed. Every substitution must match its block, and every marker in the tables must name a
  README block, so the tables cannot silently go stale (:func:`test_tables_match_the_readme`).
- A block that needs a package CI may lack (torchvision) is listed in :data:`BLOCK_REQUIRES` and skipped, with the
  import error, where that package does not import.
- Tracebacks point at README.md's own lines (the block is compiled with its README line numbers).
- Files a snippet writes (``det.save(...)``, ``patch.save_png(...)``) land in a temporary directory.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

README = Path(__file__).resolve().parents[1] / "README.md"


def readme_blocks(text: str | None = None) -> list[tuple[int, str]]:
    """``[(first_line_number, code), ...]`` for every ```python fenced block of README.md (1-based line of the
    block's first code line)."""
    lines = (README.read_text(encoding="utf-8") if text is None else text).splitlines()
    blocks: list[tuple[int, str]] = []
    start: int | None = None
    for i, line in enumerate(lines):
        fence = line.strip()
        if start is None:
            if re.fullmatch(r"```\s*(python|py|python3)\s*", fence):
                start = i + 1
        elif fence.startswith("```"):
            blocks.append((start + 1, "\n".join(lines[start:i]) + "\n"))
            start = None
    assert start is None, f"README.md: the ```python block opened at line {start} is never closed"
    return blocks


def marker(code: str) -> str:
    """A block's stable marker: its first non-empty line, stripped."""
    return next(line.strip() for line in code.splitlines() if line.strip())


BLOCKS = readme_blocks()

# Cheaper parameters, per block (marker -> [(old, new), ...]); each `old` must occur in its block. Only numbers of
# images / steps / restarts / tests and an ImageNet target class (for the CIFAR-10 classifier) change; where the
# README relies on a default that costs minutes, the cheap value is added as a keyword of the same call.
CHEAPER: dict[str, list[tuple[str, str]]] = {
    "import advguard": [("limit=500", "limit=16")],
    "from advguard.attacks import make_attack, shifted_targets": [
        # CW-L2's defaults (5 binary-search steps x 100 steps) take about a minute even on 4 images
        ("confidence=0.0)", "confidence=0.0, binary_search_steps=1, steps=5)"),
    ],
    "from advguard.detectors import ImageOps, CNNDetector": [
        ("softmax_in_training=False)", "softmax_in_training=False, epochs=2)"),  # the default is 15 epochs
    ],
    "from advguard.detectors import LeaveOneOut": [('{"n_segments": 64}', '{"n_segments": 16}')],
    "from advguard.attacks import AdaptiveSqueezing, make_attack": [
        ("steps=50", "steps=3"),
        ("queries=1000", "queries=3"),
    ],
    "from advguard.attacks.adaptive import DetectorAwareCW": [
        ("steps=100", "steps=5"),
        ("restarts=150", "restarts=1"),
        ("bypass_curve(150)", "bypass_curve(1)"),
    ],
    "from advguard.attacks import AdversarialPatch": [
        ("target=859", "target=3"),  # an ImageNet class (859: toaster) -> CIFAR-10's "cat" (both occurrences)
        ("steps=500", "steps=2"),
        ("n_test=100", "n_test=4"),
        ("lam=0.5)", "lam=0.5, steps=2)"),  # RegionMisleadingPatch's default is 500 steps
        ("steps=2000", "steps=2"),
    ],
    "from advguard.defenses.blurnet import feature_blur, input_blur, TVPenalty, linf_penalty": [
        ("steps=300", "steps=2"),
        ("nps=True)", "nps=True, steps=2)"),  # the sticker that is fitted (the default is 300 steps)
    ],
}


class TinyNet(nn.Module):
    """``my_model``: conv + adaptive pooling + linear, so it works at any input size (10 classes)."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.relu = nn.ReLU()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(8, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.pool(self.relu(self.conv(x))).flatten(1))


@pytest.fixture(scope="module")
def namespace(correct_images, tmp_path_factory) -> dict:
    """The names README snippets use without defining them, for ``cifar10-cnn`` on real CIFAR-10 test images:
    ``ds`` holds 4 test images (so ``ds.x[:32]`` is 4), ``x_clean`` 24 correctly classified ones (enough for the
    detectors' FPR calibration), ``x_adv`` FGSM (eps 8/255) on others, successful only, ``x`` / ``y`` /
    ``targets`` 4 more with next-class targets, ``x_train`` 16 training images, ``det`` a fitted feature-squeezing
    detector, ``my_model`` an untrained :class:`TinyNet`, ``my_photos`` a folder of 6 PNG files."""
    import advguard
    from advguard.attacks import make_attack, shifted_targets
    from advguard.detectors import make_detector

    clf, xc, yc = correct_images(64, 0)  # correctly classified test images (tensors)
    from PIL import Image

    photos = tmp_path_factory.mktemp("photos")  # ``my_photos``: a folder of 6 CIFAR-10 test images as PNG files
    for i, img in enumerate(advguard.load_dataset("cifar10", "test", limit=6, seed=2).x):
        Image.fromarray((img.transpose(1, 2, 0) * 255).round().astype(np.uint8)).save(photos / f"{i}.png")
    x_clean = xc[:24]
    fgsm = make_attack("fgsm", clf, eps=8 / 255, progress=False)(xc[24:-4], yc[24:-4])
    x_adv = fgsm.x_adv[torch.as_tensor(np.asarray(fgsm.success))][:12]
    assert len(x_adv) >= 8, "FGSM at eps 8/255 should fool cifar10-cnn on most images"
    x, y = xc[-4:], yc[-4:]
    return {
        "advguard": advguard,
        "clf": clf,
        "ds": advguard.load_dataset("cifar10", "test", limit=4, seed=1),
        "x_clean": x_clean,
        "x_adv": x_adv,
        "x": x,
        "y": y,
        "targets": shifted_targets(y, 10, 1),
        "x_train": advguard.load_dataset("cifar10", "train", limit=16, seed=0).x,
        # the adaptive attack's victim detector: a cheap unsupervised one, fitted on clean images
        "det": make_detector("feature-squeezing", clf, fpr=0.05).fit(x_clean),
        "my_model": TinyNet().eval(),
        "my_photos": str(photos),
    }


@pytest.fixture(scope="module")
def gtsrb_namespace() -> dict:
    """For the BlurNet / RP2 block: ``gtsrb-cnn`` (43 classes, so RP2's target 38 exists), ``my_module`` (its
    plain nn.Module, first activation ``relu1``) and 4 of RP2's GTSRB stop-sign victims at 32 px."""
    from advguard import load_dataset, load_model
    from advguard.models import build_module

    victims = load_dataset("rp2-gtsrb-victims", "test", size=32)
    return {
        "clf": load_model("gtsrb-cnn"),
        "my_module": build_module("gtsrb-cnn"),
        "stop_signs": torch.from_numpy(victims.x[:4]),
    }


# Blocks that need other values for some names (marker -> fixture name whose dict updates the namespace).
BLOCK_NAMESPACE: dict[str, str] = {
    "from advguard.defenses.blurnet import feature_blur, input_blur, TVPenalty, linf_penalty": "gtsrb_namespace",
}


# Blocks that need a package our CI may lack (marker -> module): skipped, with the import error, where it does not
# import. torchvision: PyPI's wheels need PyPI's (CUDA) torch and fail beside a +cpu torch.
BLOCK_REQUIRES: dict[str, str] = {
    "import torch, torchvision  # torchvision's MobileNetV2 wrapped as any model (needs the torchvision of your "
    "torch)": "torchvision",
}


def cheapened(code: str) -> str:
    for old, new in CHEAPER.get(marker(code), []):
        assert old in code, f"README block {marker(code)!r}: substitution {old!r} -> {new!r} no longer matches"
        code = code.replace(old, new)
    return code


def test_tables_match_the_readme():
    markers = [marker(code) for _, code in BLOCKS]
    assert BLOCKS, "README.md has no ```python block"
    assert len(set(markers)) == len(markers), f"two README blocks share a first line: {markers}"
    for table in (CHEAPER, BLOCK_NAMESPACE, BLOCK_REQUIRES):
        for m in table:
            assert m in markers, f"no README block starts with {m!r} any more: update the table in {__file__}"
    for _, code in BLOCKS:
        cheapened(code)  # every substitution matches its block


def _id(i: int, code: str) -> str:
    return f"block{i}-" + re.sub(r"[^A-Za-z0-9_.]+", "_", marker(code))[:60].strip("_")


def run_block(lineno: int, code: str, ns: dict) -> None:
    """Run one README block (already cheapened) in ``ns``; tracebacks show README.md's own line numbers."""
    compiled = compile("\n" * (lineno - 1) + code, str(README), "exec")
    try:
        exec(compiled, ns)
    except NameError as e:
        raise NameError(
            f"README.md block at line {lineno} uses {e.name!r} without defining it: add it to the fixture "
            "namespace in tests/test_readme.py (`namespace`, or BLOCK_NAMESPACE for this block only)"
        ) from e


# the README's "mlp" decision model on a few dozen images stops at its iteration cap
@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
@pytest.mark.parametrize(("lineno", "code"), BLOCKS, ids=[_id(i, c) for i, (_, c) in enumerate(BLOCKS)])
def test_readme_block(lineno, code, namespace, request, tmp_path, monkeypatch):
    needs = BLOCK_REQUIRES.get(marker(code))
    if needs:
        import importlib

        try:
            importlib.import_module(needs)
        except Exception as e:  # noqa: BLE001 - ImportError, or the RuntimeError of a build for another torch
            pytest.skip(f"{needs} is not usable here: {type(e).__name__}: {e}")
    monkeypatch.chdir(tmp_path)  # det.save(...), patch.save_png(...) write here
    ns = dict(namespace)
    extra = BLOCK_NAMESPACE.get(marker(code))
    if extra:
        ns.update(request.getfixturevalue(extra))
    run_block(lineno, cheapened(code), ns)


def test_block_extraction_and_the_name_error_hint():
    text = "intro\n\n```python\na = 1\n\nb = a + undefined_name\n```\n\n```bash\nls\n```\n```py\nc = 2\n```\n"
    blocks = readme_blocks(text)
    assert blocks == [(4, "a = 1\n\nb = a + undefined_name\n"), (13, "c = 2\n")]
    with pytest.raises(NameError, match="'undefined_name' without defining it: add it to the fixture namespace"):
        run_block(*blocks[0], {})
    try:
        run_block(*blocks[0], {})
    except NameError as e:  # the traceback points at README.md's line 6
        assert e.__cause__.__traceback__.tb_next.tb_lineno == 6


def test_readme_guard_configs_are_valid():
    """Every ```toml block of README.md that names a model and detectors is a valid `advguard guard fit` config."""
    from advguard.guard_config import parse_guard_config

    try:
        import tomllib
    except ModuleNotFoundError:  # pragma: no cover - Python 3.10
        import tomli as tomllib

    text = README.read_text(encoding="utf-8")
    blocks = re.findall(r"```toml\n(.*?)```", text, flags=re.S)
    guards = [b for b in blocks if "[[detector]]" in b and "model =" in b and "[data]" in b]
    assert guards, "README.md: the advguard guard fit config example is gone"
    for b in guards:
        cfg = parse_guard_config(tomllib.loads(b), where="README.md")
        assert cfg.detectors and cfg.model
