"""The inference endpoint's proxy path: direct to the model server vs through the platform.

The product path as in production, with stand-ins only where the renter's pod and the owner's
cluster would be:

* the **model server** (a subprocess): aiohttp, a fixed service time per answer like a small
  model step: ``POST /v1/completions`` answers JSON after ``SERVICE_MS`` (8 ms);
  ``POST /v1/chat/completions`` with ``stream: true`` sends ``CHUNKS`` (8) SSE chunks, one per
  ``STEP_MS`` (5 ms), then ``[DONE]``;
* the **API server stand-in** (a subprocess; bench code, not product code): in production the
  owner's kube-apiserver, a Go server whose service proxy costs little CPU per request, so the
  stand-in is kept cheap too: a minimal asyncio ``Protocol`` forwarder (``httptools`` parsing, as
  uvicorn does; uvloop) of the service-proxy path
  ``/api/v1/namespaces/{ns}/services/{svc}:{port}/proxy/{path}`` to the model server, with pooled
  keep-alive upstream connections. It forwards faithfully what the path carries: the method,
  path and query, the headers minus hop-by-hop ones, ``Host`` and ``Authorization`` (the API
  server's credentials are not passed on), ``X-Forwarded-For`` appended to as Go's
  ``ReverseProxy`` does; the answer's status, reason and headers (hop-by-hop ones dropped), and
  its body streamed piece by piece as it arrives (a known length passed through, anything else
  re-chunked, so SSE events are flushed at once). Simplifications of a stand-in: the request
  body is read whole before forwarding (the bench's are small), no TLS, no upgrades, no
  answers to ``HEAD``, no write back-pressure. Not the test emulator either: that one is kmock
  under pytest, opens a session per request and would measure itself;
* the **platform** (this process): ``config.asgi``'s application (``ProxyApp`` in front of
  Django) under uvicorn in a thread, on a throw-away test database holding a renter, a booking,
  a cluster whose kubeconfig points at the stand-in, a ready endpoint and an ``infer`` token;
* the **clients** (a subprocess): 32 concurrent aiohttp clients, ``REQUESTS`` each.

One run measures, for the plain and the streamed answer: direct (clients -> model server),
through the API server stand-in alone (the part of the path that is the owner's), and through
the platform (clients -> platform -> stand-in -> model server). Goals: the platform's requests/s
at least 0.7 of direct, and its added p95 latency (full answer) at most 2 ms, both against
direct; the same figures against the stand-in alone are printed too (what the platform's own
code adds). The endpoint's statistics must count every platform request.

    python -m bench.endpoint            # SQLite; DATABASE_URL=postgres://… for PostgreSQL
    python -m bench.endpoint --smoke    # a few seconds
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CLIENTS = 32
WARM_UP_ROUNDS = 3
REQUESTS = 200
SMOKE_REQUESTS = 10
SERVICE_MS = 8
STEP_MS = 5
CHUNKS = 8
NAMESPACE = "bench"
SERVICE = "llm"
PORT = 8000
PLAIN_BODY = {"model": "bench-1b", "prompt": "Say hello", "max_tokens": 8}
STREAM_BODY = {"model": "bench-1b", "stream": True, "messages": [{"role": "user", "content": "hi"}]}


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def pct(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 2)


# -- the model server and the API server stand-in (subprocesses) --


def serve_model(port: int) -> None:
    from aiohttp import web

    answer = json.dumps(
        {"id": "cmpl-1", "object": "text_completion", "choices": [{"index": 0, "text": "Hello there, friend."}]}
    ).encode()

    async def completions(request: web.Request) -> web.Response:
        await request.read()
        await asyncio.sleep(SERVICE_MS / 1000)
        return web.Response(body=answer, content_type="application/json")

    async def chat(request: web.Request) -> web.StreamResponse:
        await request.read()
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
        await response.prepare(request)
        for index in range(CHUNKS):
            await asyncio.sleep(STEP_MS / 1000)
            await response.write(f'data: {{"choices": [{{"delta": {{"content": "tok{index}"}}}}]}}\n\n'.encode())
        await response.write(b"data: [DONE]\n\n")
        await response.write_eof()
        return response

    app = web.Application()
    app.router.add_post("/v1/completions", completions)
    app.router.add_post("/v1/chat/completions", chat)
    web.run_app(app, host="127.0.0.1", port=port, print=None, access_log=None)


def serve_api_server(port: int, upstream: str) -> None:
    """The API server stand-in: an asyncio ``Protocol`` forwarder parsing with ``httptools`` (see
    the module docstring); pooled keep-alive connections to the model server, answers streamed
    back as their bytes arrive."""
    import re
    from urllib.parse import urlsplit

    import httptools

    target = urlsplit(upstream)
    host, upstream_port = target.hostname or "127.0.0.1", target.port or 80
    host_header = f"{host}:{upstream_port}".encode()
    route = re.compile(rb"^/api/v1/namespaces/[^/]+/services/[^/]+/proxy(/.*)?$")
    # Hop-by-hop headers, the API server's own credentials and the length (set again) stay here.
    hop = {b"connection", b"keep-alive", b"proxy-connection", b"te", b"trailer", b"transfer-encoding"}
    hop |= {b"upgrade", b"proxy-authorization", b"proxy-authenticate"}
    request_dropped = hop | {b"host", b"authorization", b"content-length"}
    idle: list[Upstream] = []
    connecting: set[asyncio.Future] = set()  # new upstream connections being opened

    def spawn(coroutine) -> None:
        task = asyncio.ensure_future(coroutine)
        connecting.add(task)
        task.add_done_callback(connecting.discard)

    class Upstream(asyncio.Protocol):
        """One keep-alive connection to the model server, carrying one request at a time."""

        def __init__(self) -> None:
            self.transport: asyncio.Transport | None = None
            self.parser = httptools.HttpResponseParser(self)
            self.client: Client | None = None
            self.reused = False
            self.started = False
            self.chunked = False
            self.reason = b""
            self.headers: list[tuple[bytes, bytes]] = []

        def connection_made(self, transport) -> None:
            self.transport = transport

        def send(self, client: Client, request: bytes) -> None:
            self.client, self.started, self.headers, self.reason = client, False, [], b""
            self.parser = httptools.HttpResponseParser(self)
            self.transport.write(request)

        def data_received(self, data: bytes) -> None:
            try:
                self.parser.feed_data(data)
            except httptools.HttpParserError:
                self.transport.close()

        def on_status(self, reason: bytes) -> None:
            self.reason += reason

        def on_header(self, name: bytes, value: bytes) -> None:
            self.headers.append((name, value))

        def on_headers_complete(self) -> None:
            self.started = True
            status = self.parser.get_status_code()
            lines = [b"HTTP/1.1 %d %s\r\n" % (status, self.reason or b"OK")]
            length = False
            for name, value in self.headers:
                lower = name.lower()
                if lower == b"content-length":
                    length = True
                elif lower in hop:
                    continue
                lines.append(b"%s: %s\r\n" % (name, value))
            self.chunked = not length and status not in (204, 304)
            if self.chunked:
                lines.append(b"Transfer-Encoding: chunked\r\n")
            if not self.client.keep_alive:
                lines.append(b"Connection: close\r\n")
            lines.append(b"\r\n")
            self.client.write(b"".join(lines))

        def on_body(self, body: bytes) -> None:
            # Each piece goes on as it came: an SSE event is flushed at once, never held back.
            self.client.write(b"%x\r\n%s\r\n" % (len(body), body) if self.chunked else body)

        def on_message_complete(self) -> None:
            client, self.client = self.client, None
            if self.chunked:
                client.write(b"0\r\n\r\n")
            if self.parser.should_keep_alive() and not self.transport.is_closing():
                self.reused = True
                idle.append(self)
            else:
                self.transport.close()
            client.done()

        def connection_lost(self, exc) -> None:
            if self in idle:
                idle.remove(self)
            client, self.client = self.client, None
            if client is None:
                return
            if not self.started and self.reused:
                client.retry()  # a kept-alive connection the model server had closed meanwhile
            elif not self.started:
                client.fail()
            else:
                client.close()  # cut short mid-answer: the client sees a truncated body

    class Client(asyncio.Protocol):
        """One client connection: requests are parsed, forwarded and answered in order."""

        def __init__(self) -> None:
            self.transport: asyncio.Transport | None = None
            self.parser = httptools.HttpRequestParser(self)
            self.queue: list[tuple[bytes, bool, bytes]] = []  # (request, keep-alive, own answer)
            self.busy = False
            self.keep_alive = True
            self.peer = b""
            self._url = b""
            self._headers: list[bytes] = []
            self._body: list[bytes] = []
            self._xff_seen = False
            self._current: tuple[bytes, bool, bytes] = (b"", True, b"")

        def connection_made(self, transport) -> None:
            self.transport = transport
            peer = transport.get_extra_info("peername")
            self.peer = peer[0].encode() if peer else b""

        def data_received(self, data: bytes) -> None:
            try:
                self.parser.feed_data(data)
            except httptools.HttpParserError:
                self.transport.write(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                self.transport.close()

        def on_message_begin(self) -> None:
            self._url, self._headers, self._body, self._xff_seen = b"", [], [], False

        def on_url(self, url: bytes) -> None:
            self._url += url

        def on_header(self, name: bytes, value: bytes) -> None:
            lower = name.lower()
            if lower == b"x-forwarded-for":
                value = value + b", " + self.peer
                self._xff_seen = True  # appended to, as Go's ReverseProxy does
            elif lower in request_dropped:
                return
            self._headers.append(b"%s: %s\r\n" % (name, value))

        def on_body(self, body: bytes) -> None:
            self._body.append(body)

        def on_message_complete(self) -> None:
            path, _, query = self._url.partition(b"?")
            matched = route.match(path)
            keep_alive = self.parser.should_keep_alive()
            if matched is None:
                answer = b"HTTP/1.1 404 Not Found\r\nContent-Length: 10\r\n\r\nnot found\n"
                self.queue.append((b"", keep_alive, answer))
            else:
                rest = (matched.group(1) or b"/") + (b"?" + query if query else b"")
                body = b"".join(self._body)
                method = self.parser.get_method()
                xff = [] if self._xff_seen else [b"X-Forwarded-For: %s\r\n" % self.peer]
                length = b"Content-Length: %d\r\n" % len(body) if body or method in (b"POST", b"PUT", b"PATCH") else b""
                head = b"".join(
                    [
                        b"%s %s HTTP/1.1\r\nHost: %s\r\n" % (method, rest, host_header),
                        *self._headers,
                        *xff,
                        length,
                        b"\r\n",
                    ]
                )
                self.queue.append((head + body, keep_alive, b""))
            if not self.busy:
                self.next()

        def next(self) -> None:
            if not self.queue or self.transport.is_closing():
                return
            self.busy = True
            self._current = self.queue.pop(0)
            request, self.keep_alive, answer = self._current
            if answer:
                self.write(answer)
                self.done()
            else:
                self.forward(request)

        def forward(self, request: bytes) -> None:
            while idle:
                conn = idle.pop()
                if not conn.transport.is_closing():
                    conn.send(self, request)
                    return
            spawn(self._connect(request))

        async def _connect(self, request: bytes) -> None:
            try:
                _, conn = await asyncio.get_running_loop().create_connection(Upstream, host, upstream_port)
            except OSError:
                self.fail()
                return
            conn.send(self, request)

        def retry(self) -> None:
            spawn(self._connect(self._current[0]))

        def fail(self) -> None:
            self.write(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 12\r\n\r\nbad gateway\n")
            self.done()

        def write(self, data: bytes) -> None:
            if not self.transport.is_closing():
                self.transport.write(data)

        def done(self) -> None:
            self.busy = False
            if not self.keep_alive:
                self.transport.close()
                return
            self.next()

        def close(self) -> None:
            self.transport.close()

        def connection_lost(self, exc) -> None:
            self.queue.clear()

    async def main() -> None:
        server = await asyncio.get_running_loop().create_server(Client, "127.0.0.1", port, backlog=1024)
        async with server:
            await server.serve_forever()

    try:
        import uvloop

        uvloop.run(main())
    except ImportError:
        asyncio.run(main())


# -- the clients (a subprocess) --


async def _load(url: str, token: str, clients: int, requests: int, stream: bool) -> dict:
    import aiohttp

    body = json.dumps(STREAM_BODY if stream else PLAIN_BODY).encode()
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    latencies: list[float] = []
    first: list[float] = []
    failures = 0

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=clients)) as session:

        async def one() -> None:
            nonlocal failures
            started = time.perf_counter()
            async with session.post(url, data=body, headers=headers) as answer:
                got_first = None
                async for _chunk in answer.content.iter_any():
                    if got_first is None:
                        got_first = time.perf_counter()
                if answer.status != 200:
                    failures += 1
            done = time.perf_counter()
            latencies.append((done - started) * 1000)
            first.append(((got_first or done) - started) * 1000)

        async def client() -> None:
            for _ in range(requests):
                await one()

        for _ in range(WARM_UP_ROUNDS):  # warm-up: connections and caches
            await asyncio.gather(*(one() for _ in range(clients)))
        latencies.clear()
        first.clear()
        started = time.perf_counter()
        await asyncio.gather(*(client() for _ in range(clients)))
        seconds = time.perf_counter() - started
    return {
        "requests": len(latencies),
        "failures": failures,
        "rps": round(len(latencies) / seconds, 1),
        "p50_ms": pct(latencies, 0.50),
        "p95_ms": pct(latencies, 0.95),
        "first_byte_p95_ms": pct(first, 0.95),
    }


def load(url: str, token: str, clients: int, requests: int, stream: bool) -> dict:
    """Run the clients in a subprocess (their own CPU, not the platform's GIL)."""
    command = [sys.executable, "-m", "bench.endpoint", "--role", "load", "--url", url, "--token", token]
    command += ["--clients", str(clients), "--requests", str(requests)] + (["--stream"] if stream else [])
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=True, timeout=600)
    return json.loads(done.stdout.strip().splitlines()[-1])


