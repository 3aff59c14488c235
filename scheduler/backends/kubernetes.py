"""``KubernetesBackend``: the one module that talks to a Kubernetes API server.

It uses the official synchronous client (``kubernetes``) with a private
``ApiClient`` built from the cluster's kubeconfig: the process-wide default
configuration and ``~/.kube`` are never read or written, so many clusters can
be driven from one process.

Every call has an explicit timeout, is retried with exponential backoff on
5xx, 429 and connection errors, and ends in ``BackendError`` when the retries
run out; 401/403 raise ``BackendForbidden`` at once (retrying cannot help).

The kubeconfig comes from a GPU owner, so it is untrusted input: only inline
credentials are accepted (``token``, ``client-certificate-data``...). Exec
plugins, auth providers and file paths would run commands or read files on
our servers, and are refused with ``KubeconfigInvalid``.

Its server URL is untrusted too (SSRF): before a backend is built, the API
server's host is resolved and every address must be public (not loopback,
link-local, private, unique-local, unspecified, multicast or reserved), else
``PrivateAddressRefused``, unless the caller says an operator allowed it. The
client is then pinned to the address that was checked (TLS still verifies the
host name), so a DNS answer that changes afterwards cannot redirect it; a
backend is built per use, so each use resolves again. Redirects are not
followed, and an upstream's error body is logged, never put in our errors.

The pod spec (``job_manifest``) is one a real cluster accepts:

* CPU and memory limited to the job's share of its server
  (``JobSpec.cpu_milli`` / ``memory_mib``) and requested at
  ``REQUEST_SHARE_PERCENT`` (90 %) of it: a node keeps some CPU and memory for
  the system (kube-reserved, system-reserved, eviction), so a job booking every
  GPU of a server must still fit the node's allocatable; GPUs as
  ``nvidia.com/gpu`` limits and requests; a memory-backed ``emptyDir`` at ``/dev/shm`` of half the memory
  share (PyTorch data loaders share tensors there; the runtime's default is
  64 MiB; tmpfs pages count against the container's memory limit, so half
  leaves the other half to the process);
* images that run as root (most CUDA images) start: on a cluster with user
  namespaces (``hostUsers: false``; on by default from Kubernetes 1.33, the
  ``user_namespaces_from`` version) the container's root is an unprivileged
  host user, and ``runAsNonRoot`` is not asked (the kubelet checks it against
  the user inside the container, so it would refuse a root image even
  there); the namespace then enforces the ``baseline`` Pod Security level,
  since ``restricted`` requires ``runAsNonRoot``. Elsewhere the pod runs as
  ``run_as_user`` (``SCHEDULER_RUN_AS_USER``) with ``runAsNonRoot: true``
  under ``restricted``. Either way: no privilege escalation, every
  capability dropped, seccomp ``RuntimeDefault``;
* environment values are in a per-job Secret (``<job>-env``, read with
  ``envFrom``), never in the Job: it is created before the Job, then owned
  by it (``ownerReferences``, so the cluster's garbage collector removes it
  with the Job, e.g. after ``ttlSecondsAfterFinished``), and ``delete_job``
  deletes it too.
"""

from __future__ import annotations

import base64
import contextlib
import http
import ipaddress
import logging
import re
import socket
import time
from collections.abc import Callable, Collection, Iterable
from datetime import UTC, datetime
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

import urllib3
import yaml
from kubernetes import client
from kubernetes.client.exceptions import ApiException
from kubernetes.config.config_exception import ConfigException
from kubernetes.config.kube_config import load_kube_config_from_dict

from core.api import digits
from scheduler.backends.base import (
    GPU_PRODUCT_LABEL,
    GPU_RESOURCE,
    HOSTNAME_LABEL,
    LABEL_MANAGED_BY,
    MANAGED_BY,
    BackendError,
    BackendForbidden,
    JobRef,
    JobSpec,
    JobState,
    NodeInfo,
    Phase,
)

