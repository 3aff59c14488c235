"""Bookings API: a renter's bookings (quote, book, pay, cancel, invoice), the
scheduler's usage reports, and an owner's earnings.

The same services and selectors as the pages (``views.bookings``). Service
``ValidationError`` → 400 with field messages; ``ConflictError`` (GPUs taken)
→ 409 (``core.api.exception_handler``); another renter's booking → 404; wrong
role → 403.
"""

from datetime import timedelta

from django.http import Http404
from django.shortcuts import get_object_or_404
from django.utils import timezone
from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_field
from rest_framework import serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.permissions import IsOperator, IsOwner, IsRenter
from accounts.selectors import owner_company_for_user
from core.api import BIGINT_MAX, CONFLICT_RESPONSE
from core.idempotency import IDEMPOTENCY_KEY_PARAMETER, Idempotent
from marketplace.models import Booking, Listing
from marketplace.payments import get_gateway
from marketplace.selectors import bookings as booking_selectors
from marketplace.services import bookings


class BookingRequestSerializer(serializers.Serializer):
    listing = serializers.IntegerField(min_value=1, max_value=BIGINT_MAX)
    gpu_count = serializers.IntegerField(min_value=1, max_value=16)
    start = serializers.DateTimeField()
    end = serializers.DateTimeField()
    quoted_price = serializers.DecimalField(max_digits=10, decimal_places=2, required=False, allow_null=True)


class QuoteSerializer(serializers.Serializer):
    listing = serializers.IntegerField(read_only=True, source="listing_id")
    gpu_count = serializers.IntegerField(read_only=True)
    start = serializers.DateTimeField()
    end = serializers.DateTimeField()
    minutes = serializers.IntegerField(read_only=True)
    price_per_gpu_hour = serializers.DecimalField(max_digits=10, decimal_places=2)
    exact_amount = serializers.DecimalField(max_digits=20, decimal_places=8)
    amount = serializers.DecimalField(max_digits=14, decimal_places=2)


class BookingSerializer(serializers.ModelSerializer):
    id = serializers.UUIDField(source="public_id")
    listing = serializers.IntegerField(read_only=True, source="listing_id")
    gpu_model = serializers.CharField(source="listing.gpu_model.name")
    region = serializers.CharField(source="server.region.code")
    escrow = serializers.DecimalField(max_digits=14, decimal_places=6)
    progress_percent = serializers.SerializerMethodField()
    gpus = serializers.SerializerMethodField()

    class Meta:
        model = Booking
        fields = [
            "id",
            "listing",
            "gpu_model",
            "region",
            "gpu_count",
            "gpus",
            "cpu_milli",
            "memory_mib",
            "start",
            "end",
            "price_per_gpu_hour",
            "amount",
            "status",
            "expires_at",
            "amount_paid",
            "amount_earned",
            "amount_refunded",
            "escrow",
            "delivered_gpu_seconds",
            "progress_percent",
            "created_at",
        ]
        # The CPU and memory the booking took on its server (the listing's share × GPUs).
        read_only_fields = ["cpu_milli", "memory_mib"]

    def get_progress_percent(self, booking) -> int:
        return booking_selectors.booking_progress(booking)

    def get_gpus(self, booking) -> list[str]:
        return list(booking.allocations.order_by("gpu__slot").values_list("gpu__serial", flat=True))


class PaySerializer(serializers.Serializer):
    payment_method = serializers.CharField(
        max_length=100,
        required=False,
        allow_blank=True,
        default="",
        help_text="A saved or test payment method id (pm_...). Leave it out with the card gateway to get the "
        "PaymentIntent's client_secret and confirm it with Stripe.js (confirmCardPayment, 3-D Secure included).",
    )


class CardPaymentSerializer(serializers.Serializer):
    status = serializers.CharField(
        help_text="The PaymentIntent's status: requires_payment_method and requires_action need the browser "
        "(Stripe.js with client_secret); succeeded is paid; processing settles later (the webhook confirms)."
    )
    reference = serializers.CharField(help_text="The PaymentIntent id.")
    client_secret = serializers.CharField(help_text="For Stripe.js confirmCardPayment; keep it out of logs.")


class BookingPayResponseSerializer(BookingSerializer):
    payment = serializers.SerializerMethodField()

    class Meta(BookingSerializer.Meta):
        fields = [*BookingSerializer.Meta.fields, "payment"]

    @extend_schema_field(CardPaymentSerializer(allow_null=True))
    def get_payment(self, booking):
        card = self.context.get("card_payment")
        return None if card is None else CardPaymentSerializer(card).data


class UsageSerializer(serializers.Serializer):
    key = serializers.CharField(max_length=200)
    interval_start = serializers.DateTimeField()
    interval_end = serializers.DateTimeField()
    gpu_seconds = serializers.IntegerField(min_value=0, max_value=BIGINT_MAX)


class SettlementSerializer(serializers.Serializer):
    id = serializers.IntegerField(read_only=True)
    gross_amount = serializers.DecimalField(max_digits=14, decimal_places=6)
    gpu_seconds = serializers.IntegerField(read_only=True)


class InvoiceLineSerializer(serializers.Serializer):
    description = serializers.CharField()
    amount = serializers.DecimalField(max_digits=20, decimal_places=6)


class InvoiceSerializer(serializers.Serializer):
    number = serializers.CharField()
    issued = serializers.DateTimeField()
    lines = InvoiceLineSerializer(many=True)
    paid = serializers.DecimalField(max_digits=14, decimal_places=2)
    refunded = serializers.DecimalField(max_digits=14, decimal_places=2)
    net = serializers.DecimalField(max_digits=14, decimal_places=2)
    test_payment = serializers.BooleanField()


