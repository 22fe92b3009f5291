"""advguard serve (issue #25): a real uvicorn server on 127.0.0.1 (a free port, in a thread) in front of a Guard fitted
on real CIFAR-10 images, driven by a real HTTP client (httpx) and a real headless browser (Debian's chromium through
playwright). Valid images (PNG / JPEG / WebP, raw and multipart, one and several), every class of bad input (each
with its status and JSON error, never a 500), the token, concurrency (16 clients: the answers equal sequential ones
and the Guard called directly), metrics, the API description, the web page, and fuzzed requests."""

from __future__ import annotations

import asyncio
import io
import json
import math
import os
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import zlib
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("fastapi", reason="the serve extra (pip install 'advguard[serve]') is not installed")
pytest.importorskip("uvicorn", reason="the serve extra (pip install 'advguard[serve]') is not installed")
pytest.importorskip("python_multipart", reason="the serve extra (pip install 'advguard[serve]') is not installed")
pytest.importorskip("prometheus_client", reason="the serve extra (pip install 'advguard[serve]') is not installed")
httpx = pytest.importorskip("httpx", reason="the serve extra (pip install 'advguard[serve]') is not installed")

import uvicorn  # noqa: E402
from PIL import Image  # noqa: E402
from prometheus_client.parser import text_string_to_metric_families  # noqa: E402

from advguard import Guard, ParameterError, load_model  # noqa: E402
from advguard.attacks import make_attack  # noqa: E402
from advguard.detectors import ConfidenceDetector, FeatureSqueezing, TaintRadar  # noqa: E402
from advguard.service import ServiceSettings, create_app  # noqa: E402

TOKEN = "s3cret-token-for-tests"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
CHROMIUM = Path("/usr/bin/chromium")
PIXEL = "document.getElementById('overlay').getContext('2d').getImageData"
MAX_BATCH = 8


# ---------------------------------------------------------------------- images
def to_u8(x: np.ndarray) -> np.ndarray:
    """A CHW float image in [0, 1] as HWC uint8 (what a PNG holds)."""
    return np.round(np.asarray(x).transpose(1, 2, 0) * 255).astype(np.uint8)


def encode(img: np.ndarray, fmt: str = "PNG") -> bytes:
    buf = io.BytesIO()
    kw = {"quality": 95} if fmt == "JPEG" else {"lossless": True} if fmt == "WEBP" else {}
    Image.fromarray(img).save(buf, fmt, **kw)
    return buf.getvalue()


def decoded(data: bytes) -> np.ndarray:
    """What the service feeds the model for these bytes (Pillow's decode, CHW float32 in [0, 1])."""
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB")).transpose(2, 0, 1).astype(np.float32) / 255


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def bomb_png(width: int, height: int) -> bytes:
    """A real decompression bomb: a 1-bit PNG of width x height black pixels, a few KiB compressed."""
    row = b"\x00" + bytes((width + 7) // 8)
    z = zlib.compressobj(9)
    idat = b"".join(z.compress(row) for _ in range(height)) + z.flush()
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", idat) + png_chunk(b"IEND", b"")


def multipart(
    parts: list[tuple[str, str | None, str | None, bytes]], boundary: str = "advguard-test-boundary"
) -> bytes:
    """A multipart/form-data body from (field name, file name or None, Content-Type or None, data)."""
    out = []
    for name, filename, ctype, data in parts:
        disp = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename is not None else "")
        head = f"--{boundary}\r\nContent-Disposition: {disp}\r\n"
        if ctype is not None:
            head += f"Content-Type: {ctype}\r\n"
        out.append(head.encode() + b"\r\n" + data + b"\r\n")
    return b"".join(out) + f"--{boundary}--\r\n".encode()


