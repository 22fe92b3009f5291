"""Reliability probes for the bench caches (issue #20): concurrent builds, kill -9 and resume, corrupt entries.

    OMP_NUM_THREADS=1 python3 scripts/probe_cache_concurrency.py [--trials 10] [--kills 5] [--json out.json]

1. concurrent: ``--trials`` times, two processes start ``build_advset`` on one fresh cache folder at the same
   moment (a shared start time); counts crashes and whether both sets are identical (to each other and to a
   reference built alone).
2. kill -9: a build is killed (SIGKILL) at a random moment ``--kills`` times on one cache folder, then allowed
   to finish; the result must equal an uninterrupted build.
3. corrupt: bit flip / truncation / empty file / tampered-but-valid entry, applied to a finished set, to a chunk
   of an interrupted build, and to a generic cached_arrays entry; each must be named in a warning, moved aside
   and rebuilt to identical arrays.

Tiny configuration: CIFAR-10 (JPEG copy) test images, cifar10-cnn, PGD (a few steps, so a build lasts long
enough to be killed mid-way). Prints one line per trial and a summary; exit status 1 if any probe failed.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

CFG = dict(
    dataset="cifar10",
    model="cifar10-cnn",
    attack="pgd",
    params={"eps": 8 / 255, "steps": 20},
    limit=40,
    seed=7,
    dataset_kwargs={"source": "jpeg"},
)
CHUNK = 4

CHILD = r"""
import os, sys, time, json
import numpy as np
import torch
torch.set_num_threads(1)
from advguard.advsets import AdvSetConfig, build_advset
cfg = AdvSetConfig(**json.loads(sys.argv[1]))
cache, out, start = sys.argv[2], sys.argv[3], float(sys.argv[4])
from advguard import load_model
clf = load_model(cfg.model)
while time.time() < start:
    time.sleep(0.001)
s = build_advset(cfg, clf, cache_dir=cache, chunk_size=int(sys.argv[5]), progress=False)
np.savez(out, x_adv=s.x_adv, adv_ids=s.adv_ids, x_clean=s.x_clean, pred_adv=s.pred_adv, key=np.asarray(s.key),
         counts=np.asarray(json.dumps(s.counts, sort_keys=True)))
