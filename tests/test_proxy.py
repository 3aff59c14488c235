"""The platform's proxy (``scheduler.proxy``) over real HTTP: ``config.asgi``'s application under
uvicorn in a thread (database: the test's PostgreSQL, committed rows: ``transaction=True``), the
owner's API server played by the Kubernetes emulator (``tests.kube_emulator``, whose service
proxy forwards to an aiohttp upstream the test runs, standing in for the pod).

Covered: a session port for its renter only (others 404, signed out 401 or a login redirect),
websockets through it, an inference endpoint answering a streamed (SSE) completion chunk by chunk
before the upstream finished, the token rules (no token 401, another renter's 404, a read
token 403), no cookie or Authorization reaching the pod, 502 when the pod does not answer, 503
when the endpoint is not ready, and the request statistics written to ``EndpointMinute`` (at
shutdown, with an upsert that adds up) and read back by ``endpoint_summary``. Also the hot
path's precomputed parts (the clock, the URL table, header filtering) against what plain code
gives, and ``bench.endpoint``'s API server stand-in (status, headers, query, credentials not
passed on, SSE streamed unbuffered, keep-alive reuse), so the benchmark measures a faithful
path."""

from __future__ import annotations

import asyncio
import itertools
import json
import socket
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest
import yaml
from aiohttp import WSMsgType, web

from scheduler import crypto
from scheduler.models import Cluster, Endpoint, EndpointMinute, ExposedPort, Job
from scheduler.proxy import stats

NAMESPACE = "renter-ns"
WAIT_SECONDS = 10
_tokens = itertools.count(1)

pytestmark = pytest.mark.django_db(transaction=True)

JUPYTER_PAGE = """<!doctype html>
<html><head><title>JupyterLab</title></head>
<body><h1>JupyterLab</h1><p id="status">connecting</p><p id="echo"></p>
<a id="tree" href="BASE/tree">Files</a><link rel="icon" href="BASE/static/favicon.ico">
<script>
const base = location.pathname.replace(/lab$/, "");
const scheme = location.protocol === "https:" ? "wss://" : "ws://";
const ws = new WebSocket(scheme + location.host + base + "api/kernels/k1/channels");
ws.onopen = () => { document.getElementById("status").textContent = "open"; ws.send("hello kernel"); };
ws.onmessage = (event) => { document.getElementById("echo").textContent = event.data; };
ws.onclose = () => { document.getElementById("status").textContent = "closed"; };
</script></body></html>
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Upstream:
    """The pod: an aiohttp server on its own loop and thread. It records what it was sent, echoes
    websockets, serves a Jupyter-like page, and streams an SSE completion whose second chunk waits
    for ``release`` (set by the test only after it read the first one)."""

    def __init__(self) -> None:
        self.seen: list[dict] = []
        self.release = threading.Event()
        self.finished = threading.Event()
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="upstream", daemon=True)
        self.url = ""
        self._runner: web.AppRunner | None = None

    def start(self) -> None:
        self.thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self.loop).result(WAIT_SECONDS)

    async def _start(self) -> None:
        app = web.Application()
        # A session's pod serves under its base URL (/proxy/<job>/<port>/), as Jupyter does.
        app.router.add_get("/proxy/{job}/{port}/lab", self.lab)
        app.router.add_get("/proxy/{job}/{port}/api/kernels/k1/channels", self.kernel)
        app.router.add_post("/v1/chat/completions", self.completions)
        app.router.add_route("*", "/{tail:.*}", self.record)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        port = free_port()
        await web.TCPSite(self._runner, "127.0.0.1", port).start()
        self.url = f"http://127.0.0.1:{port}"

    def stop(self) -> None:
        if self._runner is not None:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self.loop).result(WAIT_SECONDS)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(WAIT_SECONDS)

    async def record(self, request: web.Request) -> web.Response:
        entry = {
            "method": request.method,
            "path": request.path,
            "query": request.query_string,
            "headers": {k.lower(): v for k, v in request.headers.items()},
            "body": (await request.read()).decode(),
        }
        self.seen.append(entry)
        return web.json_response(entry, headers={"Set-Cookie": "pod=1; Path=/", "X-Pod": "yes"})

    async def lab(self, request: web.Request) -> web.Response:
        self.seen.append({"method": "GET", "path": request.path, "headers": dict(request.headers)})
        base = f"/proxy/{request.match_info['job']}/{request.match_info['port']}"  # Jupyter's base_url
        return web.Response(text=JUPYTER_PAGE.replace("BASE", base), content_type="text/html")

    async def kernel(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        async for message in ws:
            if message.type == WSMsgType.TEXT:
                await ws.send_str(f"echo: {message.data}")
        return ws

    async def completions(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        self.seen.append({"method": "POST", "path": request.path, "headers": dict(request.headers), "json": body})
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
        await response.prepare(request)
        await response.write(b'data: {"choices": [{"delta": {"content": "Hel"}}]}\n\n')
        released = await asyncio.to_thread(self.release.wait, WAIT_SECONDS)
        await response.write(
            b'data: {"choices": [{"delta": {"content": "lo"}}]}\n\n' if released else b"data: late\n\n"
        )
        await response.write(b"data: [DONE]\n\n")
        await response.write_eof()
        self.finished.set()
        return response


@pytest.fixture
def upstream() -> Iterator[Upstream]:
    server = Upstream()
    server.start()
    try:
        yield server
    finally:
        server.stop()


class ProxyServer:
    """``config.asgi``'s application (a fresh ``ProxyApp``, so caches start empty) under uvicorn in a thread."""

    def __init__(self) -> None:
        import uvicorn
        from django.core.asgi import get_asgi_application

        from scheduler.proxy.app import ProxyApp

        self.app = ProxyApp(get_asgi_application())
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        config = uvicorn.Config(
            self.app, host="127.0.0.1", port=port, lifespan="on", log_level="warning", ws="websockets-sansio"
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, name="uvicorn", daemon=True)

    def start(self) -> None:
        self.thread.start()
        deadline = time.monotonic() + WAIT_SECONDS
        while not self.server.started:
            assert time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.02)

    def stop(self) -> None:
        """Stops the server: its lifespan shutdown flushes the statistics and closes its connections."""
        self.server.should_exit = True
        self.thread.join(WAIT_SECONDS)
        # Django's ASGI handler runs each request's view in a thread of its own, which can leave a
        # connection open after the server stopped: end them, or the test database cannot be dropped.
        from django.db import connection

        if connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                cursor.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE datname = current_database() AND pid <> pg_backend_pid()"
                )


