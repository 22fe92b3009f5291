"""Load test of `advguard serve` on loopback (issue #25): throughput, latency, errors and memory, micro-batching on
and off, against the Guard called directly in Python.

The guard is the README's (`Guard(clf, [FeatureSqueezing(clf), ConfidenceDetector(clf)], fpr=0.05)` on
`cifar10-cnn`, fitted on real CIFAR-10 test images) unless `--guard FILE` names another. The server runs as its own
process (`python -m advguard.cli serve`, so that its resident memory is its own), once with micro-batching
(`--max-batch`, `--max-wait-ms`) and once with `--no-batching`. A bounded asyncio httpx load generator sends a fixed
number of requests (one real CIFAR-10 test image per request, PNG, raw body) at each concurrency and stops by
itself; every answer is checked (status 200, one result, the label and verdict of the direct call). Per cell:
images/s, p50/p95/p99 latency, errors, the server's mean batch size (from /metrics) and its VmRSS before and after.
Then the direct baseline (the same images, as arrays, through the Guard in this process in batches of
`--max-batch`), and a memory-flatness run (`--flat-requests` requests at the highest concurrency with batching, the
server's VmRSS sampled along the way).

Targets: at concurrency 32 with micro-batching, at least 0.8x the direct Guard's images/s; memory flat over the
10,000-request run (the RSS at the end within max(16 MiB, 5 %) of the RSS after the first 10 % of the requests).

    python benchmarks/service_load.py                      -> docs/results/service.{md,json}   (~15 min on 2 cores)
    python benchmarks/service_load.py --requests 200 --flat-requests 1000 --out /tmp/service   (a quick look)
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------------- the server process
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def rss_mb(pid: int) -> float:
    """The process's resident memory (VmRSS) in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


