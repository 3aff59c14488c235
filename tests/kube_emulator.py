"""pytest plugin: kmock's Kubernetes API emulator on 127.0.0.1, and a test kubelet to drive it.

``kmock.KubernetesEmulator`` is an in-memory Kubernetes API server over real
HTTP: it stores what clients create, merges what they patch, and answers
reads, lists and deletes like the API server does. It runs no controllers, so
``KubeCluster`` plays them through the same HTTP API: the Job controller and
the kubelet (``create_pod``, ``run_pod``, ``finish_pod``, ``evict_pod``,
``fail_job``) and the node lifecycle (``add_node``, ``set_node_ready``).

The emulator serves on its own event loop in a daemon thread, because the
official client under test is synchronous.

Fixtures:

* ``kube_cluster`` (function): a started ``KubeCluster`` with ``url``,
  ``kubeconfig`` (a dict: one context, a token user) and the helpers below;
* ``kube_backend`` (function): a ``KubernetesBackend`` on it, with short
  timeouts and backoff so that failure tests stay fast.

What ``KubeEmulator`` adds to kmock 0.8 (each is the API server's documented
behaviour; the emulator does not have it):

* Namespace objects: kmock cannot parse ``/api/v1/namespaces[/name]`` (it
  takes ``namespaces`` for the namespace prefix and answers 500), so those
  paths are routed to the ``v1/namespaces`` resource;
* ``metadata.uid``, ``creationTimestamp`` and ``resourceVersion`` on create,
  and ``generateName``;
* equality-based ``labelSelector`` on lists (kmock returns every object);
* ``pods/log`` (kmock answers it with the Pod), with ``tailLines``, from text
  the test writes with ``write_log``; with ``follow=true`` it streams, until the
  pod finishes (``KubeCluster.follow_log``);
* ``SelfSubjectAccessReview``: allowed unless the test ``deny()``-ed it (kmock
  would store the first review and answer 409 to every later one);
* ``GET /version/``, the path the official client asks (kmock serves
  ``/version`` only);
* the resources are declared up front (kmock answers 404 to a list of a
  resource it holds no object of).
* ``GET /version`` answers ``set_server_version`` (``v1.29.4`` by default: no
  user namespaces);
* Secrets, as stored objects.
* watches of Jobs and pods from a ``resourceVersion``: every write gets the next
  version; a list answers the current one; a watch streams the events after the
  version asked (ADDED / MODIFIED / DELETED, then a BOOKMARK), or an ERROR event
  with code 410 when the test compacted that history (``compacted_rv``).

What the test kubelet and scheduler enforce, as real ones do (see
``create_pod`` and ``run_pod``):

* a pod binds only if its requests (limits standing in for absent requests)
  fit the node's allocatable minus what its unfinished pods request; else it
  stays unbound and Pending with ``PodScheduled=False``, ``Unschedulable``,
  ``0/N nodes are available: 1 Insufficient cpu.`` (the scheduler's wording);
* a container whose effective ``runAsNonRoot`` is true is refused
  (``CreateContainerConfigError``, the pod stays Pending) when it would run as
  root: ``runAsUser: 0`` ("container's runAsUser breaks non-root policy"), or
  no ``runAsUser`` and an image whose user is root ("container has
  runAsNonRoot and image will run as root"). An image's user is what the test
  gave with ``set_image_user``, root otherwise. A user namespace
  (``hostUsers: false``) does not lift the rule: the kubelet checks the user
  inside the container (``verifyRunAsNonRoot``), so a pod running a root
  image in a user namespace must leave ``runAsNonRoot`` unset.

Not emulated: watches of resources other than Jobs and pods (see ``_serve_watch``), field selectors, owner
garbage collection (deleting a Job leaves its pods and Secrets), admission
(Pod Security levels are stored, not enforced), the API server dropping
``hostUsers`` where user namespaces are off.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import itertools
import json
import re
import socket
import threading
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from dataclasses import dataclass, field
from datetime import UTC, datetime
from fractions import Fraction
from typing import Any, TypeVar

import attrs
import kmock
import pytest
from kmock import ResourceInfo

T = TypeVar("T")

TOKEN = "kube-emulator-token"
DEFAULT_GPU_PRODUCT = "NVIDIA-H100-80GB-HBM3"
START_TIMEOUT_SECONDS = 10
LOG_FOLLOW_POLL_SECONDS = 0.02  # how often a followed log looks for appended text (storage helper)
# No user namespaces by default (they are on by default from Kubernetes 1.33).
DEFAULT_SERVER_VERSION = "v1.29.4"
ROOT = 0
# (reason, message) of the Job controller's conditions, and the kubelet's eviction message.
COMPLETED = ("CompletionsReached", "Reached expected number of succeeded pods")
BACKOFF_LIMIT_EXCEEDED = ("BackoffLimitExceeded", "Job has reached the specified backoff limit")
EVICTION_MESSAGE = "The node was low on resource: memory."

NAMESPACES = kmock.resource("", "v1", "namespaces")
NODES = kmock.resource("", "v1", "nodes")
PODS = kmock.resource("", "v1", "pods")
SECRETS = kmock.resource("", "v1", "secrets")
JOBS = kmock.resource("batch", "v1", "jobs")
REVIEWS = kmock.resource("authorization.k8s.io", "v1", "selfsubjectaccessreviews")
SERVICES = kmock.resource("", "v1", "services")
PVCS = kmock.resource("", "v1", "persistentvolumeclaims")
DEPLOYMENTS = kmock.resource("apps", "v1", "deployments")
RESOURCES = {
    NAMESPACES: ResourceInfo(kind="Namespace", namespaced=False, subresources={"status"}),
    NODES: ResourceInfo(kind="Node", namespaced=False, subresources={"status"}),
    PODS: ResourceInfo(kind="Pod", namespaced=True, subresources={"status", "log"}),
    SECRETS: ResourceInfo(kind="Secret", namespaced=True),
    JOBS: ResourceInfo(kind="Job", namespaced=True, subresources={"status"}),
    REVIEWS: ResourceInfo(kind="SelfSubjectAccessReview", namespaced=False),
    SERVICES: ResourceInfo(kind="Service", namespaced=True, subresources={"status"}),
    PVCS: ResourceInfo(kind="PersistentVolumeClaim", namespaced=True, subresources={"status"}),
    DEPLOYMENTS: ResourceInfo(kind="Deployment", namespaced=True, subresources={"status", "scale"}),
}
# Resources whose writes are kept for watches (``KubeEmulator._serve_watch``), and how long a
# watch stream stays open after its events (a real API server: until ``timeoutSeconds``).
WATCHED = (JOBS, PODS)
WATCH_HOLD_SECONDS = 0.05
_WRITES = (kmock.action.CREATE, kmock.action.UPDATE, kmock.action.DELETE)
# The plural that kmock's path parser is given instead of "namespaces" (see the module docstring).
_NS_ALIAS = "kube-emulator-namespaces"
_NS_PATH = re.compile(r"/api/v1/namespaces(/[^/]+)?/?")
# The API server's service proxy: .../services/{[scheme:]name[:port]}/proxy[/rest]
_SERVICE_PROXY_PATH = re.compile(r"/api/v1/namespaces/([^/]+)/services/([^/]+)/proxy(/.*)?")
# Root-relative links in HTML (href="/x", src='/x', action="/x"; not protocol-relative //host).
_HTML_LINK = re.compile(r"""(\s(?:href|src|action)=["'])/(?!/)""")


def ts(moment: datetime | None = None) -> str:
    """A Kubernetes timestamp (RFC 3339, whole seconds, UTC)."""
    return (moment or datetime.now(UTC)).astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _selected(selector: str, labels: dict[str, str]) -> bool:
    """Equality-based label selector: ``a=b``, ``a==b``, ``a!=b``, ``a``, ``!a``, comma = and."""
    for term in (t.strip() for t in selector.split(",")):
        if not term:
            continue
        if "!=" in term:
            key, value = (part.strip() for part in term.split("!=", 1))
            if labels.get(key) == value:
                return False
        elif "=" in term:
            key, value = (part.strip() for part in term.replace("==", "=").split("=", 1))
            if labels.get(key) != value:
                return False
        elif term.startswith("!"):
            if term[1:].strip() in labels:
                return False
        elif " in " in term or " notin " in term:
            raise kmock.KubernetesError(status=400, reason="BadRequest", message="set-based selectors not emulated")
        elif term not in labels:
            return False
    return True


@attrs.define(kw_only=True)
class KubeEmulator(kmock.KubernetesEmulator):
    """kmock's emulator plus the API server behaviour listed in the module docstring."""

    logs: dict[tuple[str, str], str] = attrs.field(factory=dict)  # (namespace, pod) -> log text
    denied: set[tuple[str, str, str]] = attrs.field(factory=set)  # (verb, group, resource)
    git_version: str = DEFAULT_SERVER_VERSION  # what GET /version answers
    # (namespace, service, port) -> upstream URL: the service proxy's routes (KubeCluster.route_service)
    service_routes: dict[tuple[str, str, int], str] = attrs.field(factory=dict)
    _versions: Iterator[int] = attrs.field(factory=lambda: itertools.count(1))
    # Watches (see ``_serve_watch``): every write to a watched resource, in resourceVersion order.
    history: list[tuple[int, Any, str, dict]] = attrs.field(factory=list)  # (rv, resource, type, object)
    current_rv: int = 0
    compacted_rv: int = 0  # versions at or below this are gone: a watch from them is answered 410

    def __attrs_post_init__(self) -> None:
        super().__attrs_post_init__()
        for resource, info in RESOURCES.items():
            self.resources[resource] = info
        self[kmock.method.GET, PODS, kmock.subresource("log")] << self._serve_log
        self[kmock.method.POST, REVIEWS] << self._serve_review
        self["get /version/"] << self._serve_server_version  # the official client adds the slash

    async def __call__(self, raw_request: Any) -> Any:
        if _SERVICE_PROXY_PATH.match(raw_request.path):  # streamed both ways: before kmock reads the body
            return await KubeCluster.serve_service_proxy(self, raw_request)
        match = _NS_PATH.fullmatch(raw_request.path)
        if match:
            url = raw_request.rel_url
            alias = url.with_path(f"/api/v1/{_NS_ALIAS}{match[1] or ''}").with_query(url.query)
            raw_request = raw_request.clone(rel_url=alias)  # before anyone reads the body
        return await super().__call__(raw_request)

    async def _handle(self, request: kmock.Request) -> Any:
        if request.resource is not None and request.resource.plural == _NS_ALIAS:
            original = request
            path = request.url.path.replace(_NS_ALIAS, "namespaces", 1)
            request = attrs.evolve(request, resource=NAMESPACES, url=request.url.with_path(path))
            # The request log is what tests and reactions filter on: record the real path.
            self._requests[:] = [request if r is original else r for r in self._requests]
        if request.action == kmock.action.CREATE and isinstance(request.data, dict):
            meta = request.data.setdefault("metadata", {})
            if not meta.get("name") and (meta.get("generateName") or request.resource == REVIEWS):
                # Reviews are never stored by an API server: a full uuid, so dozens per test never collide.
                suffix = uuid.uuid4().hex if request.resource == REVIEWS else uuid.uuid4().hex[:5]
                meta["name"] = f"{meta.get('generateName') or 'review-'}{suffix}"
            if request.namespace:
                meta.setdefault("namespace", request.namespace)
            meta.setdefault("uid", str(uuid.uuid4()))
            meta.setdefault("creationTimestamp", ts())
            meta["resourceVersion"] = str(self._next_rv())
        answer = await super()._handle(request)
        self._record(request)
        return answer

    def _next_rv(self) -> int:
        self.current_rv = next(self._versions)
        return self.current_rv

    def _record(self, request: kmock.Request) -> None:
        """Note a write to a watched resource as the event a watch from an older version streams."""
        if request.resource not in WATCHED or request.action not in _WRITES:
            return
        if request.action == kmock.action.CREATE:
            meta = (request.data or {}).get("metadata") or {} if isinstance(request.data, dict) else {}
            key = (request.resource, request.namespace or meta.get("namespace"), meta.get("name"))
        else:
            key = (request.resource, request.namespace, request.name)
        if key not in self.objects:  # kmock's ObjectsArray has no .get()
            return
        stored = self.objects[key]
        kind = "DELETED" if stored.deleted else ("ADDED" if request.action == kmock.action.CREATE else "MODIFIED")
        raw = copy.deepcopy(stored.last.raw if stored.deleted else stored.raw)
        rv = int(raw.get("metadata", {}).get("resourceVersion") or 0) if kind == "ADDED" else self._next_rv()
        raw.setdefault("metadata", {})["resourceVersion"] = str(rv)
        self.history.append((rv, request.resource, kind, raw))

    async def _serve_watch(self, request: kmock.Request) -> Any:
        """A watch as the API server serves it: from ``resourceVersion``, the events after it (a
        version at or below ``compacted_rv`` → an ERROR event with code 410 Gone), then the stream
        stays open until ``timeoutSeconds`` (here: at most ``WATCH_HOLD_SECONDS``, so tests stay
        fast). Without a version, the current objects as ADDED events (kmock's own behaviour)."""
        since = request.params.get("resourceVersion")
        if request.resource not in WATCHED or not since:
            async for event in super()._serve_watch(request):
                yield event
            return
        yield b""  # the headers go out now, as kmock's own watch does
        if int(since) <= self.compacted_rv:
            yield {"type": "ERROR", "object": {"kind": "Status", "code": 410, "reason": "Expired",
                                                "message": f"too old resource version: {since}"}}  # fmt: skip
            return
        selector = request.params.get("labelSelector") or ""
        for rv, resource, kind, raw in list(self.history):
            labels = (raw.get("metadata") or {}).get("labels") or {}
            if rv > int(since) and resource == request.resource and _selected(selector, labels):
                yield {"type": kind, "object": raw}
        yield {"type": "BOOKMARK", "object": {"metadata": {"resourceVersion": str(self.current_rv)}}}
        timeout = float(request.params.get("timeoutSeconds") or WATCH_HOLD_SECONDS)
        await asyncio.sleep(min(timeout, WATCH_HOLD_SECONDS))

    async def _serve_list(self, request: kmock.Request) -> Any:
        answer = await super()._serve_list(request)
        if request.resource in WATCHED:  # where a watch of this list resumes
            answer["metadata"] = {**(answer.get("metadata") or {}), "resourceVersion": str(self.current_rv)}
        selector = request.params.get("labelSelector")
        if selector:
            answer["items"] = [
                obj for obj in answer["items"] if _selected(selector, (obj.get("metadata") or {}).get("labels") or {})
            ]
        return answer

    async def _serve_log(self, request: kmock.Request) -> bytes:
        key = (PODS, request.namespace, request.name)
        if key not in self.objects or self.objects[key].deleted:
            raise kmock.KubernetesObjectNotFoundError()
        if request.params.get("follow", "").lower() == "true":  # storage helper: see KubeCluster.follow_log
            return KubeCluster.follow_log(self, request.namespace, request.name)
        text = self.logs.get((request.namespace, request.name), "")
        tail = request.params.get("tailLines")
        if tail is not None:
            lines = text.splitlines(keepends=True)
            text = "".join(lines[-int(tail) :]) if int(tail) > 0 else ""
        return text.encode()

    async def _serve_server_version(self, request: kmock.Request) -> dict:
        answer = await super()._serve_server_version(request)
        major, minor = re.match(r"v(\d+)\.(\d+)", self.git_version).groups()
        return {**answer, "major": major, "minor": minor, "gitVersion": self.git_version}

    async def _serve_review(self, request: kmock.Request) -> dict:
        review = copy.deepcopy(request.data)
        attributes = (review.get("spec") or {}).get("resourceAttributes") or {}
        asked = (attributes.get("verb", ""), attributes.get("group", ""), attributes.get("resource", ""))
        allowed = asked not in self.denied
        review["status"] = {"allowed": allowed}
        if not allowed:
            review["status"]["reason"] = "denied by the test"
        return review


@dataclass
class Fault:
    """Failures injected by ``KubeCluster.fail``: ``left`` still to serve, ``served`` so far."""

    left: int
    served: int = 0


@dataclass
class Gate:
    """A request held by ``KubeCluster.hold`` (scale helper)."""

    loop: asyncio.AbstractEventLoop
    opened: asyncio.Event
    entered: threading.Event = field(default_factory=threading.Event)
    used: bool = False

    def release(self) -> None:
        self.loop.call_soon_threadsafe(self.opened.set)


class KubeCluster:
    """The emulator on a free port, and the controllers and kubelet a test plays through its API."""

    def __init__(self) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="kube-emulator", daemon=True)
        self._stack = contextlib.AsyncExitStack()
        self.emulator: KubeEmulator
        self.url = ""
        self.image_users: dict[str, int] = {}  # image -> the numeric user its config names (absent: root)

    # -- lifecycle and plumbing --

    def start(self) -> None:
        self._thread.start()
        self._run(self._start())

    async def _start(self) -> None:
        self.emulator = KubeEmulator()
        await self._stack.enter_async_context(self.emulator)
        server = await self._stack.enter_async_context(kmock.Server(self.emulator, host="127.0.0.1"))
        self.url = f"http://127.0.0.1:{server.port}"

    def stop(self) -> None:
        try:
            self._run(self._stack.aclose())
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(START_TIMEOUT_SECONDS)
            self._loop.close()

    def _run(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(START_TIMEOUT_SECONDS)

    @staticmethod
    def free_port() -> int:
        """A port nothing listens on (for tests of an unreachable API server)."""
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            return sock.getsockname()[1]

    def in_loop(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(*args)`` on the emulator's loop: the only safe place to touch its state."""
        done: Future[T] = Future()

        def call() -> None:
            try:
                done.set_result(fn(*args))
            except Exception as exc:
                done.set_exception(exc)

        self._loop.call_soon_threadsafe(call)
        return done.result(START_TIMEOUT_SECONDS)

    @property
    def kubeconfig(self) -> dict:
        return {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "emulator", "cluster": {"server": self.url}}],
            "users": [{"name": "infrafi", "user": {"token": TOKEN}}],
            "contexts": [{"name": "emulator", "context": {"cluster": "emulator", "user": "infrafi"}}],
            "current-context": "emulator",
        }

    def api(self, method: str, path: str, body: Any = None, *, query: dict | None = None) -> Any:
        """One request to the emulator's API (merge patches for PATCH); the decoded JSON answer."""
        url = self.url + path + (f"?{urllib.parse.urlencode(query)}" if query else "")
        content_type = "application/merge-patch+json" if method == "PATCH" else "application/json"
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": content_type})
        with urllib.request.urlopen(request, timeout=START_TIMEOUT_SECONDS) as response:
            payload = response.read()
        return json.loads(payload) if payload else None

    def stored(self, resource: str, namespace: str | None, name: str) -> dict | None:
        """The object as the emulator holds it (e.g. ``stored("batch/v1/jobs", "ns", "j")``), None if absent."""

        def read() -> dict | None:
            key = (kmock.resource(resource), namespace, name)
            if key not in self.emulator.objects or self.emulator.objects[key].deleted:
                return None
            return copy.deepcopy(self.emulator.objects[key].raw)

        return self.in_loop(read)

    def requests(self, method: str | None = None, path: str | None = None) -> list[str]:
        """``"GET /api/v1/nodes"``-style lines for the requests served, optionally filtered."""

        def read() -> list[str]:
            return [f"{r.method.value} {r.url.path}" for r in self.emulator]

        return [
            line
            for line in self.in_loop(read)
            if (method is None or line.split(" ", 1)[0] == method) and (path is None or line.split(" ", 1)[1] == path)
        ]

    def fail(
        self,
        count: int,
        status: int = 500,
        *,
        method: str | None = None,
        path: str | None = None,
        delay: float = 0.0,
        message: str | None = None,
    ) -> Fault:
        """Answer the next ``count`` matching requests with ``status`` (after ``delay`` seconds).

        ``path`` is a regular expression on the URL path. Mind that the
        emulator records creations, patches and deletions before it answers,
        as an API server whose answer is lost would: a failed POST still
        creates the object.
        """
        fault = Fault(left=count)
        pattern = re.compile(path) if path else None

        def matches(request: kmock.Request) -> bool:
            return (method is None or request.method.value == method) and (
                pattern is None or pattern.fullmatch(request.url.path) is not None
            )

        async def respond(request: kmock.Request) -> Any:
            if fault.left <= 0:
                return StopIteration  # this reaction is spent: let the emulator answer
            fault.left -= 1
            fault.served += 1
            if delay:
                await asyncio.sleep(delay)
            body = {
                "apiVersion": "v1",
                "kind": "Status",
                "metadata": {},
                "status": "Failure",
                "code": status,
                "reason": "InjectedByTest",
                "message": message or f"injected {status}",
            }
            return kmock.Response(status=status, payload=body)

        def install() -> None:
            self.emulator.override[matches] << respond

        self.in_loop(install)
        return fault

    def deny(self, verb: str = "create", group: str = "batch", resource: str = "jobs") -> None:
        """Make SelfSubjectAccessReviews for that permission answer allowed=false."""
        self.in_loop(self.emulator.denied.add, (verb, group, resource))

    def set_server_version(self, git_version: str) -> None:
        """What ``GET /version`` answers, e.g. ``"v1.33.1"``."""

        def store() -> None:
            self.emulator.git_version = git_version

        self.in_loop(store)

    def set_image_user(self, image: str, uid: int) -> None:
        """The user ``image``'s config runs as (``USER`` in its Dockerfile); images not given run as root."""
        self.image_users[image] = uid

    # -- scale helper: watches, access reviews --

    def hold(self, *, method: str | None = None, path: str | None = None) -> Gate:
        """Hold the next matching request (``path`` a regular expression on the URL path) until the
        test calls ``release()`` on the returned gate; ``entered`` is set once it is held. Then the
        emulator answers it as usual: a slow API server, made slow for as long as the test says."""
        gate = Gate(loop=self._loop, opened=asyncio.Event())
        pattern = re.compile(path) if path else None

        def matches(request: kmock.Request) -> bool:
            return (method is None or request.method.value == method) and (
                pattern is None or pattern.fullmatch(request.url.path) is not None
            )

        async def wait(request: kmock.Request) -> Any:
            if gate.used:
                return StopIteration
            gate.used = True
            gate.entered.set()
            await gate.opened.wait()
            return StopIteration  # let the emulator answer

        self.in_loop(lambda: self.emulator.override[matches] << wait)
        return gate

    # -- sessions / proxy helper: Services and the API server's service proxy --

    def set_node_addresses(self, name: str, *, external: str = "", internal: str = "10.0.0.10") -> None:
        """The kubelet reports the node's addresses (status.addresses: InternalIP, ExternalIP, Hostname)."""
        addresses = [{"type": "Hostname", "address": name}]
        if internal:
            addresses.append({"type": "InternalIP", "address": internal})
        if external:
            addresses.append({"type": "ExternalIP", "address": external})
        self.api("PATCH", f"/api/v1/nodes/{name}/status", {"status": {"addresses": addresses}})

    def assign_node_port(self, namespace: str, service: str, node_port: int) -> None:
        """The API server allocates the Service's nodePort (kmock allocates none)."""
        stored = self.api("GET", f"/api/v1/namespaces/{namespace}/services/{service}")
        ports = [{**p, "nodePort": node_port} for p in stored["spec"]["ports"]]
        self.api("PATCH", f"/api/v1/namespaces/{namespace}/services/{service}", {"spec": {"ports": ports}})

    def set_load_balancer_ingress(self, namespace: str, service: str, *, ip: str = "", hostname: str = "") -> None:
        """The cloud controller gives the LoadBalancer Service its address."""
        ingress = {"ip": ip} if ip else {"hostname": hostname}
        status = {"status": {"loadBalancer": {"ingress": [ingress]}}}
        self.api("PATCH", f"/api/v1/namespaces/{namespace}/services/{service}/status", status)

    # The API server's service proxy (proxy helper): a route per (namespace, service, port) to an
    # upstream the test runs; requests are streamed both ways and websocket upgrades pass through.
    # As kube-apiserver does, the Authorization header (our credentials) is not passed on, and the
    # root-relative links of (uncompressed) HTML answers get the proxy's path in front.

    def route_service(self, namespace: str, service: str, port: int, upstream_url: str, *, create: bool = True) -> None:
        """Route the service proxy's ``{service}:{port}`` in ``namespace`` to ``upstream_url`` (e.g.
        ``http://127.0.0.1:5000``); with ``create``, also store the Service (ClusterIP, that port) if absent."""
        if create and self.stored("v1/services", namespace, service) is None:
            service_object = {
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": {"name": service, "namespace": namespace},
                "spec": {"type": "ClusterIP", "ports": [{"port": port, "targetPort": port, "protocol": "TCP"}]},
            }
            self.api("POST", f"/api/v1/namespaces/{namespace}/services", service_object)

        def store() -> None:
            self.emulator.service_routes[(namespace, service, int(port))] = upstream_url.rstrip("/")

        self.in_loop(store)

    def unroute_service(self, namespace: str, service: str, port: int) -> None:
        """The Service's endpoints are gone (its pods not ready): the service proxy answers 503."""
        self.in_loop(lambda: self.emulator.service_routes.pop((namespace, service, int(port)), None))

    @staticmethod
    async def serve_service_proxy(emulator: KubeEmulator, raw_request: Any) -> Any:
        from aiohttp import ClientError, ClientSession, WSMsgType, web

        match = _SERVICE_PROXY_PATH.match(raw_request.path)
        namespace, name, rest = match[1], urllib.parse.unquote(match[2]), match[3] or "/"
        parts = name.split(":")
        if parts[0] in ("http", "https") and len(parts) > 1:
            parts = parts[1:]
        service, port = parts[0], parts[1] if len(parts) > 1 else ""
        key = (SERVICES, namespace, service)
        if key not in emulator.objects or emulator.objects[key].deleted:
            return web.Response(status=503, text=f'services "{service}" not found')
        routes = {p: url for (ns, svc, p), url in emulator.service_routes.items() if (ns, svc) == (namespace, service)}
        if not port and len(routes) == 1:
            port = str(next(iter(routes)))
        upstream = routes.get(int(port)) if port.isdigit() else None
        if upstream is None:
            return web.Response(status=503, text=f'no endpoints available for service "{service}"')
        url = upstream + rest + (f"?{raw_request.query_string}" if raw_request.query_string else "")
        hop = {"connection", "keep-alive", "transfer-encoding", "upgrade", "te", "trailer", "proxy-connection"}
        hop |= {"host", "authorization", "content-length"}
        headers = {k: v for k, v in raw_request.headers.items() if k.lower() not in hop}
        async with ClientSession(auto_decompress=False) as session:
            if raw_request.headers.get("Upgrade", "").lower() == "websocket":
                protocols = [p.strip() for p in raw_request.headers.get("Sec-WebSocket-Protocol", "").split(",") if p]
                ws_headers = {k: v for k, v in headers.items() if not k.lower().startswith("sec-websocket")}
                try:
                    upstream_ws = await session.ws_connect(url, protocols=protocols, headers=ws_headers)
                except (ClientError, OSError) as exc:
                    return web.Response(status=502, text=f"error trying to reach service: {exc}")
                client_ws = web.WebSocketResponse(protocols=protocols)
                await client_ws.prepare(raw_request)

                async def pump(source: Any, target: Any) -> None:
                    async for message in source:
                        if message.type == WSMsgType.TEXT:
                            await target.send_str(message.data)
                        elif message.type == WSMsgType.BINARY:
                            await target.send_bytes(message.data)
                    await target.close()

                await asyncio.gather(pump(client_ws, upstream_ws), pump(upstream_ws, client_ws))
                return client_ws
            body = raw_request.content.iter_any() if raw_request.body_exists else None
            try:
                async with session.request(
                    raw_request.method, url, headers=headers, data=body, allow_redirects=False
                ) as answer:
                    if answer.content_type == "text/html" and not answer.headers.get("Content-Encoding"):
                        # As Kubernetes' proxy transport: root-relative links get the proxy's path in front.
                        prefix = raw_request.path[: match.start(3)] if match[3] else raw_request.path.rstrip("/")
                        page = _HTML_LINK.sub(lambda m: m[1] + prefix + "/", (await answer.read()).decode())
                        kept = {k: v for k, v in answer.headers.items() if k.lower() not in hop}
                        return web.Response(status=answer.status, body=page.encode(), headers=kept)
                    response = web.StreamResponse(status=answer.status, reason=answer.reason)
                    for header, value in answer.headers.items():
                        if header.lower() not in hop - {"content-length"}:
                            response.headers.add(header, value)
                    await response.prepare(raw_request)
                    async for chunk in answer.content.iter_any():
                        await response.write(chunk)
                    await response.write_eof()
                    return response
            except (ClientError, OSError) as exc:
                return web.Response(status=502, text=f"error trying to reach service: {exc}")

    # -- endpoints helper: Deployments and their controller --

    def deployment(self, namespace: str, name: str) -> dict:
        return self.api("GET", f"/apis/apps/v1/namespaces/{namespace}/deployments/{name}")

    def deployment_pods(self, namespace: str, name: str) -> list[dict]:
        """The Deployment's pods (its ``matchLabels`` selector), oldest first."""
        match = self.deployment(namespace, name)["spec"]["selector"]["matchLabels"]
        selector = ",".join(f"{key}={value}" for key, value in sorted(match.items()))
        items = self.api("GET", f"/api/v1/namespaces/{namespace}/pods", query={"labelSelector": selector})["items"]
        return sorted(items, key=lambda pod: (pod["metadata"]["creationTimestamp"], pod["metadata"]["name"]))

    def run_deployment(self, namespace: str, name: str, *, ready: int | None = None) -> list[str]:
        """The Deployment controller (its ReplicaSet) creates pods of the current template up to
        ``spec.replicas`` (old-template pods count, as under ``maxSurge: 0``); the scheduler binds each
        pod that fits its node (``create_pod``'s rule: requests within allocatable minus what the bound
        unfinished pods request); the kubelet starts bound pods, refusing root under runAsNonRoot as
        ``run_pod`` does; the readiness probe passes on the first ``ready`` running pods (all when
        None). Then the controller writes the Deployment's status (replicas, readyReplicas,
        updatedReplicas, availableReplicas, observedGeneration). Returns the pods' names."""
        deployment = self.deployment(namespace, name)
        revision = _template_hash(deployment["spec"]["template"])
        pods = self.deployment_pods(namespace, name)
        for _ in range(int(deployment["spec"].get("replicas", 1)) - len(pods)):
            pods.append(self._deployment_pod(namespace, deployment, revision))
        ready_left = len(pods) if ready is None else ready
        ready_count = 0
        for pod in pods:
            pod = self.api("GET", f"/api/v1/namespaces/{namespace}/pods/{pod['metadata']['name']}")
            if not pod["spec"].get("nodeName"):
                continue
            refused = self._non_root_violation(pod)
            if refused:
                waiting = {"waiting": {"reason": "CreateContainerConfigError", "message": refused}}
                status = {"containerStatuses": [self._container(pod, ready=False, state=waiting)]}
            else:
                is_ready = ready_left > 0
                ready_left -= is_ready
                ready_count += is_ready
                started = self._started_at(pod) or ts()
                status = {
                    "phase": "Running",
                    "startTime": started,
                    "podIP": "10.244.1.30",
                    "conditions": [
                        {"type": "PodScheduled", "status": "True", "lastTransitionTime": started},
                        {"type": "Ready", "status": "True" if is_ready else "False", "lastTransitionTime": ts()},
                    ],
                    "containerStatuses": [
                        self._container(pod, ready=is_ready, state={"running": {"startedAt": started}})
                    ],
                }
            self.api(
                "PATCH", f"/api/v1/namespaces/{namespace}/pods/{pod['metadata']['name']}/status", {"status": status}
            )
        updated = sum(1 for pod in pods if pod["metadata"]["labels"].get("pod-template-hash") == revision)
        status = {
            "replicas": len(pods),
            "readyReplicas": ready_count,
            "availableReplicas": ready_count,
            "updatedReplicas": updated,
            "observedGeneration": deployment["metadata"].get("generation", 1),
        }
        self.api("PATCH", f"/apis/apps/v1/namespaces/{namespace}/deployments/{name}/status", {"status": status})
        return [pod["metadata"]["name"] for pod in pods]

    def roll_deployment(
        self, namespace: str, name: str, *, steps: int | None = None, ready: int | None = None
    ) -> list[str]:
        """The rolling update under ``maxSurge: 0, maxUnavailable: 1``: ``steps`` times (all when None),
        one pod of an older template is deleted (unbound first, then not ready, as the ReplicaSet
        controller picks), then ``run_deployment`` replaces it. Returns the pods."""
        names: list[str] = []
        while steps is None or steps > 0:
            revision = _template_hash(self.deployment(namespace, name)["spec"]["template"])
            old = [
                p
                for p in self.deployment_pods(namespace, name)
                if p["metadata"]["labels"].get("pod-template-hash") != revision
            ]
            if not old:
                break
            # As the ReplicaSet controller scales down: unbound pods first, then not ready ones, then the newest.
            victim = min(old, key=_scale_down_rank)
            self.api("DELETE", f"/api/v1/namespaces/{namespace}/pods/{victim['metadata']['name']}")
            names = self.run_deployment(namespace, name, ready=ready)
            steps = None if steps is None else steps - 1
        return names or self.run_deployment(namespace, name, ready=ready)

    def _deployment_pod(self, namespace: str, deployment: dict, revision: str) -> dict:
        """A pod of the Deployment's template, bound to its nodeSelector's node if it fits (else Pending with
        the scheduler's PodScheduled=False), as ``create_pod`` does for a Job's pod."""
        template = copy.deepcopy(deployment["spec"]["template"])
        name = deployment["metadata"]["name"]
        spec = template["spec"]
        target = spec.get("nodeSelector", {}).get("kubernetes.io/hostname", "")
        unschedulable = self._unschedulable(spec, target)
        status: dict[str, Any] = {"phase": "Pending"}
        if unschedulable:
            status["conditions"] = [
                {
                    "type": "PodScheduled",
                    "status": "False",
                    "reason": "Unschedulable",
                    "message": unschedulable,
                    "lastTransitionTime": ts(),
                }
            ]
        else:
            spec["nodeName"] = target
        pod = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "generateName": f"{name}-{revision}-",
                "namespace": namespace,
                "labels": {**(template.get("metadata", {}).get("labels") or {}), "pod-template-hash": revision},
                "ownerReferences": [
                    {
                        "apiVersion": "apps/v1",
                        "kind": "ReplicaSet",
                        "name": f"{name}-{revision}",
                        "uid": str(uuid.uuid5(uuid.NAMESPACE_OID, f"{namespace}/{name}-{revision}")),
                        "controller": True,
                    }
                ],
            },
            "spec": spec,
            "status": status,
        }
        return self.api("POST", f"/api/v1/namespaces/{namespace}/pods", pod)

    # -- storage helper: PVCs, pull secrets, log follow --

    @staticmethod
    async def follow_log(emulator: KubeEmulator, namespace: str, pod: str) -> Any:
        """``pods/log?follow=true`` as the API server serves it: the text so far, then each append
        (``write_log``) as its own chunk, until the pod has finished (phase Succeeded or Failed) or is
        deleted; then the text appended last, and the end of the stream. kmock sends the headers
        with the first chunk (an empty chunk would end a chunked body), so an empty log is answered
        only once it has text."""
        sent = 0
        while True:
            key = (PODS, namespace, pod)
            obj = emulator.objects[key] if key in emulator.objects else None  # noqa: SIM401 - no dict .get
            phase = ((obj.raw.get("status") or {}).get("phase") if obj is not None and not obj.deleted else None) or ""
            finished = obj is None or obj.deleted or phase in ("Succeeded", "Failed")
            text = emulator.logs.get((namespace, pod), "")
            if len(text) > sent:
                yield text[sent:].encode()
                sent = len(text)
            if finished:
                return
            await asyncio.sleep(LOG_FOLLOW_POLL_SECONDS)

    # -- nodes --

    def add_node(
        self,
        name: str,
        gpus: int = 8,
        product: str = DEFAULT_GPU_PRODUCT,
        ready: bool = True,
        *,
        hostname: str | None = None,
        cpu: str = "64",
        memory: str = "512Gi",
    ) -> dict:
        """A GPU node as the kubelet and the NVIDIA device plugin / GPU feature discovery register it."""
        labels = {"kubernetes.io/hostname": hostname or name, "kubernetes.io/os": "linux"}
        if product:
            labels["nvidia.com/gpu.product"] = product
        resources = {"cpu": cpu, "memory": memory, "pods": "110", "nvidia.com/gpu": str(gpus)}
        node = {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {"name": name, "labels": labels},
            "spec": {"taints": [{"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"}]},
            "status": {
                "capacity": resources,
                "allocatable": resources,
                "conditions": [self._ready_condition(ready, datetime.now(UTC))],
            },
        }
        return self.api("POST", "/api/v1/nodes", node)

    def set_node_ready(self, name: str, ready: bool, at: datetime | None = None) -> None:
        """The node controller's verdict on the node's heartbeats: Ready True, or False since ``at``."""
        status = {"conditions": [self._ready_condition(ready, at or datetime.now(UTC))]}
        self.api("PATCH", f"/api/v1/nodes/{name}/status", {"status": status})

    @staticmethod
    def _ready_condition(ready: bool, at: datetime) -> dict:
        return {
            "type": "Ready",
            "status": "True" if ready else "False",
            "reason": "KubeletReady" if ready else "NodeStatusUnknown",
            "message": "kubelet is posting ready status" if ready else "Kubelet stopped posting node status.",
            "lastHeartbeatTime": ts(at),
            "lastTransitionTime": ts(at),
        }

    # -- the Job controller and the kubelet --

    def job(self, namespace: str, job_name: str) -> dict:
        return self.api("GET", f"/apis/batch/v1/namespaces/{namespace}/jobs/{job_name}")

    def pods(self, namespace: str, job_name: str) -> list[dict]:
        """The Job's pods, oldest first."""
        answer = self.api(
            "GET", f"/api/v1/namespaces/{namespace}/pods", query={"labelSelector": f"job-name={job_name}"}
        )
        return sorted(answer["items"], key=lambda pod: pod["metadata"]["creationTimestamp"])

    def pod_name(self, namespace: str, job_name: str) -> str:
        pods = self.pods(namespace, job_name)
        assert pods, f"job {namespace}/{job_name} has no pod yet"
        return pods[-1]["metadata"]["name"]

    def create_pod(self, namespace: str, job_name: str, *, node: str | None = None) -> str:
        """The Job controller creates the Job's pod, and the scheduler binds it (to ``node``, else to
        the Job's nodeSelector hostname); the pod is Pending. Returns the pod's name.

        The scheduler binds only when the pod's requests fit what the node has left (allocatable
        minus the requests of the pods bound to it that have not finished); otherwise the pod stays
        unbound and Pending, with the scheduler's PodScheduled=False condition."""
        job = self.job(namespace, job_name)
        template = copy.deepcopy(job["spec"]["template"])
        uid = job["metadata"]["uid"]
        labels = {
            **(template.get("metadata", {}).get("labels") or {}),
            "batch.kubernetes.io/controller-uid": uid,
            "batch.kubernetes.io/job-name": job_name,
            "controller-uid": uid,
            "job-name": job_name,
        }
        spec = template["spec"]
        target = node or spec.get("nodeSelector", {}).get("kubernetes.io/hostname", "")
        unschedulable = self._unschedulable(spec, target)
        status: dict[str, Any] = {"phase": "Pending", "qosClass": "BestEffort"}
        if unschedulable:
            status["conditions"] = [
                {
                    "type": "PodScheduled",
                    "status": "False",
                    "reason": "Unschedulable",
                    "message": unschedulable,
                    "lastTransitionTime": ts(),
                }
            ]
        else:
            spec["nodeName"] = target
        pod = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "generateName": f"{job_name}-",
                "namespace": namespace,
                "labels": labels,
                "ownerReferences": [
                    {
                        "apiVersion": "batch/v1",
                        "kind": "Job",
                        "name": job_name,
                        "uid": uid,
                        "controller": True,
                        "blockOwnerDeletion": True,
                    }
                ],
            },
            "spec": spec,
            "status": status,
        }
        created = self.api("POST", f"/api/v1/namespaces/{namespace}/pods", pod)
        self.api("PATCH", f"/apis/batch/v1/namespaces/{namespace}/jobs/{job_name}/status", {"status": {"active": 1}})
        return created["metadata"]["name"]

    def run_pod(
        self, namespace: str, job_name: str, *, node: str | None = None, started_at: datetime | None = None
    ) -> str:
        """The kubelet starts the Job's container (creating the pod first if there is none).

        As a real kubelet: a pod the scheduler did not bind is not started (it stays Pending), and a
        container whose effective security context has ``runAsNonRoot: true`` but would run as root
        (``runAsUser: 0``, or no ``runAsUser`` and an image whose user is root, see
        ``set_image_user``) is refused: the pod stays Pending, its container waiting with reason
        ``CreateContainerConfigError`` and the kubelet's message. The check is on the user inside the
        container, so a user namespace (``hostUsers: false``) does not lift it: a pod that runs a root
        image in a user namespace must not ask for ``runAsNonRoot``."""
        pods = self.pods(namespace, job_name)
        name = pods[-1]["metadata"]["name"] if pods else self.create_pod(namespace, job_name, node=node)
        pod = self.api("GET", f"/api/v1/namespaces/{namespace}/pods/{name}")
        if not pod["spec"].get("nodeName"):
            return name
        refused = self._non_root_violation(pod)
        if refused:
            waiting = {"waiting": {"reason": "CreateContainerConfigError", "message": refused}}
            status = {"containerStatuses": [self._container(pod, ready=False, state=waiting)]}
            self.api("PATCH", f"/api/v1/namespaces/{namespace}/pods/{name}/status", {"status": status})
            return name
        started = ts(started_at)
        status = {
            "phase": "Running",
            "startTime": started,
            "hostIP": "10.0.0.10",
            "podIP": "10.244.1.17",
            "conditions": [
                {"type": "PodScheduled", "status": "True", "lastTransitionTime": started},
                {"type": "Ready", "status": "True", "lastTransitionTime": started},
            ],
            "containerStatuses": [self._container(pod, ready=True, state={"running": {"startedAt": started}})],
        }
        self.api("PATCH", f"/api/v1/namespaces/{namespace}/pods/{name}/status", {"status": status})
        return name

    def finish_pod(
        self,
        namespace: str,
        job_name: str,
        *,
        exit_code: int = 0,
        finished_at: datetime | None = None,
        job_controller: bool = True,
    ) -> None:
        """The container exits and the kubelet reports it; then (unless ``job_controller`` is False,
        to show the moment before it reacts) the Job controller marks the Job Complete (exit 0) or
        Failed with BackoffLimitExceeded (backoffLimit is 0)."""
        name = self.pod_name(namespace, job_name)
        pod = self.api("GET", f"/api/v1/namespaces/{namespace}/pods/{name}")
        finished = ts(finished_at)
        terminated = {
            "exitCode": exit_code,
            "reason": "Completed" if exit_code == 0 else "Error",
            "startedAt": self._started_at(pod) or finished,
            "finishedAt": finished,
        }
        status = {
            "phase": "Succeeded" if exit_code == 0 else "Failed",
            "conditions": [
                {"type": "Ready", "status": "False", "reason": "PodCompleted", "lastTransitionTime": finished}
            ],
            "containerStatuses": [self._container(pod, ready=False, state={"terminated": terminated})],
        }
        self.api("PATCH", f"/api/v1/namespaces/{namespace}/pods/{name}/status", {"status": status})
        if job_controller and exit_code == 0:
            self._job_finished(namespace, job_name, "Complete", *COMPLETED, finished)
        elif job_controller:
            self._job_finished(namespace, job_name, "Failed", *BACKOFF_LIMIT_EXCEEDED, finished)

    def evict_pod(
        self, namespace: str, job_name: str, *, at: datetime | None = None, job_controller: bool = True
    ) -> None:
        """The kubelet evicts the pod under node pressure (phase Failed, reason Evicted, a
        DisruptionTarget condition); then (unless ``job_controller`` is False) the Job controller
        fails the Job, as backoffLimit is 0."""
        name = self.pod_name(namespace, job_name)
        pod = self.api("GET", f"/api/v1/namespaces/{namespace}/pods/{name}")
        when = ts(at)
        terminated = {
            "exitCode": 137,
            "reason": "Error",
            "startedAt": self._started_at(pod) or when,
            "finishedAt": when,
        }
        disruption = {
            "type": "DisruptionTarget",
            "status": "True",
            "reason": "TerminationByKubelet",
            "message": EVICTION_MESSAGE,
            "lastTransitionTime": when,
        }
        status = {
            "phase": "Failed",
            "reason": "Evicted",
            "message": EVICTION_MESSAGE,
            "conditions": [
                disruption,
                {"type": "Ready", "status": "False", "reason": "PodFailed", "lastTransitionTime": when},
            ],
            "containerStatuses": [self._container(pod, ready=False, state={"terminated": terminated})],
        }
        self.api("PATCH", f"/api/v1/namespaces/{namespace}/pods/{name}/status", {"status": status})
        if job_controller:
            self._job_finished(namespace, job_name, "Failed", *BACKOFF_LIMIT_EXCEEDED, when)

    def fail_job(
        self, namespace: str, job_name: str, *, reason: str = "DeadlineExceeded", at: datetime | None = None
    ) -> None:
        """The Job controller fails the Job (activeDeadlineSeconds passed) and deletes its pods."""
        for pod in self.pods(namespace, job_name):
            self.api("DELETE", f"/api/v1/namespaces/{namespace}/pods/{pod['metadata']['name']}")
        self._job_finished(
            namespace, job_name, "Failed", reason, "Job was active longer than specified deadline", ts(at)
        )

    def write_log(self, namespace: str, job_name: str, text: str) -> None:
        """Append ``text`` to the log of the Job's newest pod."""
        key = (namespace, self.pod_name(namespace, job_name))

        def append() -> None:
            self.emulator.logs[key] = self.emulator.logs.get(key, "") + text

        self.in_loop(append)

    def _job_finished(self, namespace: str, job_name: str, type_: str, reason: str, message: str, at: str) -> None:
        target = "SuccessCriteriaMet" if type_ == "Complete" else "FailureTarget"
        conditions = [
            {"type": target, "status": "True", "reason": reason, "message": message, "lastTransitionTime": at},
            {"type": type_, "status": "True", "reason": reason, "message": message, "lastTransitionTime": at},
        ]
        status: dict[str, Any] = {"active": 0, "conditions": conditions}
        if type_ == "Complete":
            status.update(succeeded=1, completionTime=at)
        else:
            status["failed"] = 1
        self.api("PATCH", f"/apis/batch/v1/namespaces/{namespace}/jobs/{job_name}/status", {"status": status})

    def _unschedulable(self, pod_spec: dict, target: str) -> str:
        """The scheduler's message when the pod fits no node ("" when it fits ``target``)."""
        nodes = self.api("GET", "/api/v1/nodes")["items"]
        chosen = [
            n
            for n in nodes
            if target in (n["metadata"]["name"], (n["metadata"].get("labels") or {}).get("kubernetes.io/hostname"))
        ]
        reasons: dict[str, int] = {}
        if len(nodes) > len(chosen):
            reasons["node(s) didn't match Pod's node affinity/selector"] = len(nodes) - len(chosen)
        for node in chosen:
            allocatable = (node.get("status") or {}).get("allocatable") or {}
            used = _pod_requests_on(node["metadata"]["name"], self.api("GET", "/api/v1/pods")["items"])
            short = [
                resource
                for resource, wanted in sorted(_requests(pod_spec).items())
                if wanted > quantity(allocatable.get(resource, "0")) - used.get(resource, 0)
            ]
            if not short:
                return ""
            for resource in short:
                reasons[f"Insufficient {resource}"] = reasons.get(f"Insufficient {resource}", 0) + 1
        listed = ", ".join(f"{count} {reason}" for reason, count in sorted(reasons.items()))
        return f"0/{len(nodes)} nodes are available: {listed}."

    def _non_root_violation(self, pod: dict) -> str:
        """The kubelet's refusal of the pod's first container under runAsNonRoot ("" when allowed)."""
        container = pod["spec"]["containers"][0]
        effective = {**(pod["spec"].get("securityContext") or {}), **(container.get("securityContext") or {})}
        if not effective.get("runAsNonRoot"):
            return ""
        where = f'(pod: "{pod["metadata"]["name"]}_{pod["metadata"]["namespace"]}({pod["metadata"]["uid"]})", '
        where += f"container: {container['name']})"
        if effective.get("runAsUser") is not None:
            return f"container's runAsUser breaks non-root policy {where}" if effective["runAsUser"] == ROOT else ""
        if self.image_users.get(container["image"], ROOT) == ROOT:
            return f"container has runAsNonRoot and image will run as root {where}"
        return ""

    @staticmethod
    def _container(pod: dict, *, ready: bool, state: dict) -> dict:
        container = pod["spec"]["containers"][0]
        return {
            "name": container["name"],
            "image": container["image"],
            "imageID": f"docker.io/library/{container['image']}@sha256:{'0' * 64}",
            "containerID": f"containerd://{uuid.uuid4().hex}",
            "ready": ready,
            "started": ready,
            "restartCount": 0,
            "state": state,
        }

    @staticmethod
    def _started_at(pod: dict) -> str | None:
        for status in (pod.get("status") or {}).get("containerStatuses") or ():
            state = status.get("state") or {}
            for key in ("running", "terminated"):
                if state.get(key, {}).get("startedAt"):
                    return state[key]["startedAt"]
        return None


