"""A lean HTTP/1.1 client for the proxy's hot path: the request is written in one piece and the
answer parsed by ``httptools`` (llhttp, the parser uvicorn uses) straight off an asyncio
protocol, with keep-alive connections pooled per API server.

Why not aiohttp's client: on the endpoint path, aiohttp's request machinery (URL objects,
multidict headers, tracing hooks, its own stream reader) was about 40 % of the proxy's CPU per
request; on two shared cores that CPU is the added latency. aiohttp stays for websockets.

What it does, and what it does not:

* ``Host`` is the URL's authority, as aiohttp sent it; TLS uses the client's context and
  ``server_hostname`` (the pinned address is in the URL, the name is what the certificate is
  checked against).
* A body that arrived whole is sent with ``Content-Length``; a streamed one as
  ``Transfer-Encoding: chunked``, written as it comes, waiting while the socket's buffer is full.
* ``Expect`` is not forwarded (the body is sent anyway, so a ``100 Continue`` would only be
  noise); other 1xx answers (103 Early Hints) are skipped, as a browser would see them only as
  hints.
* The answer's body is read as it arrives; the connection stops reading while more than
  ``BUFFER_BYTES`` wait to be sent on (back-pressure to the pod).
* A connection goes back to the pool only after an answer read to its end that allows
  keep-alive; an idle one is dropped after ``IDLE_SECONDS``. A request that fails on a reused
  connection before any answer byte (the server closed it while idle) is sent once more on a new
  one when its body can be sent again (none, or whole).
* An answer to ``HEAD`` has no body whatever its headers say: the connection is closed after it
  (httptools cannot be told to skip a body).
* Header names and values holding CR or LF are refused (no header injection into the request).
"""

from __future__ import annotations

import asyncio
import collections
import ssl as ssl_module
import time
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlsplit

import httptools

BUFFER_BYTES = 256 * 1024
IDLE_SECONDS = 30.0

# Not forwarded by this client (see the module docstring); the caller drops the rest.
DROPPED = frozenset({"expect"})


class HttpError(Exception):
    """The connection failed or the answer could not be parsed."""


class _Answer:
    """One answer, as the protocol parses it (the caller reads it through ``Response``)."""

    __slots__ = (
        "buffered",
        "chunks",
        "done",
        "error",
        "got_bytes",
        "head_only",
        "headers_done",
        "raw_headers",
        "status",
        "waiter",
    )

    def __init__(self, head_only: bool) -> None:
        self.status = 0
        self.raw_headers: list[tuple[bytes, bytes]] = []
        self.headers_done = False
        self.done = False
        self.error: BaseException | None = None
        self.chunks: collections.deque[bytes] = collections.deque()
        self.buffered = 0
        self.waiter: asyncio.Future | None = None
        self.head_only = head_only
        self.got_bytes = False