"""


def _child(cache: Path, out: Path, start: float) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(
        [sys.executable, "-c", CHILD, json.dumps(CFG), str(cache), str(out), str(start), str(CHUNK)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def _load(p: Path) -> dict:
    with np.load(p, allow_pickle=False) as f:
        return {k: f[k] for k in f.files}


def _same(a: dict, b: dict) -> bool:
    return all(np.array_equal(a[k], b[k]) for k in a)


def reference(work: Path) -> dict:
    out = work / "ref.npz"
    p = _child(work / "ref-cache", out, 0)
    _, err = p.communicate(timeout=600)
    if p.returncode:
        raise SystemExit(f"reference build failed:\n{err.decode()[-3000:]}")
    return _load(out)


def concurrent(work: Path, ref: dict, trials: int) -> dict:
    crashed = identical = 0
    for t in range(trials):
        cache = work / f"conc-{t}"
        start = time.time() + 6.0  # both children import torch first, then start building together
        outs = [work / f"conc-{t}-{i}.npz" for i in range(2)]
        procs = [_child(cache, o, start) for o in outs]
        errs = [p.communicate(timeout=600)[1] for p in procs]
        codes = [p.returncode for p in procs]
        bad = [i for i, c in enumerate(codes) if c != 0]
        crashed += len(bad)
        same = not bad and _same(_load(outs[0]), _load(outs[1])) and _same(_load(outs[0]), ref)
        identical += same
        tail = "" if not bad else " | " + errs[bad[0]].decode().strip().splitlines()[-1][:200]
        print(
            f"concurrent trial {t + 1}/{trials}: exit codes {codes}, identical to each other and to the "
            f"reference: {same}{tail}",
            flush=True,
        )
    return {"trials": trials, "processes": 2 * trials, "crashed_processes": crashed, "identical_trials": identical}


def kill9(work: Path, ref: dict, kills: int, seed: int = 0) -> dict:
    rng = random.Random(seed)
    cache = work / "kill-cache"
    out = work / "kill.npz"
    killed_mid_build = 0
    before = 0
    for k in range(kills):
        p = _child(cache, out, 0)
        # wait until this run has made progress (a new chunk on disk), then kill it at a random moment
        t0 = time.time()
        while time.time() - t0 < 120 and p.poll() is None and len(list(cache.glob("*.partial/chunk-*.npz"))) <= before:
            time.sleep(0.01)
        time.sleep(rng.uniform(0.0, 0.3))
        finished = p.poll() is not None
        if not finished:
            os.kill(p.pid, signal.SIGKILL)
        p.communicate()
        chunks = before = len(list(cache.glob("*.partial/chunk-*.npz")))
        done = bool(list(cache.glob("*.npz")))
        killed_mid_build += not finished and not done
        print(
            f"kill -9 #{k + 1}: {'finished before the kill' if finished else 'killed'}; "
            f"{chunks} chunk(s) on disk, finished set present: {done}",
            flush=True,
        )
        if done:
            break
    p = _child(cache, out, 0)
    _, err = p.communicate(timeout=600)
    ok = p.returncode == 0 and _same(_load(out), ref)
    print(f"kill -9: resumed build exit code {p.returncode}, identical to the uninterrupted build: {ok}", flush=True)
    leftovers = sorted(x.name for x in cache.iterdir() if x.name.startswith("."))
    return {
        "kills": kills,
        "killed_mid_build": killed_mid_build,
        "resume_exit_code": p.returncode,
        "identical": ok,
        "temporary_files_left": len(leftovers),
    }


def _flip(p: Path) -> None:
    b = bytearray(p.read_bytes())
    b[len(b) // 2] ^= 0x10
    p.write_bytes(bytes(b))


def _trunc(p: Path) -> None:
    p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])


def _empty(p: Path) -> None:
    p.write_bytes(b"")


def _tamper(p: Path) -> None:
    with np.load(p, allow_pickle=False) as f:
        a = {k: f[k] for k in f.files}
    k = max((k for k in a if a[k].dtype.kind == "f"), key=lambda k: a[k].size)
    a[k] = a[k] + np.float32(0.25)
    np.savez(p, **a)  # well-formed, different numbers; the old checksum stays


KINDS = {"bit flip": _flip, "truncation": _trunc, "empty file": _empty, "tampered but valid": _tamper}


def corrupt(work: Path) -> dict:
    import torch

    torch.set_num_threads(1)
    from advguard import load_model
    from advguard.advsets import AdvSetConfig, build_advset
    from advguard.attacks import ATTACKS
    from advguard.data.cache import CacheWarning, cached_arrays

    clf = load_model("cifar10-cnn")
    cfg = AdvSetConfig(**{**CFG, "attack": "fgsm", "params": {"eps": 8 / 255}})
    fresh = build_advset(cfg, clf, cache_dir=work / "corrupt-ref", chunk_size=CHUNK, progress=False)
    results = []

    def same(s) -> bool:
        return (
            s.key == fresh.key
            and np.array_equal(s.x_adv, fresh.x_adv)
            and np.array_equal(s.adv_ids, fresh.adv_ids)
            and s.counts == fresh.counts
        )

    for kind, fn in KINDS.items():
        # a finished set
        cache = work / f"corrupt-final-{kind.replace(' ', '-')}"
        build_advset(cfg, clf, cache_dir=cache, chunk_size=CHUNK, progress=False)
        fn(cache / f"{fresh.key}.npz")
        with warnings.catch_warnings(record=True) as w:
            warnings.simplefilter("always")
            s = build_advset(cfg, clf, cache_dir=cache, chunk_size=CHUNK, progress=False)
        named = any(issubclass(x.category, CacheWarning) and fresh.key in str(x.message) for x in w)
        results.append(
            {
                "target": "advset (finished)",
                "kind": kind,
                "named": named,
                "rebuilt_identical": same(s),
                "moved_aside": bool(list(cache.glob("*.corrupt-*"))),
            }
        )
        # a chunk of an interrupted build
        cache = work / f"corrupt-chunk-{kind.replace(' ', '-')}"
        orig, calls = ATTACKS["fgsm"].__call__, {"n": 0}

        def flaky(self, x, y, targets=None, orig=orig, calls=calls):
            calls["n"] += 1
            if calls["n"] == 3:
                raise KeyboardInterrupt
            return orig(self, x, y, targets)

        ATTACKS["fgsm"].__call__ = flaky
        try:
            build_advset(cfg, clf, cache_dir=cache, chunk_size=CHUNK, progress=False)
        except KeyboardInterrupt:
            pass
        finally:
            ATTACKS["fgsm"].__call__ = orig
        chunk = sorted(cache.glob("*.partial/chunk-*.npz"))[0]
        fn(chunk)
        with warnings.catch_warnings(record=True) as w:
            warnings.simplefilter("always")
            s = build_advset(cfg, clf, cache_dir=cache, chunk_size=CHUNK, progress=False)
        named = any(issubclass(x.category, CacheWarning) and chunk.name in str(x.message) for x in w)
        results.append(
            {
                "target": "advset chunk (resume)",
                "kind": kind,
                "named": named,
                "rebuilt_identical": same(s),
                "moved_aside": bool(list(cache.glob("*.partial/*.corrupt-*")) or not list(cache.glob("*.partial"))),
            }
        )
        # a generic entry (feature / decode / experiment caches all use cached_arrays or the same helpers)
        path = work / f"generic-{kind.replace(' ', '-')}" / "entry.npz"
        want = {"features": np.arange(600, dtype=np.float32).reshape(20, 30)}
        cached_arrays(path, lambda: want)  # noqa: B023 - cached_arrays calls it at once
        fn(path)
        with warnings.catch_warnings(record=True) as w:
            warnings.simplefilter("always")
            got = cached_arrays(path, lambda: want)  # noqa: B023 - cached_arrays calls it at once
        named = any(issubclass(x.category, CacheWarning) and "entry.npz" in str(x.message) for x in w)
        results.append(
            {
                "target": "cached_arrays entry",
                "kind": kind,
                "named": named,
                "rebuilt_identical": bool(np.array_equal(got["features"], want["features"])),
                "moved_aside": bool(list(path.parent.glob("*.corrupt-*"))),
            }
        )
    for r in results:
        print(
            f"corrupt {r['target']}, {r['kind']}: named in a warning {r['named']}, moved aside {r['moved_aside']}, "
            f"rebuilt identical {r['rebuilt_identical']}",
            flush=True,
        )
    return {
        "cases": len(results),
        "all_ok": all(r["named"] and r["rebuilt_identical"] and r["moved_aside"] for r in results),
        "results": results,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=10)
    ap.add_argument("--kills", type=int, default=5)
    ap.add_argument("--json", help="write the summary here")
    ap.add_argument("--skip", nargs="*", default=[], choices=["concurrent", "kill", "corrupt"])
    args = ap.parse_args()
    t0 = time.time()
    with tempfile.TemporaryDirectory(prefix="advguard-probe-") as d:
        work = Path(d)
        ref = reference(work)
        summary = {"config": {**CFG, "chunk_size": CHUNK}}
        if "concurrent" not in args.skip:
            summary["concurrent"] = concurrent(work, ref, args.trials)
        if "kill" not in args.skip:
            summary["kill9"] = kill9(work, ref, args.kills)
        if "corrupt" not in args.skip:
            summary["corrupt"] = corrupt(work)
    summary["seconds"] = round(time.time() - t0, 1)
    print(
        json.dumps(
            {k: v for k, v in summary.items() if k != "corrupt"}
            | {"corrupt": {k: v for k, v in summary.get("corrupt", {}).items() if k != "results"}},
            indent=1,
        )
    )
    if args.json:
        Path(args.json).write_text(json.dumps(summary, indent=1))
    c, k, x = summary.get("concurrent"), summary.get("kill9"), summary.get("corrupt")
    ok = (
        (c is None or (c["crashed_processes"] == 0 and c["identical_trials"] == c["trials"]))
        and (k is None or k["identical"])
        and (x is None or x["all_ok"])
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
