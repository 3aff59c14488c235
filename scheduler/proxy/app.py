"""The platform's proxy as a raw ASGI application, in front of Django's (``config/asgi.py``):

* ``/proxy/<job public_id>/<port>/<path>`` (HTTP and websocket): a renter's interactive session
  port (Jupyter, TensorBoard...), signed in with the site's session cookie;
* ``/endpoints/<endpoint public_id>/<path>`` (HTTP): an inference endpoint, with an API token;

everything else (and the ASGI lifespan's absence in Django) goes to Django. No Django middleware
runs on these paths: who may pass is decided by ``scheduler.proxy.access`` (its lookups run in a
thread, and their answers are cached briefly, so the hot path of an endpoint touches no database),
and the request goes to the Service through the owner's API server's service proxy
(a session port gets the whole path, ``/proxy/<job>/<port>/...``, as the pod serves under that
base URL, e.g. Jupyter's ``--ServerApp.base_url``; an endpoint gets the path after its prefix,
``/v1/...``, as OpenAI-style servers expect, with ``X-Forwarded-Prefix``)
(``scheduler.proxy.upstream``: keep-alive connections pooled per cluster; bodies and answers are
streamed, websockets pumped both ways).

A session's cookie is the site's: a websocket or an unsafe method (POST...) on ``/proxy/`` whose
``Origin`` is another site is refused (403), against cross-site websocket hijacking and CSRF
into the pod (SameSite=Lax already keeps the cookie off most cross-site requests).

Answers of the proxy itself are short ``text/plain``: 401 (no or bad credentials; a browser on
``/proxy/`` is redirected to the login page instead), 403 (an API token whose scope does not
allow inference), 404 (bad id, not yours, not running, no such port), 502 (the API server or
the pod did not answer), 503 (endpoint not ready). An unexpected error is logged and answered
502, never a traceback.

Statistics of endpoints: each request adds to an in-process ``stats.Recorder``: a request, an
error when the answer is 5xx or the upstream failed (our 502), and its latency **to the answer's
first byte** (the status line: for a streamed completion, the time to its first chunk; the
stream's length is the model's business, not the proxy's). Proxy refusals (401/403/404/503) are
not recorded. The hot path builds no ``datetime`` per request: records are stamped by a clock
read to the second (``coarse_now``; the aggregate is per minute). A background task started by
the ASGI lifespan writes the aggregate to ``EndpointMinute`` every ``PROXY_STATS_FLUSH_SECONDS``
(5 s) with an atomic upsert (``stats.write_minutes``), and once more at shutdown; a server
without lifespan support still flushes from the request path when the interval has passed.

Serving: ``uvicorn config.asgi:application`` (``make demo`` does, see ``config/asgi.py``);
``manage.py runserver`` (WSGI) serves the site but not the proxy.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote, urlsplit

from asgiref.sync import sync_to_async
from django.conf import settings

from scheduler.proxy import access, stats, upstream

logger = logging.getLogger(__name__)

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict]]
Send = Callable[[dict], Awaitable[None]]

PROXY_PREFIX = "/proxy/"
ENDPOINT_PREFIX = "/endpoints/"


def coarse_now() -> datetime:
    """Now, to the second (statistics are counted per minute): one ``datetime`` built per second
    rather than one per request, on the hot path."""
    second = int(time.time())
    if second != _clock[0]:
        _clock[0], _clock[1] = second, datetime.fromtimestamp(second, UTC)
    return _clock[1]


_clock: list = [0, datetime.fromtimestamp(0, UTC)]


def close_connections() -> None:
    from django.db import connections

    connections.close_all()


def _header(scope: Scope, name: bytes) -> str:
    for key, value in scope.get("headers") or ():
        if key == name:
            return value.decode("latin-1")
    return ""


async def _plain(send: Send, status: int, text: str, headers: tuple[tuple[bytes, bytes], ...] = ()) -> None:
    body = (text + "\n").encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"text/plain; charset=utf-8"),
                (b"content-length", str(len(body)).encode()),
                (b"cache-control", b"no-store"),
                *headers,
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


class ProxyApp:
    """The ASGI application: the proxy's two prefixes, Django for the rest (see the module docstring)."""

    def __init__(self, django_app: Callable[..., Awaitable[None]]) -> None:
        self.django_app = django_app
        self.pool = upstream.ClientPool(
            ttl_seconds=settings.PROXY_CLIENT_TTL_SECONDS,
            connect_timeout=settings.PROXY_CONNECT_TIMEOUT_SECONDS,
            limit_per_cluster=settings.PROXY_CONNECTIONS_PER_CLUSTER,
        )
        self.recorder = stats.Recorder()
        self.tokens = access.TtlCache()
        self.routes = access.TtlCache()
        self._flusher: asyncio.Task | None = None
        self._last_flush = time.monotonic()
        self._flush_lock: asyncio.Lock | None = None
        self._background: set[asyncio.Future] = set()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "lifespan":
            await self._lifespan(receive, send)
            return
        path = scope.get("path", "")
        if kind in ("http", "websocket") and path.startswith(PROXY_PREFIX):
            await self._guard(self._session_port, scope, receive, send)
        elif kind == "http" and path.startswith(ENDPOINT_PREFIX):
            await self._guard(self._endpoint, scope, receive, send)
        elif kind == "websocket":  # Django serves no websockets
            await send({"type": "websocket.close", "code": 1000})
        else:
            await self.django_app(scope, receive, send)

    # -- lifespan: the statistics flusher and the pooled sessions --

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                self._flusher = asyncio.ensure_future(self._flush_forever())
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                if self._flusher is not None:
                    self._flusher.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await self._flusher
                await self.flush()
                await self.pool.close()
                await sync_to_async(close_connections)()  # the lookups' thread's, before the process ends
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _flush_forever(self) -> None:
        while True:
            await asyncio.sleep(settings.PROXY_STATS_FLUSH_SECONDS)
            await self.flush()

    async def flush(self) -> int:
        """Write what was recorded to ``EndpointMinute`` (rows kept for the next try on failure)."""
        if self._flush_lock is None:
            self._flush_lock = asyncio.Lock()
        async with self._flush_lock:
            self._last_flush = time.monotonic()
            rows = self.recorder.take()
            if not rows:
                return 0
            try:
                return await sync_to_async(stats.write_minutes)(rows)
            except Exception:
                logger.exception("could not write endpoint statistics; kept for the next flush")
                self.recorder.put_back(rows)
                return 0

    # -- the two routes --

    async def _guard(self, handler, scope: Scope, receive: Receive, send: Send) -> None:
        """Run ``handler``, turning refusals into short answers and never leaking a traceback."""
        try:
            await handler(scope, receive, send)
        except access.Refused as refusal:
            if scope["type"] == "websocket":
                await send({"type": "websocket.close", "code": 1008, "reason": refusal.message[:120]})
            else:
                await _plain(send, refusal.status, refusal.message, refusal.headers)
        except Exception:
            logger.exception("proxy failure on %s", scope.get("path"))
            if scope["type"] == "websocket":
                with contextlib.suppress(Exception):
                    await send({"type": "websocket.close", "code": 1011})
            else:
                with contextlib.suppress(Exception):  # the answer may have started: nothing more to say
                    await _plain(send, 502, "Bad gateway: the proxy could not complete the request.")

    async def _session_port(self, scope: Scope, receive: Receive, send: Send) -> None:
        parts = scope["path"][len(PROXY_PREFIX) :].split("/", 2)
        if len(parts) < 2 or not parts[1].isdigit() or not 1 <= int(parts[1]) <= 65535:
            raise access.Refused(404, "Not found.")
        job_id, port = parts[0], int(parts[1])
        if len(parts) == 2 and scope["type"] == "http":  # /proxy/<job>/<port> -> .../<port>/ (relative links)
            location = quote(scope["path"]) + "/"
            raise access.Refused(308, "Moved.", headers=((b"location", location.encode()),))
        unsafe = scope["type"] == "websocket" or scope["method"] not in ("GET", "HEAD", "OPTIONS")
        origin = _header(scope, b"origin")
        if unsafe and origin and urlsplit(origin).netloc != _header(scope, b"host"):
            raise access.Refused(403, "Cross-site request refused: the session cookie works from this site only.")
        key = access.session_key(_header(scope, b"cookie"))
        cache_key = (key, job_id, port)
        route = self.routes.get(cache_key) if key else None
        if route is None:
            try:
                route = await sync_to_async(access.session_route)(key, job_id, port)
            except access.Refused as refusal:
                if refusal.status == 401 and scope["type"] == "http":
                    raise self._login_redirect(scope) from refusal
                raise
            self.routes.put(cache_key, route, settings.PROXY_ROUTE_CACHE_SECONDS)
        # The whole path goes to the pod: it serves under its base URL (Jupyter's --ServerApp.base_url).
        await self._forward(route, scope["path"].lstrip("/"), scope, receive, send, prefix="")

    @staticmethod
    def _login_redirect(scope: Scope) -> access.Refused:
        from django.shortcuts import resolve_url

        here = scope["path"] + (f"?{scope['query_string'].decode('latin-1')}" if scope.get("query_string") else "")
        accept = _header(scope, b"accept")
        if "text/html" not in accept:
            return access.Refused(401, "Sign in first.")
        location = f"{resolve_url(settings.LOGIN_URL)}?next={quote(here, safe='')}"
        return access.Refused(302, "Sign in first.", headers=((b"location", location.encode()),))

    async def _endpoint(self, scope: Scope, receive: Receive, send: Send) -> None:
        parts = scope["path"][len(ENDPOINT_PREFIX) :].split("/", 1)
        endpoint_id, rest = parts[0], parts[1] if len(parts) == 2 else ""
        token = access.token_of(_header(scope, b"authorization"))
        if not token:
            raise access.Refused(
                401,
                "Send your API token: Authorization: Bearer <token> (a token with the infer scope).",
                headers=((b"www-authenticate", b'Bearer realm="infrafi"'),),
            )

        async def verify():
            grant, left = await sync_to_async(access.verify_token)(token)
            return grant, min(settings.PROXY_TOKEN_CACHE_SECONDS, left)

        async def look_up():
            return await sync_to_async(access.endpoint_route)(endpoint_id), settings.PROXY_ROUTE_CACHE_SECONDS

        digest = access.token_digest(token)
        grant = self.tokens.get(digest) or await self.tokens.get_or_load(digest, verify)
        route_key = ("endpoint", endpoint_id)
        route, renter_id, ready = self.routes.get(route_key) or await self.routes.get_or_load(route_key, look_up)
        access.check_endpoint_grant(grant, renter_id, ready)
        await self._forward(route, rest, scope, receive, send, prefix=f"{ENDPOINT_PREFIX}{endpoint_id}")

    # -- forwarding --

    async def _forward(
        self, route: access.Route, rest: str, scope: Scope, receive: Receive, send: Send, *, prefix: str
    ) -> None:
        started = time.perf_counter()
        status_seen: list[int] = []

        def first_byte(status: int) -> None:
            status_seen.append(status)
            if route.endpoint_id is not None:
                latency_ms = (time.perf_counter() - started) * 1000
                self.recorder.record(route.endpoint_id, at=coarse_now(), latency_ms=latency_ms, error=status >= 500)

        async def build():
            return await sync_to_async(access.cluster_target)(route.cluster_id)

        client = await self.pool.client((route.cluster_id, route.cluster_version), build)
        url = client.service_url(route.namespace, route.service, route.port, upstream.quote_path(rest))
        headers = upstream.forwarded_headers(scope, prefix=prefix)
        try:
            if scope["type"] == "websocket":
                await upstream.forward_websocket(client, url, scope, receive, send, headers)
            else:
                unrewrite = (
                    b""
                    if route.endpoint_id is not None
                    else client.service_prefix(route.namespace, route.service, route.port)
                )
                await upstream.forward_http(
                    client, url, scope, receive, send, headers, on_first_byte=first_byte, unrewrite=unrewrite
                )
        except upstream.UpstreamError as exc:
            if route.endpoint_id is not None and not status_seen:
                first_byte(502)
            raise access.Refused(502, f"Bad gateway: {exc}") from exc
        finally:
            overdue = time.monotonic() - self._last_flush > 2 * settings.PROXY_STATS_FLUSH_SECONDS
            if route.endpoint_id is not None and overdue:
                self._last_flush = time.monotonic()
                task = asyncio.ensure_future(self.flush())  # no lifespan (or its task died): flush from here
                self._background.add(task)
                task.add_done_callback(self._background.discard)