@contextmanager
def served(guard: Path, batching: bool, max_batch: int, max_wait_ms: float, workers: int = 1):
    """``advguard serve`` in a subprocess on a free loopback port; yields (url, pid) once /readyz answers."""
    import httpx

    port = free_port()
    cmd = [sys.executable, "-m", "advguard.cli", "serve", "--guard", str(guard), "--port", str(port)]
    cmd += ["--max-batch", str(max_batch), "--max-wait-ms", str(max_wait_ms), "--log-level", "warning"]
    cmd += ["--max-queue", "4096", "--workers", str(workers)] + ([] if batching else ["--no-batching"])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    log = tempfile.TemporaryFile()
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 300
        while True:
            if proc.poll() is not None or time.monotonic() > deadline:
                log.seek(0)
                raise RuntimeError(f"advguard serve did not become ready:\n{log.read().decode(errors='replace')}")
            try:
                if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        yield url, proc.pid
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds the process has used so far, all its threads (/proc/PID/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def batch_counts(url: str) -> tuple[float, float]:
    """(Guard calls, images in them) so far, from the server's /metrics."""
    import httpx
    from prometheus_client.parser import text_string_to_metric_families

    calls = images = 0.0
    for fam in text_string_to_metric_families(httpx.get(f"{url}/metrics", timeout=10).text):
        for s in fam.samples:
            if s.name == "advguard_batch_size_count":
                calls = s.value
            elif s.name == "advguard_batch_size_sum":
                images = s.value
    return calls, images


# ---------------------------------------------------------------------- the guard, the images, the direct baseline
def fit_guard(path: Path, x, squeezers: list[str] | None) -> dict:
    """The README's guard on cifar10-cnn, fitted on the clean images ``x``."""
    from advguard import Guard, load_model
    from advguard.detectors import ConfidenceDetector, FeatureSqueezing

    clf = load_model("cifar10-cnn")
    fs = FeatureSqueezing(clf, progress=False) if not squeezers else FeatureSqueezing(clf, squeezers=squeezers)
    guard = Guard(clf, [fs, ConfidenceDetector(clf)], combine="any", fpr=0.05).fit(x)
    guard.save(path)
    return {"model": "cifar10-cnn", "detectors": guard.names, "squeezers": list(fs.squeezers), "fit_images": len(x)}


def png_bodies(x) -> list[bytes]:
    """Each image of the float batch ``x`` (8-bit values: CIFAR-10's lossless test set) as PNG bytes; the server
    decodes them back to exactly ``x``."""
    import numpy as np
    from PIL import Image

    bodies = []
    for img in x:
        buf = io.BytesIO()
        Image.fromarray(np.round(img.transpose(1, 2, 0) * 255).astype(np.uint8)).save(buf, "PNG")
        bodies.append(buf.getvalue())
    return bodies


def direct_baseline(guard_path: Path, x, batch: int, min_seconds: float) -> dict:
    """The Guard called directly in Python on the same images (arrays: no decoding, no HTTP) in batches of
    ``batch``: images/s (best of repeated passes over all images) and every image's label and verdict."""
    from advguard import Guard, load_model

    guard = Guard.load(guard_path, load_model(Guard.saved_classifier(guard_path) or "cifar10-cnn"))
    answers = []
    for i in range(0, len(x), batch):  # also the warm-up
        answers += [(r.label, r.verdict) for r in guard(x[i : i + batch])]
    passes, start, cpu0 = [], time.perf_counter(), time.process_time()
    while len(passes) < 2 or time.perf_counter() - start < min_seconds:
        t = time.perf_counter()
        for i in range(0, len(x), batch):
            guard(x[i : i + batch])
        passes.append(time.perf_counter() - t)
    cpu = time.process_time() - cpu0
    return {
        "cpu_ms_per_image": 1000 * cpu / (len(passes) * len(x)),
        "cores_busy": cpu / (time.perf_counter() - start),
        "images_per_s": len(x) / min(passes),
        "ms_per_image": 1000 * min(passes) / len(x),
        "passes": len(passes),
        "batch": batch,
        "images": len(x),
        "answers": answers,
    }


# ---------------------------------------------------------------------- the load generator
async def load(
    url: str,
    bodies: list[bytes],
    expected: list,
    n: int,
    concurrency: int,
    pid: int | None = None,
    sample_s: float | None = None,
) -> dict:
    """``n`` requests (image ``i % len(bodies)`` for request ``i``) from ``concurrency`` concurrent clients on
    their own connections; each answer is checked. With ``sample_s``, the server's VmRSS is sampled along the way."""
    import httpx
    import numpy as np

    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    latencies: list[float] = []
    errors: list[str] = []
    differ = 0
    samples: list[tuple[int, float, float]] = []
    state = {"next": 0, "done": 0}
    headers = {"Content-Type": "image/png"}

    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=300) as client:
        # warm-up: every connection opened, not counted
        await asyncio.gather(
            *(client.post("/v1/classify", content=bodies[0], headers=headers) for _ in range(concurrency))
        )

        async def worker() -> None:
            nonlocal differ
            while state["next"] < n:
                i = state["next"]
                state["next"] += 1
                t = time.perf_counter()
                try:
                    r = await client.post("/v1/classify", content=bodies[i % len(bodies)], headers=headers)
                except httpx.HTTPError as e:
                    errors.append(f"{type(e).__name__}: {e}")
                    continue
                finally:
                    state["done"] += 1
                latencies.append(time.perf_counter() - t)
                if r.status_code != 200:
                    errors.append(f"{r.status_code}: {r.text[:200]}")
                    continue
                res = r.json()["results"]
                if len(res) != 1:
                    errors.append(f"{len(res)} results for one image")
                elif (res[0]["label"], res[0]["verdict"]) != tuple(expected[i % len(bodies)]):
                    differ += 1

        async def sampler() -> None:
            t0 = time.perf_counter()
            while True:
                samples.append((state["done"], time.perf_counter() - t0, rss_mb(pid)))
                await asyncio.sleep(sample_s)

        task = asyncio.create_task(sampler()) if pid is not None and sample_s else None
        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        wall = time.perf_counter() - start
        if task is not None:
            task.cancel()
            samples.append((state["done"], wall, rss_mb(pid)))
    ms = np.asarray(latencies) * 1000
    return {
        "requests": n,
        "concurrency": concurrency,
        "seconds": wall,
        "images_per_s": n / wall,
        "p50_ms": float(np.percentile(ms, 50)),
        "p95_ms": float(np.percentile(ms, 95)),
        "p99_ms": float(np.percentile(ms, 99)),
        "max_ms": float(ms.max()),
        "errors": len(errors),
        "error_examples": errors[:5],
        "answers_differing_from_direct": differ,
        "rss_samples": [{"requests": d, "seconds": round(s, 2), "rss_mb": round(m, 1)} for d, s, m in samples],
    }