T = TypeVar("T")
logger = logging.getLogger(__name__)

CONTAINER_NAME = "main"
SHM_VOLUME = "dshm"
SHM_PATH = "/dev/shm"  # noqa: S108 - inside the container, where glibc and PyTorch look for shared memory
ENV_SECRET_SUFFIX = "-env"
# The share of the job's CPU and memory requested (its limit is all of it): see the module docstring.
REQUEST_SHARE_PERCENT = 90
# Kubernetes turns user namespaces (hostUsers: false) on by default from this version (beta, gate
# UserNamespacesSupport, off by default in 1.30-1.32).
USER_NAMESPACES_FROM = (1, 33)
_VERSION = re.compile(r"^v?(\d+)\.(\d+)")
# The Job controller labels its pods with both (the unprefixed one before Kubernetes 1.27 only).
POD_JOB_LABELS = ("batch.kubernetes.io/job-name", "job-name")
MANAGED_SELECTOR = f"{LABEL_MANAGED_BY}={MANAGED_BY}"
RETRYABLE_STATUSES = frozenset({429, 500, 502, 503, 504})
MAX_BACKOFF_SECONDS = 10.0
# Kubeconfig keys that make the client run a program or read a local file.
UNSAFE_USER_KEYS = ("exec", "auth-provider", "tokenFile", "client-certificate", "client-key", "username", "password")
# A proxy would be a second outbound address, unchecked.
UNSAFE_CLUSTER_KEYS = ("certificate-authority", "proxy-url")


class KubeconfigInvalid(BackendError):
    """The kubeconfig cannot be used: malformed, incomplete, or it asks for files or programs."""


class PrivateAddressRefused(BackendError):
    """The API server resolves to a non-public address and no operator allowed this cluster."""

    def __init__(self, address: str) -> None:
        self.address = address
        super().__init__(
            f"The cluster's API server resolves to a private address ({address}); an operator must allow it."
        )


class _NotFound(BackendError):
    """404 from the API server (callers decide whether that is fine)."""


class _Conflict(BackendError):
    """409 from the API server (the object already exists)."""


def _utc(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def _condition(conditions: Iterable[Any] | None, type_: str) -> Any | None:
    """The condition of that type whose status is "True", if any."""
    for condition in conditions or ():
        if condition.type == type_ and condition.status == "True":
            return condition
    return None


def _api_message(exc: ApiException) -> str:
    """A generic reason for the status; the upstream's body and reason phrase are only logged."""
    logger.info("kubernetes API answered HTTP %s %s: %.2000s", exc.status, exc.reason, exc.body)
    try:
        return http.HTTPStatus(exc.status).phrase
    except ValueError:
        return "unexpected status"


def _public(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    """Whether ``ip`` (and any IPv4 address embedded in it) is a public unicast address."""
    if isinstance(ip, ipaddress.IPv6Address):
        embedded = ip.ipv4_mapped or ip.sixtofour or (ip.teredo[1] if ip.teredo else None)
        if embedded is not None and not _public(embedded):
            return False
        if ip in ipaddress.IPv6Network("64:ff9b::/96"):  # NAT64: the IPv4 address is the last 32 bits
            return _public(ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF))
    return ip.is_global and not (
        ip.is_private or ip.is_loopback or ip.is_link_local or ip.is_multicast or ip.is_reserved or ip.is_unspecified
    )


def api_server_address(host: str, port: int) -> str:
    """The address to connect to for ``host``: all it resolves to must be public, else ``PrivateAddressRefused``."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise BackendError(f"Could not resolve the API server's host {host!r}.") from exc
    addresses = [ipaddress.ip_address(info[4][0].split("%", 1)[0]) for info in infos]
    for ip in addresses:
        if not _public(ip):
            raise PrivateAddressRefused(str(ip))
    if not addresses:
        raise BackendError(f"Could not resolve the API server's host {host!r}.")
    return str(addresses[0])


def _pin(configuration: client.Configuration, allowed_hosts: Collection[str], allow_private: bool) -> None:
    """Check the configured server's addresses and point the client at the checked one."""
    parts = urlsplit(configuration.host)
    host = parts.hostname or ""
    if allow_private or host in allowed_hosts:
        return
    port = parts.port or (443 if parts.scheme == "https" else 80)
    address = api_server_address(host, port)
    netloc = f"[{address}]:{port}" if ":" in address else f"{address}:{port}"
    configuration.host = urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))
    try:
        ipaddress.ip_address(host)
    except ValueError:  # a name: TLS sends it (SNI) and checks the certificate against it
        if parts.scheme == "https" and not configuration.tls_server_name:
            configuration.tls_server_name = host


