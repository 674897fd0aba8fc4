"""uvicorn's httptools protocol with the bounds it lacks: slow clients and connection floods.

uvicorn (httptools) keeps a connection that never sends a byte, or sends a request head a
byte at a time, open forever, and buffers a request head of any size (measured: a 200 MB
header grew the server by 200 MB). :class:`BoundedHttpToolsProtocol` adds three bounds,
checked by the event loop, so one slow or hostile client costs a bounded amount of memory
and never delays the others:

* ``request_timeout``: each exchange (request received, scored, response handed to the
  socket) must finish within this many seconds of the connection being ready for it (opened,
  or its previous response sent); else the connection is closed. This reaps idle
  connections, slowloris heads, trickled bodies and clients that stop reading.
* ``max_head_bytes``: a request line plus headers longer than this gets ``431``; the
  connection's write side is closed and what it still sends is read and dropped until it
  closes or its deadline passes (closing at once with unread input would reset the
  connection and could lose the 431). The head is counted from the first read after the
  request began, so at most one socket read more than this is buffered.
* ``max_connections``: a connection opened while this many are open is closed at once;
  the established ones (a bidder's keep-alive pool) go on being served. uvicorn's own
  ``limit_concurrency`` is not used: it counts open connections too, and answers 503 to
  *every* request, established clients included, while a flood holds the sockets.

Each closing is reported to ``on_close(reason)`` (``ctr_http_connections_closed_total``).

One more change, for CPU: uvicorn writes a response's head and its body with two socket
writes (two ``send`` calls, two segments, two wake-ups of the client); each exchange's
transport is wrapped so the head waits for the first body write and both leave in one
(:class:`_HeadWithBody`). The bytes on the wire are the same.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Callable

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

log = logging.getLogger("ctr.serving")

DEFAULT_REQUEST_TIMEOUT = 10.0
DEFAULT_MAX_HEAD_BYTES = 16 * 1024
DEFAULT_MAX_CONNECTIONS = 1024

_TOO_LARGE = (b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-type: text/plain; charset=utf-8\r\n"
              b"connection: close\r\ncontent-length: 37\r\n\r\nrequest line and headers are too long")


class BoundedHttpToolsProtocol(HttpToolsProtocol):
    """httptools protocol with a per-exchange deadline, a head size limit and a connection cap."""

    request_timeout: float = DEFAULT_REQUEST_TIMEOUT
    max_head_bytes: int = DEFAULT_MAX_HEAD_BYTES
    max_connections: int = DEFAULT_MAX_CONNECTIONS
    on_close: Callable[[str], None] | None = None

    _deadline: asyncio.TimerHandle | None = None
    _head_bytes: int | None = None  # bytes of the unfinished request head (None: not reading a head)
    _chunk = 0  # size of the read being parsed
    _refused = False  # answered 431: input is dropped until the connection ends

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        """Accept, or close at once beyond ``max_connections``; start the first exchange's deadline."""
        super().connection_made(transport)
        if len(self.connections) > self.max_connections:
            self._close("over_limit")
            return
        self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        """Drop the deadline with the connection."""
        self._disarm()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        """Parse a read; refuse a head that stays unfinished beyond ``max_head_bytes``."""
        if self._refused or self.transport.is_closing():
            return
        self._chunk = len(data)
        super().data_received(data)
        if self._head_bytes is not None and not self.transport.is_closing():
            self._head_bytes += len(data)
            if self._head_bytes > self.max_head_bytes:
                self._refuse_head()

    def _refuse_head(self) -> None:
        """Answer 431 and close the write side; the deadline (or the client) ends the connection."""
        self._refused = True
        self.transport.write(_TOO_LARGE)
        if self.transport.can_write_eof():
            self.transport.write_eof()
        else:  # pragma: no cover - TCP transports can
            self.transport.close()
        if self.on_close is not None:
            self.on_close("head_too_large")

    def on_message_begin(self) -> None:
        """A request head starts (this read is not counted: it may end the previous request)."""
        super().on_message_begin()
        self._head_bytes = -self._chunk

    def on_headers_complete(self) -> None:
        """The head is complete: stop counting; the new exchange writes through :class:`_HeadWithBody`."""
        self._head_bytes = None
        super().on_headers_complete()
        cycle = self.cycle
        if cycle is not None and cycle.transport is self.transport:  # a new exchange (not an upgrade)
            out = _HeadWithBody(self.transport)
            cycle.transport = out  # type: ignore[assignment]
            done = cycle.on_response

            def on_response() -> None:
                out.flush()  # a response without a body write (HEAD) sends its head here
                done()

            cycle.on_response = on_response

    def on_response_complete(self) -> None:
        """A response is out: the next exchange gets a fresh deadline."""
        super().on_response_complete()
        if not self.transport.is_closing():
            self._arm()

    def _arm(self) -> None:
        self._disarm()
        self._deadline = self.loop.call_later(self.request_timeout, self._expire)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _expire(self) -> None:
        self._deadline = None
        if self._refused:  # already counted as head_too_large
            self.transport.close()
        elif not self.transport.is_closing():
            self._close("timeout")

    def _close(self, reason: str) -> None:
        log.debug("closing connection from %s: %s", self.client, reason)
        self.transport.close()
        if self.on_close is not None:
            self.on_close(reason)


class _HeadWithBody:
    """One exchange's view of the connection's transport: the response head (its first write
    other than ``100 Continue``) is held until the next write and sent with it, in one
    ``write``; :meth:`flush` (response complete) and :meth:`close` send a head still held."""

    __slots__ = ("_transport", "_held", "_head_seen")

    def __init__(self, transport: asyncio.Transport):
        self._transport = transport
        self._held: bytes | None = None
        self._head_seen = False

    def write(self, data: bytes) -> None:
        """Hold the head; send anything else, after the held head."""
        if not self._head_seen and not data.startswith(b"HTTP/1.1 100 "):
            self._head_seen = True
            self._held = data
            return
        if self._held is not None:
            data, self._held = self._held + data, None
        self._transport.write(data)

    def flush(self) -> None:
        """Send the head if it is still held."""
        if self._held is not None:
            held, self._held = self._held, None
            self._transport.write(held)

    def close(self) -> None:
        """Send what is held, then close."""
        self.flush()
        self._transport.close()

    def __getattr__(self, name: str):
        return getattr(self._transport, name)


def bounded_protocol(request_timeout: float = DEFAULT_REQUEST_TIMEOUT, max_head_bytes: int = DEFAULT_MAX_HEAD_BYTES,
                     max_connections: int = DEFAULT_MAX_CONNECTIONS,
                     on_close: Callable[[str], None] | None = None) -> type[BoundedHttpToolsProtocol]:
    """The protocol class for uvicorn's ``http=`` with these bounds (uvicorn instantiates it
    per connection, so the settings are class attributes)."""
    if request_timeout <= 0 or max_head_bytes < 1 or max_connections < 1:
        raise ValueError("request_timeout, max_head_bytes and max_connections must be positive")

    class Configured(BoundedHttpToolsProtocol):
        pass

    Configured.request_timeout = float(request_timeout)
    Configured.max_head_bytes = int(max_head_bytes)
    Configured.max_connections = int(max_connections)
    Configured.on_close = staticmethod(on_close) if on_close is not None else None
    return Configured