@pytest.fixture
def proxy_server() -> Iterator[ProxyServer]:
    server = ProxyServer()
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def workload(catalogue, owner, renter, kube_cluster, upstream):
    """A running job with Jupyter on port 8888 and a ready endpoint, on an emulated cluster whose
    service proxy sends both Services to the upstream."""
    from marketplace.services import bookings
    from tests.factories import make_listing, next_hour

    listing = make_listing(owner, gpu_count=2, price="2.00", hostname="gpu-a")
    start = next_hour(1)
    booking = bookings.booking_pay(
        booking=bookings.booking_create(
            renter=renter, listing=listing, gpu_count=1, start=start, end=start + timedelta(hours=1)
        ),
        renter=renter,
    )
    cluster = Cluster.objects.create(
        owner=owner.owner_membership.company,
        name="prod",
        kind=Cluster.Kind.KUBERNETES,
        kubeconfig_sealed=crypto.seal(yaml.safe_dump(kube_cluster.kubeconfig)),
        api_server=kube_cluster.url,
        private_network_allowed=True,  # the emulator listens on 127.0.0.1
    )
    job = Job.objects.create(
        booking=booking,
        renter=renter,
        name="notebook",
        image="quay.io/jupyter/pytorch-notebook",
        gpu_count=1,
        status=Job.Status.RUNNING,
        cluster=cluster,
        namespace=NAMESPACE,
        k8s_name="notebook-1",
    )
    ExposedPort.objects.create(job=job, port=8888, label="Jupyter", service_name="notebook-1-http")
    ExposedPort.objects.create(job=job, port=6006, label="TensorBoard")  # no Service yet
    endpoint = Endpoint.objects.create(
        booking=booking,
        renter=renter,
        name="llm",
        image="vllm/vllm-openai",
        port=8000,
        status=Endpoint.Status.READY,
        cluster=cluster,
        namespace=NAMESPACE,
        k8s_name="llm",
        service_name="llm",
        ready_replicas=1,
    )
    kube_cluster.route_service(NAMESPACE, "notebook-1-http", 8888, upstream.url)
    kube_cluster.route_service(NAMESPACE, "llm", 8000, upstream.url)
    return job, endpoint


