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
* an interactive session (sessions helper): the HTTP ports as container ports,
  behind the ClusterIP Service ``<job>-http``; with SSH, the renter's keys in
  the Secret ``<job>-ssh`` (read-only at ``/etc/infrafi/ssh/authorized_keys``
  and as ``PUBLIC_KEY``, RunPod's convention, so common images start sshd with
  them), port 22 behind the Service ``<job>-ssh`` (NodePort or LoadBalancer,
  as the owner chose). All are owned by the Job and deleted by ``delete_job``.
* an inference endpoint (endpoints helper): the same pod spec (``pod_spec``,
  shared with ``job_manifest``) as a Deployment's template (``deployment_manifest``,
  restarted on exit, a readiness probe on its port), behind the ClusterIP
  Service of its name, env in ``<name>-env`` owned by the Deployment;
  ``delete_endpoint`` deletes all three. Image changes roll one replica at a
  time with no surge pod (the booking's GPUs are usually all taken).
* a private image (storage helper): the renter's registry credential in the
  ``kubernetes.io/dockerconfigjson`` Secret ``<name>-pull`` (``put_pull_secret``,
  created before the Job, then owned by it, deleted by ``delete_job``), named
  in ``imagePullSecrets``; the renter's volume, a PVC owned by no Job
  (``ensure_volume``: it outlives jobs), mounted at ``/workspace``.

Logs (storage helper): ``logs_stream`` follows the pod log (``follow=true``,
unparsed, chunk by chunk, ended by the container or a quiet read timeout);
``logs_full`` reads it whole up to a byte limit (``limitBytes``).

Scale (scale helper): ``snapshot()`` reads everything of ours in one list per
kind (Jobs, pods and Deployments by the managed-by label, plus the nodes) and
computes each Job's state with the same ``_state`` as ``job_state``, its pod
and node taken from the lists. ``watch_jobs`` resumes a watch of our Jobs at
the snapshot's ``resourceVersion``; 410 Gone means relist. ``check()`` reviews
every permission of ``scheduler.onboarding.PERMISSIONS``. Node allocatable CPU
and memory are parsed exactly (``parse_quantity``).
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import http
import ipaddress
import json
import logging
import re
import socket
import time
from collections.abc import Callable, Collection, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
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
    LABEL_ENDPOINT,
    LABEL_JOB,
    LABEL_MANAGED_BY,
    MANAGED_BY,
    BackendError,
    BackendForbidden,
    ClusterSnapshot,
    DeploymentState,
    EndpointSpec,
    JobRef,
    JobSpec,
    JobState,
    NodeInfo,
    Phase,
    SecretRef,
    SessionServices,
    SshAddress,
    WatchResult,
)
from scheduler.onboarding import PERMISSIONS, permission_label

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


@dataclass(frozen=True)
class ProxyTarget:
    """Where the platform's proxy sends a cluster's traffic (``KubernetesBackend.proxy_target``)."""

    base_url: str  # scheme://checked-address:port, no trailing slash
    headers: dict[str, str]  # the cluster's credentials (Authorization)
    ssl: Any  # an ssl.SSLContext for https, None for http
    server_hostname: str | None  # the name TLS checks when base_url holds the pinned address


@dataclass
class Reflector:
    """Our Jobs and pods on one cluster as of ``versions`` (their lists' resourceVersions), kept by
    the scheduler between ticks (``scheduler.services.cluster_tick``), so that a tick watches from
    where the last one stopped instead of listing everything again (client-go's reflector, in
    short). ``watch_seconds``: how long a watch is read once it goes quiet."""

    objects: dict[str, dict[tuple[str, str], Any]] = field(default_factory=lambda: {"jobs": {}, "pods": {}})
    versions: dict[str, str] = field(default_factory=lambda: {"jobs": "", "pods": ""})
    watch_seconds: float = 0.5
    listed: int = 0  # lists made (the first tick, or after a 410)
    watched: int = 0  # watches that brought it up to date

    def forget(self) -> None:
        self.objects = {"jobs": {}, "pods": {}}
        self.versions = {"jobs": "", "pods": ""}


class KubeconfigInvalid(BackendError):
    """The kubeconfig cannot be used: malformed, incomplete, or it asks for files or programs."""


class PrivateAddressRefused(BackendError):
    """The API server resolves to a non-public address and no operator allowed this cluster."""

    def __init__(self, address: str) -> None:
        self.address = address
        super().__init__(
            f"The cluster's API server resolves to a private address ({address}); an operator must allow it."
        )


class PermissionsMissing(BackendForbidden):
    """The credentials work but lack permissions of ``onboarding.PERMISSIONS``: ``missing`` names them
    ("create batch/jobs", "delete services", ...)."""

    def __init__(self, missing: list[str]) -> None:
        self.missing = missing
        super().__init__(
            f"These credentials may not: {', '.join(missing)}. "
            "Apply the onboarding manifest (/owner/clusters/onboarding/) and connect with its token."
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


# storage helper: a workload's image-pull Secret, and where a renter's volume is mounted.
PULL_SECRET_SUFFIX = "-pull"
WORKSPACE_VOLUME = "workspace"
WORKSPACE_PATH = "/workspace"
# Following a log: how long a quiet log is waited on before the stream ends (the caller may reconnect).
LOG_FOLLOW_IDLE_SECONDS = 60


def pull_secret_name(workload_name: str) -> str:
    return f"{workload_name}{PULL_SECRET_SUFFIX}"


# Sessions (sessions helper): the renter's keys, mounted read-only, and the Services in front of the pod.
SSH_SECRET_SUFFIX = "-ssh"
SSH_KEYS_VOLUME = "ssh-keys"
SSH_KEYS_DIR = "/etc/infrafi/ssh"  # the file is authorized_keys in it
SSH_KEYS_FILE = "authorized_keys"
SSH_PORT = 22


def ssh_secret_name(job_name: str) -> str:
    return f"{job_name}{SSH_SECRET_SUFFIX}"


def http_service_name(job_name: str) -> str:
    return f"{job_name}-http"


def ssh_service_name(job_name: str) -> str:
    return f"{job_name}-ssh"


def _job_owner(job_name: str, uid: str) -> dict:
    """An ownerReference to the Job: the cluster's garbage collector deletes the object with it."""
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "name": job_name,
        "uid": uid,
        "controller": False,
        "blockOwnerDeletion": False,
    }


