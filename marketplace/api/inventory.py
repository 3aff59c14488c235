"""Inventory API: the catalogue (public), an owner's servers and GPUs.

The same services as the pages; service ``ValidationError``s become HTTP 400
with field messages (``core.api.exception_handler``). Another owner's
server is a 404, a renter or lender gets 403.
"""

from django.shortcuts import get_object_or_404
from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import mixins, serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.parsers import MultiPartParser
from rest_framework.permissions import AllowAny
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.permissions import IsOwner
from accounts.selectors import owner_company_for_user
from core.api import BIGINT_MAX, INTEGER_MAX
from marketplace.models import Gpu, GpuModel, Region, Server
from marketplace.selectors.inventory import gpu_list_for_owner, gpu_model_list, region_list, server_list_for_owner
from marketplace.services import inventory


class GpuModelSerializer(serializers.ModelSerializer):
    class Meta:
        model = GpuModel
        fields = ["id", "name", "vendor", "vram_gb", "list_price_usd", "trace_code", "undisclosed", "released"]


class RegionSerializer(serializers.ModelSerializer):
    class Meta:
        model = Region
        fields = ["id", "code", "name", "country"]


class GpuSerializer(serializers.ModelSerializer):
    model = serializers.SlugRelatedField(slug_field="name", read_only=True)
    server = serializers.PrimaryKeyRelatedField(read_only=True)

    class Meta:
        model = Gpu
        fields = ["id", "server", "slot", "serial", "serial_assigned_by_platform", "model", "status"]


class ServerOutputSerializer(serializers.ModelSerializer):
    region = serializers.SlugRelatedField(slug_field="code", read_only=True)
    gpus = GpuSerializer(many=True, read_only=True)

    class Meta:
        model = Server
        fields = [
            "id",
            "hostname",
            "serial_number",
            "region",
            "data_centre",
            "cpu_milli",
            "memory_mib",
            "gpus",
            "created_at",
        ]


class ServerUpdateSerializer(serializers.Serializer):
    hostname = serializers.CharField(max_length=253)
    serial_number = serializers.CharField(max_length=64, required=False, allow_blank=True, default="")
    region = serializers.SlugRelatedField(slug_field="code", queryset=Region.objects.all())
    data_centre = serializers.CharField(max_length=120, required=False, allow_blank=True, default="")
    cpu_milli = serializers.IntegerField(min_value=1000, max_value=INTEGER_MAX)
    memory_mib = serializers.IntegerField(min_value=1024, max_value=BIGINT_MAX)


class ServerCreateSerializer(ServerUpdateSerializer):
    gpu_model = serializers.SlugRelatedField(slug_field="name", queryset=GpuModel.objects.all())
    gpu_count = serializers.IntegerField(min_value=1, max_value=inventory.MAX_GPUS_PER_SERVER)
    gpu_serials = serializers.ListField(
        child=serializers.CharField(max_length=64), required=False, default=list, max_length=16
    )


class GpuCreateSerializer(serializers.Serializer):
    server = serializers.IntegerField(min_value=1, max_value=BIGINT_MAX)
    serial = serializers.CharField(max_length=64)
    model = serializers.SlugRelatedField(
        slug_field="name", queryset=GpuModel.objects.all(), required=False, allow_null=True, default=None
    )


class GpuStatusSerializer(serializers.Serializer):
    status = serializers.ChoiceField(choices=Gpu.Status.choices)


@extend_schema(tags=["inventory"])
class GpuModelViewSet(viewsets.ReadOnlyModelViewSet):
    """The GPU model catalogue, readable by anyone."""

    permission_classes = [AllowAny]
    serializer_class = GpuModelSerializer
    pagination_class = None

    def get_queryset(self):
        return gpu_model_list()


@extend_schema(tags=["inventory"])
class RegionViewSet(viewsets.ReadOnlyModelViewSet):
    permission_classes = [AllowAny]
    serializer_class = RegionSerializer
    pagination_class = None

    def get_queryset(self):
        return region_list()


