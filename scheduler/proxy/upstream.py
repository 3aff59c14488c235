"""The proxy's way to an owner's API server: per cluster, one pool of keep-alive HTTP/1.1
connections (``scheduler.proxy.h1``, for HTTP requests) and one aiohttp session (for
websockets), and the forwarding of an ASGI request (HTTP, streamed both ways; websocket,
pumped both ways) to a Service through the API server's service proxy,
``{api_server}/api/v1/namespaces/{ns}/services/{service}:{port}/proxy/{path}``.

A ``ClusterClient`` is built from the cluster's sealed kubeconfig by
``KubernetesBackend.proxy_target`` (the backend's kubeconfig checks and SSRF pin: the base URL
holds the address that was checked, TLS still checks the name), and kept per cluster id and
kubeconfig version for ``PROXY_CLIENT_TTL_SECONDS``, so connections are kept alive across
requests; after the TTL it is rebuilt (the host is resolved and checked again) and the old
session closed once its requests are done. What does not change between a client's requests is
built once per client: the service-proxy URL of each Service port and the TLS options; header
filtering works on the raw ASGI/aiohttp bytes (no decoding of headers that are dropped anyway).

What goes to the pod: the method, the path under the prefix, the query, the body (streamed)
and the client's headers minus the hop-by-hop ones, ``Host``, ``Cookie`` and ``Authorization``
(the renter's session cookie and API token are ours, never the pod's), plus ``X-Forwarded-For``,
``X-Forwarded-Proto``, ``X-Forwarded-Host`` and, when a prefix was taken off the path,
``X-Forwarded-Prefix``. The API server's own
credentials (the cluster's token or client certificate) authenticate us to the API server, which
does not pass them on. The answer is streamed back chunk by chunk as it arrives (SSE and chunked
answers pass through unbuffered; a small answer of known length, up to 64 KiB, is read and sent
in one piece, and a small request body that arrived whole is sent with its length), with its
hop-by-hop headers and ``Set-Cookie`` dropped (a pod must not set cookies on the platform's
domain). Compressed answers pass through as they are
(nothing is decompressed).

The API server's service proxy rewrites the root-relative links (``href="/..."``, ``src``...)
of HTML pages it passes on, prefixing them with its own path
(``/api/v1/namespaces/{ns}/services/{svc}:{port}/proxy``: Kubernetes' proxy transport, for
``kubectl proxy`` users). A session's pod already serves under ``/proxy/<job>/<port>/``, so for
session ports that prefix is taken out of HTML answers again (plain or gzip, pages up to 8 MiB;
a bigger page is streamed as it is).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import aiohttp

from scheduler.proxy import h1

logger = logging.getLogger(__name__)

HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "trailers",
        "transfer-encoding",
        "upgrade",
    }
)
# Never sent to a pod: ours (session cookie, API token), or set by the client library.
REQUEST_DROPPED = HOP_BY_HOP | {"host", "cookie", "authorization", "content-length", "x-forwarded-for"}
# Never sent back: a pod must not set cookies on the platform's domain; lengths are the server's.
RESPONSE_DROPPED = HOP_BY_HOP | {"set-cookie", "content-length"}
# The same as bytes, for the per-request header loops (ASGI header names are lowercase bytes).
REQUEST_DROPPED_RAW = frozenset(name.encode() for name in REQUEST_DROPPED)
RESPONSE_DROPPED_RAW = frozenset(name.encode() for name in RESPONSE_DROPPED)
WEBSOCKET_DROPPED = REQUEST_DROPPED | {
    "sec-websocket-key",
    "sec-websocket-version",
    "sec-websocket-extensions",
    "sec-websocket-protocol",
}


# An answer of known length up to this size is sent in one piece (not a stream); longer ones and
# chunked ones (SSE) are streamed chunk by chunk.
SMALL_ANSWER_BYTES = 64 * 1024


# HTML pages up to this size get the API server's link rewriting undone (see ``_unrewrite``).
MAX_HTML_BYTES = 8 * 1024 * 1024


def _unrewrite(body: bytes, prefix: bytes, *, gzipped: bool) -> bytes:
    """``body`` without the service-proxy path the API server put in front of its links."""
    import gzip

    if gzipped:
        try:
            return gzip.compress(gzip.decompress(body).replace(prefix, b""), mtime=0)
        except (OSError, EOFError):
            return body
    return body.replace(prefix, b"")


@functools.lru_cache(maxsize=4096)
def quote_path(path: str) -> str:
    """``path`` (as ASGI gives it: percent-decoded) quoted again for the upstream URL; cached, as
    an endpoint's few paths (``v1/completions``...) come again and again."""
    return quote(path, safe="/:@!$&'()*+,;=-._~")


