"""Prometheus metrics of one service (its own registry, so that two apps in one process never mix counts) and the
ASGI middleware that counts and times every request by route template and status."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

#: Seconds buckets of the request latency histogram.
LATENCY_BUCKETS = (0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
#: Images-per-Guard-call buckets.
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)


class Metrics:
    """The service's counters: requests by route and status, request latency, images by verdict, refusals by error
    code, Guard calls (images per call and seconds), images queued, readiness."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "advguard_http_requests", "HTTP requests answered, by route and status", ["route", "status"], registry=r
        )
        self.latency = Histogram(
            "advguard_http_request_seconds",
            "Seconds from request to response, by route",
            ["route"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.images = Counter("advguard_images", "Images answered, by verdict", ["verdict"], registry=r)
        self.refusals = Counter("advguard_refusals", "Requests refused, by error code", ["error"], registry=r)
        self.batch_size = Histogram(
            "advguard_batch_size", "Images per Guard call (padding included)", buckets=BATCH_BUCKETS, registry=r
        )
        self.batch_seconds = Histogram(
            "advguard_batch_seconds", "Seconds per Guard call", buckets=LATENCY_BUCKETS, registry=r
        )
        self.queued = Gauge("advguard_queued_images", "Images waiting for the model", registry=r)
        self.ready = Gauge("advguard_ready", "1 once the guard is loaded and warmed up", registry=r)

    def observe_batch(self, size: int, seconds: float) -> None:
        """One Guard call (called from the worker thread; prometheus_client's metrics are thread-safe)."""
        self.batch_size.observe(size)
        self.batch_seconds.observe(seconds)

    def render(self) -> tuple[bytes, str]:
        """The Prometheus text exposition and its content type."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST


ASGIApp = Callable[..., Any]


class MetricsMiddleware:
    """Pure ASGI middleware: counts and times every HTTP request under its route template (``/v1/classify``; a
    path that matched no route counts as ``unmatched``, so random paths cannot grow the label set)."""

    def __init__(self, app: ASGIApp, metrics: Metrics):
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: dict[str, Any], receive: ASGIApp, send: ASGIApp) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = {"code": 500}

        async def send_status(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                status["code"] = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            route = getattr(scope.get("route"), "path", None) or "unmatched"
            self.metrics.requests.labels(route, str(status["code"])).inc()
            self.metrics.latency.labels(route).observe(time.perf_counter() - start)
