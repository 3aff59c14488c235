"""Scheduler models: clusters and their nodes, renters' jobs, and the state of
the simulated cluster.

A ``Cluster`` is an owner's Kubernetes cluster (kubeconfig sealed at rest) or
a simulated one. Node sync copies what the cluster reports into ``Node`` and
matches each node to one of the owner's ``Server`` rows by hostname. A
``Job`` is a renter's work on a booking; each attempt (the first run, then one
per failover) is one Kubernetes Job named ``<k8s_name>``. ``SimNode`` and
``SimJob`` are the simulated cluster itself, kept in the database so that the
web process and the scheduler loop see the same cluster.
"""

import uuid

from django.conf import settings
from django.db import models

from accounts.models import OwnerCompany
from marketplace.models import Booking, Server


class Cluster(models.Model):
    class Kind(models.TextChoices):
        KUBERNETES = "kubernetes", "Kubernetes"
        SIMULATED = "simulated", "Simulated cluster"

    class Health(models.TextChoices):
        UNKNOWN = "unknown", "Not checked yet"
        HEALTHY = "healthy", "Healthy"
        UNHEALTHY = "unhealthy", "Unreachable"

    owner = models.ForeignKey(OwnerCompany, on_delete=models.CASCADE, related_name="clusters")
    name = models.CharField(max_length=63)
    kind = models.CharField(max_length=12, choices=Kind.choices)
    kubeconfig_sealed = models.TextField(blank=True, help_text="Fernet-sealed kubeconfig; never shown again.")
    api_server = models.CharField(max_length=300, blank=True, help_text="The API server's URL, for display.")
    private_network_allowed = models.BooleanField(
        default=False,
        help_text="An operator allows this cluster's API server on a private, loopback or link-local address.",
    )
    server_version = models.CharField(
        max_length=64, blank=True, help_text="The API server's version as last read (decides user namespaces)."
    )
    health = models.CharField(max_length=10, choices=Health.choices, default=Health.UNKNOWN)
    health_message = models.CharField(max_length=500, blank=True)
    checked_at = models.DateTimeField(null=True, blank=True)
    synced_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["owner", "name"], name="cluster_unique_name_per_owner")]
        ordering = ["owner_id", "name"]

    def __str__(self) -> str:
        return f"{self.name} ({self.get_kind_display()})"

    @property
    def simulated(self) -> bool:
        return self.kind == self.Kind.SIMULATED


class Node(models.Model):
    """A node as the cluster last reported it, matched to a declared server."""

    cluster = models.ForeignKey(Cluster, on_delete=models.CASCADE, related_name="nodes")
    name = models.CharField(max_length=253)
    hostname = models.CharField(max_length=253)
    gpu_allocatable = models.PositiveSmallIntegerField(default=0)
    gpu_product = models.CharField(max_length=120, blank=True)
    ready = models.BooleanField(default=False)
    server = models.OneToOneField(Server, on_delete=models.SET_NULL, null=True, blank=True, related_name="cluster_node")
    mismatch = models.CharField(
        max_length=300, blank=True, help_text="How the node differs from the server its owner declared."
    )
    seen_at = models.DateTimeField()

    class Meta:
        constraints = [models.UniqueConstraint(fields=["cluster", "name"], name="node_unique_name_per_cluster")]
        ordering = ["cluster_id", "name"]

    def __str__(self) -> str:
        return self.name