class UpstreamError(Exception):
    """The API server or the pod could not be reached: the proxy answers 502 with this text."""


@dataclass
class ClusterClient:
    base_url: str
    headers: dict[str, str]
    ssl: Any
    server_hostname: str | None
    session: aiohttp.ClientSession  # websockets
    http: h1.Pool  # HTTP requests
    built_at: float
    # Built once per client, not per request: the service-proxy URL of each Service port, and
    # aiohttp's TLS options.
    _service_bases: dict[tuple[str, str, int], str] = field(default_factory=dict, repr=False)
    _options: dict[str, Any] | None = field(default=None, repr=False)

    def service_url(self, namespace: str, service: str, port: int, path: str) -> str:
        base = self._service_bases.get((namespace, service, port))
        if base is None:
            if len(self._service_bases) >= 1024:
                self._service_bases.clear()
            base = self.base_url + self.service_prefix(namespace, service, port).decode()
            self._service_bases[(namespace, service, port)] = base
        return f"{base}/{path}"

    def service_prefix(self, namespace: str, service: str, port: int) -> bytes:
        """The path the API server puts in front of a page's root-relative links (text/html)."""
        name = quote(f"{service}:{port}", safe=":")
        return f"/api/v1/namespaces/{quote(namespace, safe='')}/services/{name}/proxy".encode()

    def request_options(self) -> dict[str, Any]:
        if self._options is None:
            options: dict[str, Any] = {"ssl": self.ssl if self.ssl is not None else False}
            if self.server_hostname:
                options["server_hostname"] = self.server_hostname
            self._options = options
        return self._options


class ClientPool:
    """One ``ClusterClient`` per cluster (see the module docstring)."""

    def __init__(self, *, ttl_seconds: float, connect_timeout: float, limit_per_cluster: int) -> None:
        self._ttl = ttl_seconds
        self._connect_timeout = connect_timeout
        self._limit = limit_per_cluster
        self._clients: dict[tuple[int, str], ClusterClient] = {}
        self._locks: dict[int, asyncio.Lock] = {}

    async def client(self, key: tuple[int, str], build: Callable[[], Awaitable[Any]]) -> ClusterClient:
        """The client for ``key`` (cluster id, kubeconfig version); ``build`` returns a ``ProxyTarget``."""
        client = self._clients.get(key)
        if client is not None and time.monotonic() - client.built_at < self._ttl:
            return client
        lock = self._locks.setdefault(key[0], asyncio.Lock())
        async with lock:
            client = self._clients.get(key)
            if client is not None and time.monotonic() - client.built_at < self._ttl:
                return client
            target = await build()
            connector = aiohttp.TCPConnector(limit=self._limit, ttl_dns_cache=None, enable_cleanup_closed=True)
            session = aiohttp.ClientSession(
                connector=connector,
                auto_decompress=False,
                timeout=aiohttp.ClientTimeout(
                    total=None, connect=self._connect_timeout, sock_connect=self._connect_timeout
                ),
                skip_auto_headers=("User-Agent", "Accept-Encoding", "Accept", "Content-Type"),
            )
            fresh = ClusterClient(
                base_url=target.base_url,
                headers=dict(target.headers),
                ssl=target.ssl,
                server_hostname=target.server_hostname,
                session=session,
                http=h1.Pool(
                    target.base_url,
                    ssl=target.ssl,
                    server_hostname=target.server_hostname,
                    limit=self._limit,
                    connect_timeout=self._connect_timeout,
                ),
                built_at=time.monotonic(),
            )
            for old_key in [k for k in self._clients if k[0] == key[0]]:
                old = self._clients.pop(old_key)
                asyncio.get_running_loop().call_later(60, _close_later, old)
            self._clients[key] = fresh
            return fresh

    async def close(self) -> None:
        clients, self._clients = list(self._clients.values()), {}
        for client in clients:
            client.http.close()
            with contextlib.suppress(Exception):
                await client.session.close()


_closing: set[asyncio.Future] = set()