def job_api_server(job) -> str:
    return job.cluster.api_server


def session_cookie(user) -> str:
    from django.conf import settings
    from django.test import Client

    client = Client()
    client.force_login(user)
    return f"{settings.SESSION_COOKIE_NAME}={client.cookies[settings.SESSION_COOKIE_NAME].value}"


def token(user, scope: str) -> str:
    from accounts.services import api_token_issue

    return api_token_issue(user=user, name=f"t-{scope}-{next(_tokens)}", scope=scope).key


# -- sessions: /proxy/<job>/<port>/ --


def test_a_session_port_answers_its_renter_only_and_passes_no_credentials(proxy_server, workload, renter, upstream):
    from tests.factories import make_renter

    job, _ = workload
    base = f"{proxy_server.url}/proxy/{job.public_id}/8888"
    cookie = session_cookie(renter)
    answer = httpx.post(
        f"{base}/api/contents?type=notebook",
        content=b'{"name": "a.ipynb"}',
        headers={
            "Cookie": f"{cookie}; other=1",
            "Authorization": "Token ifi_secret",
            "Content-Type": "application/json",
        },
    )
    assert answer.status_code == 200, answer.text
    seen = answer.json()
    path = f"/proxy/{job.public_id}/8888/api/contents"
    assert (seen["method"], seen["path"], seen["query"]) == ("POST", path, "type=notebook")
    assert seen["body"] == '{"name": "a.ipynb"}'
    headers = seen["headers"]
    assert "cookie" not in headers and "authorization" not in headers
    assert "x-forwarded-prefix" not in headers  # the pod got the whole path
    assert headers["x-forwarded-for"] == "127.0.0.1" and headers["content-type"] == "application/json"
    # The pod's own headers come back, but it cannot set cookies on the platform's domain.
    assert answer.headers["x-pod"] == "yes" and "set-cookie" not in answer.headers

    stranger = session_cookie(make_renter())
    refused = httpx.get(f"{base}/lab", headers={"Cookie": stranger})
    assert refused.status_code == 404 and "no such session port of yours" in refused.text
    signed_out = httpx.get(f"{base}/lab")
    assert signed_out.status_code == 401 and signed_out.text.strip() == "Sign in first."
    browser = httpx.get(f"{base}/lab", headers={"Accept": "text/html"})
    assert browser.status_code == 302 and browser.headers["location"].startswith("/accounts/login/?next=%2Fproxy%2F")
    assert len(upstream.seen) == 1  # none of the refused requests reached the pod

    # The API server prefixes the page's root-relative links with its service-proxy path (the
    # emulator does, as Kubernetes does); the platform takes it off again.
    service = f"/api/v1/namespaces/{NAMESPACE}/services/notebook-1-http:8888/proxy"
    direct = httpx.get(f"{job_api_server(job)}{service}/proxy/{job.public_id}/8888/lab").text
    assert f'href="{service}/proxy/{job.public_id}/8888/tree"' in direct
    page = httpx.get(f"{base}/lab", headers={"Cookie": cookie, "Accept-Encoding": "identity"})
    assert page.status_code == 200 and f'href="/proxy/{job.public_id}/8888/tree"' in page.text
    assert "/api/v1/" not in page.text and page.headers["content-length"] == str(len(page.content))


def test_session_ports_that_are_not_there_are_404_never_500(proxy_server, workload, renter):
    job, _ = workload
    cookie = {"Cookie": session_cookie(renter)}
    base = f"{proxy_server.url}/proxy/{job.public_id}"
    assert httpx.get(f"{base}/6006/", headers=cookie).status_code == 404  # exposed, no Service yet
    assert httpx.get(f"{base}/9999/", headers=cookie).status_code == 404  # not exposed
    assert httpx.get(f"{base}/70000/", headers=cookie).status_code == 404
    assert httpx.get(f"{proxy_server.url}/proxy/not-a-uuid/8888/", headers=cookie).status_code == 404
    assert httpx.get(f"{proxy_server.url}/proxy/", headers=cookie).status_code == 404
    moved = httpx.get(f"{base}/8888", headers=cookie)
    assert moved.status_code == 308 and moved.headers["location"] == f"/proxy/{job.public_id}/8888/"
    Job.objects.filter(pk=job.pk).update(status=Job.Status.SUCCEEDED)
    proxy_server.app.routes.clear()
    finished = httpx.get(f"{base}/8888/lab", headers=cookie)
    assert finished.status_code == 404 and "is the job running" in finished.text


