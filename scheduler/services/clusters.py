"""Clusters: connect (kubeconfig validated, sealed), simulated clusters, node sync.

A kubeconfig is checked before it is kept: it must parse, name an API server
on a public address (unless the deployment allows that host, or an operator
allowed the cluster in the admin), reach it, and be allowed to create Jobs. It is then sealed (``crypto``) and
never shown again. Node sync matches nodes to the owner's servers by
hostname and flags what differs from the owner's declaration, for the
operator. An unreachable cluster is marked unhealthy; nothing else changes.
"""

import logging
import re
from datetime import datetime

import yaml
from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.utils import timezone

from accounts.models import OwnerCompany
from marketplace.models import Gpu, Server
from marketplace.services.allocation import note_allocation_change
from scheduler import crypto
from scheduler.backends import backend_for
from scheduler.backends.base import BackendError, BackendForbidden, NodeInfo
from scheduler.backends.simulated import SimulatedBackend
from scheduler.models import Cluster, Node

logger = logging.getLogger(__name__)

MAX_KUBECONFIG_BYTES = 64 * 1024
CLUSTER_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")


def _validate_name(owner: OwnerCompany, name: str) -> None:
    if not CLUSTER_NAME.match(name or ""):
        raise ValidationError({"name": "Use lower-case letters, digits and hyphens (at most 63), like prod-eu-1."})
    if Cluster.objects.filter(owner=owner, name=name).exists():
        raise ValidationError({"name": f"You already have a cluster named {name!r}."})


def kubeconfig_parse(text: str) -> dict:
    """The kubeconfig as a mapping, or a ValidationError saying what is wrong with it."""
    if not text or not text.strip():
        raise ValidationError({"kubeconfig": "Paste or upload a kubeconfig file."})
    if len(text.encode()) > MAX_KUBECONFIG_BYTES:
        raise ValidationError({"kubeconfig": "This kubeconfig is larger than 64 KiB; upload only the cluster's."})
    try:
        config = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ValidationError({"kubeconfig": f"This is not valid YAML: {str(exc).splitlines()[0]}"}) from exc
    if not isinstance(config, dict) or not config.get("clusters") or not config.get("users"):
        raise ValidationError({"kubeconfig": "A kubeconfig needs `clusters`, `users` and `contexts` sections."})
    contexts = {c.get("name") for c in config.get("contexts") or [] if isinstance(c, dict)}
    if config.get("current-context") not in contexts:
        raise ValidationError({"kubeconfig": "The kubeconfig's `current-context` names no context in it."})
    for user in config["users"]:
        auth = (user or {}).get("user") or {}
        if "exec" in auth or "auth-provider" in auth:
            raise ValidationError(
                {"kubeconfig": "Credential plugins (exec, auth-provider) cannot run here; use a service-account token."}
            )
    return config


def _api_server(config: dict) -> str:
    context = next(c for c in config["contexts"] if c.get("name") == config["current-context"])
    cluster_name = (context.get("context") or {}).get("cluster")
    for cluster in config["clusters"]:
        if cluster.get("name") == cluster_name:
            return str((cluster.get("cluster") or {}).get("server", ""))[:300]
    raise ValidationError({"kubeconfig": "The current context names a cluster that is not in the kubeconfig."})


def cluster_connect(*, owner: OwnerCompany, name: str, kubeconfig: str, now: datetime | None = None) -> Cluster:
    """Validate a kubeconfig against its cluster, then keep it sealed and sync the nodes."""
    # Lazy: the kubernetes SDK is slow to load and the embedded (simulated) mode never needs it.
    from scheduler.backends.kubernetes import KubernetesBackend, PermissionsMissing, PrivateAddressRefused

    now = now or timezone.now()
    _validate_name(owner, name)
    config = kubeconfig_parse(kubeconfig)
    api_server = _api_server(config)
    backend = None
    try:
        # No cluster row yet, so no operator flag: only the deployment's allowlist applies.
        backend = KubernetesBackend(config, allowed_private_hosts=settings.SCHEDULER_ALLOWED_PRIVATE_HOSTS)
        backend.check()  # every permission of onboarding.PERMISSIONS, each missing one named
        server_version = backend.server_version()
    except PrivateAddressRefused as exc:
        raise ValidationError({"kubeconfig": str(exc)}) from exc
    except PermissionsMissing as exc:
        what = "cannot create Jobs" if "create batch/jobs" in exc.missing else "lack permissions InfraFi needs"
        raise ValidationError({"kubeconfig": f"The cluster answered, but these credentials {what}. {exc}"}) from exc
    except BackendForbidden as exc:
        raise ValidationError(
            {"kubeconfig": f"The cluster answered, but these credentials cannot create Jobs: {exc}"}
        ) from exc
    except BackendError as exc:
        raise ValidationError({"kubeconfig": f"Could not reach the cluster at {api_server}: {exc}"}) from exc
    finally:
        if backend is not None:
            backend.close()
    try:
        cluster = Cluster.objects.create(
            owner=owner,
            name=name,
            kind=Cluster.Kind.KUBERNETES,
            kubeconfig_sealed=crypto.seal(yaml.safe_dump(config)),
            api_server=api_server,
            server_version=server_version,
            health=Cluster.Health.HEALTHY,
            checked_at=now,
        )
    except IntegrityError as exc:
        raise ValidationError({"name": f"You already have a cluster named {name!r}."}) from exc
    cluster_sync(cluster=cluster, now=now)
    return cluster