def _close_later(client: ClusterClient) -> None:
    """Close a replaced client's connections (a minute after it was replaced: its requests are done)."""
    client.http.close()
    task = asyncio.ensure_future(client.session.close())
    _closing.add(task)
    task.add_done_callback(_closing.discard)


def forwarded_headers(scope: dict, *, prefix: str) -> dict[str, str]:
    """The client's request headers as the pod gets them (see the module docstring)."""
    headers: dict[str, str] = {}
    host = ""
    for raw_name, raw_value in scope.get("headers") or ():
        raw_name = raw_name.lower()  # lowercase already from an ASGI server; cheap to make sure
        if raw_name in REQUEST_DROPPED_RAW:
            if raw_name == b"host" and not host:
                host = raw_value.decode("latin-1")
            continue
        name, value = raw_name.decode("latin-1"), raw_value.decode("latin-1")
        headers[name] = f"{headers[name]}, {value}" if name in headers else value
    client = scope.get("client")
    if client:
        headers["x-forwarded-for"] = client[0]
    headers["x-forwarded-proto"] = "https" if scope.get("scheme") in ("https", "wss") else "http"
    if host:
        headers["x-forwarded-host"] = host
    if prefix:
        headers["x-forwarded-prefix"] = prefix
    return headers


async def _request_data(scope: dict, receive: Callable[[], Awaitable[dict]]) -> bytes | Any | None:
    """The request body for aiohttp: None without one; bytes when it came in one message (a
    small body, sent with its length); else an async iterator of chunks (streamed, never
    buffered whole)."""
    if not _has_body(scope):
        return None
    first = await receive()
    if first["type"] == "http.disconnect":
        raise ConnectionResetError("the client went away")
    if not first.get("more_body", False):
        return first.get("body", b"")

    async def chunks():
        if first.get("body"):
            yield first["body"]
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise ConnectionResetError("the client went away")
            if message.get("body"):
                yield message["body"]
            if not message.get("more_body", False):
                return

    return chunks()


def _has_body(scope: dict) -> bool:
    for name, value in scope.get("headers") or ():
        if name == b"transfer-encoding" or (name == b"content-length" and value.strip() not in (b"", b"0")):
            return True
    return False


async def forward_http(
    client: ClusterClient,
    url: str,
    scope: dict,
    receive: Callable[[], Awaitable[dict]],
    send: Callable[[dict], Awaitable[None]],
    headers: dict[str, str],
    *,
    on_first_byte: Callable[[int], None] | None = None,
    unrewrite: bytes = b"",
) -> int:
    """Forward one HTTP request to ``url`` and stream the answer back; the answer's status.

    Raises ``UpstreamError`` when nothing was sent to the client yet (the caller answers 502);
    a failure mid-answer ends the answer early (the client sees a truncated body)."""
    target = url[len(client.base_url) :] if url.startswith(client.base_url) else url
    query = scope.get("query_string") or b""
    if query:
        target = f"{target}?{query.decode('latin-1')}"
    data = await _request_data(scope, receive)
    try:
        answer = await client.http.request(
            scope["method"], target, headers | client.headers if client.headers else headers, data
        )
    except (TimeoutError, h1.HttpError, OSError) as exc:
        raise UpstreamError(f"The cluster's API server could not be reached ({_reason(exc)}).") from exc
    async with answer:
        response_headers = [(name, value) for name, value in answer.raw_headers if name not in RESPONSE_DROPPED_RAW]
        content_type = answer.header(b"content-type")
        encoding = answer.header(b"content-encoding").strip().lower()
        if unrewrite and content_type.startswith("text/html") and encoding in ("", "identity", "gzip"):
            # The API server prefixed the page's root-relative links with its service-proxy path:
            # take that off again, so that they stay under the platform's /proxy/<job>/<port>/.
            try:
                body = await answer.read(MAX_HTML_BYTES + 1)
            except (TimeoutError, h1.HttpError, OSError) as exc:
                raise UpstreamError(f"The pod's answer was cut short ({_reason(exc)}).") from exc
            if len(body) <= MAX_HTML_BYTES and answer.at_eof():
                body = _unrewrite(body, unrewrite, gzipped=encoding == "gzip")
                response_headers.append((b"content-length", str(len(body)).encode()))
                await send({"type": "http.response.start", "status": answer.status, "headers": response_headers})
                if on_first_byte is not None:
                    on_first_byte(answer.status)
                await send({"type": "http.response.body", "body": body, "more_body": False})
                return answer.status
            await send({"type": "http.response.start", "status": answer.status, "headers": response_headers})
            await send({"type": "http.response.body", "body": body, "more_body": True})
            await _pump(answer, send)
            return answer.status
        length = answer.content_length
        if (
            length is not None
            and length <= SMALL_ANSWER_BYTES
            and b"chunked" not in answer.header(b"transfer-encoding").encode("latin-1")
        ):
            # A small answer of known length is not a stream: read it, and send it in one write.
            try:
                body = await answer.read()
            except (TimeoutError, h1.HttpError, OSError) as exc:
                raise UpstreamError(f"The pod's answer was cut short ({_reason(exc)}).") from exc
            response_headers.append((b"content-length", str(len(body)).encode()))
            await send({"type": "http.response.start", "status": answer.status, "headers": response_headers})
            if on_first_byte is not None:
                on_first_byte(answer.status)
            await send({"type": "http.response.body", "body": body, "more_body": False})
            return answer.status
        await send({"type": "http.response.start", "status": answer.status, "headers": response_headers})
        if on_first_byte is not None:
            on_first_byte(answer.status)
        await _pump(answer, send)
        return answer.status