def _node_address(node: Any) -> str:
    """The node's ExternalIP, else its InternalIP ("" when it reports neither)."""
    addresses = (node.status.addresses if node.status else None) or ()
    for kind in ("ExternalIP", "InternalIP"):
        for address in addresses:
            if address.type == kind and address.address:
                return str(address.address)[:253]
    return ""


def _ssh_address(service: Any) -> SshAddress:
    """A Service's SSH address: its nodePort, and a load balancer's ingress (IP or host name) once known."""
    ports = (service.spec.ports if service.spec else None) or ()
    node_port = next((p.node_port for p in ports if p.port == SSH_PORT and p.node_port), None)
    balancer = service.status.load_balancer if service.status else None
    ingress = (balancer.ingress if balancer else None) or ()
    host = next((str(i.ip or i.hostname) for i in ingress if i.ip or i.hostname), "")
    return SshAddress(node_port=node_port, host=host[:253], port=SSH_PORT if host else None)


# A resource quantity (k8s.io/apimachinery resource.Quantity): a decimal number, then a binary
# suffix (Ki..Ei), a decimal one (n, u, m, "", k, M, G, T, P, E) or an exponent (e3, E-2).
_QUANTITY = re.compile(r"^([+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+))(Ki|Mi|Gi|Ti|Pi|Ei|[numkMGTPE]|[eE][+-]?[0-9]+)?$")
_QUANTITY_SUFFIXES = {
    **{s: Decimal(1024) ** (i + 1) for i, s in enumerate(("Ki", "Mi", "Gi", "Ti", "Pi", "Ei"))},
    **{s: Decimal(10) ** e for s, e in (("n", -9), ("u", -6), ("m", -3), ("k", 3), ("M", 6), ("G", 9))},
    **{s: Decimal(10) ** e for s, e in (("T", 12), ("P", 15), ("E", 18))},
}


def parse_quantity(text: Any) -> Decimal:
    """A Kubernetes quantity ("64", "63500m", "512Gi", "1048576Ki", "1e3") as an exact Decimal;
    ``ValueError`` when it is not one."""
    match = _QUANTITY.fullmatch(str(text).strip())
    if not match:
        raise ValueError(f"not a Kubernetes quantity: {text!r}")
    try:
        number = Decimal(match[1])
    except InvalidOperation as exc:  # pragma: no cover - the pattern admits only decimals
        raise ValueError(f"not a Kubernetes quantity: {text!r}") from exc
    suffix = match[2] or ""
    if suffix[:1] in ("e", "E") and len(suffix) > 1:
        return number.scaleb(int(suffix[1:]))
    return number * _QUANTITY_SUFFIXES.get(suffix, Decimal(1))


