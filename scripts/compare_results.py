"""Compare two results documents (``results.json``) number by number, ignoring what may differ between runs.

Used to check that a committed results page regenerates from the cache with the same figures (issue #23):

    python scripts/compare_results.py docs/results/themis/cifar10-gap/results.json /tmp/regen/results.json

Ignored: provenance (machine, commit, date, command), software versions, the config as written, wall-clock
timings and memory peaks (keys named in ``VOLATILE``), and ``run``-dependent paths. Everything else (every
table figure, count, AUC, rate) must be equal; floats are compared to ``--rtol`` (default: exactly equal).
Exit status 0 when equal, 1 with one line per difference otherwise.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

#: keys whose values are timings, memory peaks, provenance or echoes of the configuration
VOLATILE = {
    "provenance",
    "software",
    "config_toml",
    "config",
    "date",
    "commit",
    "command",
    "machine",
    "seconds",
    "wall_s",
    "wall_time_s",
    "ms_per_image",
    "images_per_s",
    "peak_mb",
    "peak_gpu_mb",
    "forward_floor",
    "timing",
    "timings",
    "cost",
    "secs",
    "ms",
    "throughput",
    "elapsed",
    "page",
    "out",
    "options",
    # the shared envelope added in 0.2.0 (advguard.experiments.common.results_header)
    "schema",
    "experiment",
}


def _walk(a, b, path: str, rtol: float, out: list[str]) -> None:
    if isinstance(a, dict) and isinstance(b, dict):
        for k in sorted(set(a) | set(b), key=str):
            if k in VOLATILE or any(tok in str(k) for tok in ("seconds", "ms_per", "_time", "peak_mb")):
                continue
            if k not in a or k not in b:
                out.append(f"{path}.{k}: only in {'the second' if k not in a else 'the first'}")
                continue
            _walk(a[k], b[k], f"{path}.{k}", rtol, out)
    elif isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            out.append(f"{path}: {len(a)} vs {len(b)} items")
            return
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            _walk(x, y, f"{path}[{i}]", rtol, out)
    elif isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool):
        if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
            return
        if a != b and not math.isclose(a, b, rel_tol=rtol, abs_tol=0.0):
            out.append(f"{path}: {a!r} vs {b!r}")
    elif _number(a) is not None and _number(b) is not None:  # "0.5" (written with default=str) vs 0.5
        _walk(_number(a), _number(b), path, rtol, out)
    elif a != b:
        out.append(f"{path}: {a!r} vs {b!r}"[:300])


def _number(v):
    """``v`` as a number when it is one or a string holding one (older results wrote numpy scalars as strings)."""
    if isinstance(v, bool):
        return None
    if isinstance(v, (int, float)):
        return v
    if isinstance(v, str):
        try:
            return float(v)
        except ValueError:
            return None
    return None


def compare(first: Path, second: Path, rtol: float = 0.0) -> list[str]:
    """Every difference between two results documents, one line each (empty when they agree)."""
    a = json.loads(Path(first).read_text(encoding="utf-8"))
    b = json.loads(Path(second).read_text(encoding="utf-8"))
    out: list[str] = []
    _walk(a, b, "$", rtol, out)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("first")
    p.add_argument("second")
    p.add_argument("--rtol", type=float, default=0.0, help="relative tolerance for floats (default 0: equal)")
    args = p.parse_args(argv)
    diffs = compare(Path(args.first), Path(args.second), args.rtol)
    for d in diffs:
        print(d)
    print(f"{args.first} vs {args.second}: {'same figures' if not diffs else f'{len(diffs)} difference(s)'}")
    return 1 if diffs else 0


if __name__ == "__main__":
    sys.exit(main())