async def _pump(answer: h1.Response, send: Callable[[dict], Awaitable[None]]) -> None:
    """The rest of the answer, chunk by chunk as it arrives; a failure ends it early."""
    try:
        async for chunk in answer.iter_any():
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
    except (TimeoutError, h1.HttpError, OSError) as exc:
        logger.info("upstream answer cut short: %s", exc)
    await send({"type": "http.response.body", "body": b"", "more_body": False})


def _reason(exc: BaseException) -> str:
    return str(exc) if isinstance(exc, h1.HttpError) else type(exc).__name__


async def forward_websocket(
    client: ClusterClient,
    url: str,
    scope: dict,
    receive: Callable[[], Awaitable[dict]],
    send: Callable[[dict], Awaitable[None]],
    headers: dict[str, str],
) -> None:
    """Open a websocket to ``url`` (the API server passes the upgrade to the pod), accept the
    client's, and pump messages both ways until either side closes."""
    ws_headers = {k: v for k, v in headers.items() if k not in WEBSOCKET_DROPPED}
    protocols = [p for p in scope.get("subprotocols") or () if p]
    ws_url = url.replace("https://", "wss://", 1).replace("http://", "ws://", 1)
    query = scope.get("query_string") or b""
    if query:
        ws_url = f"{ws_url}?{query.decode('latin-1')}"
    try:
        upstream = await client.session.ws_connect(
            ws_url,
            headers={**ws_headers, **client.headers},
            protocols=protocols,
            autoping=True,
            max_msg_size=0,
            **client.request_options(),
        )
    except aiohttp.WSServerHandshakeError as exc:
        await send({"type": "websocket.close", "code": 1011, "reason": f"upstream refused: HTTP {exc.status}"[:120]})
        return
    except (TimeoutError, aiohttp.ClientError, OSError) as exc:
        await send({"type": "websocket.close", "code": 1011, "reason": f"upstream unreachable ({type(exc).__name__})"})
        return
    accept: dict[str, Any] = {"type": "websocket.accept"}
    if upstream.protocol:
        accept["subprotocol"] = upstream.protocol
    await send(accept)

    async def client_to_upstream() -> None:
        while True:
            message = await receive()
            if message["type"] == "websocket.receive":
                if message.get("text") is not None:
                    await upstream.send_str(message["text"])
                elif message.get("bytes") is not None:
                    await upstream.send_bytes(message["bytes"])
            elif message["type"] == "websocket.disconnect":
                await upstream.close()
                return

    async def upstream_to_client() -> None:
        async for message in upstream:
            if message.type == aiohttp.WSMsgType.TEXT:
                await send({"type": "websocket.send", "text": message.data})
            elif message.type == aiohttp.WSMsgType.BINARY:
                await send({"type": "websocket.send", "bytes": message.data})
            elif message.type in (aiohttp.WSMsgType.ERROR, aiohttp.WSMsgType.CLOSED):
                break
        with contextlib.suppress(Exception):
            await send({"type": "websocket.close", "code": upstream.close_code or 1000})

    tasks = [asyncio.ensure_future(client_to_upstream()), asyncio.ensure_future(upstream_to_client())]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        with contextlib.suppress(Exception):
            await upstream.close()
        await asyncio.gather(*tasks, return_exceptions=True)
