"""The service's refusals: one exception type carrying the HTTP status, a short error code and a detail, answered
as the JSON body ``{"error": code, "detail": text}`` by the app's exception handler."""

from __future__ import annotations


class ServiceError(Exception):
    """A request refused with ``status`` (and ``headers``, e.g. ``WWW-Authenticate`` or ``Retry-After``)."""

    def __init__(self, status: int, error: str, detail: str, headers: dict[str, str] | None = None):
        super().__init__(f"{status} {error}: {detail}")
        self.status = status
        self.error = error
        self.detail = detail
        self.headers = headers or {}


def bad_request(detail: str) -> ServiceError:
    """400: the request is malformed (no image in it, a broken multipart body)."""
    return ServiceError(400, "bad_request", detail)


def too_large(error: str, detail: str) -> ServiceError:
    """413: more than the service accepts (body bytes, images per request, pixels per image)."""
    return ServiceError(413, error, detail)


def unsupported(detail: str) -> ServiceError:
    """415: not a PNG, JPEG or WebP image (by the declared media type or by the bytes themselves)."""
    return ServiceError(415, "unsupported_media_type", detail)


def unprocessable(detail: str) -> ServiceError:
    """422: an image of an accepted format that cannot be read correctly (truncated, corrupt) or has a size the
    model does not take (and no resize policy is set)."""
    return ServiceError(422, "unreadable_image", detail)