_SUFFIXES = {
    "m": Fraction(1, 1000),
    "k": Fraction(10**3),
    "M": Fraction(10**6),
    "G": Fraction(10**9),
    "T": Fraction(10**12),
    "Ki": Fraction(2**10),
    "Mi": Fraction(2**20),
    "Gi": Fraction(2**30),
    "Ti": Fraction(2**40),
}
_QUANTITY = re.compile(r"^([0-9]+(?:\.[0-9]+)?)(m|k|M|G|T|Ki|Mi|Gi|Ti)?$")


def quantity(text: str | int) -> Fraction:
    """A Kubernetes resource quantity ("500m", "2", "16Gi") as an exact number (cores, bytes, GPUs)."""
    match = _QUANTITY.fullmatch(str(text))
    assert match, f"not a quantity the emulator reads: {text!r}"
    return Fraction(match[1]) * _SUFFIXES.get(match[2] or "", Fraction(1))


def _requests(pod_spec: dict) -> dict[str, Fraction]:
    """The pod's requests as the scheduler counts them: each container's, a limit standing in for an
    absent request of that resource."""
    total: dict[str, Fraction] = {}
    for container in pod_spec.get("containers") or ():
        resources = container.get("resources") or {}
        for name, value in {**(resources.get("limits") or {}), **(resources.get("requests") or {})}.items():
            total[name] = total.get(name, Fraction(0)) + quantity(value)
    return total


