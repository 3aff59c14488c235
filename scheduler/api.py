"""Scheduler API: clusters for owners; jobs and quick book for renters.

The same services as the pages. Bad input → 400 with field messages; a
booking or job of someone else → 404; wrong role → 403. Kubeconfigs and
environment values are write-only: no response ever contains them.
"""

from django.http import Http404
from django.shortcuts import get_object_or_404
from django.utils import timezone
from drf_spectacular.utils import extend_schema, extend_schema_field, inline_serializer
from rest_framework import serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.permissions import IsOwner, IsRenter
from accounts.selectors import owner_company_for_user
from core.api import BIGINT_MAX, CONFLICT_RESPONSE
from core.idempotency import IDEMPOTENCY_KEY_PARAMETER, Idempotent
from marketplace.api.bookings import BookingSerializer
from marketplace.models import GpuModel, Region
from marketplace.selectors import bookings as booking_selectors
from marketplace.services.inventory import MAX_GPUS_PER_SERVER
from scheduler import selectors
from scheduler.models import Cluster, Job, Node, RegistryCredential, SshKey, Volume
from scheduler.services import clusters, jobs, quickbook, sessions, storage


class NodeSerializer(serializers.ModelSerializer):
    server = serializers.CharField(source="server.hostname", default=None)

    class Meta:
        model = Node
        fields = ["name", "hostname", "gpu_allocatable", "gpu_product", "ready", "server", "mismatch", "seen_at"]


class ClusterSerializer(serializers.ModelSerializer):
    class Meta:
        model = Cluster
        fields = ["id", "name", "kind", "api_server", "health", "health_message", "checked_at", "synced_at"]


class ClusterConnectSerializer(serializers.Serializer):
    name = serializers.CharField(max_length=63)
    kind = serializers.ChoiceField(choices=Cluster.Kind.choices, default=Cluster.Kind.KUBERNETES)
    kubeconfig = serializers.CharField(required=False, allow_blank=True, write_only=True, trim_whitespace=False)


@extend_schema(tags=["clusters"])
class ClusterViewSet(viewsets.GenericViewSet):
    """The owner's clusters. Connecting checks the kubeconfig against the cluster first."""

    permission_classes = [IsOwner]
    token_scope = "owner"
    serializer_class = ClusterSerializer
    pagination_class = None  # an owner has a handful of clusters: the list is a bare list
    queryset = Cluster.objects.none()  # for the schema
    lookup_value_regex = r"\d+"  # anything else is a 404, not a lookup that fails

    def _owner(self):
        owner = owner_company_for_user(self.request.user)
        if owner is None:
            raise Http404("You are not a member of an owner company.")
        return owner

    def get_queryset(self):
        return Cluster.objects.filter(owner=self._owner())

    def list(self, request):
        return Response(ClusterSerializer(self.get_queryset(), many=True).data)

    def retrieve(self, request, pk=None):
        return Response(ClusterSerializer(self.get_object()).data)

    @extend_schema(request=ClusterConnectSerializer, responses={201: ClusterSerializer})
    def create(self, request):
        data = ClusterConnectSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        d = data.validated_data
        if d["kind"] == Cluster.Kind.SIMULATED:
            cluster = clusters.cluster_create_simulated(owner=self._owner(), name=d["name"])
        else:
            cluster = clusters.cluster_connect(owner=self._owner(), name=d["name"], kubeconfig=d.get("kubeconfig", ""))
        return Response(ClusterSerializer(cluster).data, status=status.HTTP_201_CREATED)

    @extend_schema(request=None, responses=NodeSerializer(many=True))
    @action(detail=True, methods=["post"])
    def sync(self, request, pk=None):
        cluster = self.get_object()
        nodes = clusters.cluster_sync(cluster=cluster)
        return Response(NodeSerializer(nodes, many=True).data)

    @extend_schema(responses=NodeSerializer(many=True))
    @action(detail=True, methods=["get"])
    def nodes(self, request, pk=None):
        return Response(NodeSerializer(self.get_object().nodes.select_related("server"), many=True).data)


