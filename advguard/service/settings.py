"""The service's options in one checked object: what ``advguard serve``'s flags set and :func:`create_app` takes."""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import ParameterError, ParameterTypeError

#: Image formats the service accepts, by media type (Pillow's format names).
MEDIA_TYPES = {"image/png": "PNG", "image/jpeg": "JPEG", "image/webp": "WEBP"}


@dataclass(frozen=True)
class ServiceSettings:
    """Limits, batching and access of one service; every field is checked when the object is made.

    ``token``: the bearer token ``/v1/*`` and ``/metrics`` require (None: open). ``max_batch``: the most images in
    one Guard call; ``max_wait_ms``: how long the first waiting image waits for others to fill a batch;
    ``batching``: False runs one request per call (never mixing requests); ``pad_batches``: every Guard call gets
    exactly ``max_batch`` images (padded with copies of the last one), so the backend's batch-size dependent
    kernels see one shape and an answer is bit-for-bit independent of its batch-mates (at the cost of a full batch
    per call at low load). ``workers``: Guard calls that can run at once, each on its own copy of the guard (the
    copies share nothing; :func:`~advguard.service.server.serve` splits torch's threads among them). ``max_queue``:
    images waiting for the model before requests are refused (503).
    ``max_body_bytes``, ``max_images`` (per request), ``max_pixels`` (per image, from the header, before
    decoding): the request limits (413). ``read_timeout``: seconds to receive a request's body (408);
    ``timeout``: seconds for the whole request (504). ``resize``: the policy for images of another size than the
    model's (None: refuse them, 422; ``"resize"`` / ``"center-crop"``: as ``advguard detect --resize``).
    """

    token: str | None = None
    max_batch: int = 32
    max_wait_ms: float = 5.0
    batching: bool = True
    pad_batches: bool = False
    workers: int = 1
    max_queue: int = 1024
    max_body_bytes: int = 16 * 2**20
    max_images: int = 32
    max_pixels: int = 16_000_000
    read_timeout: float = 10.0
    timeout: float = 30.0
    resize: str | None = None

    def __post_init__(self) -> None:
        from ..validation import check_number  # imports torch: not at module level (the CLI's parser reads this)

        w = "ServiceSettings"
        if self.token is not None and (not isinstance(self.token, str) or not self.token.strip()):
            raise ParameterError(f"{w}: token must be a non-empty string or None")
        if self.token is not None and any(c.isspace() or not c.isprintable() for c in self.token):
            raise ParameterError(f"{w}: token must be printable characters without whitespace")
        check_number("max_batch", self.max_batch, lo=1, hi=4096, integer=True, where=w)
        check_number("max_wait_ms", self.max_wait_ms, lo=0, hi=10_000, where=w)
        check_number("workers", self.workers, lo=1, hi=64, integer=True, where=w)
        check_number("max_queue", self.max_queue, lo=1, integer=True, where=w)
        check_number("max_body_bytes", self.max_body_bytes, lo=1, integer=True, where=w)
        check_number("max_images", self.max_images, lo=1, hi=100_000, integer=True, where=w)
        check_number("max_pixels", self.max_pixels, lo=1, integer=True, where=w)
        check_number("read_timeout", self.read_timeout, lo=0, lo_open=True, where=w)
        check_number("timeout", self.timeout, lo=0, lo_open=True, where=w)
        for name in ("batching", "pad_batches"):
            if not isinstance(getattr(self, name), bool):
                raise ParameterTypeError(f"{w}: {name} must be True or False")
        if self.max_queue < self.max_images:
            raise ParameterError(
                f"{w}: max_queue ({self.max_queue}) must be at least max_images ({self.max_images}): "
                "a request with the most images allowed must fit in an empty queue"
            )
        from ..images import _check_policy

        _check_policy(self.resize)