def _whole(value: Decimal) -> int:
    """Rounded down to an integer, never negative."""
    return max(0, int(value.to_integral_value(rounding="ROUND_FLOOR")))


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
        self.closed = False
        self._timeout = (timeout, timeout)  # (connect, read); the client ignores a float
        self._retries = retries
        self._backoff = backoff
        self._core = client.CoreV1Api(self._api)
        self._batch = client.BatchV1Api(self._api)
        self._apps = client.AppsV1Api(self._api)

    def close(self) -> None:
        """Close the client's thread pool and every pooled connection (a backend serves one tick)."""
        self._api.close()
        self._api.rest_client.pool_manager.clear()
        self.closed = True

    # -- the interface --

    def check(self) -> None:
        """Reachable, and allowed every verb on every resource of ``onboarding.PERMISSIONS``: one
        SelfSubjectAccessReview per verb × resource; every one missing is named in one error."""
        self.server_version()
        reviews = client.AuthorizationV1Api(self._api)
        missing = []
        for group, resource, verbs in PERMISSIONS:
            name, _, subresource = resource.partition("/")
            for verb in verbs:
                attributes = client.V1ResourceAttributes(
                    verb=verb, group=group, resource=name, subresource=subresource or None
                )
                review = client.V1SelfSubjectAccessReview(
                    spec=client.V1SelfSubjectAccessReviewSpec(resource_attributes=attributes)
                )
                status = self._call("review our permissions", reviews.create_self_subject_access_review, review).status
                if status is None or not status.allowed:
                    missing.append(f"{verb} {permission_label(group, resource)}")
        if missing:
            raise PermissionsMissing(missing)

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
        if spec.ssh_keys:
            self._put_ssh_secret(spec)  # sessions helper
        if spec.pull_config_json:
            self.put_pull_secret(spec.namespace, spec.name, spec.pull_config_json, spec.labels)  # storage helper
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
        if spec.ssh_keys and uid:
            self._call(
                f"hand secret {spec.namespace}/{ssh_secret_name(spec.name)} to its job",
                self._core.patch_namespaced_secret,
                ssh_secret_name(spec.name),
                spec.namespace,
                {"metadata": {"ownerReferences": [_job_owner(spec.name, uid)]}},
            )
        if spec.pull_config_json and uid:
            self._hand_pull_secret(spec.namespace, spec.name, uid)  # storage helper
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
        self._delete_session_objects(namespace, name)  # sessions helper
        self._delete_pull_secret(namespace, name)  # storage helper

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

    def snapshot(self, reflector: Reflector | None = None) -> ClusterSnapshot:
        """Our Jobs, our pods (they carry the Job's labels), our Deployments and all nodes: one request
        per kind however many jobs run; each Job's state as ``job_state`` computes it.

        With a ``reflector`` (our Jobs and pods as of an earlier tick, see ``Reflector``), Jobs and pods
        are not listed again: a watch resumes at the reflector's resourceVersion and its events are
        applied; a version the API server no longer has (410 Gone) relists that kind."""
        if reflector is None:
            reflector = Reflector()
        self._reflect(reflector, "jobs", self._batch.list_job_for_all_namespaces, "V1Job")
        self._reflect(reflector, "pods", self._core.list_pod_for_all_namespaces, "V1Pod")
        deployments = self._call(
            "list deployments", self._apps.list_deployment_for_all_namespaces, label_selector=MANAGED_SELECTOR
        ).items
        nodes = {node.metadata.name: node for node in self._call("list nodes", self._core.list_node).items}
        pods_by_job: dict[tuple[str, str, str], list[Any]] = {}
        for pod in reflector.objects["pods"].values():
            for label in POD_JOB_LABELS:
                job_name = (pod.metadata.labels or {}).get(label)
                if job_name:
                    pods_by_job.setdefault((label, pod.metadata.namespace, job_name), []).append(pod)
        states: dict[tuple[str, str], JobState] = {}
        refs = []
        for job in reflector.objects["jobs"].values():
            labels = dict(job.metadata.labels or {})
            if labels.get(LABEL_MANAGED_BY) != MANAGED_BY:  # re-checked: the collector deletes what is listed
                continue
            namespace, name = job.metadata.namespace, job.metadata.name
            pod = None
            for label in POD_JOB_LABELS:
                pod = _newest_of(pods_by_job.get((label, namespace, name), ()), label, name, job.metadata.uid)
                if pod is not None:
                    break
            states[(namespace, name)] = self._state(job, pod, nodes)
            refs.append(JobRef(namespace=namespace, name=name, labels=labels))
        return ClusterSnapshot(
            jobs=states,
            deployments={
                (d.metadata.namespace, d.metadata.name): _deployment_state(d)
                for d in deployments
                if (d.metadata.labels or {}).get(LABEL_MANAGED_BY) == MANAGED_BY
            },
            refs=refs,
            resource_version=reflector.versions["jobs"],
        )

    def _reflect(self, reflector: Reflector, kind: str, list_fn: Callable[..., Any], model: str) -> None:
        """Bring ``reflector``'s objects of ``kind`` up to date: a watch from its version, else a list."""
        version = reflector.versions[kind]
        if version:
            try:
                events, latest, expired = self._watch(kind, list_fn, version, reflector.watch_seconds)
            except BackendError:
                reflector.forget()  # the next tick lists again
                raise
            if not expired:
                objects = reflector.objects[kind]
                for event in events:
                    raw = event.get("object") or {}
                    meta = raw.get("metadata") or {}
                    key = (meta.get("namespace", ""), meta.get("name", ""))
                    if event.get("type") == "DELETED":
                        objects.pop(key, None)
                    elif (meta.get("labels") or {}).get(LABEL_MANAGED_BY) == MANAGED_BY:
                        objects[key] = self._api._ApiClient__deserialize(raw, model)  # the client's own decoder
                    else:  # relabelled away from us
                        objects.pop(key, None)
                reflector.versions[kind] = latest
                reflector.watched += 1
                return
        answer = self._call(f"list {kind}", list_fn, label_selector=MANAGED_SELECTOR)
        reflector.objects[kind] = {(item.metadata.namespace, item.metadata.name): item for item in answer.items}
        reflector.versions[kind] = str((answer.metadata.resource_version if answer.metadata else "") or "")
        reflector.listed += 1

    def _watch(
        self, kind: str, list_fn: Callable[..., Any], resource_version: str, timeout_seconds: float
    ) -> tuple[list[dict], str, bool]:
        """The events of a watch of our ``kind`` from ``resource_version``: (events, the newest version
        seen, expired). The API server sends what happened since at once, then holds the stream until
        ``timeoutSeconds``; we stop reading once it has been quiet for ``timeout_seconds`` (a read
        timeout): whatever comes later is seen by the next watch, from the newest version read here.
        410 Gone (as the answer, or as an ERROR event) means the version is too old: expired."""
        events: list[dict] = []
        latest = resource_version
        try:
            response = list_fn(
                label_selector=MANAGED_SELECTOR,
                watch="true",  # as the API documents it (the client would send a bool as "True")
                resource_version=resource_version,
                timeout_seconds=max(1, int(timeout_seconds)),
                allow_watch_bookmarks=True,
                _preload_content=False,
                _request_timeout=(self._timeout[0], timeout_seconds),
            )
        except ApiException as exc:
            if exc.status == 410:
                return [], "", True
            message = f"Could not watch {kind}: HTTP {exc.status} {_api_message(exc)}"
            raise (BackendForbidden if exc.status in (401, 403) else BackendError)(message) from exc
        except urllib3.exceptions.HTTPError as exc:
            raise BackendError(f"Could not watch {kind}: {exc}") from exc
        buffer = b""
        try:
            for chunk in response.stream(4096):
                buffer += chunk
                *lines, buffer = buffer.split(b"\n")
                for line in lines:
                    event = _watch_event(line)
                    if event is None:
                        continue
                    if event.get("type") == "ERROR":
                        if (event.get("object") or {}).get("code") == 410:
                            return events, "", True
                        continue
                    meta = (event.get("object") or {}).get("metadata") or {}
                    latest = str(meta.get("resourceVersion") or latest)
                    if event.get("type") != "BOOKMARK":
                        events.append(event)
        except urllib3.exceptions.ReadTimeoutError:
            pass  # quiet since: the rest is the next watch's
        except urllib3.exceptions.HTTPError as exc:
            if not events:
                raise BackendError(f"Could not watch {kind}: {exc}") from exc
        finally:
            response.release_conn()
        return events, latest, False

    def watch_jobs(self, resource_version: str, timeout_seconds: int = 5) -> WatchResult:
        """The names of our Jobs changed since ``resource_version`` (see ``_watch``)."""
        events, latest, expired = self._watch(
            "jobs", self._batch.list_job_for_all_namespaces, resource_version, timeout_seconds
        )
        changed = frozenset(
            ((e["object"]["metadata"].get("namespace", ""), e["object"]["metadata"].get("name", "")))
            for e in events
            if ((e.get("object") or {}).get("metadata") or {}).get("labels", {}).get(LABEL_MANAGED_BY) == MANAGED_BY
        )
        if expired:
            return WatchResult(changed=frozenset(), resource_version="", expired=True)
        return WatchResult(changed=changed, resource_version=latest)

    def list_secrets(self) -> list[SecretRef]:
        secrets = self._call(
            "list secrets", self._core.list_secret_for_all_namespaces, label_selector=MANAGED_SELECTOR
        ).items
        return [
            SecretRef(
                namespace=s.metadata.namespace,
                name=s.metadata.name,
                labels=dict(s.metadata.labels or {}),
                created_at=_utc(s.metadata.creation_timestamp),
            )
            for s in secrets
            if (s.metadata.labels or {}).get(LABEL_MANAGED_BY) == MANAGED_BY
        ]

    def delete_secret(self, namespace: str, name: str) -> None:
        with contextlib.suppress(_NotFound):
            self._call(
                f"delete secret {namespace}/{name}",
                self._core.delete_namespaced_secret,
                name,
                namespace,
                _preload_content=False,
            )

    # -- services, sessions and SSH (sessions helper) --

    def _put_ssh_secret(self, spec: JobSpec) -> None:
        """The renter's keys as ``authorized_keys`` (mounted read-only; also the PUBLIC_KEY variable)."""
        name = ssh_secret_name(spec.name)
        data = {SSH_KEYS_FILE: base64.b64encode(("\n".join(spec.ssh_keys) + "\n").encode()).decode()}
        body = {
            "apiVersion": "v1",
            "kind": "Secret",
            "type": "Opaque",
            "metadata": {
                "name": name,
                "namespace": spec.namespace,
                "labels": {**spec.labels, LABEL_MANAGED_BY: MANAGED_BY},
            },
            "data": data,
        }
        try:
            self._call(
                f"create secret {spec.namespace}/{name}", self._core.create_namespaced_secret, spec.namespace, body
            )
        except _Conflict:  # an earlier try of this attempt
            self._call(
                f"update secret {spec.namespace}/{name}",
                self._core.patch_namespaced_secret,
                name,
                spec.namespace,
                {"data": data},
            )

    def _put_service(self, namespace: str, body: dict) -> Any:
        name = body["metadata"]["name"]
        try:
            return self._call(
                f"create service {namespace}/{name}", self._core.create_namespaced_service, namespace, body
            )
        except _Conflict:  # an earlier try of this attempt
            return self._call(f"read service {namespace}/{name}", self._core.read_namespaced_service, name, namespace)

    def create_session_services(
        self, spec: JobSpec, job_uid: str, *, ssh_service_type: str = "NodePort"
    ) -> SessionServices:
        labels = {**spec.labels, LABEL_MANAGED_BY: MANAGED_BY}
        selector = {LABEL_JOB: spec.labels[LABEL_JOB]}  # the pod template carries the Job's labels

        def service(name: str, type_: str, ports: list[dict]) -> dict:
            metadata = {
                "name": name,
                "namespace": spec.namespace,
                "labels": labels,
                "ownerReferences": [_job_owner(spec.name, job_uid)],
            }
            return {
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": metadata,
                "spec": {"type": type_, "selector": selector, "ports": ports},
            }

        http = ssh = ""
        address = SshAddress()
        if spec.http_ports:
            http = http_service_name(spec.name)
            ports = [{"name": f"http-{p}", "port": p, "targetPort": p, "protocol": "TCP"} for p in spec.http_ports]
            self._put_service(spec.namespace, service(http, "ClusterIP", ports))
        if spec.ssh_keys:
            ssh = ssh_service_name(spec.name)
            ports = [{"name": "ssh", "port": SSH_PORT, "targetPort": SSH_PORT, "protocol": "TCP"}]
            address = _ssh_address(self._put_service(spec.namespace, service(ssh, ssh_service_type, ports)))
        return SessionServices(http_service=http, ssh_service=ssh, ssh=address)

    def session_ssh_address(self, namespace: str, job_name: str) -> SshAddress:
        name = ssh_service_name(job_name)
        try:
            found = self._call(f"read service {namespace}/{name}", self._core.read_namespaced_service, name, namespace)
        except _NotFound:
            return SshAddress()
        return _ssh_address(found)

    def _delete_session_objects(self, namespace: str, job_name: str) -> None:
        """The job's Services and keys Secret (owned by the Job; a cluster's garbage collector may lag)."""
        for what, delete, name in (
            ("service", self._core.delete_namespaced_service, http_service_name(job_name)),
            ("service", self._core.delete_namespaced_service, ssh_service_name(job_name)),
            ("secret", self._core.delete_namespaced_secret, ssh_secret_name(job_name)),
        ):
            with contextlib.suppress(_NotFound):
                self._call(f"delete {what} {namespace}/{name}", delete, name, namespace, _preload_content=False)

    # -- deployments for inference endpoints (endpoints helper) --

    def create_endpoint(self, spec: EndpointSpec) -> DeploymentState:
        """The env Secret (the pods read it at start), the Deployment, its Service, then the Secret handed
        to the Deployment (``ownerReferences``: the cluster's garbage collector removes it with it). A
        private image's pull Secret ``<name>-pull`` is made first too, and handed over the same way."""
        if spec.pod.env:
            self._put_env_secret(spec.pod)
        if spec.pod.pull_config_json:  # endpoint storage: before the pods that pull with it
            self.put_pull_secret(spec.namespace, spec.name, spec.pod.pull_config_json, spec.pod.labels)
        manifest = deployment_manifest(spec, user_namespaces=self.user_namespaces, run_as_user=self._run_as_user)
        where = f"{spec.namespace}/{spec.name}"
        try:
            created = self._call(
                f"create deployment {where}", self._apps.create_namespaced_deployment, spec.namespace, manifest
            )
            state = _deployment_state(created)
        except _Conflict:  # an earlier try of this launch got through
            state = self.deployment_state(spec.namespace, spec.name)
            if state is None:
                raise BackendError(f"Deployment {where} was being deleted; try again.") from None
        with contextlib.suppress(_Conflict):
            self._call(
                f"create service {where}",
                self._core.create_namespaced_service,
                spec.namespace,
                service_manifest(spec),
            )
        owned = [env_secret_name(spec.name)] if spec.pod.env else []
        if spec.pod.pull_config_json:
            owned.append(pull_secret_name(spec.name))
        for secret in owned if state.uid else ():
            owner = {
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "name": spec.name,
                "uid": state.uid,
                "controller": False,
                "blockOwnerDeletion": False,
            }
            self._call(
                f"hand secret {spec.namespace}/{secret} to its deployment",
                self._core.patch_namespaced_secret,
                secret,
                spec.namespace,
                {"metadata": {"ownerReferences": [owner]}},
            )
        return state

    def deployment_state(self, namespace: str, name: str) -> DeploymentState | None:
        """The Deployment's state; while replicas are not ready, why (a pending pod's reason) when it says."""
        try:
            deployment = self._call(
                f"read deployment {namespace}/{name}", self._apps.read_namespaced_deployment, name, namespace
            )
        except _NotFound:
            return None
        if (deployment.metadata.labels or {}).get(LABEL_MANAGED_BY) != MANAGED_BY:
            raise BackendError(f"Deployment {namespace}/{name} exists but is not managed by {MANAGED_BY}.")
        state = _deployment_state(deployment)
        if state.ready_replicas < state.replicas and not state.message:
            endpoint = state.labels.get(LABEL_ENDPOINT, "")
            pods = self._call(
                f"list the pods of deployment {namespace}/{name}",
                self._core.list_namespaced_pod,
                namespace,
                label_selector=f"{LABEL_ENDPOINT}={endpoint}",
            ).items
            for pod in pods:
                if pod.status is None or pod.status.phase != "Pending":
                    continue
                statuses = pod.status.container_statuses or []
                waiting = next((c.state.waiting for c in statuses if c.state and c.state.waiting), None)
                reason = _pending_reason(pod.status, waiting)
                if reason:
                    return dataclasses.replace(state, message=reason)
        return state

    def list_deployments(self) -> list[DeploymentState]:
        deployments = self._call(
            "list deployments", self._apps.list_deployment_for_all_namespaces, label_selector=MANAGED_SELECTOR
        ).items
        return [
            _deployment_state(d) for d in deployments if (d.metadata.labels or {}).get(LABEL_MANAGED_BY) == MANAGED_BY
        ]

    def set_deployment_image(self, namespace: str, name: str, image: str) -> None:
        """Patch the main container's image. The patch carries the template's whole container list (as
        read), so that it means the same under a strategic merge (lists merged by container name, what
        the client sends for a dict) and under a JSON merge patch (lists replaced)."""
        where = f"{namespace}/{name}"
        deployment = self._call(f"read deployment {where}", self._apps.read_namespaced_deployment, name, namespace)
        containers = self._api.sanitize_for_serialization(deployment.spec.template.spec.containers or [])
        for container in containers:
            if container.get("name") == CONTAINER_NAME:
                container["image"] = image
        patch = {"spec": {"template": {"spec": {"containers": containers}}}}
        self._call(f"patch deployment {where}", self._apps.patch_namespaced_deployment, name, namespace, patch)

    def delete_endpoint(self, namespace: str, name: str) -> None:
        for what, fn, object_name, extra in (
            ("deployment", self._apps.delete_namespaced_deployment, name, {"propagation_policy": "Background"}),
            ("service", self._core.delete_namespaced_service, name, {}),
            ("secret", self._core.delete_namespaced_secret, env_secret_name(name), {}),
            ("secret", self._core.delete_namespaced_secret, pull_secret_name(name), {}),  # endpoint storage
        ):
            with contextlib.suppress(_NotFound):
                self._call(
                    f"delete {what} {namespace}/{object_name}",
                    fn,
                    object_name,
                    namespace,
                    _preload_content=False,
                    **extra,
                )

    # -- registries, volumes and log streaming (storage helper) --

    def put_pull_secret(self, namespace: str, name: str, config_json: str, labels: dict[str, str]) -> None:
        """The ``kubernetes.io/dockerconfigjson`` Secret ``<name>-pull`` a workload's pods pull with
        (``imagePullSecrets``); 409 (an earlier try of this attempt) updates it."""
        secret = pull_secret_name(name)
        data = {".dockerconfigjson": base64.b64encode(config_json.encode()).decode()}
        body = {
            "apiVersion": "v1",
            "kind": "Secret",
            "type": "kubernetes.io/dockerconfigjson",
            "metadata": {"name": secret, "namespace": namespace, "labels": {**labels, LABEL_MANAGED_BY: MANAGED_BY}},
            "data": data,
        }
        try:
            self._call(f"create secret {namespace}/{secret}", self._core.create_namespaced_secret, namespace, body)
        except _Conflict:
            self._call(
                f"update secret {namespace}/{secret}",
                self._core.patch_namespaced_secret,
                secret,
                namespace,
                {"data": data},
            )

    def _hand_pull_secret(self, namespace: str, name: str, uid: str) -> None:
        """Owned by its Job, so the cluster's garbage collector removes it with the Job."""
        owner = {"apiVersion": "batch/v1", "kind": "Job", "name": name, "uid": uid}
        owner |= {"controller": False, "blockOwnerDeletion": False}
        self._call(
            f"hand secret {namespace}/{pull_secret_name(name)} to its job",
            self._core.patch_namespaced_secret,
            pull_secret_name(name),
            namespace,
            {"metadata": {"ownerReferences": [owner]}},
        )

    def _delete_pull_secret(self, namespace: str, name: str) -> None:
        with contextlib.suppress(_NotFound):
            self._call(
                f"delete secret {namespace}/{pull_secret_name(name)}",
                self._core.delete_namespaced_secret,
                pull_secret_name(name),
                namespace,
                _preload_content=False,
            )

    def ensure_volume(self, namespace: str, name: str, *, storage_class: str, size_gib: int) -> None:
        body = {
            "apiVersion": "v1",
            "kind": "PersistentVolumeClaim",
            "metadata": {"name": name, "namespace": namespace, "labels": {LABEL_MANAGED_BY: MANAGED_BY}},
            "spec": {
                "accessModes": ["ReadWriteOnce"],
                "storageClassName": storage_class,
                "resources": {"requests": {"storage": f"{size_gib}Gi"}},
            },
        }
        with contextlib.suppress(_Conflict):  # made by an earlier job: it is the renter's, keep it
            self._call(
                f"create volume claim {namespace}/{name}",
                self._core.create_namespaced_persistent_volume_claim,
                namespace,
                body,
                _preload_content=False,
            )

    def delete_volume(self, namespace: str, name: str) -> None:
        with contextlib.suppress(_NotFound):
            self._call(
                f"delete volume claim {namespace}/{name}",
                self._core.delete_namespaced_persistent_volume_claim,
                name,
                namespace,
                _preload_content=False,
            )

    def logs_full(self, namespace: str, name: str, *, limit_bytes: int) -> bytes:
        pod = self._newest_pod(namespace, name, None)
        if pod is None:
            return b""
        try:
            response = self._call(
                f"read the log of pod {namespace}/{pod.metadata.name}",
                self._core.read_namespaced_pod_log,
                pod.metadata.name,
                namespace,
                container=CONTAINER_NAME,
                limit_bytes=limit_bytes,
                _preload_content=False,
            )
        except _NotFound:
            return b""
        except BackendError as exc:
            if isinstance(exc.__cause__, ApiException) and exc.__cause__.status == 400:  # not started yet
                return b""
            raise
        return response.data[:limit_bytes]

    def logs_stream(self, namespace: str, name: str, *, follow: bool = True) -> Iterator[bytes]:
        """The pod log with ``follow=true``, unparsed (``_preload_content=False``), chunk by chunk as the
        API server sends them; it ends with the container, or after ``LOG_FOLLOW_IDLE_SECONDS`` of
        silence (the read timeout). Not retried: a caller that lost the stream asks again."""
        pod = self._newest_pod(namespace, name, None)
        if pod is None:
            return
        try:
            response = self._core.read_namespaced_pod_log(
                pod.metadata.name,
                namespace,
                container=CONTAINER_NAME,
                follow=follow,
                _preload_content=False,
                _request_timeout=(self._timeout[0], LOG_FOLLOW_IDLE_SECONDS),
            )
        except ApiException as exc:
            if exc.status in (400, 404):  # not started yet, or gone
                return
            raise BackendError(f"Could not follow the log of {namespace}/{name}: HTTP {exc.status}") from exc
        except urllib3.exceptions.HTTPError as exc:
            raise BackendError(f"Could not follow the log of {namespace}/{name}: {exc}") from exc
        try:
            yield from response.stream(4096, decode_content=True)
        except (urllib3.exceptions.ReadTimeoutError, urllib3.exceptions.ProtocolError):
            return  # quiet for too long, or the server closed: the stream just ends
        finally:
            response.release_conn()

    # -- the platform's proxy: where and how to reach the API server (proxy helper) --

    @staticmethod
    def proxy_target(
        kubeconfig: str | dict,
        *,
        context: str | None = None,
        private_network_allowed: bool = False,
        allowed_private_hosts: Collection[str] = (),
    ) -> ProxyTarget:
        """How the platform's proxy (``scheduler.proxy``) reaches this cluster's API server: the
        same kubeconfig checks and SSRF pin as a backend (the base URL points at the checked
        address), the credentials as headers, and a TLS context with the cluster's CA and client
        certificate (``server_hostname`` is the name TLS checks when the URL holds the pinned address)."""
        import ssl

        config = _parse_kubeconfig(kubeconfig, context)
        configuration = client.Configuration()
        try:
            load_kube_config_from_dict(
                config, context=context, client_configuration=configuration, persist_config=False
            )
        except (ConfigException, KeyError, TypeError, ValueError, AttributeError) as exc:
            raise KubeconfigInvalid(f"The kubeconfig cannot be loaded: {exc}") from exc
        _pin(configuration, allowed_private_hosts, private_network_allowed)
        headers = {}
        authorization = configuration.get_api_key_with_prefix("authorization")
        if authorization:
            headers["Authorization"] = authorization
        tls: ssl.SSLContext | None = None
        if configuration.host.startswith("https://"):
            tls = ssl.create_default_context(cafile=configuration.ssl_ca_cert or None)
            if not configuration.verify_ssl:
                tls.check_hostname = False
                tls.verify_mode = ssl.CERT_NONE
            if configuration.cert_file:
                tls.load_cert_chain(configuration.cert_file, configuration.key_file or None)
        return ProxyTarget(
            base_url=configuration.host.rstrip("/"),
            headers=headers,
            ssl=tls,
            server_hostname=configuration.tls_server_name or None,
        )

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
        try:
            cpu_milli = _whole(parse_quantity(allocatable.get("cpu", "0")) * 1000)
        except ValueError:
            cpu_milli = 0
        try:
            memory_mib = _whole(parse_quantity(allocatable.get("memory", "0")) / 2**20)
        except ValueError:
            memory_mib = 0
        return NodeInfo(
            name=node.metadata.name,
            hostname=labels.get(HOSTNAME_LABEL, node.metadata.name),
            gpu_allocatable=gpus,
            gpu_product=labels.get(GPU_PRODUCT_LABEL, ""),
            ready=ready,
            cpu_allocatable_milli=cpu_milli,
            memory_allocatable_mib=memory_mib,
            external_address=_node_address(node),
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
            newest = _newest_of(pods, label, job_name, job_uid)
            if newest is not None:
                return newest
        return None

    def _node_not_ready_since(
        self, node_name: str, nodes: dict[str, Any] | None = None
    ) -> tuple[bool, datetime | None]:
        """(is the node NotReady or gone, since when); from ``nodes`` (name -> Node, a snapshot's) when given."""
        if nodes is not None:
            node = nodes.get(node_name)
            if node is None:
                return True, None
        else:
            try:
                node = self._call(f"read node {node_name}", self._core.read_node, node_name)
            except _NotFound:
                return True, None
        for condition in (node.status.conditions if node.status else None) or ():
            if condition.type == "Ready":
                return condition.status != "True", _utc(condition.last_transition_time)
        return True, None

    def _state(self, job: Any, pod: Any | None, nodes: dict[str, Any] | None = None) -> JobState:
        """The Job's state from it and its newest pod; its node read, or taken from ``nodes`` (a snapshot's)."""
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
            not_ready, since = self._node_not_ready_since(node, nodes) if node else (False, None)
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


def _newest_of(pods: Iterable[Any], label: str, job_name: str, job_uid: str | None) -> Any | None:
    """Of ``pods``, the newest labelled ``label=job_name`` and owned by the Job ``job_uid`` (any when None)."""
    pods = [
        pod
        for pod in pods
        if (pod.metadata.labels or {}).get(label) == job_name
        and (
            job_uid is None
            or all(ref.uid == job_uid for ref in pod.metadata.owner_references or () if ref.kind == "Job")
        )
    ]
    if not pods:
        return None
    epoch = datetime.min.replace(tzinfo=UTC)
    return max(pods, key=lambda pod: (_utc(pod.metadata.creation_timestamp) or epoch, pod.metadata.name))


def _watch_event(line: bytes) -> dict | None:
    """One line of a watch stream as an event, None when blank or not JSON."""
    line = line.strip()
    if not line:
        return None
    try:
        event = json.loads(line)
    except ValueError:
        return None
    return event if isinstance(event, dict) else None


def pod_spec(
    spec: JobSpec, *, user_namespaces: bool = False, run_as_user: int = 1000, restart_policy: str = "Never"
) -> dict:
    """The pod spec every workload of ours runs (a Job's pod, an inference endpoint's replicas): pinned to
    its node, its share of the server requested and limited, /dev/shm, root confined (a user namespace,
    else ``run_as_user``), env from its Secret (``<spec.name>-env``)."""
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
    # Sessions (sessions helper): the exposed ports, and the renter's keys for the image's sshd.
    ports = [{"name": f"http-{p}", "containerPort": p, "protocol": "TCP"} for p in spec.http_ports]
    if spec.ssh_keys:
        ports.append({"name": "ssh", "containerPort": SSH_PORT, "protocol": "TCP"})
        secret = ssh_secret_name(spec.name)
        key_ref = {"secretKeyRef": {"name": secret, "key": SSH_KEYS_FILE}}
        container["env"] = [{"name": "PUBLIC_KEY", "valueFrom": key_ref}]
        items = [{"key": SSH_KEYS_FILE, "path": SSH_KEYS_FILE, "mode": 0o444}]
        volumes.append({"name": SSH_KEYS_VOLUME, "secret": {"secretName": secret, "items": items}})
        mount = {"name": SSH_KEYS_VOLUME, "mountPath": SSH_KEYS_DIR, "readOnly": True}
        container.setdefault("volumeMounts", []).append(mount)
    if ports:
        container["ports"] = ports
    if any(p["containerPort"] < 1024 for p in ports):
        # Every capability is dropped, so binding port 22 (or any below 1024) needs this safe sysctl
        # (allowed by the baseline and restricted Pod Security levels).
        pod_security["sysctls"] = [{"name": "net.ipv4.ip_unprivileged_port_start", "value": "0"}]
    if spec.volume_claim:  # storage helper: the renter's PVC, kept across jobs
        volumes.append({"name": WORKSPACE_VOLUME, "persistentVolumeClaim": {"claimName": spec.volume_claim}})
        container.setdefault("volumeMounts", []).append({"name": WORKSPACE_VOLUME, "mountPath": WORKSPACE_PATH})
    pod_extra: dict[str, Any] = {"volumes": volumes} if volumes else {}
    if spec.pull_config_json:  # storage helper: the private registry's credentials
        pod_extra["imagePullSecrets"] = [{"name": pull_secret_name(spec.name)}]
    return {
        "restartPolicy": restart_policy,
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
    }


def job_manifest(spec: JobSpec, *, user_namespaces: bool = False, run_as_user: int = 1000) -> dict:
    """The batch/v1 Job we create for ``spec``: one pod of ``pod_spec``, never restarted, ended at the
    booking's end (``activeDeadlineSeconds``)."""
    labels = {**spec.labels, LABEL_MANAGED_BY: MANAGED_BY}
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
                "spec": pod_spec(spec, user_namespaces=user_namespaces, run_as_user=run_as_user),
            },
        },
    }