def test_websockets_pass_through_both_ways(proxy_server, workload, renter):
    import websockets.sync.client

    job, _ = workload
    url = proxy_server.url.replace("http://", "ws://") + f"/proxy/{job.public_id}/8888/api/kernels/k1/channels"
    with websockets.sync.client.connect(url, additional_headers={"Cookie": session_cookie(renter)}) as ws:
        ws.send("first")
        assert ws.recv(timeout=WAIT_SECONDS) == "echo: first"
        ws.send("second")
        assert ws.recv(timeout=WAIT_SECONDS) == "echo: second"
    with pytest.raises(websockets.exceptions.WebSocketException), websockets.sync.client.connect(url) as ws:
        ws.recv(timeout=WAIT_SECONDS)  # signed out: closed before any message
    hijack = {"Cookie": session_cookie(renter)}
    with (
        pytest.raises(websockets.exceptions.WebSocketException),
        websockets.sync.client.connect(url, additional_headers=hijack, origin="https://evil.example") as ws,
    ):
        ws.recv(timeout=WAIT_SECONDS)  # another site's page with the renter's cookie: refused
    post = httpx.post(url.replace("ws://", "http://"), headers={**hijack, "Origin": "https://evil.example"})
    assert post.status_code == 403 and "Cross-site request refused" in post.text


# -- inference endpoints: /endpoints/<endpoint>/ --


def test_a_streamed_completion_arrives_chunk_by_chunk_and_is_counted(proxy_server, workload, renter, upstream):
    _, endpoint = workload
    url = f"{proxy_server.url}/endpoints/{endpoint.public_id}/v1/chat/completions"
    headers = {"Authorization": f"Bearer {token(renter, 'infer')}", "Cookie": session_cookie(renter)}
    body = {"model": "m", "stream": True, "messages": [{"role": "user", "content": "hi"}]}
    chunks = []
    with httpx.stream("POST", url, json=body, headers=headers, timeout=WAIT_SECONDS) as answer:
        assert answer.status_code == 200
        assert answer.headers["content-type"] == "text/event-stream"
        for chunk in answer.iter_raw():
            chunks.append(chunk)
            if len(chunks) == 1:
                # The first chunk is here while the upstream still waits: nothing was buffered.
                assert b"Hel" in chunk and not upstream.finished.is_set()
                upstream.release.set()
    text = b"".join(chunks).decode()
    assert '"lo"' in text and text.rstrip().endswith("data: [DONE]")
    assert upstream.seen[-1]["json"] == body
    assert "Authorization" not in upstream.seen[-1]["headers"] and "Cookie" not in upstream.seen[-1]["headers"]

    plain = httpx.get(url.replace("/v1/chat/completions", "/v1/models"), headers=headers)
    assert plain.status_code == 200 and plain.json()["path"] == "/v1/models"
    assert plain.json()["headers"]["x-forwarded-prefix"] == f"/endpoints/{endpoint.public_id}"

    assert not EndpointMinute.objects.exists()  # the aggregate is in memory until a flush
    proxy_server.stop()  # lifespan shutdown: the last flush
    rows = list(EndpointMinute.objects.filter(endpoint=endpoint))
    assert sum(r.requests for r in rows) == 2 and sum(r.errors for r in rows) == 0
    assert sum(sum(r.latency_buckets) for r in rows) == 2
    summary = stats.endpoint_summary(endpoint)
    assert summary.requests == 2 and summary.errors == 0 and summary.p95_ms is not None