def _pod_requests_on(node_name: str, pods: list[dict]) -> dict[str, Fraction]:
    """What the unfinished pods bound to the node request."""
    used: dict[str, Fraction] = {}
    for pod in pods:
        finished = (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed")
        if pod.get("spec", {}).get("nodeName") == node_name and not finished:
            for name, value in _requests(pod["spec"]).items():
                used[name] = used.get(name, Fraction(0)) + value
    return used


def _scale_down_rank(pod: dict) -> tuple:
    """The ReplicaSet controller's order for deleting pods: unassigned, then not ready, then newest."""
    conditions = (pod.get("status") or {}).get("conditions") or ()
    ready = any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)
    created = pod["metadata"].get("creationTimestamp", "")
    return (bool(pod["spec"].get("nodeName")), ready, "".join(chr(255 - ord(ch)) for ch in created))


def _template_hash(template: dict) -> str:
    """What the Deployment controller's ``pod-template-hash`` stands for: the pod template's identity."""
    return uuid.uuid5(uuid.NAMESPACE_OID, json.dumps(template, sort_keys=True)).hex[:10]


@pytest.fixture
def kube_cluster() -> Iterator[KubeCluster]:
    cluster = KubeCluster()
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def kube_backend(kube_cluster: KubeCluster) -> Iterator[Any]:
    from scheduler.backends.kubernetes import KubernetesBackend

    backend = KubernetesBackend(
        kube_cluster.kubeconfig, timeout=2, retries=2, backoff=0.01, private_network_allowed=True
    )
    try:
        yield backend
    finally:
        backend.close()