# ---------------------------------------------------------------------- the guard and the servers
@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """One intra-op thread while this module runs (the test process, its server threads): these tests measure HTTP
    behaviour, not speed, and two threads on two shared cores oversubscribe them (fitting took 7x longer)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def fitted(correct_images, tmp_path_factory):
    """A guard (feature squeezing, confidence, TaintRadar for its region) fitted on real correctly classified CIFAR-10
    test images, saved; clean PNG-exact images and FGSM ones (quantised to 8 bits, as a PNG holds them)."""
    clf, x, y = correct_images(200, 31)
    adv = make_attack("fgsm", clf, eps=8 / 255, progress=False)(x[100:], y[100:])
    ok = adv.success.numpy()
    clean = np.stack([to_u8(a) for a in x.numpy()[100:140]])
    attacked = np.stack([to_u8(a) for a in adv.x_adv.numpy()[ok][:40]])
    dets = [
        FeatureSqueezing(clf, squeezers=("bits:4", "median:2"), progress=False),
        ConfidenceDetector(clf),
        TaintRadar(clf, k=3, delta_r=1, k_max=3, progress=False),  # K and Delta_R fixed: no search in fit
    ]
    guard = Guard(clf, dets, combine="any", fpr=0.1).fit(x[:100])
    path = guard.save(tmp_path_factory.mktemp("guard") / "guard.zip")
    return {"clf": clf, "path": path, "clean": clean, "adv": attacked}


@pytest.fixture(scope="module")
def ref(fitted):
    """The Guard called directly in Python: the same file, loaded on its own classifier."""
    return Guard.load(fitted["path"], load_model("cifar10-cnn"))


class ThreadServer:
    """uvicorn serving ``app`` on 127.0.0.1 (a free port chosen by the kernel) in a background thread."""

    def __init__(self, app):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)

    def __enter__(self) -> ThreadServer:
        self.thread.start()
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            assert self.thread.is_alive(), "the server thread died during start-up"
            try:
                if httpx.get(f"{self.url}/readyz", timeout=2).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        raise AssertionError("the server did not become ready within 120 s")

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(30)
        assert not self.thread.is_alive(), "the server did not shut down"
        self.sock.close()


def _served(fitted, settings: ServiceSettings) -> ThreadServer:
    guard = Guard.load(fitted["path"], load_model("cifar10-cnn"))
    from advguard.data.cifar10 import CLASSES

    return ThreadServer(create_app(guard, settings, model="cifar10-cnn", class_names=CLASSES))


@pytest.fixture(scope="module")
def server(fitted):
    """The main server: a token, micro-batching (8 images, 20 ms), small limits that the tests can reach."""
    settings = ServiceSettings(
        token=TOKEN,
        max_batch=MAX_BATCH,
        max_wait_ms=20,
        max_queue=256,
        max_body_bytes=256 * 1024,
        max_images=4,
        max_pixels=1_000_000,
        read_timeout=1.5,
        timeout=60,
    )
    with _served(fitted, settings) as s:
        yield s


@pytest.fixture(scope="module")
def client(server):
    with httpx.Client(base_url=server.url, headers=AUTH, timeout=60) as c:
        yield c


def classify(client, images: list[bytes], names: list[str] | None = None):
    names = names or [f"img{i}.png" for i in range(len(images))]
    files = [("images", (n, b, "application/octet-stream")) for n, b in zip(names, images, strict=True)]
    return client.post("/v1/classify", files=files)


def direct(ref: Guard, images: list[bytes], names: list[str]) -> list[dict]:
    x = np.stack([decoded(b) for b in images])
    return [r.to_record(n) for r, n in zip(ref(x), names, strict=True)]


def assert_error(r, status: int, error: str) -> dict:
    assert r.status_code == status, (r.status_code, r.text)
    assert r.headers["content-type"].startswith("application/json")
    body = r.json()
    assert set(body) == {"error", "detail"} and body["error"] == error and body["detail"], body
    return body


def metric_samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for fam in text_string_to_metric_families(text)
        for s in fam.samples
    }


# ---------------------------------------------------------------------- valid requests
def test_health_readiness_api_description_and_page(server, client):
    assert httpx.get(f"{server.url}/healthz").json() == {"status": "ok"}
    ready = httpx.get(f"{server.url}/readyz")  # open without the token
    assert ready.status_code == 200 and ready.json()["detectors"] == ["feature-squeezing", "confidence", "taintradar"]
    schema = httpx.get(f"{server.url}/openapi.json").json()
    body = schema["paths"]["/v1/classify"]["post"]["requestBody"]["content"]
    assert {"multipart/form-data", "image/png", "image/jpeg", "image/webp"} <= set(body)
    assert {"400", "401", "408", "413", "415", "422", "504"} <= set(
        schema["paths"]["/v1/classify"]["post"]["responses"]
    )
    assert "HTTPBearer" in schema["components"]["securitySchemes"]
    docs = httpx.get(f"{server.url}/docs")
    assert docs.status_code == 200 and "swagger" in docs.text.lower()
    page = httpx.get(f"{server.url}/")
    assert page.status_code == 200 and "cifar10-cnn" in page.text and 'id="token"' in page.text
    assert 'src="http' not in page.text and 'href="http' not in page.text  # nothing fetched from elsewhere
    info = client.get("/v1/info").json()
    assert info["input"] == {"channels": 3, "size": [32, 32]} and info["classes"][3] == "cat"
    assert info["limits"]["max_images"] == 4 and info["batching"]["max_batch"] == MAX_BATCH


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP"])
def test_one_image_raw_and_multipart_answers_as_detect_does(fitted, ref, client, fmt):
    data = encode(fitted["adv"][0] if fmt == "JPEG" else fitted["clean"][0], fmt)
    raw = client.post("/v1/classify", content=data, headers={"Content-Type": f"image/{fmt.lower()}"})
    assert raw.status_code == 200, raw.text
    assert raw.json() == {"model": "cifar10-cnn", "results": direct(ref, [data], ["-"])}
    part = classify(client, [data], [f"one.{fmt.lower()}"])
    assert part.status_code == 200 and part.json()["results"] == direct(ref, [data], [f"one.{fmt.lower()}"])


def test_several_images_in_one_request_keep_their_order_and_names(fitted, ref, client):
    images = [encode(fitted["clean"][1]), encode(fitted["adv"][1], "JPEG"), encode(fitted["adv"][2], "WEBP")]
    names = ["a.png", "b.jpg", "c.webp"]
    r = classify(client, images, names)
    assert r.status_code == 200
    results = r.json()["results"]
    assert [x["path"] for x in results] == names
    assert results == direct(ref, images, names)  # one request alone in its batch: the same call, bit for bit
    assert {x["verdict"] for x in results} <= {"clean", "adversarial"}


def test_a_flagged_image_carries_taintradar_region(fitted, ref, client):
    flagged = [i for i, r in enumerate(ref(fitted["adv"].transpose(0, 3, 1, 2) / 255)) if r.verdict == "adversarial"]
    assert flagged, "FGSM at 8/255 should trip the guard on some of 40 images"
    r = classify(client, [encode(fitted["adv"][flagged[0]])]).json()["results"][0]
    assert r["verdict"] == "adversarial" and "taintradar" in r["explanations"]
    region = r["explanations"]["taintradar"]["region"]
    assert region is None or (0 <= region[0] < region[2] <= 32 and 0 <= region[1] < region[3] <= 32)


# ---------------------------------------------------------------------- bad requests
def _bad_cases(fitted):
    png = encode(fitted["clean"][0])
    jpeg = encode(fitted["clean"][0], "JPEG")
    gif = io.BytesIO()
    Image.fromarray(fitted["clean"][0]).save(gif, "GIF")
    big = encode(np.zeros((64, 64, 3), np.uint8))
    photo = encode(np.random.default_rng(0).integers(0, 256, (300, 300, 3), dtype=np.uint8), "JPEG")
    assert 64 * 1024 < len(photo) < 256 * 1024  # over the inline-decoding size: decoded in a worker thread
    mp = "multipart/form-data; boundary=advguard-test-boundary"
    return {
        "text/plain body": (b"hello", {"Content-Type": "text/plain"}, 415, "unsupported_media_type"),
        "no content type": (png, {"Content-Type": ""}, 415, "unsupported_media_type"),
        "part declared text/plain": (
            multipart([("images", "x.png", "text/plain", png)]),
            {"Content-Type": mp},
            415,
            "unsupported_media_type",
        ),
        "non-image bytes": (
            b"\x00\x01not an image at all" * 10,
            {"Content-Type": "image/png"},
            415,
            "unsupported_media_type",
        ),
        "a GIF": (gif.getvalue(), {"Content-Type": "image/png"}, 415, "unsupported_media_type"),
        "truncated PNG": (png[: len(png) // 2], {"Content-Type": "image/png"}, 422, "unreadable_image"),
        "truncated JPEG": (jpeg[: len(jpeg) // 2], {"Content-Type": "image/jpeg"}, 422, "unreadable_image"),
        "wrong size": (big, {"Content-Type": "image/png"}, 422, "unreadable_image"),
        "a large photo of another size": (photo, {"Content-Type": "image/jpeg"}, 422, "unreadable_image"),
        "empty body": (b"", {"Content-Type": "image/png"}, 400, "bad_request"),
        "multipart without file": (multipart([("note", None, None, b"hi")]), {"Content-Type": mp}, 400, "bad_request"),
        "multipart without boundary": (
            multipart([("images", "x.png", None, png)]),
            {"Content-Type": "multipart/form-data"},
            400,
            "bad_request",
        ),
        "unterminated multipart": (
            multipart([("images", "x.png", None, png)])[:-40],
            {"Content-Type": mp},
            400,
            "bad_request",
        ),
        "huge body": (b"\x89PNG\r\n\x1a\n" + bytes(300 * 1024), {"Content-Type": "image/png"}, 413, "body_too_large"),
        "decompression bomb 20000x20000": (
            bomb_png(20000, 20000),
            {"Content-Type": "image/png"},
            413,
            "too_many_pixels",
        ),
        "1100x1000 over 1 Mpixel": (bomb_png(1100, 1000), {"Content-Type": "image/png"}, 413, "too_many_pixels"),
        "five images (limit 4)": (
            multipart([("images", f"{i}.png", "image/png", png) for i in range(5)]),
            {"Content-Type": mp},
            413,
            "too_many_images",
        ),
    }


def test_every_bad_input_class_gets_its_status_and_a_json_error(fitted, server, client):
    for what, (body, headers, status, error) in _bad_cases(fitted).items():
        r = client.post("/v1/classify", content=body, headers=headers)
        assert r.status_code == status, (what, r.status_code, r.text)
        assert_error(r, status, error)
    # a body streamed without Content-Length (chunked) is counted as it arrives and cut off at the limit
    chunks = (b"\x89PNG\r\n\x1a\n" + bytes(64 * 1024) for _ in range(6))
    assert_error(
        client.post("/v1/classify", content=chunks, headers={"Content-Type": "image/png"}), 413, "body_too_large"
    )
    assert_error(client.get("/v1/classify"), 405, "method_not_allowed")
    assert_error(client.get("/no/such/page"), 404, "not_found")
    text = client.get("/metrics").text
    assert 'status="500"' not in text and "internal_error" not in text


def test_the_token_is_required_and_compared(fitted, server):
    png = encode(fitted["clean"][0])
    for headers, why in (
        ({}, "send Authorization"),
        ({"Authorization": "Bearer wrong"}, "wrong"),
        ({"Authorization": f"Bearer {TOKEN}x"}, "wrong"),
        ({"Authorization": f"Basic {TOKEN}"}, "send Authorization"),
    ):
        r = httpx.post(f"{server.url}/v1/classify", content=png, headers={"Content-Type": "image/png", **headers})
        body = assert_error(r, 401, "unauthorized")
        assert why in body["detail"] and r.headers["www-authenticate"].startswith("Bearer")
        assert_error(httpx.get(f"{server.url}/metrics", headers=headers), 401, "unauthorized")
        assert_error(httpx.get(f"{server.url}/v1/info", headers=headers), 401, "unauthorized")
    assert (
        'error="invalid_token"'
        in httpx.get(f"{server.url}/metrics", headers={"Authorization": "Bearer x"}).headers["www-authenticate"]
    )


def test_a_body_that_stops_arriving_is_408(server):
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as s:
        head = (
            "POST /v1/classify HTTP/1.1\r\nHost: test\r\nContent-Type: image/png\r\n"
            f"Authorization: Bearer {TOKEN}\r\nContent-Length: 5000\r\n\r\n"
        )
        s.sendall(head.encode() + b"\x89PNG\r\n\x1a\n")
        start = time.monotonic()
        reply = b""
        while b"\r\n\r\n" not in reply or not reply.rstrip().endswith(b"}"):
            chunk = s.recv(4096)
            if not chunk:
                break
            reply += chunk
    assert 1.0 < time.monotonic() - start < 8, "the read timeout is 1.5 s"
    status_line, _, rest = reply.partition(b"\r\n")
    assert status_line.startswith(b"HTTP/1.1 408")
    assert json.loads(rest.split(b"\r\n\r\n", 1)[1])["error"] == "request_timeout"


# ---------------------------------------------------------------------- concurrency
def _workload(fitted, n_requests: int) -> list[tuple[list[bytes], list[str]]]:
    """Requests of 1 or 2 images, clean and FGSM mixed, PNG / JPEG / WebP."""
    out = []
    fmts = ["PNG", "JPEG", "WEBP"]
    for i in range(n_requests):
        k = 1 + i % 2
        imgs = [fitted["clean" if (i + j) % 2 else "adv"][(3 * i + j) % 40] for j in range(k)]
        fs = [fmts[(i + j) % 3] for j in range(k)]
        out.append(
            ([encode(a, f) for a, f in zip(imgs, fs, strict=True)], [f"r{i}-{j}.{f.lower()}" for j, f in enumerate(fs)])
        )
    return out


async def _concurrently(url: str, work, clients: int = 16, headers=None) -> list[dict]:
    """``clients`` concurrent clients (each its own connection) sharing the requests; answers in request order."""
    answers: list[dict | None] = [None] * len(work)
    queue = list(range(len(work)))

    async def one_client() -> None:
        async with httpx.AsyncClient(base_url=url, headers=headers or {}, timeout=120) as c:
            while queue:
                i = queue.pop(0)
                images, names = work[i]
                files = [("images", (n, b, "application/octet-stream")) for n, b in zip(names, images, strict=True)]
                r = await c.post("/v1/classify", files=files)
                assert r.status_code == 200, r.text
                answers[i] = r.json()["results"]

    await asyncio.gather(*(one_client() for _ in range(clients)))
    return answers  # type: ignore[return-value]


def assert_same_answer(a: dict, b: dict) -> None:
    """Equal labels, verdicts, flags, thresholds, explanations and names; scores and probabilities equal up to float32
    rounding (the backend's kernels are chosen by batch size: see advguard/service/batcher.py)."""
    assert set(a) == set(b)
    for k in a:
        if k == "detectors":
            assert set(a[k]) == set(b[k])
            for name in a[k]:
                da, db = a[k][name], b[k][name]
                assert (da["threshold"], da["flags"]) == (db["threshold"], db["flags"])
                assert math.isclose(da["score"], db["score"], rel_tol=1e-5, abs_tol=1e-6), (name, da, db)
        elif k in ("score", "probability"):
            assert math.isclose(a[k], b[k], rel_tol=1e-5, abs_tol=1e-6), (k, a[k], b[k])
        elif k == "explanations":  # Grad-CAM maps (3 decimals) may round apart by one unit between batch sizes
            ea, eb = dict(a[k]), dict(b[k])
            ma, mb = ea.pop("grad-cam", None), eb.pop("grad-cam", None)
            assert ea == eb, (k, ea, eb)
            assert (ma is None) == (mb is None)
            if ma is not None:
                assert (ma["layer"], ma["label"]) == (mb["layer"], mb["label"])
                np.testing.assert_allclose(ma["map"], mb["map"], atol=2e-3)
        else:
            assert a[k] == b[k], (k, a[k], b[k])


def test_sixteen_concurrent_clients_get_the_answers_of_sequential_and_direct_calls(fitted, ref, server, client):
    work = _workload(fitted, 48)
    before = metric_samples(client.get("/metrics").text)
    together = asyncio.run(_concurrently(server.url, work, headers=AUTH))
    after = metric_samples(client.get("/metrics").text)
    calls = after[("advguard_batch_size_count", ())] - before[("advguard_batch_size_count", ())]
    images = after[("advguard_batch_size_sum", ())] - before[("advguard_batch_size_sum", ())]
    assert images == sum(len(w[0]) for w in work)
    assert images / calls > 2, f"concurrent requests should share Guard calls: {images:.0f} images in {calls:.0f} calls"
    for (images_, names), answer in zip(work, together, strict=True):
        alone = classify(client, images_, names).json()["results"]
        assert alone == direct(ref, images_, names)  # alone in its batch: the direct call, bit for bit
        assert len(answer) == len(alone)
        for a, b in zip(answer, alone, strict=True):
            assert_same_answer(a, b)


def _together_and_alone(fitted, settings: ServiceSettings, n: int) -> tuple[list, list, list]:
    """``n`` requests' workload, its answers from concurrent clients and from one request at a time, on a server
    with ``settings``."""
    work = _workload(fitted, n)
    with _served(fitted, settings) as srv:
        together = asyncio.run(_concurrently(srv.url, work))
        with httpx.Client(base_url=srv.url, timeout=60) as c:
            alone = [classify(c, images, names).json()["results"] for images, names in work]
    return work, together, alone


def test_padded_batches_make_answers_bit_identical_whatever_the_batch_mates(fitted, ref):
    """--pad-batches: every Guard call holds exactly max_batch images, so an image's answer does not depend on which
    requests shared its batch or where it sat in it: equal, bit for bit, to the Guard called directly on the request's
    images padded to the same size."""
    settings = ServiceSettings(max_batch=MAX_BATCH, max_wait_ms=20, pad_batches=True)
    work, together, alone = _together_and_alone(fitted, settings, 16)
    for (images, names), a, b in zip(work, together, alone, strict=True):
        x = np.stack([decoded(im) for im in images])
        padded = np.concatenate([x, np.repeat(x[-1:], MAX_BATCH - len(x), axis=0)])
        want = [r.to_record(n) for r, n in zip(ref(padded)[: len(x)], names, strict=True)]
        assert a == b == want


def test_metrics_count_requests_verdicts_latency_and_batches(client):
    text = client.get("/metrics").text
    s = metric_samples(text)
    assert s[("advguard_http_requests_total", (("route", "/v1/classify"), ("status", "200")))] > 0
    assert s[("advguard_http_requests_total", (("route", "/v1/classify"), ("status", "413")))] > 0
    assert s[("advguard_images_total", (("verdict", "clean"),))] > 0
    assert s[("advguard_images_total", (("verdict", "adversarial"),))] > 0
    assert s[("advguard_http_request_seconds_count", (("route", "/v1/classify"),))] > 0
    assert s[("advguard_batch_size_count", ())] > 0 and s[("advguard_ready", ())] == 1
    assert s[("advguard_refusals_total", (("error", "too_many_pixels"),))] > 0


# ---------------------------------------------------------------------- fuzzing: no input gives a 500
hypothesis = pytest.importorskip("hypothesis")
st = hypothesis.strategies

CONTENT_TYPES = [
    "image/png",
    "image/jpeg",
    "image/webp",
    "image/png; charset=utf-8",
    "IMAGE/PNG",
    "multipart/form-data; boundary=advguard-test-boundary",
    "multipart/form-data; boundary=",
    "multipart/form-data",
    "application/octet-stream",
    "text/plain",
    "",
    ";;;",
    'multipart/form-data; boundary="a b"',
]


@pytest.fixture(scope="module")
def seeds(fitted):
    a = fitted["clean"][5]
    return [encode(a, "PNG"), encode(a, "JPEG"), encode(a, "WEBP")]


def _mutate(data: bytes, edits: list[tuple[int, int]], cut: int | None) -> bytes:
    b = bytearray(data)
    for pos, val in edits:
        b[pos % len(b)] = val
    return bytes(b[:cut] if cut is not None else b)


def _check_no_500(r) -> None:
    assert r.status_code < 500, (r.status_code, r.text)
    assert r.headers["content-type"].startswith("application/json")
    body = r.json()
    if r.status_code >= 400:
        assert set(body) == {"error", "detail"}
    else:
        assert body["results"] and all(x["verdict"] in ("clean", "adversarial") for x in body["results"])


@hypothesis.given(
    body=st.one_of(st.binary(max_size=600), st.integers(0, 2), st.text(max_size=200).map(str.encode)),
    ctype=st.one_of(
        st.sampled_from(CONTENT_TYPES),
        st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=60).map(str.strip),
    ),
    edits=st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)), max_size=6),
    cut=st.none() | st.integers(0, 4000),
)
def test_fuzzed_raw_bodies_never_get_a_500(client, seeds, body, ctype, edits, cut):
    data = _mutate(seeds[body], edits, cut) if isinstance(body, int) else body
    _check_no_500(client.post("/v1/classify", content=data, headers={"Content-Type": ctype}))


