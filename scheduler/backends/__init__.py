"""Cluster backends: one interface (``base.ClusterBackend``), two implementations."""

from collections.abc import Callable
from datetime import datetime

from django.conf import settings
from django.utils import timezone

from scheduler import crypto
from scheduler.backends.base import ClusterBackend
from scheduler.backends.simulated import SimulatedBackend
from scheduler.models import Cluster


def backend_for(cluster: Cluster, *, clock: Callable[[], datetime] = timezone.now) -> ClusterBackend:
    """The backend that speaks to ``cluster``."""
    if cluster.simulated:
        return SimulatedBackend(cluster, clock=clock)
    # Lazy: the kubernetes SDK is slow to load and the embedded (simulated) mode never needs it.
    from scheduler.backends.kubernetes import KubernetesBackend

    return KubernetesBackend(
        crypto.unseal(cluster.kubeconfig_sealed),
        timeout=settings.SCHEDULER_KUBE_TIMEOUT_SECONDS,
        retries=settings.SCHEDULER_KUBE_RETRIES,
        private_network_allowed=cluster.private_network_allowed,
        allowed_private_hosts=settings.SCHEDULER_ALLOWED_PRIVATE_HOSTS,
        server_version=cluster.server_version,
        run_as_user=settings.SCHEDULER_RUN_AS_USER,
        user_namespaces_from=settings.SCHEDULER_USER_NAMESPACES_FROM,
    )
