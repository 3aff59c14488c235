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

    # -- sessions helper: how the owner's cluster exposes SSH --
    class SshServiceType(models.TextChoices):
        NODE_PORT = "NodePort", "NodePort (a node's address and a port 30000-32767)"
        LOAD_BALANCER = "LoadBalancer", "LoadBalancer (an address from the cluster's load balancer)"

    ssh_service_type = models.CharField(
        max_length=12,
        choices=SshServiceType.choices,
        default=SshServiceType.NODE_PORT,
        help_text="The kind of Service that exposes renters' SSH sessions on this cluster.",
    )
    health = models.CharField(max_length=10, choices=Health.choices, default=Health.UNKNOWN)
    health_message = models.CharField(max_length=500, blank=True)
    checked_at = models.DateTimeField(null=True, blank=True)
    synced_at = models.DateTimeField(null=True, blank=True)
    # scale helper: where a watch of our Jobs resumes (the resourceVersion of the tick's Jobs list).
    jobs_resource_version = models.CharField(max_length=64, blank=True)
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
    # scale helper: the node's status.allocatable (0 = not reported); caps a job's CPU and memory share.
    cpu_allocatable_milli = models.PositiveIntegerField(default=0)
    memory_allocatable_mib = models.PositiveIntegerField(default=0)
    server = models.OneToOneField(Server, on_delete=models.SET_NULL, null=True, blank=True, related_name="cluster_node")
    mismatch = models.CharField(
        max_length=300, blank=True, help_text="How the node differs from the server its owner declared."
    )
    external_address = models.CharField(
        max_length=253, blank=True, help_text="ExternalIP, else InternalIP, as the node reports it (SSH via NodePort)."
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


class SshKey(models.Model):
    """A renter's SSH public key, put into the ``authorized_keys`` of their sessions. ``public_key``
    is the key as given (type, base64, comment); ``fingerprint`` as ``ssh-keygen -lf`` prints it
    (``SHA256:`` and unpadded base64), unique per user."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="ssh_keys")
    name = models.CharField(max_length=60)
    key_type = models.CharField(max_length=40)
    public_key = models.TextField()
    fingerprint = models.CharField(max_length=60)
    bits = models.PositiveIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["user_id", "created_at", "id"]
        constraints = [
            models.UniqueConstraint(fields=["user", "fingerprint"], name="ssh_key_unique_fingerprint_per_user"),
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.fingerprint})"


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
    # Metering: the ready replicas seen at a tick count for the interval since the previous tick
    # (``metered_until``); the GPU-seconds so counted are reported to the marketplace as usage every
    # SCHEDULER_METER_SECONDS (``reported_until``, ``unreported_gpu_seconds``) and at the end.
    running_image = models.CharField(  # noqa: DJ012 - this helper's section is below Meta
        max_length=400, blank=True, help_text="The image the replicas run, once rolled."
    )
    node_name = models.CharField(max_length=253, blank=True)
    launched_at = models.DateTimeField(null=True, blank=True)
    metered_until = models.DateTimeField(null=True, blank=True)
    reported_until = models.DateTimeField(null=True, blank=True)
    ready_replica_seconds = models.BigIntegerField(default=0)
    unreported_gpu_seconds = models.BigIntegerField(default=0)
    gpu_seconds = models.BigIntegerField(default=0, help_text="Reported to the marketplace as usage.")
    stop_requested = models.BooleanField(default=False)
    finished_at = models.DateTimeField(null=True, blank=True)


class SimDeployment(models.Model):
    """A Deployment of a simulated cluster (an inference endpoint's replicas): its replicas are ready
    ``SCHEDULER_SIM_START_SECONDS`` after it was created or last rolled (one fewer while rolling)."""

    cluster = models.ForeignKey(Cluster, on_delete=models.CASCADE, related_name="sim_deployments")
    namespace = models.CharField(max_length=63)
    name = models.CharField(max_length=63)
    uid = models.UUIDField(default=uuid.uuid4, unique=True)
    node = models.CharField(max_length=253)
    spec = models.JSONField()
    created_at = models.DateTimeField()
    rolled_at = models.DateTimeField()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["cluster", "namespace", "name"], name="simdeployment_unique_name")
        ]


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
# A renter's registry credentials (image-pull secrets) and persistent volumes; the fields they add
# to ``Cluster`` and ``Job`` are attached here (``add_to_class``), so this section holds all of
# storage's schema (migration 0008_storage).


class RegistryCredential(models.Model):
    """A renter's login to a private container registry (ghcr.io, nvcr.io, host:port). The password
    or token is sealed like a kubeconfig and never shown again; at launch it becomes the Job's
    ``kubernetes.io/dockerconfigjson`` Secret ``<job>-pull``."""

    renter = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="registry_credentials")
    name = models.CharField(max_length=63, help_text="Your label, e.g. ghcr-acme.")
    registry = models.CharField(max_length=253, help_text="The registry's host[:port], e.g. ghcr.io.")
    username = models.CharField(max_length=200)
    password_sealed = models.TextField(help_text="Fernet-sealed password or token; never shown again.")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["renter_id", "name"]
        constraints = [models.UniqueConstraint(fields=["renter", "name"], name="registry_credential_unique_name")]

    def __str__(self) -> str:
        return f"{self.name} ({self.registry})"


class Volume(models.Model):
    """A renter's persistent volume on one server: a PVC ``infrafi-vol-<id>`` on the owner's storage
    class in the renter's namespace, mounted at ``/workspace`` by the jobs that ask for it. It is
    created at the first such job's launch and outlives every job (it is not owned by one)."""

    class Status(models.TextChoices):
        REQUESTED = "requested", "Created at the first job's launch"
        CREATED = "created", "On the cluster"
        DELETED = "deleted", "Deleted"

    renter = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="volumes")
    server = models.ForeignKey(Server, on_delete=models.PROTECT, related_name="+")
    cluster = models.ForeignKey(Cluster, on_delete=models.PROTECT, related_name="volumes")
    size_gib = models.PositiveIntegerField()
    storage_class = models.CharField(max_length=253, help_text="The owner's storage class when it was asked for.")
    pvc_name = models.CharField(max_length=63, blank=True)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.REQUESTED)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.CheckConstraint(condition=models.Q(size_gib__gte=1), name="volume_size_positive"),
            models.UniqueConstraint(
                fields=["renter", "server"],
                condition=~models.Q(status="deleted"),
                name="volume_one_per_renter_and_server",
            ),
        ]

    def __str__(self) -> str:
        return self.pvc_name or f"volume {self.pk}"


Cluster.add_to_class(
    "storage_class",
    models.CharField(
        max_length=253, blank=True, help_text="The StorageClass renters' volumes use; blank = no volumes offered."
    ),
)
Cluster.add_to_class(
    "max_volume_gib", models.PositiveIntegerField(default=100, help_text="The largest volume a renter may ask for.")
)
Job.add_to_class(
    "allow_other_regions",
    models.BooleanField(default=False, help_text="Failover may move the job out of the booked region."),
)
Job.add_to_class(
    "registry_credential",
    models.ForeignKey(RegistryCredential, on_delete=models.SET_NULL, null=True, blank=True, related_name="jobs"),
)
Job.add_to_class(
    "volume", models.ForeignKey(Volume, on_delete=models.SET_NULL, null=True, blank=True, related_name="jobs")
)
# An inference endpoint's credential and volume (endpoint storage helper; migration 0009_endpoint_storage).
Endpoint.add_to_class(
    "registry_credential",
    models.ForeignKey(RegistryCredential, on_delete=models.SET_NULL, null=True, blank=True, related_name="endpoints"),
)
Endpoint.add_to_class(
    "volume", models.ForeignKey(Volume, on_delete=models.SET_NULL, null=True, blank=True, related_name="endpoints")
)