def test_endpoint_tokens_scopes_and_readiness(proxy_server, workload, renter, upstream, kube_cluster):
    from tests.factories import make_renter

    _, endpoint = workload
    url = f"{proxy_server.url}/endpoints/{endpoint.public_id}/v1/models"
    missing = httpx.get(url)
    assert missing.status_code == 401 and "Authorization: Bearer" in missing.text
    assert missing.headers["www-authenticate"].startswith("Bearer")
    assert httpx.get(url, headers={"Authorization": "Bearer ifi_wrong"}).status_code == 401
    stranger = httpx.get(url, headers={"Authorization": f"Bearer {token(make_renter(), 'infer')}"})
    assert stranger.status_code == 404 and "no such inference endpoint of yours" in stranger.text
    read = httpx.get(url, headers={"Authorization": f"Bearer {token(renter, 'read')}"})
    assert read.status_code == 403 and "read scope" in read.text
    owner_scoped = httpx.get(url, headers={"Authorization": f"Token {token(renter, 'owner')}"})
    assert owner_scoped.status_code == 403
    for scope in ("book", "admin"):
        assert httpx.get(url, headers={"Authorization": f"Bearer {token(renter, scope)}"}).status_code == 200
    unknown = f"{proxy_server.url}/endpoints/00000000-0000-0000-0000-000000000000/v1/models"
    assert httpx.get(unknown, headers={"Authorization": f"Bearer {token(renter, 'infer')}"}).status_code == 404
    assert len(upstream.seen) == 2

    # The Service has no ready pod (the API server says 503): passed on, and counted as an error.
    infer = {"Authorization": f"Bearer {token(renter, 'infer')}"}
    kube_cluster.unroute_service(NAMESPACE, "llm", 8000)
    assert httpx.get(url, headers=infer).status_code == 503
    # Not ready in our books: the proxy answers without asking the cluster, and does not count it.
    Endpoint.objects.filter(pk=endpoint.pk).update(status=Endpoint.Status.DEGRADED, ready_replicas=0)
    proxy_server.app.routes.clear()
    not_ready = httpx.get(url, headers=infer)
    assert not_ready.status_code == 503 and "Endpoint not ready" in not_ready.text
    proxy_server.stop()
    minute = EndpointMinute.objects.get(endpoint=endpoint)
    assert (minute.requests, minute.errors) == (3, 1)


def test_an_api_server_that_does_not_answer_is_a_502(proxy_server, workload, renter):
    job, endpoint = workload
    dead = {**yaml.safe_load(crypto.unseal(job.cluster.kubeconfig_sealed))}
    dead["clusters"][0]["cluster"]["server"] = f"http://127.0.0.1:{free_port()}"
    Cluster.objects.filter(pk=job.cluster_id).update(kubeconfig_sealed=crypto.seal(yaml.safe_dump(dead)))
    answer = httpx.get(
        f"{proxy_server.url}/endpoints/{endpoint.public_id}/v1/models",
        headers={"Authorization": f"Bearer {token(renter, 'infer')}"},
    )
    assert answer.status_code == 502 and "could not be reached" in answer.text
    session = httpx.get(
        f"{proxy_server.url}/proxy/{job.public_id}/8888/lab", headers={"Cookie": session_cookie(renter)}
    )
    assert session.status_code == 502
    proxy_server.stop()
    minute = EndpointMinute.objects.get(endpoint=endpoint)
    assert (minute.requests, minute.errors, sum(minute.latency_buckets)) == (1, 1, 1)


def test_the_statistics_upsert_adds_up_across_flushes(workload):
    _, endpoint = workload
    at = datetime(2026, 12, 3, 7, 15, 42, tzinfo=UTC)
    first, second = stats.Recorder(), stats.Recorder()  # two proxy processes
    first.record(endpoint.pk, at=at, latency_ms=4, error=False)
    first.record(endpoint.pk, at=at + timedelta(seconds=10), latency_ms=120, error=True)
    second.record(endpoint.pk, at=at, latency_ms=4.5, error=False)
    second.record(endpoint.pk, at=at + timedelta(minutes=1), latency_ms=0.5, error=False)
    assert stats.write_minutes(first.take()) == 1 and stats.write_minutes(second.take()) == 2
    assert stats.write_minutes({(endpoint.pk + 999, at): [1, 0, [1]]}) == 0  # an endpoint deleted meanwhile
    rows = {r.minute: r for r in EndpointMinute.objects.filter(endpoint=endpoint)}
    this = rows[at.replace(second=0)]
    assert (this.requests, this.errors) == (3, 1)
    assert this.latency_buckets[stats.bucket_of(4)] == 2 and this.latency_buckets[stats.bucket_of(120)] == 1
    assert len(this.latency_buckets) == len(stats.BUCKETS_MS) + 1
    summary = stats.endpoint_summary(endpoint, since=at - timedelta(minutes=1), now=at + timedelta(minutes=5))
    assert (summary.requests, summary.errors, summary.p50_ms) == (4, 1, 5)