# --- Inference endpoints (endpoints helper) ------------------------------------------------


def deployment_manifest(spec: EndpointSpec, *, user_namespaces: bool = False, run_as_user: int = 1000) -> dict:
    """The apps/v1 Deployment of an inference endpoint: ``spec.replicas`` pods of ``pod_spec`` (restarted
    on exit), each ready when ``readiness_path`` answers on ``port``.

    The rolling update replaces one pod at a time and adds none (``maxSurge: 0``, ``maxUnavailable: 1``):
    the replicas take the booking's GPUs, often every one of them, so a surge pod would ask for a GPU
    that no node has free and stay Pending, and the roll would never progress. The price is one
    replica fewer while each is replaced (with one replica, a short outage)."""
    labels = {**spec.pod.labels, LABEL_MANAGED_BY: MANAGED_BY}
    pod = pod_spec(spec.pod, user_namespaces=user_namespaces, run_as_user=run_as_user, restart_policy="Always")
    container = pod["containers"][0]
    container["ports"] = [{"name": "http", "containerPort": spec.port, "protocol": "TCP"}]
    container["readinessProbe"] = {
        "httpGet": {"path": spec.readiness_path, "port": spec.port},
        "periodSeconds": 5,
        "timeoutSeconds": 2,
        "failureThreshold": 3,
    }
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": spec.name, "namespace": spec.namespace, "labels": labels},
        "spec": {
            "replicas": spec.replicas,
            "selector": {"matchLabels": {LABEL_ENDPOINT: labels[LABEL_ENDPOINT]}},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 0, "maxUnavailable": 1}},
            "revisionHistoryLimit": 2,
            "template": {"metadata": {"labels": labels}, "spec": pod},
        },
    }