def cluster_create_simulated(*, owner: OwnerCompany, name: str, servers=None, now: datetime | None = None) -> Cluster:
    """A simulated cluster with one node per server of the owner (hostname, GPUs, model)."""
    now = now or timezone.now()
    _validate_name(owner, name)
    servers = servers if servers is not None else Server.objects.filter(owner=owner)
    with transaction.atomic():
        cluster = Cluster.objects.create(
            owner=owner, name=name, kind=Cluster.Kind.SIMULATED, health=Cluster.Health.HEALTHY, checked_at=now
        )
        backend = SimulatedBackend(cluster, clock=lambda: now)
        for server in servers:
            gpus = list(server.gpus.filter(status=Gpu.Status.AVAILABLE).select_related("model"))
            if gpus:
                backend.add_node(name=server.hostname, gpus=len(gpus), product=f"NVIDIA-{gpus[0].model.name}")
    cluster_sync(cluster=cluster, now=now)
    return cluster


def _normal(text: str) -> str:
    return re.sub(r"[^a-z0-9]", "", text.lower())


def _mismatch(info: NodeInfo, server: Server | None) -> str:
    if server is None:
        return "No server of yours has this hostname."
    gpus = list(server.gpus.filter(status=Gpu.Status.AVAILABLE).select_related("model"))
    problems = []
    if info.gpu_allocatable != len(gpus):
        problems.append(f"the node offers {info.gpu_allocatable} GPU(s), the server declares {len(gpus)} in service")
    models = {g.model.name for g in gpus}
    if info.gpu_product and models and not any(_normal(m) in _normal(info.gpu_product) for m in models):
        problems.append(f"the node reports {info.gpu_product}, the server declares {', '.join(sorted(models))}")
    return ("; ".join(problems)).capitalize()[:300]


def cluster_sync(*, cluster: Cluster, now: datetime | None = None) -> list[Node]:
    """Copy the cluster's nodes, match them to servers by hostname, flag mismatches."""
    now = now or timezone.now()
    backend = None
    try:
        backend = backend_for(cluster, clock=lambda: now)
        infos = backend.list_nodes()
        server_version = backend.server_version()  # an upgrade can bring user namespaces
    except BackendError as exc:
        cluster_mark_unhealthy(cluster=cluster, error=exc, now=now)
        return list(cluster.nodes.all())
    finally:
        if backend is not None:
            backend.close()
    servers = {s.hostname: s for s in Server.objects.filter(owner=cluster.owner_id)}
    with transaction.atomic():
        ready_before = dict(cluster.nodes.values_list("server_id", "ready"))
        seen = []
        for info in infos:
            server = servers.get(info.hostname) or servers.get(info.name)
            if server is not None and Node.objects.filter(server=server).exclude(cluster=cluster).exists():
                mismatch, server = "This server is already connected through another cluster.", None
            else:
                mismatch = _mismatch(info, server)
            node, _ = Node.objects.update_or_create(
                cluster=cluster,
                name=info.name,
                defaults={
                    "hostname": info.hostname,
                    "gpu_allocatable": info.gpu_allocatable,
                    "gpu_product": info.gpu_product[:120],
                    "ready": info.ready,
                    "cpu_allocatable_milli": info.cpu_allocatable_milli,
                    "memory_allocatable_mib": info.memory_allocatable_mib,
                    "server": server,
                    "mismatch": mismatch,
                    "external_address": info.external_address,  # SSH via NodePort (sessions)
                    "seen_at": now,
                },
            )
            seen.append(node.pk)
        cluster.nodes.exclude(pk__in=seen).delete()
        Cluster.objects.filter(pk=cluster.pk).update(
            health=Cluster.Health.HEALTHY,
            health_message="",
            checked_at=now,
            synced_at=now,
            server_version=server_version,
        )
        # The placement engine re-reads the servers whose node readiness changed (all, when the cluster recovers).
        ready_after = dict(cluster.nodes.values_list("server_id", "ready"))
        changed = {s for s in ready_before.keys() | ready_after.keys() if ready_before.get(s) != ready_after.get(s)}
        if cluster.health == Cluster.Health.UNHEALTHY:
            changed |= ready_after.keys()
        note_allocation_change(changed)
    cluster.refresh_from_db()
    return list(cluster.nodes.select_related("server"))


def cluster_mark_unhealthy(*, cluster: Cluster, error: Exception, now: datetime) -> None:
    logger.warning("cluster %s (%s) unreachable: %s", cluster.pk, cluster.name, error)
    with transaction.atomic():
        updated = (
            Cluster.objects.filter(pk=cluster.pk)
            .exclude(health=Cluster.Health.UNHEALTHY)
            .update(health=Cluster.Health.UNHEALTHY, health_message=str(error)[:500], checked_at=now)
        )
        if updated:  # newly unhealthy: the placement engine drops its servers
            note_allocation_change(cluster.nodes.values_list("server_id", flat=True))
        else:
            Cluster.objects.filter(pk=cluster.pk).update(health_message=str(error)[:500], checked_at=now)
    cluster.health = Cluster.Health.UNHEALTHY


def clusters_sync(*, now: datetime | None = None) -> dict[str, int]:
    """Periodic: sync every cluster's nodes."""
    healthy = 0
    clusters = list(Cluster.objects.all())
    for cluster in clusters:
        cluster_sync(cluster=cluster, now=now)
        healthy += cluster.health == Cluster.Health.HEALTHY
    return {"clusters": len(clusters), "healthy": healthy}


def simulated_node_set_ready(*, cluster: Cluster, node_name: str, ready: bool, now: datetime | None = None) -> None:
    """Fail (or restore) a node of a simulated cluster on purpose, then resync."""
    if not cluster.simulated:
        raise ValidationError({"cluster": "Only a simulated cluster's nodes can be failed on purpose."})
    now = now or timezone.now()
    try:
        SimulatedBackend(cluster, clock=lambda: now).set_node_ready(node_name, ready)
    except BackendError as exc:
        raise ValidationError({"node": str(exc)}) from exc
    cluster_sync(cluster=cluster, now=now)