_part = st.tuples(
    st.sampled_from(["images", "file", "", 'we"ird', "x" * 300]),
    st.none() | st.text(max_size=40),
    st.none() | st.sampled_from(["image/png", "image/jpeg", "application/octet-stream", "text/plain", "image/gif", ""]),
    st.one_of(st.integers(0, 2), st.binary(max_size=300)),
    st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)), max_size=4),
)


@hypothesis.given(
    parts=st.lists(_part, max_size=6),
    boundary=st.sampled_from(["advguard-test-boundary", "b", "x" * 70]),
    declared=st.sampled_from(["same", "other", "none"]),
    cut=st.none() | st.integers(0, 3000),
    junk=st.binary(max_size=20),
)
def test_fuzzed_multipart_bodies_never_get_a_500(client, seeds, parts, boundary, declared, cut, junk):
    built = []
    for name, filename, ctype, data, edits in parts:
        raw = _mutate(seeds[data], edits, None) if isinstance(data, int) else data
        fn = None if filename is None else filename.replace('"', "").replace("\r", "").replace("\n", "")
        built.append((name.replace('"', ""), fn, ctype, raw))
    body = junk + multipart(built, boundary)
    body = body[:cut] if cut is not None else body
    header = {
        "same": f"multipart/form-data; boundary={boundary}",
        "other": "multipart/form-data; boundary=zzz",
        "none": "multipart/form-data",
    }
    _check_no_500(client.post("/v1/classify", content=body, headers={"Content-Type": header[declared]}))


