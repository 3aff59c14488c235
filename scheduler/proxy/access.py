"""Who may reach what through the proxy, and where it is: the synchronous lookups the ASGI app
runs in a thread (``sync_to_async``), and their short in-process caches.

* ``/proxy/<job>/<port>/``: the Django session cookie names the user (the session store and
  ``django.contrib.auth.get_user``, so a session whose password hash changed is signed out, as
  on the site). The user must be the job's renter, the job running, the port an ``ExposedPort``
  of it with protocol http and a Service. Anything else is "not found" (a job of someone else is
  not told apart from one that does not exist).
* ``/endpoints/<endpoint>/``: an API token (``Authorization: Bearer <token>``, or knox's
  ``Token <token>``) verified as the API verifies it (``accounts.permissions.ApiTokenAuthentication``:
  digest lookup, expiry, ``last_used_at``). Its user must be the endpoint's renter (else not
  found) and its scope ``infer``, ``book`` or ``admin`` (``read`` and ``owner`` are refused, with
  the reason). The endpoint must be live with a ready replica, else "not ready".

Caches (per process, in memory, bounded): a verified token for ``PROXY_TOKEN_CACHE_SECONDS``
(30 s; keyed by the token's knox digest, never the token; never past the token's expiry), so a
revoked token keeps working up to that long in a process that saw it; an endpoint's route and a
(session, job, port) decision for ``PROXY_ROUTE_CACHE_SECONDS`` (2 s), so a stopped endpoint or
job, or a signed-out session, keeps its way through for up to that long. Refusals are not cached.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from http.cookies import CookieError, SimpleCookie
from types import SimpleNamespace
from typing import Any

from django.conf import settings

INFER_SCOPES = frozenset({"infer", "book", "admin"})
CACHE_MAX_ENTRIES = 10_000


class Refused(Exception):
    """The proxy answers ``status`` with ``message`` (text/plain) and forwards nothing."""

    def __init__(self, status: int, message: str, *, headers: tuple[tuple[bytes, bytes], ...] = ()) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers


NOT_FOUND_JOB = "Not found: no such session port of yours (is the job running and the port exposed?)."
NOT_FOUND_ENDPOINT = "Not found: no such inference endpoint of yours."


@dataclass(frozen=True)
class Route:
    """Where to send a request: a Service port on a cluster, and what to record."""

    cluster_id: int
    cluster_version: str  # changes when the kubeconfig or the private-network permission does
    namespace: str
    service: str
    port: int
    endpoint_id: int | None = None  # for request statistics


@dataclass(frozen=True)
class TokenGrant:
    user_id: int
    scope: str


class TtlCache:
    """A small expiring map (entries carry their own deadline; the oldest go when full)."""

    def __init__(self, max_entries: int = CACHE_MAX_ENTRIES) -> None:
        self._data: dict[Any, tuple[float, Any]] = {}
        self._loading: dict[Any, asyncio.Future] = {}
        self._max = max_entries

    def get(self, key: Any) -> Any | None:
        entry = self._data.get(key)
        if entry is None:
            return None
        if entry[0] < time.monotonic():
            self._data.pop(key, None)
            return None
        return entry[1]

    def put(self, key: Any, value: Any, ttl: float) -> None:
        if ttl <= 0:
            return
        if len(self._data) >= self._max:
            for old in list(self._data)[: self._max // 10 or 1]:
                self._data.pop(old, None)
        self._data[key] = (time.monotonic() + ttl, value)

    def clear(self) -> None:
        self._data.clear()

    async def get_or_load(self, key: Any, load: Callable[[], Awaitable[tuple[Any, float]]]) -> Any:
        """The cached value, else ``load()``'s (value, ttl), loaded once however many requests
        missed together (they all wait for the one lookup: no stampede when an entry expires)."""
        value = self.get(key)
        if value is not None:
            return value
        pending = self._loading.get(key)
        if pending is None:
            pending = self._loading[key] = asyncio.ensure_future(load())
            pending.add_done_callback(lambda _done: self._loading.pop(key, None))
        value, ttl = await asyncio.shield(pending)
        self.put(key, value, ttl)
        return value


def _uuid(text: str) -> uuid.UUID:
    try:
        return uuid.UUID(text)
    except ValueError as exc:
        raise Refused(404, "Not found.") from exc


def _cluster_version(cluster) -> str:
    return f"{hash(cluster.kubeconfig_sealed)}:{cluster.private_network_allowed}"


def session_key(cookie_header: str) -> str:
    """The Django session key in a ``Cookie`` header ("" when absent or unreadable)."""
    if not cookie_header:
        return ""
    cookies = SimpleCookie()
    try:
        cookies.load(cookie_header)
    except CookieError:
        return ""
    morsel = cookies.get(settings.SESSION_COOKIE_NAME)
    return morsel.value if morsel else ""


def session_route(key: str, job_id: str, port: int) -> Route:
    """The route of ``/proxy/<job_id>/<port>/`` for the user of session ``key`` (see the module
    docstring); ``Refused(401)`` when not signed in, ``Refused(404)`` otherwise."""
    from importlib import import_module

    from django.contrib.auth import get_user

    from scheduler.models import ExposedPort, Job

    public_id = _uuid(job_id)
    if not key:
        raise Refused(401, "Sign in first.")
    store = import_module(settings.SESSION_ENGINE).SessionStore(session_key=key)
    user = get_user(SimpleNamespace(session=store))
    if not user.is_authenticated:
        raise Refused(401, "Sign in first.")
    job = Job.objects.select_related("cluster").filter(public_id=public_id, renter=user).first()
    if job is None or job.status != Job.Status.RUNNING or job.cluster is None or job.cluster.simulated:
        raise Refused(404, NOT_FOUND_JOB)
    exposed = (
        ExposedPort.objects.filter(job=job, port=port, protocol=ExposedPort.Protocol.HTTP)
        .exclude(service_name="")
        .first()
    )
    if exposed is None or not job.namespace:
        raise Refused(404, NOT_FOUND_JOB)
    return Route(
        cluster_id=job.cluster_id,
        cluster_version=_cluster_version(job.cluster),
        namespace=job.namespace,
        service=exposed.service_name,
        port=exposed.port,
    )


def token_of(authorization: str) -> str:
    """The token in an ``Authorization`` header (``Bearer`` or knox's ``Token``), "" when none."""
    scheme, _, credentials = authorization.strip().partition(" ")
    if scheme.lower() not in ("bearer", "token"):
        return ""
    return credentials.strip()


def token_digest(token: str) -> str:
    from knox.crypto import hash_token

    return hash_token(token)


def verify_token(token: str) -> tuple[TokenGrant, float]:
    """The token's user and scope, and how long it may be cached (to its expiry at most);
    ``Refused(401)`` when it is not a live token."""
    from django.utils import timezone
    from rest_framework.exceptions import AuthenticationFailed

    from accounts.permissions import ApiTokenAuthentication

    try:
        user, api_token = ApiTokenAuthentication().authenticate_credentials(token.encode())
    except (AuthenticationFailed, UnicodeError) as exc:
        raise Refused(401, "Invalid or expired API token.") from exc
    left = (api_token.expiry - timezone.now()).total_seconds() if api_token.expiry else float("inf")
    return TokenGrant(user_id=user.pk, scope=api_token.scope), left


def endpoint_route(endpoint_id: str) -> tuple[Route, int, bool]:
    """An endpoint's route, its renter's id and whether it can answer now."""
    from scheduler.models import Endpoint

    endpoint = Endpoint.objects.select_related("cluster").filter(public_id=_uuid(endpoint_id)).first()
    if endpoint is None:
        raise Refused(404, NOT_FOUND_ENDPOINT)
    ready = bool(
        endpoint.live
        and endpoint.ready_replicas > 0
        and endpoint.cluster is not None
        and not endpoint.cluster.simulated
        and endpoint.service_name
        and endpoint.namespace
    )
    route = Route(
        cluster_id=endpoint.cluster_id or 0,
        cluster_version=_cluster_version(endpoint.cluster) if endpoint.cluster else "",
        namespace=endpoint.namespace,
        service=endpoint.service_name,
        port=endpoint.port,
        endpoint_id=endpoint.pk,
    )
    return route, endpoint.renter_id, ready


def check_endpoint_grant(grant: TokenGrant, renter_id: int, ready: bool) -> None:
    if grant.user_id != renter_id:
        raise Refused(404, NOT_FOUND_ENDPOINT)
    if grant.scope not in INFER_SCOPES:
        raise Refused(
            403,
            f"This token has the {grant.scope} scope; calling an inference endpoint needs a token "
            "with the infer, book or admin scope.",
        )
    if not ready:
        raise Refused(503, "Endpoint not ready: no replica is ready yet (or it was stopped).")


def cluster_target(cluster_id: int):
    """The ``ProxyTarget`` of a cluster (its kubeconfig unsealed and checked, the host pinned)."""
    from scheduler import crypto
    from scheduler.backends.base import BackendError
    from scheduler.backends.kubernetes import KubernetesBackend
    from scheduler.models import Cluster

    cluster = Cluster.objects.filter(pk=cluster_id).first()
    if cluster is None or cluster.simulated:
        raise Refused(404, "Not found.")
    try:
        return KubernetesBackend.proxy_target(
            crypto.unseal(cluster.kubeconfig_sealed),
            private_network_allowed=cluster.private_network_allowed,
            allowed_private_hosts=settings.SCHEDULER_ALLOWED_PRIVATE_HOSTS,
        )
    except BackendError as exc:
        raise Refused(502, f"Bad gateway: the cluster's API server cannot be used: {exc}") from exc