class SessionHttpSerializer(serializers.Serializer):
    port = serializers.IntegerField(read_only=True)
    label = serializers.CharField(read_only=True)
    url = serializers.CharField(read_only=True, help_text="The platform's proxy path, /proxy/<job>/<port>/.")


class SessionSshSerializer(serializers.Serializer):
    host = serializers.CharField(help_text='"" until the cluster assigned an address.')
    port = serializers.IntegerField(allow_null=True, read_only=True)
    user = serializers.CharField(help_text='"" when it is the image\'s user (see note).')
    command = serializers.CharField(help_text='The exact ssh command; "" while waiting for the address.')
    note = serializers.CharField()


class SessionSerializer(serializers.Serializer):
    http = SessionHttpSerializer(many=True)
    ssh = SessionSshSerializer(allow_null=True)


class JobSerializer(serializers.ModelSerializer):
    id = serializers.UUIDField(source="public_id", read_only=True)
    booking = serializers.UUIDField(source="booking.public_id", read_only=True)
    env = serializers.ListField(source="env_names", child=serializers.CharField(), read_only=True)
    session = serializers.SerializerMethodField()

    @extend_schema_field(SessionSerializer)
    def get_session(self, job) -> dict:
        return SessionSerializer(sessions.session_info(job)).data

    class Meta:
        model = Job
        fields = [
            "id",
            "booking",
            "name",
            "image",
            "command",
            "args",
            "env",
            "gpu_count",
            "status",
            "message",
            "node_name",
            "attempt",
            "running_since",
            "finished_at",
            "gpu_seconds",
            "created_at",
            "session",
            "registry_credential",  # storage helper
            "volume",
            "allow_other_regions",
        ]


class PortRequestSerializer(serializers.Serializer):
    # The range and duplicates are checked by the service, whose messages name the port; the bound
    # here only keeps a 10**19 from the database.
    port = serializers.IntegerField(min_value=-(2**31), max_value=2**31 - 1)
    label = serializers.CharField(max_length=40, required=False, allow_blank=True, default="")


class JobRequestSerializer(serializers.Serializer):
    """A job; with ``template`` (pytorch, jupyter) its fields are the template's, those given override them."""

    template = serializers.CharField(max_length=40, required=False)
    name = serializers.CharField(max_length=63, required=False)
    image = serializers.CharField(max_length=400, required=False)
    command = serializers.ListField(child=serializers.CharField(allow_blank=True), required=False)
    args = serializers.ListField(child=serializers.CharField(allow_blank=True), required=False)
    env = serializers.DictField(child=serializers.CharField(allow_blank=True), required=False)
    gpu_count = serializers.IntegerField(max_value=MAX_GPUS_PER_SERVER, min_value=1)
    ports = PortRequestSerializer(many=True, required=False, help_text="HTTP ports: at most 8, each 1-65535.")
    ssh = serializers.BooleanField(required=False, help_text="SSH with your keys (at least one key needed).")
    # storage helper
    registry_credential = serializers.IntegerField(
        required=False,
        allow_null=True,
        min_value=1,
        max_value=BIGINT_MAX,
        help_text="Your registry credential's id; none: yours for the image's registry.",
    )
    volume = serializers.IntegerField(
        required=False,
        allow_null=True,
        min_value=1,
        max_value=BIGINT_MAX,
        help_text="Your volume on the booked server.",
    )
    allow_other_regions = serializers.BooleanField(
        required=False, help_text="Failover may move the job out of the booked region (default: refund instead)."
    )

    def validate(self, data):
        base = {"command": [], "args": [], "env": {}, "ports": [], "ssh": False}
        if data.get("template"):
            base = sessions.template_fields(data.pop("template"))
        merged = {**base, **data}
        missing = {f: "This field is required." for f in ("name", "image") if not merged.get(f)}
        if missing:
            raise serializers.ValidationError(missing)
        return merged


