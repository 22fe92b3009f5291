"""Probe (issue #20): two `advguard setup` runs started at the same moment on one empty data directory.

Each trial makes a fresh data directory and a mirror folder holding only one real mirror archive (default
imagenet-samples.tar.gz, 1,001 files), starts two `advguard --data-dir D setup --mirror M` processes at once,
then checks both exit codes, that the folder verifies against its manifest (count and sizes), that its file
count equals the archive's, and that no temporary folder is left. Prints one line per trial and a summary.

    python3 scripts/probe_setup_concurrency.py --trials 10
    python3 scripts/probe_setup_concurrency.py --trials 10 --archive cifar10-jpeg.tar.gz   # 60,000 files
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path


def main() -> int:
    from advguard.data.fetch import MANIFEST, MARKER, MIRROR_ARCHIVES, verify_folder
    from advguard.data.paths import mirror_dir

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=10)
    ap.add_argument("--runs", type=int, default=2, help="concurrent setup processes per trial")
    ap.add_argument("--archive", default="imagenet-samples.tar.gz")
    ap.add_argument("--mirror", help="mirror folder (default: $ADVGUARD_MIRROR or ../shared/data)")
    args = ap.parse_args()

    src = Path(args.mirror) if args.mirror else mirror_dir()
    if src is None or not (src / args.archive).exists():
        print(f"no {args.archive} in the mirror ({src})", file=sys.stderr)
        return 2
    folder = MIRROR_ARCHIVES[args.archive].folder
    with tarfile.open(src / args.archive) as t:
        expected = sum(1 for m in t.getmembers() if m.isfile())
    ok_trials = 0
    with tempfile.TemporaryDirectory(prefix="advguard-probe-") as work:
        mirror = Path(work) / "mirror"
        mirror.mkdir()
        os.symlink((src / args.archive).resolve(), mirror / args.archive)
        for trial in range(args.trials):
            data = Path(work) / f"data-{trial}"
            cmd = [sys.executable, "-m", "advguard.cli", "--data-dir", str(data), "setup", "--mirror", str(mirror)]
            t0 = time.time()
            procs = [
                subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                for _ in range(args.runs)
            ]
            outs = [p.communicate() for p in procs]
            codes = [p.returncode for p in procs]
            problems = []
            try:
                marker = verify_folder(data / folder, full=True)
                if marker["count"] != expected:
                    problems.append(f"marker count {marker['count']} != {expected} in the archive")
            except Exception as e:  # noqa: BLE001 - report whatever went wrong
                problems.append(f"{type(e).__name__}: {e}")
            found = sum(
                len([n for n in f if not (d == str(data / folder) and n in (MARKER, MANIFEST))])
                for d, _, f in os.walk(data / folder)
            )
            if found != expected:
                problems.append(f"{found} files on disk, {expected} in the archive")
            leftovers = [n for n in os.listdir(data) if ".partial" in n or ".old-" in n] if data.exists() else []
            if leftovers:
                problems.append(f"leftovers {leftovers}")
            if any(codes):
                problems.append(
                    f"exit codes {codes}: " + " | ".join(e.strip().splitlines()[-1] for _, e in outs if e.strip())
                )
            ok = not problems
            ok_trials += ok
            print(
                f"trial {trial + 1}: exit codes {codes}, {found}/{expected} files, "
                f"{'complete and verified' if ok else 'PROBLEM: ' + '; '.join(problems)} ({time.time() - t0:.1f} s)",
                flush=True,
            )
    print(
        f"{ok_trials}/{args.trials} trials of {args.runs} concurrent `advguard setup` runs ({args.archive}) "
        "ended with every run succeeding and the folder complete and verified"
    )
    return 0 if ok_trials == args.trials else 1


if __name__ == "__main__":
    sys.exit(main())