class Job(models.Model):
    class Status(models.TextChoices):
        PENDING = "pending", "Pending"
        RUNNING = "running", "Running"
        SUCCEEDED = "succeeded", "Succeeded"
        FAILED = "failed", "Failed"
        STOPPED = "stopped", "Stopped"
        INTERRUPTED = "interrupted", "Interrupted"

    LIVE = (Status.PENDING, Status.RUNNING)

    public_id = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    booking = models.ForeignKey(Booking, on_delete=models.PROTECT, related_name="jobs")
    renter = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="jobs")
    name = models.CharField(max_length=63, help_text="The renter's label for the job.")
    image = models.CharField(max_length=400)
    command = models.JSONField(default=list)
    args = models.JSONField(default=list)
    env_sealed = models.TextField(blank=True, help_text="Sealed environment; values are never logged or shown.")
    env_names = models.JSONField(default=list, help_text="The variable names, for display.")
    gpu_count = models.PositiveSmallIntegerField()
    status = models.CharField(max_length=12, choices=Status.choices, default=Status.PENDING)
    message = models.CharField(max_length=500, blank=True)
    # The current attempt on a cluster.
    cluster = models.ForeignKey(Cluster, on_delete=models.SET_NULL, null=True, blank=True, related_name="jobs")
    server = models.ForeignKey(Server, on_delete=models.PROTECT, null=True, blank=True, related_name="+")
    node_name = models.CharField(max_length=253, blank=True)
    namespace = models.CharField(max_length=63, blank=True)
    k8s_name = models.CharField(max_length=63, blank=True)
    k8s_uid = models.CharField(max_length=64, blank=True)
    attempt = models.PositiveSmallIntegerField(default=0, help_text="0 before the first submission.")
    submitted_at = models.DateTimeField(null=True, blank=True)
    running_since = models.DateTimeField(null=True, blank=True)
    metered_until = models.DateTimeField(null=True, blank=True)
    gpu_seconds = models.BigIntegerField(default=0, help_text="Metered over every attempt.")
    finished_at = models.DateTimeField(null=True, blank=True)
    stop_requested = models.BooleanField(default=False)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["status"], name="job_status")]
        constraints = [
            models.CheckConstraint(condition=models.Q(gpu_count__gte=1), name="job_gpu_count_positive"),
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.get_status_display()})"

    @property
    def live(self) -> bool:
        return self.status in self.LIVE


class JobEvent(models.Model):
    """What happened to a job, in order: the job page's history."""

    job = models.ForeignKey(Job, on_delete=models.CASCADE, related_name="events")
    at = models.DateTimeField()
    kind = models.CharField(max_length=24)
    message = models.CharField(max_length=500)

    class Meta:
        ordering = ["at", "id"]


class SimNode(models.Model):
    """A node of a simulated cluster (the cluster's own state, not our view of it)."""

    cluster = models.ForeignKey(Cluster, on_delete=models.CASCADE, related_name="sim_nodes")
    name = models.CharField(max_length=253)
    gpus = models.PositiveSmallIntegerField()
    product = models.CharField(max_length=120)
    ready = models.BooleanField(default=True)
    changed_at = models.DateTimeField()

    class Meta:
        constraints = [models.UniqueConstraint(fields=["cluster", "name"], name="simnode_unique_name")]


class SimJob(models.Model):
    """A Job of a simulated cluster."""

    cluster = models.ForeignKey(Cluster, on_delete=models.CASCADE, related_name="sim_jobs")
    namespace = models.CharField(max_length=63)
    name = models.CharField(max_length=63)
    uid = models.UUIDField(default=uuid.uuid4, unique=True)
    node = models.CharField(max_length=253)
    spec = models.JSONField()
    created_at = models.DateTimeField()
    deadline = models.DateTimeField()
    # Set when the pod's end is known (exit, deadline, eviction).
    interrupted_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["cluster", "namespace", "name"], name="simjob_unique_name")]


# --- Issue 15: exposed ports, inference endpoints and their request statistics ---------------
# (The routing core the platform's proxy reads; the workloads that create them add fields in
# their own sections below.)