def run_cell(url: str, pid: int, bodies, expected, n: int, c: int) -> dict:
    rss_before = rss_mb(pid)
    calls0, images0 = batch_counts(url)
    server0, client0 = cpu_seconds(pid), time.process_time()
    cell = asyncio.run(load(url, bodies, expected, n, c))
    server_cpu, client_cpu = cpu_seconds(pid) - server0, time.process_time() - client0
    calls1, images1 = batch_counts(url)
    cell.update(
        rss_before_mb=rss_before,
        rss_after_mb=rss_mb(pid),
        mean_batch=(images1 - images0) / max(1.0, calls1 - calls0),
        # where the machine's CPU went (the warm-up requests included: a few per cell)
        server_cpu_ms_per_request=1000 * server_cpu / n,
        client_cpu_ms_per_request=1000 * client_cpu / n,
        cores_busy=(server_cpu + client_cpu) / cell["seconds"],
    )
    del cell["rss_samples"]
    return cell


def flatness(samples: list[dict], n: int) -> dict:
    """The RSS after the first 10 % of the requests, at the end, the peak, and whether the end is within
    max(16 MiB, 5 %) of the 10 % mark."""
    mark = next(s for s in samples if s["requests"] >= n // 10)
    end, peak = samples[-1]["rss_mb"], max(s["rss_mb"] for s in samples)
    allowed = max(16.0, 0.05 * mark["rss_mb"])
    return {
        "rss_at_10pct_mb": mark["rss_mb"],
        "rss_end_mb": end,
        "rss_peak_mb": peak,
        "growth_mb": end - mark["rss_mb"],
        "allowed_mb": allowed,
        "flat": end - mark["rss_mb"] <= allowed,
    }


# ---------------------------------------------------------------------- the page
def render(doc: dict) -> str:
    from advguard.report import markdown_table

    prov, a, base = doc["provenance"], doc["settings"], doc["direct"]
    target = doc["target"]
    rows = []
    for cell in doc["cells"]:
        rows.append(
            [
                "on" if cell["batching"] else "off",
                cell.get("workers", 1),
                cell["concurrency"],
                cell["requests"],
                f"{cell['images_per_s']:.1f}",
                f"{cell['images_per_s'] / base['images_per_s']:.2f}x",
                f"{cell['p50_ms']:.1f}",
                f"{cell['p95_ms']:.1f}",
                f"{cell['p99_ms']:.1f}",
                cell["errors"],
                f"{cell['mean_batch']:.1f}",
                f"{cell['rss_before_mb']:.0f} -> {cell['rss_after_mb']:.0f}",
                _f(cell.get("server_cpu_ms_per_request")),
                _f(cell.get("client_cpu_ms_per_request")),
                _f(cell.get("cores_busy"), 2),
            ]
        )
    flat = doc["flat"]
    fl = flat["flatness"]
    md = [
        "# `advguard serve` under load (issue #25)\n",
        f"Machine: {prov['machine']}. Commit `{prov['commit']}`, {prov['date']}.",
        f"Command: `{prov['command']}`\n",
        f"Guard: {doc['guard']['model']} with {', '.join(doc['guard']['detectors'])} (feature squeezing's squeezers "
        f"{', '.join(doc['guard']['squeezers'])}), combine `any` at a clean FPR of 0.05, fitted on "
        f"{doc['guard']['fit_images']} CIFAR-10 test images. Served: {a['images']} other CIFAR-10 test images as "
        "PNG, one per request (raw body), cycled. The server runs as its own process (`advguard serve`, "
        f"`--max-batch {a['max_batch']} --max-wait-ms {a['max_wait_ms']:g}` with `--workers` "
        f"{' and '.join(str(w) for w in a.get('workers', [1]))}, or `--no-batching`); the load "
        "generator (asyncio + httpx, one connection per client, a fixed number of requests after one warm-up "
        "request per connection) shares the machine with it, as does the direct baseline run before it. Every "
        "answer is checked: status 200, one result, the label and verdict of the direct call.\n",
        "## Target\n",
        f"At concurrency {target['concurrency']} with micro-batching"
        + (f" and `--workers {target['workers']}`" if "workers" in target else "")
        + f": **{target['ratio']:.2f}x** the direct Guard's "
        f"images/s ({target['images_per_s']:.1f} vs {base['images_per_s']:.1f}); target >= 0.8x: "
        f"**{'met' if target['met'] else 'not met'}**. p99 latency there: {target['p99_ms']:.0f} ms. "
        f"Memory over {flat['requests']:,} requests: **{'flat' if fl['flat'] else 'not flat'}** (VmRSS "
        f"{fl['rss_at_10pct_mb']:.0f} MiB after 10 % of them, {fl['rss_end_mb']:.0f} MiB at the end, peak "
        f"{fl['rss_peak_mb']:.0f} MiB; allowed growth {fl['allowed_mb']:.0f} MiB). Errors in all runs: "
        f"{doc['total_errors']}."
        + (
            " By workers: "
            + ", ".join(f"`--workers {w}` {r:.2f}x" for w, r in target["by_workers"].items())
            + ". One worker runs one Guard call at a time with torch's 2 threads; two run two calls at once, each "
            "on its own copy of the guard with one thread, so the cores stay busy while the next batch is "
            "gathered and answered."
            if "by_workers" in target
            else ""
        )
        + "\n",
        "## Direct baseline\n",
        f"The Guard called in Python on the same {base['images']} images as float arrays (no PNG decoding, no "
        f"HTTP), in batches of {base['batch']}: **{base['images_per_s']:.1f} images/s** ({base['ms_per_image']:.1f} "
        f"ms per image), the faster of two measurements, one before the load runs and one after them "
        f"({' and '.join(f'{v:.1f}' for v in base['images_per_s_runs'])} images/s, each the best of repeated "
        "passes over the images; two figures far apart mean the machine was not quiet)"
        + (
            f"; it keeps {base['cores_busy']:.2f} cores busy, {base['cpu_ms_per_image']:.1f} CPU ms per image.\n"
            if "cpu_ms_per_image" in base
            else ".\n"
        ),
        "## Throughput and latency\n",
        "Latency is per request (one image), measured by the client; `vs direct` divides by the baseline's "
        "images/s; `mean batch` is images per Guard call in the server (its /metrics); VmRSS is the server "
        "process's, before and after the cell. CPU: the server process's and the load generator's CPU seconds "
        "(user + system, all threads) over the cell, per request; `cores busy` is both together per wall second "
        "(the machine has 2).\n",
        markdown_table(
            [
                "batching",
                "workers",
                "concurrency",
                "requests",
                "images/s",
                "vs direct",
                "p50 ms",
                "p95 ms",
                "p99 ms",
                "errors",
                "mean batch",
                "VmRSS MiB",
                "server CPU ms/req",
                "client CPU ms/req",
                "cores busy",
            ],
            rows,
        ),
        "",
        f"## Memory over {flat['requests']:,} requests\n",
        f"Micro-batching on, `--workers {max(a.get('workers', [1]))}`, "
        f"concurrency {flat['concurrency']}: {flat['images_per_s']:.1f} images/s, p99 "
        f"{flat['p99_ms']:.0f} ms, {flat['errors']} errors. The server's VmRSS along the way:\n",
        markdown_table(
            ["requests answered", "seconds", "VmRSS MiB"],
            [[f"{s['requests']:,}", f"{s['seconds']:.0f}", f"{s['rss_mb']:.1f}"] for s in flat["rss_table"]],
        ),
        "",
        "Answers differing from the direct call (label or verdict), all runs: "
        f"{doc['total_differing']} (scores may differ by float32 rounding between batch sizes; see "
        "`advguard/service/batcher.py`).",
    ]
    return "\n".join(md)


def _f(v: float | None, digits: int = 1) -> str:
    return "-" if v is None else f"{v:.{digits}f}"


def _thin(samples: list[dict], k: int = 12) -> list[dict]:
    if len(samples) <= k:
        return samples
    idx = sorted({round(i * (len(samples) - 1) / (k - 1)) for i in range(k)})
    return [samples[i] for i in idx]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--requests", type=int, default=1000, help="requests per (batching, concurrency) cell")
    p.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    p.add_argument("--flat-requests", type=int, default=10_000, help="requests of the memory-flatness run")
    p.add_argument("--max-batch", type=int, default=32)
    p.add_argument("--max-wait-ms", type=float, default=5.0)
    p.add_argument(
        "--workers", type=int, nargs="+", default=[1, 2], help="--workers of the batching servers (target: most)"
    )
    p.add_argument("--images", type=int, default=256, help="distinct CIFAR-10 test images served (cycled)")
    p.add_argument("--fit-images", type=int, default=500)
    p.add_argument("--squeezers", nargs="+", help="feature squeezing's squeezers (default: the detector's own)")
    p.add_argument("--guard", help="serve this guard file (for a CIFAR-10 model) instead of fitting the README's")
    p.add_argument("--baseline-seconds", type=float, default=10.0)
    p.add_argument("--out", default=str(ROOT / "docs" / "results" / "service"))
    p.add_argument("--render-only", action="store_true", help="re-render the Markdown from the existing JSON")
    a = p.parse_args()

    from advguard.report import provenance, write_result

    if a.render_only:
        doc = json.loads(Path(a.out).with_suffix(".json").read_text())
        write_result(a.out, doc, render(doc))
        return 0
    if min(a.requests, a.flat_requests, a.images, a.max_batch, *a.concurrency) < 1:
        p.error("counts must be at least 1")
    from advguard import load_dataset

    # one seeded draw of CIFAR-10 test images: the first --fit-images fit the guard, the next --images are served
    data = load_dataset("cifar10", "test", limit=a.fit_images + a.images, seed=0).x
    x = data[a.fit_images :]
    bodies = png_bodies(x)
    with tempfile.TemporaryDirectory() as tmp:
        if a.guard:
            guard_path = Path(a.guard)
            guard_info = {"model": "from the file", "detectors": [], "squeezers": [], "fit_images": 0}
        else:
            guard_path = Path(tmp) / "guard.advguard"
            print("fitting the guard ...", file=sys.stderr, flush=True)
            guard_info = fit_guard(guard_path, data[: a.fit_images], a.squeezers)
        print("direct baseline ...", file=sys.stderr, flush=True)
        base = direct_baseline(guard_path, x, a.max_batch, a.baseline_seconds)
        expected = base.pop("answers")
        cells = []
        for batching, workers in [(True, w) for w in a.workers] + [(False, 1)]:
            with served(guard_path, batching, a.max_batch, a.max_wait_ms, workers) as (url, pid):
                for c in a.concurrency:
                    print(
                        f"batching {'on' if batching else 'off'}, {workers} worker(s), concurrency {c} ...",
                        file=sys.stderr,
                        flush=True,
                    )
                    cell = run_cell(url, pid, bodies, expected, a.requests, c)
                    cell["batching"] = batching
                    cell["workers"] = workers
                    cells.append(cell)
                    print(
                        f"  {cell['images_per_s']:.1f} images/s, p99 {cell['p99_ms']:.0f} ms, {cell['errors']} errors",
                        file=sys.stderr,
                        flush=True,
                    )
        c_flat = max(a.concurrency)
        print(f"memory flatness: {a.flat_requests} requests at concurrency {c_flat} ...", file=sys.stderr, flush=True)
        with served(guard_path, True, a.max_batch, a.max_wait_ms, max(a.workers)) as (url, pid):
            flat = asyncio.run(load(url, bodies, expected, a.flat_requests, c_flat, pid=pid, sample_s=1.0))
        flat["flatness"] = flatness(flat["rss_samples"], a.flat_requests)
        flat["rss_table"] = _thin(flat["rss_samples"])
        # the baseline again at the end: a machine that was not quiet shows as two different figures
        print("direct baseline again ...", file=sys.stderr, flush=True)
        again = direct_baseline(guard_path, x, a.max_batch, a.baseline_seconds)
    if again.pop("answers") != expected:
        raise RuntimeError("the direct Guard answered differently in its second run")
    base["images_per_s_runs"] = [base["images_per_s"], again["images_per_s"]]
    base["images_per_s"] = max(base["images_per_s_runs"])  # the faster run: the conservative reference
    base["ms_per_image"] = 1000 / base["images_per_s"]
    tops = {c["workers"]: c for c in cells if c["batching"] and c["concurrency"] == c_flat}
    top = tops[max(a.workers)]
    ratio = top["images_per_s"] / base["images_per_s"]
    doc = {
        "provenance": provenance(),
        "settings": {
            "requests": a.requests,
            "concurrency": a.concurrency,
            "flat_requests": a.flat_requests,
            "max_batch": a.max_batch,
            "max_wait_ms": a.max_wait_ms,
            "workers": a.workers,
            "images": a.images,
        },
        "guard": guard_info,
        "direct": base,
        "cells": cells,
        "flat": flat,
        "target": {
            "workers": max(a.workers),
            "by_workers": {str(w): c["images_per_s"] / base["images_per_s"] for w, c in sorted(tops.items())},
            "concurrency": c_flat,
            "images_per_s": top["images_per_s"],
            "p99_ms": top["p99_ms"],
            "ratio": ratio,
            "met": ratio >= 0.8,
        },
        "total_errors": sum(c["errors"] for c in cells) + flat["errors"],
        "total_differing": sum(c["answers_differing_from_direct"] for c in cells)
        + flat["answers_differing_from_direct"],
    }
    md = render(doc)
    write_result(a.out, doc, md)
    print(md)
    return 0 if doc["total_errors"] == 0 else 1


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    sys.exit(main())
