"""API of inference endpoints (issue 15), under /api/v1/; the same services as the pages.

* ``POST /bookings/<id>/endpoints/`` creates one on a booking of yours;
* ``GET /endpoints/<id>/`` its status, URL (where the platform's proxy serves it) and the last
  hour's requests, errors and latency p50/p95;
* ``PATCH /endpoints/<id>/`` with ``{"image": ...}`` rolls it to a new image (of the same registry
  as its registry credential, if it has one);
* ``DELETE /endpoints/<id>/`` stops it.

``registry_credential`` and ``volume`` are ids of the renter's (``/api/v1/registries/``,
``/api/v1/volumes/``); another renter's → 400. Renter-only, token scope ``book``. Bad input → 400
with field messages; another renter's booking or endpoint → 404. Environment values are
write-only. Routes in ``scheduler.urls_api_endpoints``; the jobs' API is ``scheduler.api``.
"""

from __future__ import annotations

from django.http import Http404
from django.shortcuts import get_object_or_404
from drf_spectacular.utils import extend_schema, extend_schema_field
from rest_framework import serializers, status
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.permissions import IsRenter
from core.api import BIGINT_MAX
from marketplace.selectors import bookings as booking_selectors
from scheduler import selectors
from scheduler.models import Endpoint
from scheduler.proxy.stats import endpoint_summary
from scheduler.services import endpoints


class EndpointStatsSerializer(serializers.Serializer):
    requests = serializers.IntegerField(read_only=True)
    errors = serializers.IntegerField(read_only=True)
    p50_ms = serializers.FloatField(allow_null=True, read_only=True)
    p95_ms = serializers.FloatField(allow_null=True, read_only=True)


class EndpointSerializer(serializers.ModelSerializer):
    id = serializers.UUIDField(source="public_id", read_only=True)
    booking = serializers.UUIDField(source="booking.public_id", read_only=True)
    env = serializers.ListField(source="env_names", child=serializers.CharField(), read_only=True)
    url = serializers.SerializerMethodField()
    stats = serializers.SerializerMethodField()

    class Meta:
        model = Endpoint
        fields = [
            "id",
            "booking",
            "name",
            "image",
            "running_image",
            "command",
            "args",
            "env",
            "port",
            "readiness_path",
            "replicas",
            "gpus_per_replica",
            "registry_credential",  # endpoint storage helper: ids
            "volume",
            "status",
            "message",
            "ready_replicas",
            "ready_replica_seconds",
            "gpu_seconds",
            "url",
            "stats",
            "created_at",
            "finished_at",
        ]

    def get_url(self, endpoint: Endpoint) -> str:
        request = self.context.get("request")
        where = f"/endpoints/{endpoint.public_id}/"
        return request.build_absolute_uri(where) if request is not None else where

    @extend_schema_field(EndpointStatsSerializer)
    def get_stats(self, endpoint: Endpoint) -> dict:
        summary = endpoint_summary(endpoint)
        return EndpointStatsSerializer(summary).data


class EndpointRequestSerializer(serializers.Serializer):
    name = serializers.CharField(max_length=63)
    image = serializers.CharField(max_length=400)
    command = serializers.ListField(child=serializers.CharField(allow_blank=True), required=False, default=list)
    args = serializers.ListField(child=serializers.CharField(allow_blank=True), required=False, default=list)
    env = serializers.DictField(child=serializers.CharField(allow_blank=True), required=False, default=dict)
    port = serializers.IntegerField(required=False, default=8000, max_value=65535)
    readiness_path = serializers.CharField(max_length=200, required=False, default="/health")
    replicas = serializers.IntegerField(required=False, default=1, max_value=endpoints.MAX_REPLICAS)
    gpus_per_replica = serializers.IntegerField(required=False, default=1, max_value=64)
    # endpoint storage helper; another renter's id: 400 from the service
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
        help_text="Your volume on the booked server, mounted at /workspace in every replica.",
    )


class EndpointImageSerializer(serializers.Serializer):
    image = serializers.CharField(max_length=400)


@extend_schema(tags=["endpoints"])
class BookingEndpointsApi(APIView):
    """Create an inference endpoint on one of your paid bookings."""

    permission_classes = [IsRenter]
    token_scope = "book"

    @extend_schema(request=EndpointRequestSerializer, responses={201: EndpointSerializer})
    def post(self, request, public_id):
        booking = booking_selectors.booking_get_for_renter(renter=request.user, public_id=public_id)
        if booking is None:
            raise Http404("No such booking.")
        data = EndpointRequestSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        endpoint = endpoints.endpoint_create(booking=booking, renter=request.user, **data.validated_data)
        body = EndpointSerializer(endpoint, context={"request": request}).data
        return Response(body, status=status.HTTP_201_CREATED)


@extend_schema(tags=["endpoints"])
class EndpointApi(APIView):
    """One of your inference endpoints: read it, roll its image, stop it."""

    permission_classes = [IsRenter]
    token_scope = "book"

    def _endpoint(self, request, public_id) -> Endpoint:
        return get_object_or_404(selectors.renter_endpoints(request.user), public_id=public_id)

    @extend_schema(responses=EndpointSerializer)
    def get(self, request, public_id):
        return Response(EndpointSerializer(self._endpoint(request, public_id), context={"request": request}).data)

    @extend_schema(request=EndpointImageSerializer, responses=EndpointSerializer)
    def patch(self, request, public_id):
        endpoint = self._endpoint(request, public_id)
        data = EndpointImageSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        endpoint = endpoints.endpoint_update_image(
            endpoint=endpoint, renter=request.user, image=data.validated_data["image"]
        )
        return Response(EndpointSerializer(endpoint, context={"request": request}).data)

    @extend_schema(request=None, responses=EndpointSerializer)
    def delete(self, request, public_id):
        endpoint = endpoints.endpoint_stop(endpoint=self._endpoint(request, public_id), renter=request.user)
        return Response(EndpointSerializer(endpoint, context={"request": request}).data)