def test_the_emulator_service_proxy_forms_and_a_missing_service(kube_cluster, upstream):
    kube_cluster.route_service("ns", "web", 8080, upstream.url)
    for name in ("web:8080", "web", "http:web:8080"):
        answer = httpx.get(f"{kube_cluster.url}/api/v1/namespaces/ns/services/{name}/proxy/x?y=1")
        assert answer.status_code == 200 and json.loads(answer.text)["path"] == "/x"
    assert httpx.get(f"{kube_cluster.url}/api/v1/namespaces/ns/services/nope:80/proxy/").status_code == 503
    assert kube_cluster.stored("v1/services", "ns", "web")["spec"]["ports"][0]["port"] == 8080


def test_the_proxy_target_keeps_the_backends_kubeconfig_rules(kube_cluster):
    from scheduler.backends.kubernetes import KubeconfigInvalid, KubernetesBackend, PrivateAddressRefused

    with pytest.raises(PrivateAddressRefused):  # the emulator's 127.0.0.1, not allowed for this cluster
        KubernetesBackend.proxy_target(kube_cluster.kubeconfig)
    target = KubernetesBackend.proxy_target(kube_cluster.kubeconfig, private_network_allowed=True)
    assert target.base_url == kube_cluster.url and target.ssl is None and target.server_hostname is None
    assert target.headers == {"Authorization": "Bearer kube-emulator-token"}
    unsafe = {**kube_cluster.kubeconfig, "users": [{"name": "infrafi", "user": {"tokenFile": "/etc/passwd"}}]}
    with pytest.raises(KubeconfigInvalid):
        KubernetesBackend.proxy_target(unsafe, private_network_allowed=True)


def test_the_api_servers_link_rewriting_is_undone_in_gzip_pages_too():
    import gzip

    from scheduler.proxy.upstream import _unrewrite

    prefix = b"/api/v1/namespaces/ns/services/web:8888/proxy"
    page = b'<a href="' + prefix + b'/proxy/j/8888/tree">Files</a>'
    assert _unrewrite(page, prefix, gzipped=False) == b'<a href="/proxy/j/8888/tree">Files</a>'
    assert gzip.decompress(_unrewrite(gzip.compress(page), prefix, gzipped=True)) == (
        b'<a href="/proxy/j/8888/tree">Files</a>'
    )
    assert _unrewrite(b"not gzip", prefix, gzipped=True) == b"not gzip"


# -- the hot path's precomputed parts, and the benchmark's API server stand-in --


def test_the_hot_paths_precomputed_parts_give_what_the_plain_code_gave():
    from urllib.parse import quote

    from scheduler.proxy.app import coarse_now
    from scheduler.proxy.upstream import ClusterClient, forwarded_headers, quote_path

    before = datetime.now(UTC).replace(microsecond=0)
    now = coarse_now()
    assert before <= now <= datetime.now(UTC) and now.tzinfo is not None and now.microsecond == 0

    client = ClusterClient(
        base_url="https://10.0.0.1:6443",
        headers={},
        ssl=None,
        server_hostname="api.example",
        session=None,
        http=None,
        built_at=0,
    )
    for _ in range(2):  # built once, then from the client's table
        url = client.service_url("ns a", "web", 8080, quote_path("v1/a b/ü"))
        assert url == "https://10.0.0.1:6443/api/v1/namespaces/ns%20a/services/web:8080/proxy/v1/a%20b/%C3%BC"
        assert client.request_options() == {"ssl": False, "server_hostname": "api.example"}
    assert quote_path("x/%y") == quote("x/%y", safe="/:@!$&'()*+,;=-._~") == "x/%25y"

    scope = {
        "scheme": "https",
        "client": ("203.0.113.9", 5555),
        "headers": [
            (b"host", b"infrafi.example"),
            (b"accept", b"text/plain"),
            (b"accept", b"application/json"),
            (b"cookie", b"sessionid=s"),
            (b"authorization", b"Bearer ifi_x"),
            (b"x-forwarded-for", b"1.2.3.4"),  # the client's own claim is not passed on
            (b"connection", b"keep-alive"),
            (b"content-length", b"2"),
            (b"X-Custom", b"v"),
        ],
    }
    assert forwarded_headers(scope, prefix="/endpoints/e") == {
        "accept": "text/plain, application/json",
        "x-custom": "v",
        "x-forwarded-for": "203.0.113.9",
        "x-forwarded-proto": "https",
        "x-forwarded-host": "infrafi.example",
        "x-forwarded-prefix": "/endpoints/e",
    }