@extend_schema(tags=["jobs"])
class BookingJobsApi(APIView):
    """Submit a job to one of your paid bookings."""

    permission_classes = [IsRenter]
    token_scope = "book"

    @extend_schema(request=JobRequestSerializer, responses={201: JobSerializer})
    def post(self, request, public_id):
        booking = booking_selectors.booking_get_for_renter(renter=request.user, public_id=public_id)
        if booking is None:
            raise Http404("No such booking.")
        data = JobRequestSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        job = jobs.job_submit(booking=booking, renter=request.user, **data.validated_data)
        return Response(JobSerializer(job).data, status=status.HTTP_201_CREATED)


@extend_schema(tags=["jobs"])
class JobViewSet(viewsets.GenericViewSet):
    """The requesting renter's jobs; ``id`` is the job's public UUID."""

    permission_classes = [IsRenter]
    token_scope = "book"
    serializer_class = JobSerializer
    lookup_field = "public_id"
    lookup_value_regex = r"[0-9a-fA-F]{8}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{12}"
    queryset = Job.objects.none()  # for the schema

    def get_queryset(self):
        return selectors.renter_jobs(self.request.user)

    def get_object(self):
        return get_object_or_404(self.get_queryset(), public_id=self.kwargs["public_id"])

    def list(self, request):
        page = self.paginate_queryset(self.get_queryset())
        return self.get_paginated_response(JobSerializer(page, many=True).data)

    def retrieve(self, request, public_id=None):
        return Response(JobSerializer(self.get_object()).data)

    @extend_schema(request=None, responses=JobSerializer)
    @action(detail=True, methods=["post"])
    def cancel(self, request, public_id=None):
        return Response(JobSerializer(jobs.job_cancel(job=self.get_object(), renter=request.user)).data)

    @extend_schema(
        responses=inline_serializer(
            "JobLogs", {"logs": serializers.CharField(help_text='The current attempt\'s log tail; "" when none.')}
        )
    )
    @action(detail=True, methods=["get"])
    def logs(self, request, public_id=None):
        return Response({"logs": jobs.job_logs(job=self.get_object(), now=timezone.now())})


class QuickBookSerializer(serializers.Serializer):
    gpu_model = serializers.SlugRelatedField(slug_field="name", queryset=GpuModel.objects.all())
    gpu_count = serializers.IntegerField(min_value=1, max_value=64)
    hours = serializers.IntegerField(min_value=1, max_value=720)
    price_cap = serializers.DecimalField(max_digits=10, decimal_places=2, min_value=0, required=False)
    region = serializers.SlugRelatedField(slug_field="code", queryset=Region.objects.all(), required=False)
    cpu_milli = serializers.IntegerField(
        min_value=0, max_value=1024 * 1000, default=0, help_text="Minimum CPU for the whole request (millicores)."
    )
    memory_mib = serializers.IntegerField(
        min_value=0, max_value=16 * 1024 * 1024, default=0, help_text="Minimum memory for the whole request (MiB)."
    )


class QuickBookRequestSerializer(QuickBookSerializer):
    listing = serializers.IntegerField(
        min_value=1,
        max_value=BIGINT_MAX,
        required=False,
        help_text="Book this option of quick-book/options/ rather than the engine's best; needs quoted_total.",
    )
    quoted_total = serializers.DecimalField(
        max_digits=14,
        decimal_places=2,
        min_value=0,
        required=False,
        help_text="The option's total as shown; a different price now is refused (400), nothing booked.",
    )
    start = serializers.DateTimeField(required=False, help_text="The option's start; one past moves to now.")

    def validate(self, attrs):
        if "listing" in attrs and "quoted_total" not in attrs:
            raise serializers.ValidationError({"quoted_total": "Give the total you were shown for this option."})
        return attrs


class QuickBookOptionSerializer(serializers.Serializer):
    """An option of quick-book/options/: an answer, never input."""

    label = serializers.CharField(read_only=True, help_text='"Best placement", "Cheapest" or "Most reliable".')
    listing = serializers.IntegerField(read_only=True, source="listing_id")
    hostname = serializers.CharField(read_only=True)
    region = serializers.CharField(read_only=True, help_text="The region's code.")
    gpu_model = serializers.CharField(read_only=True)
    gpu_count = serializers.IntegerField(read_only=True)
    price_per_gpu_hour = serializers.DecimalField(read_only=True, max_digits=10, decimal_places=2)
    total = serializers.DecimalField(
        read_only=True, max_digits=14, decimal_places=2, help_text="What the booking will cost."
    )
    reliability = serializers.DecimalField(read_only=True, max_digits=5, decimal_places=4)
    start = serializers.DateTimeField(read_only=True)
    end = serializers.DateTimeField(read_only=True)


