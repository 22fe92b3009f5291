"""Writing benchmark/result files: JSON + Markdown side by side, atomically, with machine and commit stamped."""

from __future__ import annotations

import datetime as _dt
import json
import shlex
import sys
from pathlib import Path

from ._atomic import atomic_write_text
from .machine import git_commit, machine_info, machine_summary


def provenance(command: str | None = None) -> dict:
    """Who/what/where for a result: the command, commit, machine, date and how peak memory is measured."""
    from .metrics import memory_method

    argv = list(sys.argv)
    if argv and Path(argv[0]).name == "advguard":  # console script: show it as the user typed it
        argv = ["advguard"] + argv[1:]
    else:
        argv = ["python"] + argv
    return {
        "command": command or " ".join(shlex.quote(a) for a in argv),
        "commit": git_commit(),
        "machine": machine_summary(),
        "machine_info": machine_info(),
        "date": _dt.datetime.now().isoformat(timespec="seconds"),
        "peak_memory": memory_method(),  # how the "peak MB" figures were measured (advguard.metrics.PeakMemory)
    }


def markdown_table(header: list[str], rows: list[list]) -> str:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(out)


def write_result(stem: str | Path, data: dict, markdown: str) -> tuple[Path, Path]:
    """Write ``stem.json`` and ``stem.md`` atomically; returns both paths."""
    stem = Path(stem)
    j = atomic_write_text(stem.with_suffix(".json"), json.dumps(data, indent=2) + "\n")
    m = atomic_write_text(stem.with_suffix(".md"), markdown.rstrip() + "\n")
    return j, m
