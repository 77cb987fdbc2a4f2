"""Payload and result encoding: JSON by default, raw bytes passed through, pluggable."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

__all__ = [
    "JSON",
    "OCTET_STREAM",
    "Encoded",
    "JsonSerializer",
    "Serializer",
    "encode",
    "media_type",
]

JSON = "application/json"
OCTET_STREAM = "application/octet-stream"


@runtime_checkable
class Serializer(Protocol):
    """Turns Python values into (bytes, content type) and back.

    The broker never parses payloads; the content type travels with the bytes so
    that a consumer in another language knows how to read them.
    """

    def dumps(self, value: Any) -> tuple[bytes, str]:
        """Encode a payload or result; returns the bytes and their content type."""
        ...

    def loads(self, data: bytes, content_type: str) -> Any:
        """Decode bytes that came with `content_type`."""
        ...


class JsonSerializer:
    """JSON for values, `application/octet-stream` for `bytes`; unknown types decode to bytes."""

    def __init__(self, *, default: Any = None) -> None:
        self._encoder = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, default=default)

    def dumps(self, value: Any) -> tuple[bytes, str]:
        """Encode; raises TypeError for values JSON cannot hold."""
        if value is None:  # the usual result of a handler: skip the encoder
            return b"null", JSON
        if isinstance(value, bytes | bytearray | memoryview):
            return bytes(value), OCTET_STREAM
        return self._encoder.encode(value).encode(), JSON

    def loads(self, data: bytes, content_type: str) -> Any:
        """Decode JSON (also `+json` types), text as str, pass other types through as bytes.

        Media types are matched without their parameters and case
        (`Application/JSON; charset=utf-8` is JSON), as RFC 9110 says; the exact
        `application/json` this serializer writes is checked first, so it costs nothing.
        Malformed JSON raises ValueError (the worker fails such a task as
        PayloadDecodeError). No content type with bytes is opaque: they come back as bytes.
        """
        if content_type != JSON:
            content_type = media_type(content_type)
        if content_type == JSON or content_type.endswith("+json"):
            return _json_loads(data) if data else None
        if not content_type and not data:
            return None
        if content_type.startswith("text/"):
            return data.decode()
        return data


def media_type(content_type: str) -> str:
    """The media type of a Content-Type value, lower case, without parameters."""
    return content_type.partition(";")[0].strip().lower()


_decode_json = json.JSONDecoder().decode


def _json_loads(data: bytes) -> Any:
    """json.loads, decoding plain UTF-8 first: json's encoding sniffing for bytes costs
    more than the parse of a ~100-byte payload. BOMs, UTF-16/32 (NULs in the first
    bytes) and invalid UTF-8 take json's own path, so the results are the same."""
    if not data.startswith(b"\xef") and data.find(b"\x00", 0, 4) < 0:
        try:
            text = data.decode()
        except UnicodeDecodeError:
            pass
        else:
            return _decode_json(text)
    return json.loads(data)


@dataclass(frozen=True, slots=True)
class Encoded:
    """A payload or result already encoded: sent as is, whatever the serializer."""

    data: bytes
    content_type: str


def encode(serializer: Serializer, value: Any) -> tuple[bytes, str]:
    """Encode with the serializer unless the value is already `Encoded`."""
    if isinstance(value, Encoded):
        return value.data, value.content_type
    return serializer.dumps(value)