# ---------------------------------------------------------------------- the batcher, unexpected errors, the CLI
def test_batcher_batches_splits_refuses_and_skips_abandoned_requests():
    from advguard.service.batcher import MicroBatcher, QueueFullError

    async def scenario(batching: bool):
        sizes: list[int] = []
        seen: list[float] = []

        def fn(x):
            sizes.append(len(x))
            seen.extend(x[:, 0].tolist())
            time.sleep(0.02)
            return [float(v) for v in x[:, 0]]

        b = MicroBatcher(fn, max_batch=4, max_wait_s=0.05, batching=batching, max_queue=12)
        await b.start()
        reqs = [np.arange(k, dtype=np.float32)[:, None] + 10 * i for i, k in enumerate([1, 2, 3, 6])]
        got = await asyncio.gather(*(b.submit(r) for r in reqs))
        assert got == [[float(v) for v in r[:, 0]] for r in reqs]  # every request gets its own answers, in order
        with pytest.raises(QueueFullError):
            await asyncio.gather(*(b.submit(np.zeros((5, 1), np.float32)) for _ in range(3)))
        await asyncio.sleep(0.3)  # let what was queued drain
        first = asyncio.ensure_future(b.submit(np.zeros((4, 1), np.float32)))
        abandoned = asyncio.ensure_future(b.submit(np.full((4, 1), 777.0, np.float32)))
        await asyncio.sleep(0)  # both are queued; the caller of the second gives up before it runs
        abandoned.cancel()
        assert await first == [0.0] * 4
        await asyncio.sleep(0.2)
        await b.close()
        assert 777.0 not in seen  # the abandoned request never reached the model
        return sizes

    batched = asyncio.run(scenario(True))
    assert max(batched) == 4 and batched[:3] == [4, 4, 4]  # 12 images of 4 requests in full batches of 4
    unbatched = asyncio.run(scenario(False))
    assert unbatched[:5] == [1, 2, 3, 4, 2]  # one request per call, the 6-image one split at max_batch