@extend_schema(tags=["inventory"])
class ServerViewSet(viewsets.GenericViewSet):
    """The requesting owner's servers."""

    permission_classes = [IsOwner]
    token_scope = "owner"
    serializer_class = ServerOutputSerializer
    queryset = Server.objects.none()  # for the schema; requests use the owner's servers
    lookup_value_regex = r"\d+"  # ``/servers/abc/`` is a 404, not a ValueError

    def _company(self):
        return owner_company_for_user(self.request.user)

    def _get(self, pk) -> Server:
        return get_object_or_404(Server.objects.select_related("region"), pk=pk, owner=self._company())

    @extend_schema(responses=ServerOutputSerializer(many=True))
    def list(self, request):
        queryset = server_list_for_owner(owner=self._company()).prefetch_related("gpus__model")
        page = self.paginate_queryset(queryset)
        return self.get_paginated_response(ServerOutputSerializer(page, many=True).data)

    @extend_schema(request=ServerCreateSerializer, responses={201: ServerOutputSerializer})
    def create(self, request):
        data = ServerCreateSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        server = inventory.server_create(owner=self._company(), **data.validated_data)
        return Response(ServerOutputSerializer(server).data, status=status.HTTP_201_CREATED)

    @extend_schema(responses=ServerOutputSerializer)
    def retrieve(self, request, pk=None):
        return Response(ServerOutputSerializer(self._get(pk)).data)

    @extend_schema(request=ServerUpdateSerializer, responses=ServerOutputSerializer)
    def update(self, request, pk=None):
        server = self._get(pk)
        data = ServerUpdateSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        server = inventory.server_update(server=server, **data.validated_data)
        return Response(ServerOutputSerializer(server).data)

    @extend_schema(responses={204: None})
    def destroy(self, request, pk=None):
        inventory.server_delete(server=self._get(pk))
        return Response(status=status.HTTP_204_NO_CONTENT)


@extend_schema(tags=["inventory"])
class GpuViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    """The requesting owner's GPUs: list, add to a server, set status, remove."""

    permission_classes = [IsOwner]
    token_scope = "owner"
    serializer_class = GpuSerializer
    queryset = Gpu.objects.none()  # for the schema; requests use the owner's GPUs
    lookup_value_regex = r"\d+"

    def get_queryset(self):
        return gpu_list_for_owner(owner=owner_company_for_user(self.request.user))

    @extend_schema(request=GpuCreateSerializer, responses={201: GpuSerializer})
    def create(self, request):
        data = GpuCreateSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        server = get_object_or_404(Server, pk=data.validated_data["server"], owner=owner_company_for_user(request.user))
        gpu = inventory.gpu_add(server=server, serial=data.validated_data["serial"], model=data.validated_data["model"])
        return Response(GpuSerializer(gpu).data, status=status.HTTP_201_CREATED)

    @extend_schema(request=GpuStatusSerializer, responses=GpuSerializer)
    @action(detail=True, methods=["post"], url_path="status")
    def set_status(self, request, pk=None):
        gpu = self.get_object()
        data = GpuStatusSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        return Response(GpuSerializer(inventory.gpu_status_set(gpu=gpu, status=data.validated_data["status"])).data)

    @extend_schema(responses={204: None})
    def destroy(self, request, pk=None):
        inventory.gpu_remove(gpu=self.get_object())
        return Response(status=status.HTTP_204_NO_CONTENT)


@extend_schema(tags=["inventory"])
class ServerImportApi(APIView):
    """Bulk import of servers from a CSV file shaped like the Alibaba node list."""

    permission_classes = [IsOwner]
    token_scope = "owner"
    parser_classes = [MultiPartParser]  # a file upload; every other endpoint takes JSON only

    @extend_schema(
        request=inline_serializer(
            "ServerImportInput",
            {"file": serializers.FileField(), "default_region": serializers.CharField(required=False)},
        ),
        responses={201: inline_serializer("ServerImportOutput", {"created": serializers.IntegerField()})},
        description="A refused row is a 400 whose errors name it: attr ``rows.<CSV line>.<column>``.",
    )
    def post(self, request):
        upload = request.FILES.get("file")
        if upload is None:
            raise serializers.ValidationError({"file": ["Attach a CSV file."]}, code="required")
        region = None
        code = request.data.get("default_region")
        if code:
            region = Region.objects.filter(code=code).first()
            if region is None:
                raise serializers.ValidationError({"default_region": [f"Unknown region {code!r}."]})
        try:
            content = upload.read().decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            raise serializers.ValidationError({"file": ["The file is not UTF-8 text."]}) from exc
        try:
            servers = inventory.servers_import_csv(
                owner=owner_company_for_user(request.user), content=content, default_region=region
            )
        except inventory.InventoryImportError as exc:
            # A cell can fail more than one rule (two serials already registered): keep every message.
            errors: dict[str, list[str]] = {}
            for e in exc.errors:
                errors.setdefault(f"rows.{e.line}.{e.field}", []).append(e.message)
            raise serializers.ValidationError(errors) from exc
        return Response({"created": len(servers)}, status=status.HTTP_201_CREATED)
