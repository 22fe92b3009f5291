"""What ``POST /v1/classify`` accepts, checked in the order that spends the least on a bad request.

1. The media type, before the body is read: ``multipart/form-data`` (one image per file part) or one raw image
   (``image/png``, ``image/jpeg``, ``image/webp``); anything else is 415.
2. The body size: a declared ``Content-Length`` over the limit is refused before reading (413), and the bytes
   actually received are counted while streaming (a chunked or lying body is cut off at the limit, 413). A body
   not received within the read timeout is 408.
3. The multipart structure (400 when malformed, 413 over the images-per-request limit; parts that carry neither a
   file name nor an image media type are form fields and are ignored), each file part's declared media type (415).
4. Each image: its first bytes must be a PNG, JPEG or WebP signature (415), its pixel count, read from the header
   before anything is decoded, within the limit (413: decompression bombs), then it is decoded and sized exactly
   as ``advguard detect`` reads a file (:func:`advguard.images.decode_image`); an image that cannot be read
   correctly (truncated, corrupt) or has another size than the model's without a resize policy is 422.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import ClientDisconnect, Request

from ..errors import ImageTooLargeError, InputError
from ..images import ImageInfo, decode_image
from .errors import ServiceError, bad_request, too_large, unprocessable, unsupported
from .settings import MEDIA_TYPES, ServiceSettings

MULTIPART = "multipart/form-data"
#: Media types a multipart file part may declare besides the image types (what curl and browsers send for a file
#: whose type they do not know); the bytes decide.
GENERIC_PART_TYPES = ("application/octet-stream", "")
#: Parts beyond the image limit that a multipart body may carry (form fields) before it is refused.
EXTRA_FIELDS = 16
_MAX_NAME = 200


@dataclass(frozen=True)
class Upload:
    """One image of a request: the name it answers under (the file part's file name, ``-`` for a raw body), its
    bytes, and the media type the client declared for it."""

    name: str
    data: bytes
    declared: str


@dataclass
class _Part:
    headers: dict[str, bytes] = field(default_factory=dict)
    data: bytearray = field(default_factory=bytearray)


def media_type(header: str | None) -> tuple[str, dict[str, str]]:
    """``Content-Type`` split into the lower-case media type and its parameters."""
    if not header:
        return "", {}
    kind, params = parse_options_header(header)
    return (
        kind.decode("latin-1").strip().lower(),
        {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in params.items()},
    )


def check_media_type(kind: str) -> None:
    """415 unless the request is multipart or one accepted image type."""
    if kind != MULTIPART and kind not in MEDIA_TYPES:
        got = f"Content-Type {kind!r}" if kind else "no Content-Type"
        raise unsupported(
            f"{got}: send {MULTIPART} (one image per file part) or one raw image as {', '.join(MEDIA_TYPES)}"
        )


async def read_body(request: Request, settings: ServiceSettings, timeout: float) -> bytes:
    """The request body, at most ``settings.max_body_bytes`` (413), received within ``timeout`` seconds (408)."""
    limit = settings.max_body_bytes
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.strip().isdigit():
            raise bad_request(f"Content-Length {declared!r} is not a number of bytes")
        if int(declared) > limit:
            raise too_large("body_too_large", f"the body is {int(declared):,} bytes; the limit is {limit:,}")
    chunks: list[bytes] = []
    received = 0

    async def read() -> None:
        nonlocal received
        async for chunk in request.stream():
            received += len(chunk)
            if received > limit:
                raise too_large("body_too_large", f"the body exceeds the limit of {limit:,} bytes")
            chunks.append(chunk)

    try:
        await asyncio.wait_for(read(), timeout)
    except asyncio.TimeoutError:
        raise ServiceError(
            408,
            "request_timeout",
            f"the body was not received within {timeout:g} s ({received:,} bytes arrived)",
            {"Connection": "close"},
        ) from None
    except ClientDisconnect:
        raise bad_request("the client disconnected before sending the whole body") from None
    return b"".join(chunks)


def _clean_name(raw: bytes | str) -> str:
    name = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw
    name = "".join(c if c.isprintable() else "?" for c in name)
    return name[:_MAX_NAME] or "-"


def parse_multipart(body: bytes, boundary: str, max_parts: int) -> list[_Part]:
    """The parts of a ``multipart/form-data`` body (held in memory, already size-checked): 400 when malformed or
    unterminated, 413 beyond ``max_parts`` parts."""
    if not boundary or len(boundary) > 70:
        raise bad_request("multipart/form-data needs a boundary parameter of 1 to 70 characters")
    parts: list[_Part] = []
    cur = _Part()
    name, value = bytearray(), bytearray()
    ended = False

    def on_part_begin() -> None:
        nonlocal cur
        cur = _Part()

    def on_part_data(data: bytes, start: int, end: int) -> None:
        cur.data += data[start:end]

    def on_part_end() -> None:
        parts.append(cur)
        if len(parts) > max_parts:
            raise too_large("too_many_parts", f"the body has more than {max_parts} parts")

    def on_header_field(data: bytes, start: int, end: int) -> None:
        name.extend(data[start:end])

    def on_header_value(data: bytes, start: int, end: int) -> None:
        value.extend(data[start:end])

    def on_header_end() -> None:
        cur.headers[name.decode("latin-1").lower()] = bytes(value)
        name.clear()
        value.clear()

    def on_end() -> None:
        nonlocal ended
        ended = True

    callbacks = {
        "on_part_begin": on_part_begin,
        "on_part_data": on_part_data,
        "on_part_end": on_part_end,
        "on_header_field": on_header_field,
        "on_header_value": on_header_value,
        "on_header_end": on_header_end,
        "on_end": on_end,
    }
    try:
        parser = MultipartParser(boundary.encode("latin-1"), callbacks)  # type: ignore[arg-type]
        parser.write(body)
        parser.finalize()
    except MultipartParseError as e:
        raise bad_request(f"malformed multipart body: {e}") from None
    except (UnicodeEncodeError, ValueError) as e:
        raise bad_request(f"malformed multipart body: {type(e).__name__}: {e}") from None
    if not ended:
        raise bad_request("the multipart body ends before its closing boundary")
    return parts


def uploads_from_multipart(body: bytes, params: Mapping[str, str], settings: ServiceSettings) -> list[Upload]:
    """The file parts of a multipart body, checked: names, declared media types (415), count (413)."""
    parts = parse_multipart(body, params.get("boundary", ""), settings.max_images + EXTRA_FIELDS)
    out: list[Upload] = []
    for i, part in enumerate(parts, 1):
        disposition = part.headers.get("content-disposition")
        if disposition is None:
            raise bad_request(f"part {i} has no Content-Disposition header")
        kind, opts = parse_options_header(disposition)
        if kind.lower() != b"form-data":
            raise bad_request(f"part {i}: Content-Disposition must be form-data, got {kind.decode('latin-1')!r}")
        declared, _ = media_type(part.headers.get("content-type", b"").decode("latin-1"))
        if b"filename" not in opts and declared not in MEDIA_TYPES:
            continue  # a form field
        name = _clean_name(opts.get(b"filename") or opts.get(b"name") or f"part-{i}")
        if declared not in MEDIA_TYPES and declared not in GENERIC_PART_TYPES:
            raise unsupported(
                f"file part {i} ({name!r}) is declared {declared!r}; accepted: {', '.join(MEDIA_TYPES)} "
                "(or application/octet-stream, decided by the bytes)"
            )
        out.append(Upload(name, bytes(part.data), declared))
        if len(out) > settings.max_images:
            raise too_large("too_many_images", f"more than {settings.max_images} images in one request")
    if not out:
        raise bad_request("the multipart body holds no file part (send each image as a file part)")
    return out


def uploads(kind: str, params: Mapping[str, str], body: bytes, settings: ServiceSettings) -> list[Upload]:
    """The images of a request whose media type passed :func:`check_media_type`."""
    if kind == MULTIPART:
        return uploads_from_multipart(body, params, settings)
    if not body:
        raise bad_request("the body is empty: send the image's bytes")
    return [Upload("-", body, kind)]


def sniff(data: bytes) -> str | None:
    """The Pillow format a PNG, JPEG or WebP file's signature names, else None."""
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "PNG"
    if data.startswith(b"\xff\xd8\xff"):
        return "JPEG"
    if len(data) >= 12 and data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WEBP"
    return None


def decode_upload(
    up: Upload, index: int, size: tuple[int, int] | None, channels: int, settings: ServiceSettings
) -> tuple[np.ndarray, ImageInfo]:
    """One upload as the model's float32 CHW input, or the refusal that fits (415 / 413 / 422)."""
    label = f"{up.name!r} (image {index + 1} of the request)"
    fmt = sniff(up.data)
    if fmt is None:
        raise unsupported(f"{label} is not a PNG, JPEG or WebP image (first bytes {up.data[:8]!r})")
    try:
        return decode_image(
            up.data,
            label,
            size,
            settings.resize,
            channels=channels,
            max_pixels=settings.max_pixels,
            formats=(fmt,),
        )
    except ImageTooLargeError as e:
        raise too_large("too_many_pixels", str(e)) from None
    except InputError as e:
        raise unprocessable(str(e)) from None