def test_batcher_workers_run_batches_at_once_each_function_in_one_thread_at_a_time():
    """Two workers: two batches run at the same time, each worker's function is never entered twice at once (each
    has its own guard copy in the service), and every request still gets its own answers in order."""
    import threading

    from advguard.service.batcher import MicroBatcher

    lock = threading.Lock()
    active = {0: 0, 1: 0}
    state = {"most_at_once": 0, "reentered": False}

    def make(w):
        def fn(x):
            with lock:
                active[w] += 1
                state["reentered"] |= active[w] > 1
                state["most_at_once"] = max(state["most_at_once"], sum(active.values()))
            time.sleep(0.05)
            with lock:
                active[w] -= 1
            return [float(v) for v in x.reshape(len(x), -1)[:, 0]]

        return fn

    async def scenario():
        b = MicroBatcher([make(0), make(1)], max_batch=4, max_wait_s=0.001, max_queue=64)
        assert b.workers == 2
        await b.start()
        assert await b.run_now(np.ones((2, 1), np.float32)) == [1.0, 1.0]  # the warm-up runs on every worker
        reqs = [np.arange(k, dtype=np.float32)[:, None] + 10 * i for i, k in enumerate([3, 4, 2, 4, 1, 4, 4, 2])]
        got = await asyncio.gather(*(b.submit(r) for r in reqs))
        assert got == [[float(v) for v in r[:, 0]] for r in reqs]
        # images of different sizes (a model without a fixed input size) never share a batch: both are answered
        mixed = [np.full((1, 1, 4, 4), 1.0, np.float32), np.full((2, 1, 5, 5), 2.0, np.float32)]
        assert await asyncio.wait_for(asyncio.gather(*(b.submit(m) for m in mixed)), 10) == [[1.0], [2.0, 2.0]]
        await b.close()

    asyncio.run(scenario())
    assert state["most_at_once"] == 2 and not state["reentered"]
    with pytest.raises(ValueError, match="one per worker"):
        MicroBatcher([], max_batch=4)


