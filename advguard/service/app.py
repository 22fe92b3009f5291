"""The FastAPI application: routes, bearer token, JSON errors, the start-up warm-up.

``POST /v1/classify`` answers ``{"model": ..., "results": [...]}`` with one entry per image exactly as
``advguard detect`` prints it (:meth:`advguard.GuardResult.to_record`). ``GET /healthz`` (the process answers),
``GET /readyz`` (the guard is loaded and warmed up: 503 until then), ``GET /metrics`` (Prometheus), ``GET /v1/info``
(the model, its input, the detectors, the limits), ``GET /`` (the web page), ``/docs`` and ``/openapi.json``.
With a token, ``/v1/*`` and ``/metrics`` need ``Authorization: Bearer TOKEN`` (compared in constant time; 401 with
``WWW-Authenticate: Bearer`` otherwise); the health checks, the page and the API description stay open.

Every refusal is a JSON body ``{"error": code, "detail": text}`` with its status (the statuses of
:mod:`advguard.service.limits`; 401; 503 ``overloaded`` when the queue is full; 504 ``timeout`` when the guard
has not answered within the request timeout). Anything unexpected is logged with its traceback and answered 500
``internal_error``.
"""

from __future__ import annotations

import asyncio
import copy
import hmac
import json
import logging
import math
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any, Literal

import numpy as np
from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..data.imageio import _DECODE_LOCK
from ..guard import Guard, GuardResult
from ..images import ImageInfo
from . import limits
from .batcher import BatcherClosedError, MicroBatcher, QueueFullError
from .errors import ServiceError
from .metrics import Metrics, MetricsMiddleware
from .settings import MEDIA_TYPES, ServiceSettings

log = logging.getLogger("advguard.service")
#: Request bodies up to this many image bytes are decoded on the event loop (no thread hand-off); larger ones in a
#: worker thread.
INLINE_DECODE_BYTES = 64 * 1024


# ---------------------------------------------------------------------- OpenAPI models (documentation of the JSON)
class ErrorBody(BaseModel):
    """Every refusal's body."""

    error: str = Field(description="a short code: bad_request, unauthorized, body_too_large, too_many_images, ...")
    detail: str = Field(description="what was wrong, in words")


class DetectorScore(BaseModel):
    score: float
    threshold: float | None = Field(description="None: the detector never flags alone")
    flags: bool | None = Field(description="whether this detector's score is over its threshold (combine='any')")


class ImageAnswer(BaseModel):
    """One image's answer, exactly as ``advguard detect`` prints it."""

    path: str = Field(description="the file part's file name, '-' for a raw body")
    label: int
    probability: float
    verdict: Literal["clean", "adversarial", "corrected"]
    score: float
    threshold: float
    detectors: dict[str, DetectorScore]
    corrected_label: int | None
    explanations: dict[str, Any] = Field(description="per detector that has one, e.g. TaintRadar's region box")
    resized_from: list[int] | None = Field(description="(H, W) before the resize policy changed the image")


class ClassifyResponse(BaseModel):
    model: str
    results: list[ImageAnswer]


_ERRORS: dict[int | str, dict[str, Any]] = {
    s: {"model": ErrorBody, "description": d}
    for s, d in {
        400: "malformed request (no image, broken multipart body)",
        401: "missing or wrong bearer token",
        408: "the body was not received within the read timeout",
        413: "body, images per request or pixels per image over the limit",
        415: "not multipart or a PNG / JPEG / WebP image",
        422: "an image that cannot be read correctly, or of a size the model does not take",
        503: "overloaded (the queue is full) or not ready",
        504: "the guard did not answer within the request timeout",
    }.items()
}

_IMAGE_BODY = {"schema": {"type": "string", "format": "binary"}}
_CLASSIFY_BODY = {
    "requestBody": {
        "required": True,
        "description": "several images as file parts of a multipart form, or one image as the raw body",
        "content": {
            limits.MULTIPART: {
                "schema": {
                    "type": "object",
                    "properties": {"images": {"type": "array", "items": {"type": "string", "format": "binary"}}},
                }
            },
            **{t: _IMAGE_BODY for t in MEDIA_TYPES},
        },
    }
}