def _request_terms(d: dict) -> dict:
    return {
        "gpu_count": d["gpu_count"],
        "gpu_models": [d["gpu_model"]],
        "hours": d["hours"],
        "price_cap": d.get("price_cap"),
        "region": d.get("region"),
        "cpu_milli": d["cpu_milli"],
        "memory_mib": d["memory_mib"],
    }


@extend_schema(tags=["bookings"])
class QuickBookOptionsApi(APIView):
    """The two or three best placements for N GPUs of a model now (best, cheapest, most reliable);
    nothing is booked. Book one with quick-book/ and its ``listing`` and ``total``."""

    permission_classes = [IsRenter]
    token_scope = "book"

    @extend_schema(request=QuickBookSerializer, responses={200: QuickBookOptionSerializer(many=True)})
    def post(self, request):
        data = QuickBookSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        options = quickbook.quick_book_options(**_request_terms(data.validated_data))
        return Response(QuickBookOptionSerializer(options, many=True).data)


@extend_schema(tags=["bookings"])
class QuickBookApi(Idempotent, APIView):
    """N GPUs of a model, now: the placement engine picks the server, or ``listing`` books one of
    the options shown (at ``quoted_total``, else 400; taken meanwhile → 409). The booking awaits payment."""

    idempotent_atomic = True  # database-only: the work and its saved answer commit together
    permission_classes = [IsRenter]
    token_scope = "book"

    @extend_schema(
        request=QuickBookRequestSerializer,
        responses={201: BookingSerializer, 409: CONFLICT_RESPONSE},
        parameters=[IDEMPOTENCY_KEY_PARAMETER],
    )
    def post(self, request):
        data = QuickBookRequestSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        d = data.validated_data
        if "listing" in d:
            booking = quickbook.quick_book_select(
                renter=request.user,
                listing_id=d["listing"],
                gpu_count=d["gpu_count"],
                hours=d["hours"],
                start=d.get("start"),
                quoted_total=d["quoted_total"],
                cpu_milli=d["cpu_milli"],
                memory_mib=d["memory_mib"],
            )
        else:
            booking = quickbook.quick_book(renter=request.user, **_request_terms(d))
        return Response(BookingSerializer(booking).data, status=status.HTTP_201_CREATED)


# --- Sessions: the renter's SSH keys (sessions helper) ---------------------------------------------


class SshKeySerializer(serializers.ModelSerializer):
    class Meta:
        model = SshKey
        fields = ["id", "name", "key_type", "public_key", "fingerprint", "bits", "created_at"]
        read_only_fields = ["id", "key_type", "fingerprint", "bits", "created_at"]


class SshKeyRequestSerializer(serializers.Serializer):
    name = serializers.CharField(max_length=60, required=False, allow_blank=True, default="")
    public_key = serializers.CharField(max_length=16 * 1024, help_text="One line, as in ~/.ssh/id_ed25519.pub.")


@extend_schema(tags=["sessions"])
class SshKeyListApi(APIView):
    """Your SSH public keys, put into the authorized_keys of your sessions."""

    permission_classes = [IsRenter]
    token_scope = "book"

    @extend_schema(responses=SshKeySerializer(many=True))
    def get(self, request):
        return Response(SshKeySerializer(SshKey.objects.filter(user=request.user), many=True).data)

    @extend_schema(request=SshKeyRequestSerializer, responses={201: SshKeySerializer})
    def post(self, request):
        data = SshKeyRequestSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        key = sessions.ssh_key_add(user=request.user, **data.validated_data)
        return Response(SshKeySerializer(key).data, status=status.HTTP_201_CREATED)