def user_namespaces_supported(server_version: str, since: tuple[int, int] = USER_NAMESPACES_FROM) -> bool:
    """Whether an API server of that version (``v1.33.1``, ``v1.30.4-eks-...``) runs pods with
    ``hostUsers: false``; an unknown version does not."""
    match = _VERSION.match(server_version or "")
    return match is not None and (int(match[1]), int(match[2])) >= since


def env_secret_name(job_name: str) -> str:
    return f"{job_name}{ENV_SECRET_SUFFIX}"


def _parse_kubeconfig(kubeconfig: str | dict, context: str | None) -> dict:
    if isinstance(kubeconfig, str):
        try:
            config = yaml.safe_load(kubeconfig)
        except yaml.YAMLError as exc:
            raise KubeconfigInvalid(f"The kubeconfig is not valid YAML: {exc}") from exc
    else:
        config = kubeconfig
    if not isinstance(config, dict):
        raise KubeconfigInvalid("The kubeconfig must be a YAML mapping with clusters, users and contexts.")

    def named(section: str, name: Any) -> dict:
        for entry in config.get(section) or ():
            if isinstance(entry, dict) and entry.get("name") == name:
                return entry
        raise KubeconfigInvalid(f"The kubeconfig has no entry named {name!r} in {section!r}.")

    context_name = context or config.get("current-context")
    if not context_name:
        raise KubeconfigInvalid("The kubeconfig has no current-context (and none was given).")
    ctx = named("contexts", context_name).get("context")
    if not isinstance(ctx, dict) or not ctx.get("cluster"):
        raise KubeconfigInvalid(f"The kubeconfig context {context_name!r} names no cluster.")
    cluster = named("clusters", ctx["cluster"]).get("cluster")
    if not isinstance(cluster, dict) or not cluster.get("server"):
        raise KubeconfigInvalid(f"The kubeconfig cluster {ctx['cluster']!r} has no server URL.")
    if not str(cluster["server"]).startswith(("https://", "http://")):
        raise KubeconfigInvalid(f"The kubeconfig server must be an http(s) URL, not {cluster['server']!r}.")
    unsafe = [key for key in UNSAFE_CLUSTER_KEYS if key in cluster]
    if ctx.get("user"):
        user = named("users", ctx["user"]).get("user") or {}
        if not isinstance(user, dict):
            raise KubeconfigInvalid(f"The kubeconfig user {ctx['user']!r} is not a mapping.")
        unsafe += [key for key in UNSAFE_USER_KEYS if key in user]
    if unsafe:
        raise KubeconfigInvalid(
            f"The kubeconfig uses {', '.join(unsafe)}: only inline credentials are accepted "
            "(token, client-certificate-data, client-key-data, certificate-authority-data)."
        )
    return config