# -- the platform (this process) --


def wait_for_port(port: int, seconds: float = 20) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on port {port}")


def seed(api_server: str) -> tuple[object, str]:
    from datetime import timedelta

    import yaml

    from accounts.services import api_token_issue
    from marketplace.catalogue import load_catalogue
    from marketplace.models import GpuModel, Region
    from marketplace.services import bookings
    from scheduler import crypto
    from scheduler.models import Cluster, Endpoint
    from tests.factories import make_listing, make_owner, make_renter, next_hour

    load_catalogue(GpuModel, Region)
    owner, renter = make_owner(), make_renter()
    listing = make_listing(owner, gpu_count=2, price="2.00", hostname="gpu-a")
    start = next_hour(1)
    booking = bookings.booking_pay(
        booking=bookings.booking_create(
            renter=renter, listing=listing, gpu_count=1, start=start, end=start + timedelta(hours=2)
        ),
        renter=renter,
    )
    kubeconfig = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "bench", "cluster": {"server": api_server}}],
        "users": [{"name": "bench", "user": {"token": "bench-cluster-token"}}],
        "contexts": [{"name": "bench", "context": {"cluster": "bench", "user": "bench"}}],
        "current-context": "bench",
    }
    cluster = Cluster.objects.create(
        owner=owner.owner_membership.company,
        name="bench",
        kind=Cluster.Kind.KUBERNETES,
        kubeconfig_sealed=crypto.seal(yaml.safe_dump(kubeconfig)),
        api_server=api_server,
        private_network_allowed=True,  # the stand-in listens on 127.0.0.1
    )
    endpoint = Endpoint.objects.create(
        booking=booking,
        renter=renter,
        name="llm",
        image="vllm/vllm-openai",
        port=PORT,
        status=Endpoint.Status.READY,
        cluster=cluster,
        namespace=NAMESPACE,
        k8s_name=SERVICE,
        service_name=SERVICE,
        ready_replicas=1,
    )
    token = api_token_issue(user=renter, name="bench", scope="infer", expires_in_days=1).key
    return endpoint, token


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="a few requests per client: seconds, not minutes")
    parser.add_argument("--role", choices=["bench", "model", "api-server", "load"], default="bench")
    parser.add_argument("--port", type=int)
    parser.add_argument("--upstream", default="")
    parser.add_argument("--url", default="")
    parser.add_argument("--token", default="")
    parser.add_argument("--clients", type=int, default=CLIENTS)
    parser.add_argument("--requests", type=int, default=REQUESTS)
    parser.add_argument("--stream", action="store_true")
    args = parser.parse_args()
    if args.role == "model":
        serve_model(args.port)
    elif args.role == "api-server":
        serve_api_server(args.port, args.upstream)
    elif args.role == "load":
        print(json.dumps(asyncio.run(_load(args.url, args.token, args.clients, args.requests, args.stream))))
    else:
        bench(requests=SMOKE_REQUESTS if args.smoke else args.requests, clients=args.clients)