@pytest.fixture
def api_server_stand_in(upstream) -> Iterator[str]:
    """``bench.endpoint``'s API server stand-in in front of the test's pod, as the bench runs it."""
    import subprocess
    import sys
    from pathlib import Path

    port = free_port()
    child = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "bench.endpoint",
            "--role",
            "api-server",
            "--port",
            str(port),
            "--upstream",
            upstream.url,
        ],
        cwd=Path(__file__).resolve().parent.parent,
    )
    try:
        deadline = time.monotonic() + WAIT_SECONDS
        while True:
            with socket.socket() as sock:
                if sock.connect_ex(("127.0.0.1", port)) == 0:
                    break
            assert time.monotonic() < deadline and child.poll() is None, "the stand-in did not start"
            time.sleep(0.05)
        yield f"http://127.0.0.1:{port}"
    finally:
        child.terminate()
        child.wait(WAIT_SECONDS)


def test_the_benchs_api_server_stand_in_forwards_the_service_proxy_path_faithfully(api_server_stand_in, upstream):
    base = f"{api_server_stand_in}/api/v1/namespaces/ns/services/llm:8000/proxy"
    with httpx.Client(timeout=WAIT_SECONDS) as http:  # one kept-alive connection for all requests
        for attempt in range(2):  # the second one over the pooled upstream connection
            answer = http.post(
                f"{base}/v1/a%20b?x=1&y=%C3%BC",
                content=f"body {attempt}".encode(),
                headers={"Authorization": "Bearer cluster-token", "X-Custom": "v", "X-Forwarded-For": "10.1.1.1"},
            )
            assert answer.status_code == 200, answer.text
            seen = answer.json()
            assert (seen["method"], seen["path"], seen["query"]) == ("POST", "/v1/a b", "x=1&y=ü")  # decoded by aiohttp
            assert seen["body"] == f"body {attempt}"
            assert "authorization" not in seen["headers"]  # the API server's credentials stay there
            assert seen["headers"]["x-custom"] == "v" and seen["headers"]["x-forwarded-for"] == "10.1.1.1, 127.0.0.1"
            assert seen["headers"]["host"] == upstream.url.removeprefix("http://")
            # The pod's headers come back (the platform, not the API server, drops Set-Cookie).
            assert answer.headers["x-pod"] == "yes" and answer.headers["set-cookie"] == "pod=1; Path=/"
            assert int(answer.headers["content-length"]) == len(answer.content)

        chunks = []
        body = {"model": "m", "stream": True}
        with http.stream("POST", f"{base}/v1/chat/completions", json=body) as streamed:
            assert streamed.status_code == 200
            assert streamed.headers["content-type"] == "text/event-stream"
            assert streamed.headers["transfer-encoding"] == "chunked"
            for chunk in streamed.iter_raw():
                chunks.append(chunk)
                if len(chunks) == 1:  # here while the pod still waits: streamed, not buffered
                    assert b"Hel" in chunk and not upstream.finished.is_set()
                    upstream.release.set()
        text = b"".join(chunks).decode()
        assert '"lo"' in text and text.rstrip().endswith("data: [DONE]")
        assert upstream.seen[-1]["json"] == body

        assert http.get(f"{api_server_stand_in}/api/v1/namespaces/ns/pods").status_code == 404