def test_two_service_workers_answer_as_the_guard_does(fitted, ref):
    """--workers 2: the second worker runs on a deep copy of the guard; concurrent clients get the answers of
    sequential calls (label and verdict equal, scores within float32 rounding)."""
    settings = ServiceSettings(max_batch=MAX_BATCH, max_wait_ms=5, workers=2)
    work, together, alone = _together_and_alone(fitted, settings, 24)
    for (images, names), a, b in zip(work, together, alone, strict=True):
        assert b == direct(ref, images, names)
        for x, y in zip(a, b, strict=True):
            assert_same_answer(x, y)
    with pytest.raises(ParameterError, match="workers"):
        ServiceSettings(workers=0)


class _Flaky(Guard):
    """A guard that raises or stalls on demand (after the start-up warm-up)."""

    mode = "ok"

    def __call__(self, x):
        if self.mode == "raise":
            raise RuntimeError("boom")
        if self.mode == "slow":
            time.sleep(1.5)
        return super().__call__(x)


def test_an_unexpected_error_is_a_logged_500_json_and_a_stall_a_504(fitted, caplog):
    from fastapi.testclient import TestClient

    guard = Guard.load(fitted["path"], load_model("cifar10-cnn"))
    guard.__class__ = _Flaky
    app = create_app(guard, ServiceSettings(max_batch=2, timeout=0.5))
    png = encode(fitted["clean"][0])
    with TestClient(app, raise_server_exceptions=False) as c:
        assert c.post("/v1/classify", content=png, headers={"Content-Type": "image/png"}).status_code == 200
        guard.mode = "raise"
        with caplog.at_level("ERROR", logger="advguard.service"):
            r = c.post("/v1/classify", content=png, headers={"Content-Type": "image/png"})
        assert_error(r, 500, "internal_error")
        assert "boom" not in r.text and any("unexpected error" in m for m in caplog.messages)
        guard.mode = "slow"
        r = c.post("/v1/classify", content=png, headers={"Content-Type": "image/png"})
        assert_error(r, 504, "timeout")
        guard.mode = "ok"


