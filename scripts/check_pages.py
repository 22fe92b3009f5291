"""Regenerate committed results pages from the cache and check that their figures are unchanged.

For each config (default: every ``configs/*.toml`` whose ``out`` is under ``docs/results/``), run
``advguard reproduce CONFIG --out WORK/<name>`` (the cache makes this a re-rendering when everything is cached)
and compare the new ``results.json`` with the committed one figure by figure (``scripts/compare_results.py``:
timings and provenance ignored). For the TaintRadar ablation, each model's sub-page is compared too.

    OMP_NUM_THREADS=1 python scripts/check_pages.py configs/themis-cifar10-gap.toml configs/blurnet-lisa.toml

Exit status 0 when every page's figures agree; 1 otherwise (the differences are listed).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

from compare_results import compare  # noqa: E402


def committed_pages(config: Path) -> Path | None:
    """The committed results folder of ``config`` (its ``out``), or None when it has none under docs/results."""
    from advguard.experiments import load_config

    cfg = load_config(config)
    if not cfg.out or not cfg.out.startswith("docs/results/"):
        return None
    return ROOT / cfg.out


def check(config: Path, work: Path, rtol: float) -> list[str]:
    """Regenerate ``config`` into ``work`` and compare every results.json below its committed folder."""
    committed = committed_pages(config)
    if committed is None or not (committed / "results.json").exists():
        return [f"{config}: no committed results.json to compare with"]
    out = work / config.stem
    t0 = time.perf_counter()
    run = subprocess.run(
        [sys.executable, "-m", "advguard.cli", "reproduce", str(config), "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    print(f"{config.name}: regenerated in {time.perf_counter() - t0:.0f} s (exit {run.returncode})", flush=True)
    if run.returncode != 0:
        return [f"{config}: advguard reproduce failed:\n{run.stderr[-2000:]}"]
    diffs = []
    for old in sorted(committed.rglob("results.json")):
        new = out / old.relative_to(committed)
        if not new.exists():
            continue  # a sub-folder of another config (e.g. blurnet/lisa below blurnet/)
        diffs += [f"{old.relative_to(ROOT)}: {d}" for d in compare(old, new, rtol)]
    return diffs


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("configs", nargs="*", help="configs to check (default: every one with a committed page)")
    p.add_argument("--work", default="runs/check-pages", help="where the regenerated pages go")
    p.add_argument("--rtol", type=float, default=0.0)
    args = p.parse_args(argv)
    configs = [Path(c) for c in args.configs] or sorted(
        c.relative_to(ROOT) for c in (ROOT / "configs").glob("*.toml") if committed_pages(c) is not None
    )
    failed = 0
    for c in configs:
        diffs = check(c, Path(args.work), args.rtol)
        print(f"{c}: {'same figures' if not diffs else f'{len(diffs)} difference(s)'}", flush=True)
        for d in diffs[:40]:
            print("   ", d)
        failed += bool(diffs)
    print(f"{len(configs) - failed} of {len(configs)} pages regenerate with the same figures")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
