"""uvicorn's HTTP/1.1 protocol with limits on request heads: size and time.

uvicorn parses requests with httptools when it is installed (``uvicorn[standard]``, so
always here), and that parser has no limit of its own: ``h11_max_incomplete_event_size``
only applies to the slower h11 parser. A client could send megabytes of headers, or a
request head a byte at a time forever (uvicorn's keep-alive timer only runs between
requests). :func:`guarded_protocol` makes the protocol class the servers use
(``flightdeck_common.shutdown.serve``):

- a request line plus headers over ``max_header_bytes``, or more than ``MAX_HEADER_COUNT``
  header fields, gets ``431`` and the connection is closed (bytes are counted as they
  arrive, so an endless header is cut off too);
- a connection that has not completed a request head ``header_read_timeout`` seconds
  after it opened (or after the head of its next request began) is closed, with a ``408``
  when part of a head had arrived.

Behind Traefik these limits are a second line: its entry point caps header size
(``maxHeaderBytes``) and the time to read a whole request (``readTimeout``).
"""

from __future__ import annotations

import asyncio
import json
from typing import ClassVar

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from flightdeck_common.errors import PROBLEM_JSON, PROBLEM_TYPE_PREFIX
from flightdeck_common.settings import DEFAULT_HEADER_READ_TIMEOUT, DEFAULT_MAX_HEADER_BYTES

# Headers per request (browsers send about 20); more get 431 whatever their size.
MAX_HEADER_COUNT = 256


class HeadersTooLarge(Exception):
    """Raised from a parser callback when the request head crosses the limit."""


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    """httptools protocol with a size and a time limit on each request head."""

    max_header_bytes: ClassVar[int] = DEFAULT_MAX_HEADER_BYTES
    max_header_count: ClassVar[int] = MAX_HEADER_COUNT
    header_read_timeout: ClassVar[float] = DEFAULT_HEADER_READ_TIMEOUT

    def connection_made(self, transport: asyncio.BaseTransport) -> None:  # type: ignore[override]
        super().connection_made(transport)  # type: ignore[arg-type]
        self._head_bytes = 0  # bytes of the current request head received so far
        self._awaiting_head = True
        self._head_started = False
        self._head_too_large = False
        self._head_timer: asyncio.TimerHandle | None = None
        self._arm_head_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_head_timer()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._awaiting_head:
            self._head_bytes += len(data)
            self._head_started = True
        super().data_received(data)
        # A head still incomplete after this chunk: what it has sent so far already counts.
        if (
            self._awaiting_head
            and self._head_bytes > self.max_header_bytes
            and not self.transport.is_closing()
        ):
            self._reject_head(431)

    # Parser callbacks: the exact size of the parsed head (a complete head may arrive in
    # one chunk together with its body, so the byte count above cannot judge it alone).
    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._parsed_head_bytes = 0
        if self._head_timer is None:
            self._arm_head_timer()

    def on_url(self, url: bytes) -> None:
        self._count_parsed(len(url))
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._count_parsed(len(name) + len(value) + 4)  # ": " and CRLF
        if len(self.headers) >= self.max_header_count:
            self._head_too_large = True
            raise HeadersTooLarge
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._awaiting_head = False
        self._cancel_head_timer()
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        super().on_message_complete()
        # The next request on this connection starts a new head (its timer starts with it;
        # until then uvicorn's keep-alive timeout applies).
        self._awaiting_head = True
        self._head_bytes = 0
        self._head_started = False

    def send_400_response(self, msg: str) -> None:
        if self._head_too_large:
            self._reject_head(431)
        else:
            super().send_400_response(msg)

    def _count_parsed(self, size: int) -> None:
        self._parsed_head_bytes += size
        if self._parsed_head_bytes > self.max_header_bytes:
            self._head_too_large = True
            raise HeadersTooLarge  # httptools stops parsing; send_400_response answers 431

    def _arm_head_timer(self) -> None:
        self._head_timer = self.loop.call_later(self.header_read_timeout, self._head_timed_out)

    def _cancel_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if not self._awaiting_head or self.transport.is_closing():
            return
        if self.cycle is not None and not self.cycle.response_complete:
            return  # a pipelined head behind a running request: its turn has not come
        if self._head_started:
            self._reject_head(408)
        else:
            self.transport.close()  # connected and said nothing: just hang up

    def _reject_head(self, status: int) -> None:
        self._cancel_head_timer()
        code, title, detail = _HEAD_PROBLEMS[status]
        body = json.dumps(
            {
                "type": PROBLEM_TYPE_PREFIX + code,
                "title": title,
                "status": status,
                "code": code,
                "detail": detail.format(
                    bytes=self.max_header_bytes,
                    count=self.max_header_count,
                    seconds=self.header_read_timeout,
                ),
            },
            separators=(",", ":"),
        ).encode()
        self.transport.write(
            b"".join(
                [
                    f"HTTP/1.1 {status} {title}\r\n".encode("ascii"),
                    f"content-type: {PROBLEM_JSON}\r\n".encode("ascii"),
                    f"content-length: {len(body)}\r\n".encode("ascii"),
                    b"connection: close\r\n\r\n",
                    body,
                ]
            )
        )
        self.transport.close()


_HEAD_PROBLEMS = {
    408: (
        "request_timeout",
        "Request Timeout",
        "The request headers did not arrive within {seconds:g} s.",
    ),
    431: (
        "headers_too_large",
        "Request Header Fields Too Large",
        "The request line and headers exceed {bytes} bytes or {count} fields.",
    ),
}


def guarded_protocol(
    max_header_bytes: int = DEFAULT_MAX_HEADER_BYTES,
    header_read_timeout: float = DEFAULT_HEADER_READ_TIMEOUT,
) -> type[GuardedHttpToolsProtocol]:
    """The protocol class to pass as ``uvicorn.Config(http=...)`` with these limits."""
    return type(
        "GuardedHttpToolsProtocol",
        (GuardedHttpToolsProtocol,),
        {"max_header_bytes": max_header_bytes, "header_read_timeout": header_read_timeout},
    )