def bench(*, requests: int, clients: int) -> None:
    from bench._django import test_database

    model_port, api_port, platform_port = free_port(), free_port(), free_port()
    model_url, api_url = f"http://127.0.0.1:{model_port}", f"http://127.0.0.1:{api_port}"
    role = [sys.executable, "-m", "bench.endpoint", "--role"]
    children = [
        subprocess.Popen([*role, "model", "--port", str(model_port)], cwd=ROOT),
        subprocess.Popen([*role, "api-server", "--port", str(api_port), "--upstream", model_url], cwd=ROOT),
    ]
    try:
        with test_database() as connection:
            import uvicorn
            from django.core.asgi import get_asgi_application

            from scheduler.models import EndpointMinute
            from scheduler.proxy.app import ProxyApp

            endpoint, token = seed(api_url)
            app = ProxyApp(get_asgi_application())
            server = uvicorn.Server(
                uvicorn.Config(
                    app, host="127.0.0.1", port=platform_port, lifespan="on", log_level="warning", access_log=False
                )
            )
            thread = threading.Thread(target=server.run, name="uvicorn", daemon=True)
            thread.start()
            for port in (model_port, api_port, platform_port):
                wait_for_port(port)
            paths = {"plain": "v1/completions", "stream": "v1/chat/completions"}
            service_proxy = f"{api_url}/api/v1/namespaces/{NAMESPACE}/services/{SERVICE}:{PORT}/proxy"
            figures: dict[str, dict] = {}
            for kind, path in paths.items():
                stream = kind == "stream"
                figures[kind] = {
                    "direct": load(f"{model_url}/{path}", "", clients, requests, stream),
                    "api_server_only": load(f"{service_proxy}/{path}", "", clients, requests, stream),
                }
                cpu_before = cpu_seconds()
                figures[kind]["platform"] = load(
                    f"http://127.0.0.1:{platform_port}/endpoints/{endpoint.public_id}/{path}",
                    token,
                    clients,
                    requests,
                    stream,
                )
                # This process runs the platform only (clients and servers are subprocesses): its CPU
                # per request is the proxy's cost, whatever else the machine runs meanwhile.
                served = figures[kind]["platform"]["requests"] + WARM_UP_ROUNDS * clients
                figures[kind]["platform"]["cpu_ms_per_request"] = round((cpu_seconds() - cpu_before) * 1000 / served, 3)
            server.should_exit = True
            thread.join(30)  # the lifespan shutdown writes the statistics
            recorded = sum(EndpointMinute.objects.filter(endpoint=endpoint).values_list("requests", flat=True))
            vendor = connection.vendor
    finally:
        for child in children:
            child.terminate()
        for child in children:
            child.wait(10)

    result: dict = {
        "benchmark": "endpoint",
        "database": vendor,
        "clients": clients,
        "requests_per_client": requests,
        "service_ms": SERVICE_MS,
        "stream_chunks": CHUNKS,
        "stream_step_ms": STEP_MS,
        "cpus": os.cpu_count(),
        "load_average_1m": round(os.getloadavg()[0], 2),  # others' work on the machine skews the ratios
    }
    goals: dict[str, bool] = {}
    platform_requests = 0
    for kind, runs in figures.items():
        direct, api_only, platform = runs["direct"], runs["api_server_only"], runs["platform"]
        platform_requests += platform["requests"] + WARM_UP_ROUNDS * clients  # the warm-up requests are counted too
        result[kind] = {
            **runs,
            "rps_ratio_platform_to_direct": round(platform["rps"] / direct["rps"], 3),
            "added_p95_ms_vs_direct": round(platform["p95_ms"] - direct["p95_ms"], 2),
            "rps_ratio_platform_to_api_server_only": round(platform["rps"] / api_only["rps"], 3),
            "added_p95_ms_vs_api_server_only": round(platform["p95_ms"] - api_only["p95_ms"], 2),
        }
        goals[f"{kind}_rps_ratio_at_least_0_7"] = result[kind]["rps_ratio_platform_to_direct"] >= 0.7
        goals[f"{kind}_added_p95_at_most_2ms"] = result[kind]["added_p95_ms_vs_direct"] <= 2.0
        goals[f"{kind}_no_failures"] = not (direct["failures"] or api_only["failures"] or platform["failures"])
    result["statistics_recorded"] = recorded
    goals["statistics_count_every_platform_request"] = recorded == platform_requests
    result["goals"] = goals
    print(json.dumps(result))


if __name__ == "__main__":
    main()