class KubernetesBackend:
    """A cluster behind a Kubernetes API server (see the module docstring)."""

    simulated = False

    def __init__(
        self,
        kubeconfig: str | dict,
        *,
        context: str | None = None,
        timeout: float = 10,
        retries: int = 3,
        backoff: float = 0.2,
        private_network_allowed: bool = False,
        allowed_private_hosts: Collection[str] = (),
        server_version: str = "",
        run_as_user: int = 1000,
        user_namespaces_from: tuple[int, int] = USER_NAMESPACES_FROM,
    ) -> None:
        """``private_network_allowed``: an operator allowed this cluster; ``allowed_private_hosts``: host
        names or addresses the deployment allows (``SCHEDULER_ALLOWED_PRIVATE_HOSTS``);
        ``server_version``: the API server's, as last read (decides user namespaces);
        ``run_as_user``: the user (and group) pods run as without user namespaces."""
        self.user_namespaces = user_namespaces_supported(server_version, user_namespaces_from)
        self._run_as_user = run_as_user
        config = _parse_kubeconfig(kubeconfig, context)
        configuration = client.Configuration()
        try:
            load_kube_config_from_dict(
                config, context=context, client_configuration=configuration, persist_config=False
            )
        except (ConfigException, KeyError, TypeError, ValueError, AttributeError) as exc:
            raise KubeconfigInvalid(f"The kubeconfig cannot be loaded: {exc}") from exc
        _pin(configuration, allowed_private_hosts, private_network_allowed)
        # Our own loop retries (with backoff, on the statuses we choose); urllib3's would multiply it.
        # retries=False also makes urllib3 return a redirect instead of following it (to an unchecked host).
        configuration.retries = False
        self._api = client.ApiClient(configuration=configuration)
        self._timeout = (timeout, timeout)  # (connect, read); the client ignores a float
        self._retries = retries
        self._backoff = backoff
        self._core = client.CoreV1Api(self._api)
        self._batch = client.BatchV1Api(self._api)

    def close(self) -> None:
        self._api.close()

    # -- the interface --

    def check(self) -> None:
        self.server_version()
        for group, resource, what in (("batch", "jobs", "batch/v1 Jobs"), ("", "secrets", "Secrets")):
            review = client.V1SelfSubjectAccessReview(
                spec=client.V1SelfSubjectAccessReviewSpec(
                    resource_attributes=client.V1ResourceAttributes(verb="create", group=group, resource=resource)
                )
            )
            answer = self._call(
                "review our permissions", client.AuthorizationV1Api(self._api).create_self_subject_access_review, review
            )
            status = answer.status
            if status is None or not status.allowed:
                reason = (status.reason if status else "") or "no reason given"
                raise BackendForbidden(f"These credentials may not create {what} ({reason}).")

    def server_version(self) -> str:
        info = self._call("read the server version", client.VersionApi(self._api).get_code)
        return str(info.git_version or f"v{info.major}.{info.minor}")[:64]

    def list_nodes(self) -> list[NodeInfo]:
        nodes = self._call("list nodes", self._core.list_node).items
        return [self._node_info(node) for node in nodes]

    def ensure_namespace(self, name: str) -> None:
        labels = {
            LABEL_MANAGED_BY: MANAGED_BY,
            # Our pods meet the restricted profile, but for runAsNonRoot under user namespaces (see the
            # module docstring); nobody else's should run here.
            "pod-security.kubernetes.io/enforce": "baseline" if self.user_namespaces else "restricted",
        }
        body = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": labels}}
        try:
            self._call(f"create namespace {name}", self._core.create_namespace, body)
        except _Conflict:  # there already, maybe from before the cluster's upgrade: its level follows ours
            self._call(f"label namespace {name}", self._core.patch_namespace, name, {"metadata": {"labels": labels}})

    def create_job(self, spec: JobSpec) -> JobState:
        """The env Secret first (the pod reads it at start), then the Job, then the Secret handed to the Job."""
        if spec.env:
            self._put_env_secret(spec)
        manifest = job_manifest(spec, user_namespaces=self.user_namespaces, run_as_user=self._run_as_user)
        try:
            job = self._call(
                f"create job {spec.namespace}/{spec.name}", self._batch.create_namespaced_job, spec.namespace, manifest
            )
        except _Conflict:
            state = self.job_state(spec.namespace, spec.name)
            if state.phase is Phase.GONE:  # deleted between our create and read: a retry will create it
                raise BackendError(f"Job {spec.namespace}/{spec.name} was being deleted; try again.") from None
            uid = state.uid
        else:
            uid = job.metadata.uid or ""
            state = JobState(uid=uid, phase=Phase.PENDING, node=spec.node)
        if spec.env and uid:
            owner = {
                "apiVersion": "batch/v1",
                "kind": "Job",
                "name": spec.name,
                "uid": uid,
                "controller": False,
                "blockOwnerDeletion": False,
            }
            self._call(
                f"hand secret {spec.namespace}/{env_secret_name(spec.name)} to its job",
                self._core.patch_namespaced_secret,
                env_secret_name(spec.name),
                spec.namespace,
                {"metadata": {"ownerReferences": [owner]}},
            )
        return state

    def _put_env_secret(self, spec: JobSpec) -> None:
        name = env_secret_name(spec.name)
        data = {key: base64.b64encode(value.encode()).decode() for key, value in sorted(spec.env.items())}
        labels = {**spec.labels, LABEL_MANAGED_BY: MANAGED_BY}
        body = {
            "apiVersion": "v1",
            "kind": "Secret",
            "type": "Opaque",
            "metadata": {"name": name, "namespace": spec.namespace, "labels": labels},
            "data": data,
        }
        try:
            self._call(
                f"create secret {spec.namespace}/{name}", self._core.create_namespaced_secret, spec.namespace, body
            )
        except _Conflict:  # left by an earlier try of this attempt: same name, same job, so same values
            self._call(
                f"update secret {spec.namespace}/{name}",
                self._core.patch_namespaced_secret,
                name,
                spec.namespace,
                {"data": data},
            )

    def job_state(self, namespace: str, name: str) -> JobState:
        try:
            job = self._call(f"read job {namespace}/{name}", self._batch.read_namespaced_job, name, namespace)
        except _NotFound:
            return JobState(uid="", phase=Phase.GONE)
        if (job.metadata.labels or {}).get(LABEL_MANAGED_BY) != MANAGED_BY:
            raise BackendError(f"Job {namespace}/{name} exists but is not managed by {MANAGED_BY}.")
        pod = self._newest_pod(namespace, name, job.metadata.uid)
        return self._state(job, pod)

    def list_jobs(self) -> list[JobRef]:
        jobs = self._call("list jobs", self._batch.list_job_for_all_namespaces, label_selector=MANAGED_SELECTOR).items
        # The selector is re-checked here: the garbage collector deletes whatever this returns.
        return [
            JobRef(namespace=job.metadata.namespace, name=job.metadata.name, labels=dict(job.metadata.labels or {}))
            for job in jobs
            if (job.metadata.labels or {}).get(LABEL_MANAGED_BY) == MANAGED_BY
        ]

    def delete_job(self, namespace: str, name: str) -> None:
        """The Job, then its env Secret (owned by the Job, but a cluster's garbage collector may lag)."""
        with contextlib.suppress(_NotFound):
            self._call(
                f"delete job {namespace}/{name}",
                self._batch.delete_namespaced_job,
                name,
                namespace,
                propagation_policy="Background",
                _preload_content=False,  # the answer (a Status or the Job) is not needed
            )
        with contextlib.suppress(_NotFound):
            self._call(
                f"delete secret {namespace}/{env_secret_name(name)}",
                self._core.delete_namespaced_secret,
                env_secret_name(name),
                namespace,
                _preload_content=False,
            )

    def logs_tail(self, namespace: str, name: str, lines: int = 100) -> str:
        pod = self._newest_pod(namespace, name, None)
        if pod is None:
            return ""
        try:
            response = self._call(
                f"read the log of pod {namespace}/{pod.metadata.name}",
                self._core.read_namespaced_pod_log,
                pod.metadata.name,
                namespace,
                container=CONTAINER_NAME,
                tail_lines=lines,
                # Raw bytes: the client would json-parse a log that happens to look like JSON.
                _preload_content=False,
            )
        except _NotFound:  # the pod went away since we listed it
            return ""
        except BackendError as exc:
            # 400 "container ... is waiting to start": no log yet.
            if isinstance(exc.__cause__, ApiException) and exc.__cause__.status == 400:
                return ""
            raise
        return response.data.decode("utf-8", errors="replace")

    # -- snapshots, watches and access checks (scale helper) --

    # -- services, sessions and SSH (sessions helper) --

    # -- deployments for inference endpoints (endpoints helper) --

    # -- registries, volumes and log streaming (storage helper) --

    # -- the platform's proxy: where and how to reach the API server (proxy helper) --

    # -- helpers --

    def _call(self, what: str, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """``fn(*args, **kwargs)`` with our timeout, retried on transient errors; errors mapped to ours."""
        attempt = 0
        while True:
            retry_after = 0.0
            try:
                return fn(*args, _request_timeout=self._timeout, **kwargs)
            except ApiException as exc:
                status = exc.status or 0
                if status == 0:  # the client's wrapping of TLS errors: retrying will not fix a certificate
                    raise BackendError(f"Could not {what}: {exc.reason}") from exc
                message = f"Could not {what}: HTTP {status} {_api_message(exc)}"
                if status in (401, 403):
                    raise BackendForbidden(message) from exc
                if status == 404:
                    raise _NotFound(message) from exc
                if status == 409:
                    raise _Conflict(message) from exc
                if status not in RETRYABLE_STATUSES or attempt >= self._retries:
                    suffix = f" (after {attempt + 1} attempts)" if status in RETRYABLE_STATUSES else ""
                    raise BackendError(message + suffix) from exc
                header = (exc.headers or {}).get("Retry-After", "")
                retry_after = float(digits(header, maximum=3600) or 0)
            except urllib3.exceptions.HTTPError as exc:  # refused, reset, timed out...
                if attempt >= self._retries:
                    raise BackendError(f"Could not {what}: {exc} (after {attempt + 1} attempts)") from exc
            delay = max(self._backoff * 2**attempt, retry_after)
            time.sleep(min(delay, MAX_BACKOFF_SECONDS))
            attempt += 1

    @staticmethod
    def _node_info(node: Any) -> NodeInfo:
        labels = node.metadata.labels or {}
        allocatable = (node.status.allocatable if node.status else None) or {}
        try:
            gpus = int(allocatable.get(GPU_RESOURCE, 0))
        except ValueError:
            gpus = 0
        ready = _condition(node.status.conditions if node.status else None, "Ready") is not None
        return NodeInfo(
            name=node.metadata.name,
            hostname=labels.get(HOSTNAME_LABEL, node.metadata.name),
            gpu_allocatable=gpus,
            gpu_product=labels.get(GPU_PRODUCT_LABEL, ""),
            ready=ready,
        )

    def _newest_pod(self, namespace: str, job_name: str, job_uid: str | None) -> Any | None:
        """The Job's most recently created pod (pods of an older Job of that name are skipped)."""
        for label in POD_JOB_LABELS:
            pods = self._call(
                f"list the pods of job {namespace}/{job_name}",
                self._core.list_namespaced_pod,
                namespace,
                label_selector=f"{label}={job_name}",
            ).items
            pods = [
                pod
                for pod in pods
                if (pod.metadata.labels or {}).get(label) == job_name
                and (
                    job_uid is None
                    or all(ref.uid == job_uid for ref in pod.metadata.owner_references or () if ref.kind == "Job")
                )
            ]
            if pods:
                epoch = datetime.min.replace(tzinfo=UTC)
                return max(pods, key=lambda pod: (_utc(pod.metadata.creation_timestamp) or epoch, pod.metadata.name))
        return None

    def _node_not_ready_since(self, node_name: str) -> tuple[bool, datetime | None]:
        """(is the node NotReady or gone, since when)."""
        try:
            node = self._call(f"read node {node_name}", self._core.read_node, node_name)
        except _NotFound:
            return True, None
        for condition in (node.status.conditions if node.status else None) or ():
            if condition.type == "Ready":
                return condition.status != "True", _utc(condition.last_transition_time)
        return True, None

    def _state(self, job: Any, pod: Any | None) -> JobState:
        uid = job.metadata.uid or ""
        job_conditions = job.status.conditions if job.status else None
        selector = (job.spec.template.spec.node_selector if job.spec and job.spec.template.spec else None) or {}
        node = (pod.spec.node_name if pod is not None and pod.spec else None) or selector.get(HOSTNAME_LABEL, "")

        pod_status = pod.status if pod is not None and pod.status else None
        container = None
        if pod_status is not None:
            statuses = pod_status.container_statuses or []
            container = next((c for c in statuses if c.name == CONTAINER_NAME), statuses[0] if statuses else None)
        running = container.state.running if container is not None and container.state else None
        terminated = container.state.terminated if container is not None and container.state else None
        running_since = _utc(
            (running.started_at if running else None) or (terminated.started_at if terminated else None)
        )
        if running_since is None and pod_status is not None and pod_status.phase == "Running":
            running_since = _utc(pod_status.start_time)
        terminated_at = _utc(terminated.finished_at) if terminated else None

        disruption = _condition(pod_status.conditions if pod_status else None, "DisruptionTarget")
        evicted = pod_status is not None and pod_status.reason == "Evicted"

        def interrupted(message: str, noticed: datetime | None) -> JobState:
            at = terminated_at or (_utc(disruption.last_transition_time) if disruption else None) or noticed
            at = at or datetime.now(UTC)  # no timestamp anywhere: now is when we noticed
            return JobState(uid, Phase.INTERRUPTED, running_since, at, node, message)

        def eviction_message() -> str:
            if evicted:
                return f"Evicted: {pod_status.message}" if pod_status.message else "Evicted"
            return f"Disrupted: {disruption.reason or ''} {disruption.message or ''}".strip()

        complete = _condition(job_conditions, "Complete")
        if complete is not None:
            at = terminated_at or _utc(job.status.completion_time) or _utc(complete.last_transition_time)
            return JobState(uid, Phase.SUCCEEDED, running_since, at, node)
        failed = _condition(job_conditions, "Failed")
        if failed is not None:
            if evicted or disruption is not None:
                return interrupted(eviction_message(), _utc(failed.last_transition_time))
            at = terminated_at or _utc(failed.last_transition_time)
            return JobState(uid, Phase.FAILED, running_since, at, node, failed.reason or failed.message or "Failed")

        if pod_status is None:
            return JobState(uid, Phase.PENDING, node=node)
        waiting = container.state.waiting if container is not None and container.state else None
        if evicted or disruption is not None:
            return interrupted(eviction_message(), None)
        if pod_status.phase == "Running":
            not_ready, since = self._node_not_ready_since(node) if node else (False, None)
            if not_ready:
                return interrupted(f"Node {node} is NotReady", since)
            return JobState(uid, Phase.RUNNING, running_since, node=node)
        if pod_status.phase == "Succeeded":
            return JobState(uid, Phase.SUCCEEDED, running_since, terminated_at, node)
        if pod_status.phase == "Failed":
            message = "Failed"
            if terminated is not None:
                message = f"{terminated.reason or 'Error'} (exit code {terminated.exit_code})"
            return JobState(uid, Phase.FAILED, running_since, terminated_at, node, message)
        return JobState(uid, Phase.PENDING, node=node, message=_pending_reason(pod_status, waiting))


# Waiting reasons of a container that is only being started: nothing to tell the renter.
_STARTING = frozenset({"ContainerCreating", "PodInitializing"})


def _pending_reason(pod_status: Any, waiting: Any | None) -> str:
    """Why a pending pod does not run: the scheduler's verdict, or the kubelet's ("" when it is just starting)."""
    for condition in pod_status.conditions or ():
        if condition.type == "PodScheduled" and condition.status == "False":
            return f"{condition.reason or 'Unschedulable'}: {condition.message or ''}".strip(": ")[:500]
    if waiting is not None and waiting.reason and waiting.reason not in _STARTING:
        return f"{waiting.reason}: {waiting.message or ''}".strip(": ")[:500]
    return ""


def job_manifest(spec: JobSpec, *, user_namespaces: bool = False, run_as_user: int = 1000) -> dict:
    """The batch/v1 Job we create for ``spec``: pinned to its node, its share of the server requested and
    limited, /dev/shm, root confined (a user namespace, else ``run_as_user``), env from its Secret."""
    labels = {**spec.labels, LABEL_MANAGED_BY: MANAGED_BY}
    limits = {GPU_RESOURCE: str(spec.gpu_count)}
    requests = dict(limits)
    if spec.cpu_milli:
        limits["cpu"] = f"{spec.cpu_milli}m"
        requests["cpu"] = f"{spec.cpu_milli * REQUEST_SHARE_PERCENT // 100}m"
    if spec.memory_mib:
        limits["memory"] = f"{spec.memory_mib}Mi"
        requests["memory"] = f"{spec.memory_mib * REQUEST_SHARE_PERCENT // 100}Mi"
    if user_namespaces:
        pod_security: dict[str, Any] = {"seccompProfile": {"type": "RuntimeDefault"}}
        container_identity: dict[str, Any] = {}
        isolation: dict[str, Any] = {"hostUsers": False}
    else:
        pod_security = {
            "runAsNonRoot": True,
            "runAsUser": run_as_user,
            "runAsGroup": run_as_user,
            "fsGroup": run_as_user,
            "seccompProfile": {"type": "RuntimeDefault"},
        }
        container_identity = {"runAsNonRoot": True}
        isolation = {}
    container: dict[str, Any] = {
        "name": CONTAINER_NAME,
        "image": spec.image,
        "command": list(spec.command),
        "args": list(spec.args),
        "resources": {"limits": limits, "requests": requests},
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "privileged": False,
            **container_identity,
            "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        },
    }
    if spec.env:
        container["envFrom"] = [{"secretRef": {"name": env_secret_name(spec.name)}}]
    volumes = []
    if spec.memory_mib:
        shm = {"medium": "Memory", "sizeLimit": f"{max(1, spec.memory_mib // 2)}Mi"}
        volumes.append({"name": SHM_VOLUME, "emptyDir": shm})
        container["volumeMounts"] = [{"name": SHM_VOLUME, "mountPath": SHM_PATH}]
    pod_extra: dict[str, Any] = {"volumes": volumes} if volumes else {}
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": spec.name, "namespace": spec.namespace, "labels": labels},
        "spec": {
            "backoffLimit": 0,
            "completions": 1,
            "parallelism": 1,
            "activeDeadlineSeconds": spec.active_deadline_seconds,
            "ttlSecondsAfterFinished": spec.ttl_seconds_after_finished,
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "restartPolicy": "Never",
                    "nodeSelector": {HOSTNAME_LABEL: spec.node},
                    "tolerations": [{"key": GPU_RESOURCE, "operator": "Exists", "effect": "NoSchedule"}],
                    "automountServiceAccountToken": False,
                    "enableServiceLinks": False,
                    "hostNetwork": False,
                    "hostPID": False,
                    "hostIPC": False,
                    **isolation,
                    "securityContext": pod_security,
                    "containers": [container],
                    **pod_extra,
                },
            },
        },
    }