def _request_args(request) -> dict:
    data = BookingRequestSerializer(data=request.data)
    data.is_valid(raise_exception=True)
    d = dict(data.validated_data)
    listing = Listing.objects.filter(pk=d.pop("listing")).first()
    if listing is None:
        raise serializers.ValidationError({"listing": ["No such listing."]})
    d["listing"] = listing
    return d


@extend_schema(tags=["bookings"])
class BookingViewSet(Idempotent, viewsets.GenericViewSet):
    """The requesting renter's bookings; ``id`` is the booking's public UUID. Booking, paying
    and cancelling take an ``Idempotency-Key`` (``core.idempotency``)."""

    idempotent_actions = ("create", "pay", "cancel")
    idempotent_atomic = ("create",)  # pay and cancel call the gateway: never inside a transaction

    permission_classes = [IsRenter]
    token_scope = "book"
    serializer_class = BookingSerializer
    lookup_field = "public_id"
    queryset = Booking.objects.none()  # for the schema

    def get_queryset(self):
        return booking_selectors.booking_list_for_renter(renter=self.request.user)

    def get_object(self):
        booking = booking_selectors.booking_get_for_renter(renter=self.request.user, public_id=self.kwargs["public_id"])
        if booking is None:
            raise Http404("No such booking.")
        return booking

    def list(self, request):
        page = self.paginate_queryset(self.get_queryset())
        return self.get_paginated_response(BookingSerializer(page, many=True).data)

    def retrieve(self, request, public_id=None):
        return Response(BookingSerializer(self.get_object()).data)

    @extend_schema(request=BookingRequestSerializer, responses={200: QuoteSerializer})
    @action(detail=False, methods=["post"])
    def quote(self, request):
        d = _request_args(request)
        d.pop("quoted_price", None)
        return Response(QuoteSerializer(bookings.booking_quote(**d)).data)

    @extend_schema(
        request=BookingRequestSerializer,
        responses={201: BookingSerializer, 409: CONFLICT_RESPONSE},
        parameters=[IDEMPOTENCY_KEY_PARAMETER],
    )
    def create(self, request):
        booking = bookings.booking_create(renter=request.user, **_request_args(request))
        return Response(BookingSerializer(booking).data, status=status.HTTP_201_CREATED)

    @extend_schema(
        request=PaySerializer, responses=BookingPayResponseSerializer, parameters=[IDEMPOTENCY_KEY_PARAMETER]
    )
    @action(detail=True, methods=["post"])
    def pay(self, request, public_id=None):
        """Pay the booking. With the card gateway and no ``payment_method``, the answer's ``payment``
        carries the PaymentIntent's ``client_secret`` for Stripe.js; the webhook confirms the booking."""
        data = PaySerializer(data=request.data)
        data.is_valid(raise_exception=True)
        booking, card = self.get_object(), None
        if not data.validated_data["payment_method"] and get_gateway().browser_cards:
            card = bookings.booking_card_payment(booking=booking, renter=request.user)
            booking = self.get_object()
        else:
            booking = bookings.booking_pay(booking=booking, renter=request.user, **data.validated_data)
        return Response(BookingPayResponseSerializer(booking, context={"card_payment": card}).data)

    @extend_schema(request=None, responses=BookingSerializer, parameters=[IDEMPOTENCY_KEY_PARAMETER])
    @action(detail=True, methods=["post"])
    def cancel(self, request, public_id=None):
        return Response(BookingSerializer(bookings.booking_cancel(booking=self.get_object(), renter=request.user)).data)

    @extend_schema(responses=InvoiceSerializer)
    @action(detail=True, methods=["get"])
    def invoice(self, request, public_id=None):
        booking = self.get_object()
        if booking.amount_paid <= 0:
            raise Http404("No invoice: this booking was not paid.")
        return Response(InvoiceSerializer(booking_selectors.booking_invoice(booking)).data)


@extend_schema(tags=["bookings"])
class UsageApi(APIView):
    """Delivered GPU-seconds for a booking, reported by the scheduler (operators only); idempotent by key."""

    permission_classes = [IsOperator]
    token_scope = "admin"

    @extend_schema(request=UsageSerializer, responses={201: SettlementSerializer, 200: None})
    def post(self, request, public_id):
        booking = get_object_or_404(Booking, public_id=public_id)
        data = UsageSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        settlement = bookings.booking_record_usage(booking=booking, **data.validated_data)
        if settlement is None:
            return Response(status=status.HTTP_200_OK)
        return Response(SettlementSerializer(settlement).data, status=status.HTTP_201_CREATED)


# --- Owner earnings ---------------------------------------------------------------


class EarningsRowSerializer(serializers.Serializer):
    server = serializers.CharField(source="server.hostname")
    available_gpu_hours = serializers.DecimalField(max_digits=14, decimal_places=2)
    booked_gpu_hours = serializers.DecimalField(max_digits=14, decimal_places=2)
    utilisation = serializers.DecimalField(max_digits=6, decimal_places=4)
    earned = serializers.DecimalField(max_digits=14, decimal_places=6)
    escrow = serializers.DecimalField(max_digits=14, decimal_places=6)


@extend_schema(tags=["bookings"])
class OwnerEarningsApi(APIView):
    permission_classes = [IsOwner]

    @extend_schema(parameters=[OpenApiParameter("days", int)], responses=EarningsRowSerializer(many=True))
    def get(self, request):
        try:
            days = max(1, min(int(request.query_params.get("days", 30)), 366))
        except ValueError as exc:
            raise serializers.ValidationError({"days": ["A whole number of days, 1–366."]}) from exc
        until = timezone.now()
        rows = booking_selectors.owner_earnings(
            owner=owner_company_for_user(request.user), since=until - timedelta(days=days), until=until
        )
        return Response(EarningsRowSerializer(rows, many=True).data)