class ExposedPort(models.Model):
    """A port of a job's container reached from outside: HTTP through the platform's proxy
    (``/proxy/<job>/<port>/``, via the API server's service proxy), or SSH through a Service of
    the kind the owner's cluster offers (NodePort / LoadBalancer)."""

    class Protocol(models.TextChoices):
        HTTP = "http", "HTTP (through the platform)"
        SSH = "ssh", "SSH"

    job = models.ForeignKey(Job, on_delete=models.CASCADE, related_name="ports")
    port = models.PositiveIntegerField(help_text="The container's port, 1-65535.")
    protocol = models.CharField(max_length=4, choices=Protocol.choices, default=Protocol.HTTP)
    label = models.CharField(max_length=40, blank=True, help_text="e.g. Jupyter, TensorBoard.")
    service_name = models.CharField(max_length=63, blank=True, help_text="The Service in front of it, once created.")
    # For SSH: where the owner's cluster exposes it (a node's address and NodePort, or a load balancer).
    external_host = models.CharField(max_length=253, blank=True)
    external_port = models.PositiveIntegerField(null=True, blank=True)

    class Meta:
        ordering = ["job_id", "port"]
        constraints = [
            models.UniqueConstraint(fields=["job", "port"], name="exposed_port_unique_per_job"),
            models.CheckConstraint(condition=models.Q(port__gte=1, port__lte=65535), name="exposed_port_range"),
        ]

    def __str__(self) -> str:
        return f"{self.job_id}:{self.port}/{self.protocol}"

    # -- sessions (workloads helper) --


class Endpoint(models.Model):
    """A renter's inference endpoint on a booking: a Deployment behind a Service on the booked
    server's cluster, reached at ``/endpoints/<public_id>/`` with the renter's API token."""

    class Status(models.TextChoices):
        PENDING = "pending", "Starting"
        READY = "ready", "Ready"
        DEGRADED = "degraded", "Not ready"
        STOPPED = "stopped", "Stopped"
        FAILED = "failed", "Failed"

    LIVE = (Status.PENDING, Status.READY, Status.DEGRADED)

    public_id = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    booking = models.ForeignKey(Booking, on_delete=models.PROTECT, related_name="endpoints")
    renter = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="endpoints")
    name = models.CharField(max_length=63)
    image = models.CharField(max_length=400)
    command = models.JSONField(default=list)
    args = models.JSONField(default=list)
    env_sealed = models.TextField(blank=True)
    env_names = models.JSONField(default=list)
    port = models.PositiveIntegerField(default=8000, help_text="The container port the server listens on.")
    readiness_path = models.CharField(max_length=200, default="/health")
    replicas = models.PositiveSmallIntegerField(default=1)
    gpus_per_replica = models.PositiveSmallIntegerField(default=1)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.PENDING)
    message = models.CharField(max_length=500, blank=True)
    cluster = models.ForeignKey(Cluster, on_delete=models.SET_NULL, null=True, blank=True, related_name="endpoints")
    server = models.ForeignKey(Server, on_delete=models.PROTECT, null=True, blank=True, related_name="+")
    namespace = models.CharField(max_length=63, blank=True)
    k8s_name = models.CharField(max_length=63, blank=True, help_text="The Deployment's (and Service's) name.")
    service_name = models.CharField(max_length=63, blank=True)
    ready_replicas = models.PositiveSmallIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.CheckConstraint(condition=models.Q(port__gte=1, port__lte=65535), name="endpoint_port_range"),
            models.CheckConstraint(condition=models.Q(replicas__gte=1), name="endpoint_replicas_positive"),
            models.CheckConstraint(condition=models.Q(gpus_per_replica__gte=1), name="endpoint_gpus_positive"),
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.get_status_display()})"

    @property
    def live(self) -> bool:
        return self.status in self.LIVE

    # -- endpoints (endpoints helper) --


class EndpointMinute(models.Model):
    """Requests through an endpoint's proxy in one minute: counts and a latency histogram
    (``latency_buckets[i]`` = requests whose latency fell in bucket ``i`` of
    ``scheduler.proxy.stats.BUCKETS_MS``), written by the proxy's flusher."""

    endpoint = models.ForeignKey(Endpoint, on_delete=models.CASCADE, related_name="minutes")
    minute = models.DateTimeField()
    requests = models.PositiveIntegerField(default=0)
    errors = models.PositiveIntegerField(default=0, help_text="Answers 5xx, and upstreams that did not answer.")
    latency_buckets = models.JSONField(default=list)

    class Meta:
        ordering = ["endpoint_id", "minute"]
        constraints = [
            models.UniqueConstraint(fields=["endpoint", "minute"], name="endpoint_minute_unique"),
        ]


# -- storage and registries (misc helper) --