@extend_schema(tags=["sessions"])
class SshKeyDetailApi(APIView):
    permission_classes = [IsRenter]
    token_scope = "book"

    @extend_schema(responses={204: None})
    def delete(self, request, pk: int):
        key = get_object_or_404(SshKey, pk=pk, user=request.user)
        sessions.ssh_key_delete(user=request.user, key=key)
        return Response(status=status.HTTP_204_NO_CONTENT)


# --- Storage: registry credentials and volumes (storage helper) ------------------------------------


class RegistryCredentialSerializer(serializers.ModelSerializer):
    class Meta:
        model = RegistryCredential
        fields = ["id", "name", "registry", "username", "created_at"]  # the password never leaves


class RegistryCredentialRequestSerializer(serializers.Serializer):
    name = serializers.CharField(max_length=63)
    registry = serializers.CharField(max_length=253, help_text="host[:port], e.g. ghcr.io")
    username = serializers.CharField(max_length=200)
    password = serializers.CharField(max_length=8192, write_only=True, trim_whitespace=False)


@extend_schema(tags=["storage"])
class RegistryCredentialListApi(APIView):
    """Your private-registry credentials; the password or token is write-only."""

    permission_classes = [IsRenter]
    token_scope = "book"

    @extend_schema(responses=RegistryCredentialSerializer(many=True))
    def get(self, request):
        mine = RegistryCredential.objects.filter(renter=request.user)
        return Response(RegistryCredentialSerializer(mine, many=True).data)

    @extend_schema(request=RegistryCredentialRequestSerializer, responses={201: RegistryCredentialSerializer})
    def post(self, request):
        data = RegistryCredentialRequestSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        credential = storage.registry_credential_create(renter=request.user, **data.validated_data)
        return Response(RegistryCredentialSerializer(credential).data, status=status.HTTP_201_CREATED)


@extend_schema(tags=["storage"])
class RegistryCredentialDetailApi(APIView):
    permission_classes = [IsRenter]
    token_scope = "book"

    @extend_schema(responses={204: None})
    def delete(self, request, pk: int):
        credential = get_object_or_404(RegistryCredential, pk=pk, renter=request.user)
        storage.registry_credential_delete(renter=request.user, credential=credential)
        return Response(status=status.HTTP_204_NO_CONTENT)


class VolumeSerializer(serializers.ModelSerializer):
    server = serializers.CharField(source="server.hostname", read_only=True)

    class Meta:
        model = Volume
        fields = ["id", "pvc_name", "server", "size_gib", "storage_class", "status", "created_at"]


class VolumeRequestSerializer(serializers.Serializer):
    booking = serializers.UUIDField(help_text="A paid booking of yours: the volume is on its server.")
    size_gib = serializers.IntegerField(min_value=1, max_value=storage.MAX_VOLUME_GIB_LIMIT)


@extend_schema(tags=["storage"])
class VolumeListApi(APIView):
    """Your persistent volumes (one per server), mounted at /workspace by the jobs that name them."""

    permission_classes = [IsRenter]
    token_scope = "book"

    @extend_schema(responses=VolumeSerializer(many=True))
    def get(self, request):
        mine = Volume.objects.filter(renter=request.user).exclude(status=Volume.Status.DELETED).select_related("server")
        return Response(VolumeSerializer(mine, many=True).data)

    @extend_schema(request=VolumeRequestSerializer, responses={201: VolumeSerializer})
    def post(self, request):
        data = VolumeRequestSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        booking = booking_selectors.booking_get_for_renter(
            renter=request.user, public_id=data.validated_data["booking"]
        )
        if booking is None:
            raise Http404("No such booking.")
        volume = storage.volume_create(renter=request.user, booking=booking, size_gib=data.validated_data["size_gib"])
        return Response(VolumeSerializer(volume).data, status=status.HTTP_201_CREATED)


@extend_schema(tags=["storage"])
class VolumeDetailApi(APIView):
    permission_classes = [IsRenter]
    token_scope = "book"

    @extend_schema(responses={204: None})
    def delete(self, request, pk: int):
        volume = get_object_or_404(Volume.objects.exclude(status=Volume.Status.DELETED), pk=pk, renter=request.user)
        storage.volume_delete(renter=request.user, volume=volume)
        return Response(status=status.HTTP_204_NO_CONTENT)