def service_manifest(spec: EndpointSpec) -> dict:
    """The ClusterIP Service in front of the endpoint's ready pods (the platform's proxy reaches it)."""
    labels = {**spec.pod.labels, LABEL_MANAGED_BY: MANAGED_BY}
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": spec.name, "namespace": spec.namespace, "labels": labels},
        "spec": {
            "type": "ClusterIP",
            "selector": {LABEL_ENDPOINT: labels[LABEL_ENDPOINT]},
            "ports": [{"name": "http", "port": spec.port, "targetPort": spec.port, "protocol": "TCP"}],
        },
    }


def _deployment_state(deployment: Any) -> DeploymentState:
    """A Deployment as its status reports it; ``message`` says why it does not progress."""
    meta, dspec, status = deployment.metadata, deployment.spec, deployment.status
    containers = (dspec.template.spec.containers if dspec and dspec.template and dspec.template.spec else None) or []
    main = next((c for c in containers if c.name == CONTAINER_NAME), containers[0] if containers else None)
    message = ""
    for condition in (status.conditions if status else None) or ():
        stuck = condition.type == "Progressing" and condition.status == "False"
        if stuck or (condition.type == "ReplicaFailure" and condition.status == "True"):
            message = f"{condition.reason or condition.type}: {condition.message or ''}".strip(": ")[:500]
    return DeploymentState(
        namespace=meta.namespace or "",
        name=meta.name or "",
        uid=meta.uid or "",
        labels=dict(meta.labels or {}),
        image=(main.image if main else "") or "",
        replicas=(dspec.replicas if dspec and dspec.replicas is not None else 1),
        ready_replicas=(status.ready_replicas if status else 0) or 0,
        updated_replicas=(status.updated_replicas if status else 0) or 0,
        available_replicas=(status.available_replicas if status else 0) or 0,
        generation=meta.generation or 0,
        observed_generation=(status.observed_generation if status else 0) or 0,
        message=message,
    )