class _Connection(asyncio.Protocol):
    """One keep-alive connection to an API server."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.answer: _Answer | None = None
        self.closed = False
        self.reusable = False
        self.idle_since = 0.0
        self.reading_paused = False
        self._drain: asyncio.Future | None = None
        self._writing_paused = False

    # -- asyncio.Protocol --

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        answer = self.answer
        if answer is None:  # bytes nobody asked for: the connection cannot be trusted any more
            self.close()
            return
        answer.got_bytes = True
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(HttpError(f"malformed answer ({exc})"))
            self.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        answer = self.answer
        if answer is not None and not answer.done:
            if answer.headers_done and not self._has_length(answer):
                answer.done = True  # an answer without length or chunks ends when the connection does
                self._wake(answer)
            else:
                self._fail(HttpError("the connection closed before the answer ended"))
        if self._drain is not None and not self._drain.done():
            self._drain.set_exception(HttpError("the connection closed"))

    def pause_writing(self) -> None:
        self._writing_paused = True

    def resume_writing(self) -> None:
        self._writing_paused = False
        if self._drain is not None and not self._drain.done():
            self._drain.set_result(None)

    # -- httptools callbacks --

    def on_header(self, name: bytes, value: bytes) -> None:
        self.answer.raw_headers.append((name.lower(), value))  # type: ignore[union-attr]

    def on_headers_complete(self) -> None:
        answer = self.answer
        status = self.parser.get_status_code()
        if 100 <= status < 200 and status != 101:
            answer.raw_headers = []  # type: ignore[union-attr]  # a hint, not the answer: skip it
            return
        answer.status = status  # type: ignore[union-attr]
        answer.headers_done = True  # type: ignore[union-attr]
        if answer.head_only:  # type: ignore[union-attr]
            answer.done = True  # type: ignore[union-attr]
            self.reusable = False
        self._wake(answer)  # type: ignore[arg-type]

    def on_body(self, body: bytes) -> None:
        answer = self.answer
        if answer is None or answer.head_only:
            return
        answer.chunks.append(body)
        answer.buffered += len(body)
        if answer.buffered > BUFFER_BYTES and not self.reading_paused and self.transport is not None:
            self.reading_paused = True
            self.transport.pause_reading()
        self._wake(answer)

    def on_message_complete(self) -> None:
        answer = self.answer
        if answer is None or not answer.headers_done:
            return  # the end of a skipped 1xx
        if not answer.done:
            answer.done = True
            self.reusable = self.parser.should_keep_alive()
        self._wake(answer)

    # -- helpers --

    @staticmethod
    def _has_length(answer: _Answer) -> bool:
        for name, value in answer.raw_headers:
            if name == b"content-length" or (name == b"transfer-encoding" and b"chunked" in value.lower()):
                return True
        return False

    @staticmethod
    def _wake(answer: _Answer) -> None:
        waiter = answer.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _fail(self, exc: BaseException) -> None:
        answer = self.answer
        if answer is not None and not answer.done:
            answer.error = exc
            self._wake(answer)

    async def drain(self) -> None:
        if self.closed:
            raise HttpError("the connection closed")
        if self._writing_paused:
            self._drain = asyncio.get_running_loop().create_future()
            await self._drain

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()


class Response:
    """An answer being read: ``status``, ``raw_headers`` (lowercase names, bytes), then its body
    with ``read``/``iter_any``; ``release`` hands the connection back (or closes it)."""

    def __init__(self, pool: Pool, connection: _Connection, answer: _Answer) -> None:
        self._pool = pool
        self._connection = connection
        self._answer = answer
        self.status = answer.status
        self.raw_headers = answer.raw_headers
        self._released = False

    def header(self, name: bytes) -> str:
        for key, value in self.raw_headers:
            if key == name:
                return value.decode("latin-1")
        return ""

    @property
    def content_length(self) -> int | None:
        value = self.header(b"content-length")
        return int(value) if value.strip().isdigit() and value.strip().isascii() else None

    def at_eof(self) -> bool:
        return self._answer.done and not self._answer.chunks

    async def _next(self) -> bytes | None:
        answer, connection = self._answer, self._connection
        while True:
            if answer.chunks:
                chunk = answer.chunks.popleft()
                answer.buffered -= len(chunk)
                if connection.reading_paused and answer.buffered <= BUFFER_BYTES // 2:
                    connection.reading_paused = False
                    if connection.transport is not None:
                        connection.transport.resume_reading()
                return chunk
            if answer.error is not None:
                raise answer.error
            if answer.done:
                return None
            answer.waiter = asyncio.get_running_loop().create_future()
            try:
                await answer.waiter
            finally:
                answer.waiter = None

    async def iter_any(self) -> AsyncIterator[bytes]:
        while (chunk := await self._next()) is not None:
            yield chunk

    async def read(self, limit: int | None = None) -> bytes:
        """The body (or its first ``limit`` bytes and a little more: check ``at_eof``)."""
        parts: list[bytes] = []
        size = 0
        while limit is None or size < limit:
            chunk = await self._next()
            if chunk is None:
                break
            parts.append(chunk)
            size += len(chunk)
        return b"".join(parts)

    def release(self) -> None:
        if self._released:
            return
        self._released = True
        connection, answer = self._connection, self._answer
        connection.answer = None
        if answer.done and not answer.chunks and connection.reusable and not connection.closed:
            self._pool.put_back(connection)
        else:
            connection.close()
            self._pool.forget(connection)

    async def __aenter__(self) -> Response:
        return self

    async def __aexit__(self, *exc: Any) -> None:
        self.release()


class Pool:
    """Keep-alive connections to one API server (``base_url``: ``scheme://host:port``)."""

    def __init__(
        self,
        base_url: str,
        *,
        ssl: ssl_module.SSLContext | None,
        server_hostname: str | None,
        limit: int,
        connect_timeout: float,
    ) -> None:
        parts = urlsplit(base_url)
        self.https = parts.scheme == "https"
        self.host = parts.hostname or ""
        self.port = parts.port or (443 if self.https else 80)
        self.authority = parts.netloc.encode("latin-1")
        self.ssl = ssl if self.https else None
        if self.https and self.ssl is None:
            self.ssl = ssl_module.create_default_context()
        self.server_hostname = server_hostname if self.https else None
        self.connect_timeout = connect_timeout
        self._idle: collections.deque[_Connection] = collections.deque()
        self._slots = asyncio.Semaphore(limit)
        self._open: set[_Connection] = set()

    async def _connect(self) -> _Connection:
        loop = asyncio.get_running_loop()
        options: dict[str, Any] = {}
        if self.ssl is not None:
            options["ssl"] = self.ssl
            options["server_hostname"] = self.server_hostname or self.host
        try:
            _, connection = await asyncio.wait_for(
                loop.create_connection(_Connection, self.host, self.port, **options), self.connect_timeout
            )
        except (OSError, TimeoutError, ssl_module.SSLError) as exc:
            raise HttpError(f"cannot connect ({type(exc).__name__})") from exc
        self._open.add(connection)
        return connection

    def _idle_connection(self) -> _Connection | None:
        now = time.monotonic()
        while self._idle:
            connection = self._idle.pop()
            if not connection.closed and now - connection.idle_since < IDLE_SECONDS:
                return connection
            connection.close()
            self._open.discard(connection)
        return None

    def put_back(self, connection: _Connection) -> None:
        connection.idle_since = time.monotonic()
        connection.reusable = False
        self._idle.append(connection)
        self._slots.release()

    def forget(self, connection: _Connection) -> None:
        self._open.discard(connection)
        self._slots.release()

    async def request(
        self,
        method: str,
        target: str,
        headers: dict[str, str],
        body: bytes | AsyncIterator[bytes] | None,
    ) -> Response:
        """Send ``method target`` (``target``: path and query, already quoted) and return once the
        answer's status and headers are in."""
        head = _head(method, target, self.authority, headers, body)
        await self._slots.acquire()
        try:
            connection = self._idle_connection()
            reused = connection is not None
            while True:
                if connection is None:
                    connection = await self._connect()
                try:
                    return await self._exchange(connection, head, body, head_only=method == "HEAD")
                except HttpError:
                    got_bytes = connection.answer is not None and connection.answer.got_bytes
                    connection.answer = None
                    connection.close()
                    self._open.discard(connection)
                    if reused and not got_bytes and not isinstance(body, AsyncIterator):
                        reused, connection = False, None  # the server closed it while idle: once more
                        continue
                    raise
                except BaseException:  # cancelled (the client went away): the exchange is unfinished
                    connection.answer = None
                    connection.close()
                    self._open.discard(connection)
                    raise
        except BaseException:
            self._slots.release()
            raise

    async def _exchange(
        self, connection: _Connection, head: bytes, body: bytes | AsyncIterator[bytes] | None, *, head_only: bool
    ) -> Response:
        answer = _Answer(head_only)
        connection.answer = answer
        transport = connection.transport
        if transport is None or connection.closed or transport.is_closing():
            raise HttpError("the connection closed")
        if body is None or isinstance(body, bytes):
            transport.write(head + body if body else head)
        else:
            transport.write(head)
            async for chunk in body:
                if chunk:
                    transport.write(b"%x\r\n%b\r\n" % (len(chunk), chunk))
                    await connection.drain()
            transport.write(b"0\r\n\r\n")
        while not answer.headers_done:
            if answer.error is not None:
                raise answer.error
            answer.waiter = asyncio.get_running_loop().create_future()
            try:
                await answer.waiter
            finally:
                answer.waiter = None
        return Response(self, connection, answer)

    def close(self) -> None:
        for connection in list(self._open):
            connection.close()
        self._open.clear()
        self._idle.clear()


def _head(
    method: str, target: str, authority: bytes, headers: dict[str, str], body: bytes | AsyncIterator[bytes] | None
) -> bytes:
    lines = [f"{method} {target} HTTP/1.1", f"Host: {authority.decode('latin-1')}"]
    for name, value in headers.items():
        if name not in DROPPED:
            lines.append(f"{name}: {value}")
    if isinstance(body, bytes):
        lines.append(f"Content-Length: {len(body)}")
    elif body is not None:
        lines.append("Transfer-Encoding: chunked")
    text = "\r\n".join(lines)
    try:
        encoded = (text + "\r\n\r\n").encode("latin-1")
    except UnicodeEncodeError as exc:
        raise HttpError("a request header holds characters HTTP/1.1 cannot carry") from exc
    # A CR or LF inside a name, value or target would start a header (or a request) of its own.
    if text.count("\n") != len(lines) - 1 or text.count("\r") != len(lines) - 1 or " " in target:
        raise HttpError("a request header or path holds a line break")
    return encoded