def _json(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    """Strict JSON (no NaN / Infinity: the guard's answers already map them to null)."""
    return Response(
        json.dumps(data, allow_nan=False, separators=(",", ":")).encode(),
        status_code=status,
        media_type="application/json",
        headers=headers,
    )


def warm_up_images(guard: Guard, n: int) -> np.ndarray:
    """``n`` seeded noise images of the model's input size (the start-up warm-up batch)."""
    clf = guard.classifier
    h, w = clf.size or (32, 32)
    return np.random.default_rng(0).random((n, clf.channels, h, w), dtype=np.float32)


def create_app(
    guard: Guard,
    settings: ServiceSettings | None = None,
    *,
    model: str | None = None,
    class_names: Sequence[str] | None = None,
) -> FastAPI:
    """The service in front of a fitted ``guard``. ``model``: the name answered (default: the classifier's);
    ``class_names``: label names shown by the web page."""
    guard._check_fitted()
    settings = settings or ServiceSettings()
    clf = guard.classifier
    model_name = model or clf.name
    metrics = Metrics()

    # one guard per worker: the first is the caller's, the others deep copies (own model, hooks and counters)
    guards = [guard] + [copy.deepcopy(guard) for _ in range(settings.workers - 1)]
    batcher: MicroBatcher[GuardResult] = MicroBatcher(
        guards,
        max_batch=settings.max_batch,
        max_wait_s=settings.max_wait_ms / 1000,
        batching=settings.batching,
        pad=settings.pad_batches,
        max_queue=settings.max_queue,
        on_batch=metrics.observe_batch,
    )
    metrics.queued.set_function(lambda: batcher.queued)
    state = {"ready": False}

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await batcher.start()
        try:
            t = time.perf_counter()
            await batcher.run_now(warm_up_images(guard, settings.max_batch))
            log.info("guard warmed up on %d images in %.2f s", settings.max_batch, time.perf_counter() - t)
            state["ready"] = True
            metrics.ready.set(1)
            yield
        finally:
            state["ready"] = False
            metrics.ready.set(0)
            await batcher.close()

    app = FastAPI(
        title="advguard",
        summary="A guard in front of an image classifier: label, verdict (clean / adversarial) and why",
        version=_version(),
        lifespan=lifespan,
    )
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    app.state.settings = settings
    app.state.metrics = metrics
    app.state.batcher = batcher
    app.state.guard = guard

    # ------------------------------------------------------------------ errors
    def refusal(status: int, error: str, detail: str, headers: dict[str, str] | None = None) -> Response:
        metrics.refusals.labels(error).inc()
        return _json({"error": error, "detail": detail}, status, headers)

    @app.exception_handler(ServiceError)
    async def service_error(request: Request, exc: ServiceError) -> Response:
        return refusal(exc.status, exc.error, exc.detail, exc.headers)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        from http import HTTPStatus

        try:
            code = HTTPStatus(exc.status_code).phrase.lower().replace(" ", "_").replace("-", "_")
        except ValueError:
            code = "http_error"
        return refusal(exc.status_code, code, str(exc.detail), dict(exc.headers or {}))

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> Response:
        return refusal(422, "invalid_request", str(exc.errors()))

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> Response:
        log.error("unexpected error on %s %s", request.method, request.url.path, exc_info=exc)
        return refusal(500, "internal_error", f"{type(exc).__name__} (logged by the service)")

    # ------------------------------------------------------------------ access
    bearer = HTTPBearer(auto_error=False, description="the token of the service's --token-file")
    challenge = {"WWW-Authenticate": 'Bearer realm="advguard"'}

    async def require_token(creds: HTTPAuthorizationCredentials | None = Depends(bearer)) -> None:  # noqa: B008
        token = settings.token
        assert token is not None
        if creds is None:
            raise ServiceError(401, "unauthorized", "send Authorization: Bearer <token>", challenge)
        if not hmac.compare_digest(creds.credentials.encode("utf-8"), token.encode("utf-8")):
            raise ServiceError(
                401,
                "unauthorized",
                "the bearer token is wrong",
                {"WWW-Authenticate": 'Bearer realm="advguard", error="invalid_token"'},
            )

    guarded = [Depends(require_token)] if settings.token is not None else []

    # ------------------------------------------------------------------ routes
    @app.get("/healthz", tags=["health"], summary="the process answers")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get(
        "/readyz",
        tags=["health"],
        summary="the guard is loaded and warmed up",
        responses={503: {"model": ErrorBody, "description": "not ready yet"}},
    )
    async def readyz() -> Response:
        if not state["ready"]:
            return refusal(503, "not_ready", "the guard is loading or warming up", {"Retry-After": "1"})
        return _json({"status": "ready", "model": model_name, "detectors": guard.names})

    @app.get(
        "/metrics",
        tags=["health"],
        summary="Prometheus metrics",
        dependencies=guarded,
        response_class=Response,
        responses={200: {"content": {"text/plain": {}}}, 401: _ERRORS[401]},
    )
    async def metrics_page() -> Response:
        body, kind = metrics.render()
        return Response(body, media_type=kind)

    @app.get(
        "/v1/info",
        tags=["guard"],
        summary="the model, its input, the detectors and the limits",
        dependencies=guarded,
        responses={401: _ERRORS[401]},
    )
    async def info() -> dict[str, Any]:
        return {
            "model": model_name,
            "input": {"channels": clf.channels, "size": list(clf.size) if clf.size else None},
            "classes": list(class_names) if class_names is not None else None,
            "guard": {
                "combine": guard.combine,
                "fpr": guard.fpr,
                "threshold_rule": guard.threshold_rule,
                "expected_fpr": None if math.isnan(expected := guard.expected_fpr()) else expected,
                "detectors": guard.names,
            },
            "accepts": [limits.MULTIPART, *MEDIA_TYPES],
            "limits": {
                "max_body_bytes": settings.max_body_bytes,
                "max_images": settings.max_images,
                "max_pixels": settings.max_pixels,
                "resize": settings.resize,
                "read_timeout_s": settings.read_timeout,
                "timeout_s": settings.timeout,
            },
            "batching": {
                "enabled": settings.batching,
                "max_batch": settings.max_batch,
                "max_wait_ms": settings.max_wait_ms,
                "pad_batches": settings.pad_batches,
            },
        }

    @app.post(
        "/v1/classify",
        tags=["guard"],
        summary="label and verdict for one or several images",
        dependencies=guarded,
        response_model=None,
        responses={200: {"model": ClassifyResponse}, **_ERRORS},
        openapi_extra=_CLASSIFY_BODY,
    )
    async def classify(request: Request) -> Response:
        """Several images as file parts of a ``multipart/form-data`` body, or one image as the raw body
        (``Content-Type: image/png``, ``image/jpeg`` or ``image/webp``). The answer holds one result per image, in
        order, exactly as ``advguard detect`` prints it."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + settings.timeout
        kind, params = limits.media_type(request.headers.get("content-type"))
        limits.check_media_type(kind)
        body = await limits.read_body(request, settings, min(settings.read_timeout, settings.timeout))
        ups = limits.uploads(kind, params, body, settings)
        del body

        def decode() -> list[tuple[np.ndarray, ImageInfo]]:
            return [limits.decode_upload(u, i, clf.size, clf.channels, settings) for i, u in enumerate(ups)]

        # small uploads (a CIFAR-sized PNG decodes in ~0.1 ms) are decoded on the event loop when no other decode holds
        # the decoder's lock (the loop never waits for it); larger ones in a thread, so a big photo never holds the loop
        if sum(len(u.data) for u in ups) <= INLINE_DECODE_BYTES and _DECODE_LOCK.acquire(blocking=False):
            try:
                decoded = decode()
            finally:
                _DECODE_LOCK.release()
        else:
            decoded = await run_in_threadpool(decode)
        x = np.stack([a for a, _ in decoded])
        try:
            results = await asyncio.wait_for(batcher.submit(x), max(0.0, deadline - loop.time()))
        except asyncio.TimeoutError:
            raise ServiceError(
                504, "timeout", f"the guard did not answer within {settings.timeout:g} s", {"Retry-After": "1"}
            ) from None
        except QueueFullError as e:
            raise ServiceError(503, "overloaded", str(e), {"Retry-After": "1"}) from None
        except BatcherClosedError as e:
            raise ServiceError(503, "shutting_down", str(e)) from None
        records = []
        for u, (_, info), r in zip(ups, decoded, results, strict=True):
            metrics.images.labels(r.verdict).inc()
            records.append(r.to_record(u.name, info.original_size if info.resized else None))
        return _json({"model": model_name, "results": records})

    html: list[str] = []

    @app.get("/", include_in_schema=False)
    async def page() -> HTMLResponse:
        if not html:
            from .page import render_page

            html.append(render_page(guard, settings, model_name, class_names))
        return HTMLResponse(html[0])

    return app


def _version() -> str:
    from .. import __version__

    return __version__
