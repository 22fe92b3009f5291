"""Attack speed vs the bare cost of the same gradient passes in a plain PyTorch loop.

For FGSM, PGD-L-inf (10 steps) and CW-L2 (1 binary-search step x 100 steps) on
`cifar10-cnn`: images/s of `advguard.attacks.make_attack(...)` (Foolbox underneath, plus our
success re-check and norms) and of a plain loop doing the same number of forward+backward
passes on the same batches. The ratio is the attack's overhead over that floor.

    python benchmarks/attacks.py                  -> docs/results/attacks.{md,json}
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CASES = [  # (label, attack name, params, gradient passes per image)
    ("FGSM eps=8/255", "fgsm", {"eps": 8 / 255}, 1),
    ("PGD-Linf eps=8/255, 10 steps", "pgd", {"eps": 8 / 255, "steps": 10}, 10),
    ("CW-L2 kappa=0, 100 steps", "cw-l2", {"steps": 100, "binary_search_steps": 1, "abort_early": False}, 100),
]


def floor_seconds(module, x, y, passes: int, batch_size: int) -> float:
    """A plain loop: `passes` forward+backward passes (w.r.t. the input) for each batch."""
    import torch
    import torch.nn.functional as F

    start = time.perf_counter()
    for i in range(0, len(x), batch_size):
        xb, yb = x[i : i + batch_size].clone(), y[i : i + batch_size]
        for _ in range(passes):
            xb.requires_grad_(True)
            loss = F.cross_entropy(module(xb), yb)
            (g,) = torch.autograd.grad(loss, xb)
            xb = (xb.detach() + 1e-3 * g.sign()).clamp(0, 1)
    return time.perf_counter() - start


def main() -> int:
    import torch

    from advguard import load_dataset, load_model
    from advguard.attacks import make_attack
    from advguard.report import markdown_table, provenance, write_result

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=256, help="clean CIFAR-10 test images")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--out", default=str(ROOT / "docs" / "results" / "attacks"))
    a = p.parse_args()

    clf = load_model("cifar10-cnn", batch_size=a.batch_size)
    ds = load_dataset("cifar10", "test", limit=a.n, seed=0)
    x, y = torch.from_numpy(ds.x), torch.from_numpy(ds.y)
    floor_seconds(clf.module, x[: a.batch_size], y[: a.batch_size], 1, a.batch_size)  # warm-up
    rows, data = [], []
    for label, name, params, passes in CASES:
        attack = make_attack(name, clf, batch_size=a.batch_size, progress=False, **params)
        make_attack(name, clf, batch_size=8, progress=False, **{**params, **({"steps": 2} if passes > 1 else {})})(
            x[:8], y[:8]
        )  # warm-up (imports, kernel selection), as the floor loop gets
        t = time.perf_counter()
        res = attack(x, y)
        ours = time.perf_counter() - t
        floor = floor_seconds(clf.module, x, y, passes, a.batch_size)
        d = {
            "attack": label,
            "name": name,
            "params": params,
            "n": len(x),
            "grad_passes_per_image": passes,
            "seconds": ours,
            "images_per_s": len(x) / ours,
            "floor_seconds": floor,
            "floor_images_per_s": len(x) / floor,
            "overhead_vs_floor": ours / floor,
            "success_rate": res.success_rate,
        }
        data.append(d)
        rows.append(
            [
                label,
                passes,
                f"{d['images_per_s']:.1f}",
                f"{d['floor_images_per_s']:.1f}",
                f"{d['overhead_vs_floor']:.2f}x",
                f"{100 * d['success_rate']:.1f}%",
            ]
        )
    prov = provenance()
    md = "\n".join(
        [
            "# Attack speed vs the gradient-pass floor\n",
            f"Model `cifar10-cnn` on {a.n} CIFAR-10 test images (JPEG copy), batch {a.batch_size}, float32.",
            f"Machine: {prov['machine']}. Commit {prov['commit']}, {prov['date']}.",
            f"Command: `{prov['command']}`\n",
            "Floor: a plain PyTorch loop doing the same number of forward+backward passes w.r.t. the input on the "
            "same batches. Our time includes Foolbox's own bookkeeping, its final success check and our "
            "re-check of success with the classifier plus the perturbation norms. Target: within 1.3x.\n",
            markdown_table(["attack", "grad passes/img", "ours img/s", "floor img/s", "ours / floor", "success"], rows),
        ]
    )
    write_result(a.out, {"provenance": prov, "rows": data}, md)
    print(md)
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    sys.exit(main())