def test_advguard_serve_runs_from_the_command_line(fitted, tmp_path):
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    token_file.chmod(0o600)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    cmd = [sys.executable, "-m", "advguard.cli", "serve", "--guard", str(fitted["path"]), "--port", str(port)]
    proc = subprocess.Popen(
        cmd + ["--token-file", str(token_file), "--max-batch", "4"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.2)
        png = encode(fitted["clean"][2])
        r = httpx.post(f"{url}/v1/classify", content=png, headers={"Content-Type": "image/png", **AUTH}, timeout=60)
        assert r.status_code == 200 and r.json()["model"] == "cifar10-cnn"  # the model named by the guard file
        assert httpx.post(f"{url}/v1/classify", content=png, headers={"Content-Type": "image/png"}).status_code == 401
    finally:
        proc.terminate()
        out = proc.communicate(timeout=30)[0].decode()
    # uvicorn shuts down gracefully on SIGTERM, then re-raises the signal (exit status -15)
    assert proc.returncode in (0, -signal.SIGTERM), out
    assert f"http://127.0.0.1:{port}/" in out and "guard warmed up" in out and "Application shutdown complete" in out


def test_serve_without_the_extra_names_the_install(fitted, monkeypatch, capsys):
    from advguard.cli import main

    monkeypatch.setitem(sys.modules, "fastapi", None)
    assert main(["serve", "--guard", str(fitted["path"])]) == 2
    err = capsys.readouterr().err
    assert "pip install 'advguard[serve]'" in err and "missing: fastapi" in err


# ---------------------------------------------------------------------- the web page in a real browser
@pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian's chromium is not installed (scripts/install.sh installs it)")
def test_the_web_page_shows_label_verdict_and_the_region(fitted, ref, server, tmp_path):
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright (test extra) is not installed")
    from advguard.data.cifar10 import CLASSES

    clean = fitted["clean"][0]
    r_clean = ref(clean.transpose(2, 0, 1)[None] / 255)[0]
    assert r_clean.verdict == "clean", "the first clean test image should pass the guard"
    results = ref(fitted["adv"].transpose(0, 3, 1, 2) / 255)
    i = next(i for i, r in enumerate(results) if r.verdict == "adversarial" and r.explanations["taintradar"]["region"])
    files = {"clean.png": (clean, r_clean), "fgsm.png": (fitted["adv"][i], results[i])}
    for name, (img, _) in files.items():
        (tmp_path / name).write_bytes(encode(img))
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), headless=True)
        try:
            page = browser.new_page()
            page.goto(server.url + "/")
            page.set_input_files("#file", str(tmp_path / "fgsm.png"))  # no token yet: refused, and said so
            page.wait_for_selector("#error:not([hidden])", timeout=30_000)
            assert "401 unauthorized" in page.inner_text("#error")
            page.fill("#token", TOKEN)
            for name, (_, want) in files.items():
                page.evaluate("document.getElementById('verdict').textContent = ''")
                page.set_input_files("#file", str(tmp_path / name))
                page.wait_for_function("document.getElementById('verdict').textContent !== ''", timeout=30_000)
                assert page.inner_text("#verdict") == want.verdict
                assert page.inner_text("#label") == f"{CLASSES[want.label]} ({want.label})"
                drawn = page.get_attribute("#overlay", "data-drawn")
                # the image as the model saw it: an opaque pixel in the middle of the 256x256 canvas
                alpha = page.evaluate(
                    "document.getElementById('overlay').getContext('2d').getImageData(128, 128, 1, 1).data[3]"
                )
                assert alpha == 255
                assert page.get_attribute("#scores", "data-drawn") == "3"  # one bar per detector
                if want.verdict == "clean":
                    assert drawn == "image"
                else:
                    top, left, bottom, right = want.explanations["taintradar"]["region"]
                    assert drawn == "heatmap+region"  # the Grad-CAM map under TaintRadar's box
                    assert "grad-cam" in page.inner_text("#caption")
                    x, y = round(left * 8), round((top + bottom) / 2 * 8)  # the box's left edge, stroked in red
                    rgba = page.evaluate(f"Array.from({PIXEL}({x}, {y}, 1, 1).data)")
                    assert rgba[0] > 200 and rgba[1] < 90 and rgba[2] < 90, rgba
        finally:
            browser.close()
