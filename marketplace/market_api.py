"""Market API: search, listings, availability, bookings, payment, invoices, usage.

The same services and selectors as the pages. Service ``ValidationError`` →
400 with field messages; ``ConflictError`` (GPUs taken) → 409; another
renter's booking → 404; wrong role → 403.
"""

from datetime import timedelta

from django.http import Http404
from django.shortcuts import get_object_or_404
from django.utils import timezone
from drf_spectacular.utils import OpenApiParameter, extend_schema, inline_serializer
from rest_framework import serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.permissions import AllowAny
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.permissions import IsOperator, IsOwner, IsRenter
from accounts.selectors import owner_company_for_user
from marketplace.market_forms import SearchForm
from marketplace.models import AvailabilityRule, Booking, Listing, Server
from marketplace.selectors import bookings as booking_selectors
from marketplace.selectors.search import listing_search_page
from marketplace.services import bookings, listings


class ListingSerializer(serializers.ModelSerializer):
    gpu_model = serializers.CharField(source="gpu_model.name")
    region = serializers.CharField(source="region.code")
    cpu_milli = serializers.IntegerField(source="server.cpu_milli")
    memory_mib = serializers.IntegerField(source="server.memory_mib")

    class Meta:
        model = Listing
        fields = [
            "id",
            "gpu_model",
            "vram_gb",
            "gpus_in_service",
            "price_per_gpu_hour",
            "min_duration_minutes",
            "max_duration_minutes",
            "status",
            "always_available",
            "financed",
            "region",
            "reliability",
            "cpu_milli",
            "memory_mib",
        ]


SEARCH_PAGE_SIZE = 20


class SearchApi(APIView):
    """Listings that can give N GPUs on one server, filtered and sorted."""

    permission_classes = [AllowAny]

    @extend_schema(
        parameters=[
            OpenApiParameter("gpu_model", int, description="GPU model id"),
            OpenApiParameter("gpu_count", int),
            OpenApiParameter("min_vram_gb", int),
            OpenApiParameter("region", str, description="region code"),
            OpenApiParameter("max_price", str, description="USD per GPU-hour"),
            OpenApiParameter("min_reliability", str, description="0–1"),
            OpenApiParameter("start", str, description="UTC, YYYY-MM-DDTHH:MM"),
            OpenApiParameter("end", str, description="UTC, YYYY-MM-DDTHH:MM"),
            OpenApiParameter("sort", str, enum=["price", "-price", "reliability", "vram"]),
            OpenApiParameter("page", int),
        ],
        responses=inline_serializer(
            "SearchPage",
            {
                "count": serializers.IntegerField(help_text="Matches, counted up to 1,000."),
                "count_is_lower_bound": serializers.BooleanField(help_text="True when more than 1,000 match."),
                "next": serializers.URLField(allow_null=True),
                "previous": serializers.URLField(allow_null=True),
                "results": ListingSerializer(many=True),
            },
        ),
    )
    def get(self, request):
        form = SearchForm(request.query_params)
        if not form.is_valid():
            return Response(form.errors, status=status.HTTP_400_BAD_REQUEST)
        size = SEARCH_PAGE_SIZE
        try:
            number = max(1, int(request.query_params.get("page", 1)))
        except ValueError:
            return Response({"page": ["A page number, from 1."]}, status=status.HTTP_400_BAD_REQUEST)
        page = listing_search_page(form.to_query(), offset=(number - 1) * size, limit=size)
        if number > 1 and not page.rows:
            raise Http404("Invalid page.")
        for row in page.rows:  # decimals as DRF renders them: strings with the field's places
            row["price_per_gpu_hour"] = f"{row['price_per_gpu_hour']:.2f}"
            row["reliability"] = f"{row['reliability']:.4f}"

        def link(n: int) -> str:
            return request.build_absolute_uri(f"{request.path}?{_with_page(request.query_params, n)}")

        return Response(
            {
                "count": page.total,
                "count_is_lower_bound": page.total_is_lower_bound,
                "next": link(number + 1) if number * size < page.total or page.total_is_lower_bound else None,
                "previous": link(number - 1) if number > 1 else None,
                "results": page.rows,
            }
        )


def _with_page(params, number: int) -> str:
    query = params.copy()
    query["page"] = str(number)
    return query.urlencode()


class CalendarDaySerializer(serializers.Serializer):
    day = serializers.DateTimeField()
    free_gpus_per_hour = serializers.ListField(child=serializers.IntegerField(allow_null=True))


class ListingViewSet(viewsets.ReadOnlyModelViewSet):
    """Active listings, readable by anyone, with their 14-day availability calendar."""

    permission_classes = [AllowAny]
    serializer_class = ListingSerializer

    def get_queryset(self):
        return Listing.objects.select_related("server", "region", "gpu_model").order_by("price_per_gpu_hour", "id")

    @extend_schema(responses=CalendarDaySerializer(many=True))
    @action(detail=True, methods=["get"])
    def calendar(self, request, pk=None):
        rows = booking_selectors.listing_calendar(listing=self.get_object())
        return Response([{"day": r["day"], "free_gpus_per_hour": r["cells"]} for r in rows])


# --- Owner listings ---------------------------------------------------------------


class ListingTermsSerializer(serializers.Serializer):
    price_per_gpu_hour = serializers.DecimalField(max_digits=10, decimal_places=2)
    min_duration_minutes = serializers.IntegerField(default=60)
    max_duration_minutes = serializers.IntegerField(default=30 * 24 * 60)


class ListingCreateSerializer(ListingTermsSerializer):
    server = serializers.IntegerField()


class ListingStatusSerializer(serializers.Serializer):
    status = serializers.ChoiceField(choices=Listing.Status.choices)


class AvailabilityRuleSerializer(serializers.ModelSerializer):
    class Meta:
        model = AvailabilityRule
        fields = ["id", "kind", "start", "end", "weekday", "start_minute", "end_minute"]
        read_only_fields = ["id"]


class OwnerListingViewSet(viewsets.GenericViewSet):
    """The requesting owner's listings: create, change terms, pause, availability rules."""

    permission_classes = [IsOwner]
    serializer_class = ListingSerializer
    queryset = Listing.objects.none()  # for the schema

    def get_queryset(self):
        return Listing.objects.filter(server__owner=owner_company_for_user(self.request.user)).select_related(
            "server", "region", "gpu_model"
        )

    def list(self, request):
        page = self.paginate_queryset(self.get_queryset().order_by("id"))
        return self.get_paginated_response(ListingSerializer(page, many=True).data)

    def retrieve(self, request, pk=None):
        return Response(ListingSerializer(self.get_object()).data)

    @extend_schema(request=ListingCreateSerializer, responses={201: ListingSerializer})
    def create(self, request):
        data = ListingCreateSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        terms = dict(data.validated_data)
        server = get_object_or_404(Server, pk=terms.pop("server"), owner=owner_company_for_user(request.user))
        listing = listings.listing_create(server=server, **terms)
        return Response(ListingSerializer(listing).data, status=status.HTTP_201_CREATED)

    @extend_schema(request=ListingTermsSerializer, responses=ListingSerializer)
    def update(self, request, pk=None):
        listing = self.get_object()
        data = ListingTermsSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        return Response(ListingSerializer(listings.listing_update(listing=listing, **data.validated_data)).data)

    @extend_schema(request=ListingStatusSerializer, responses=ListingSerializer)
    @action(detail=True, methods=["post"], url_path="status")
    def set_status(self, request, pk=None):
        listing = self.get_object()
        data = ListingStatusSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        return Response(ListingSerializer(listings.listing_set_status(listing=listing, **data.validated_data)).data)

    @extend_schema(request=AvailabilityRuleSerializer, responses={200: AvailabilityRuleSerializer(many=True)})
    @action(detail=True, methods=["get", "post"])
    def availability(self, request, pk=None):
        listing = self.get_object()
        if request.method == "POST":
            data = AvailabilityRuleSerializer(data=request.data)
            data.is_valid(raise_exception=True)
            d = data.validated_data
            if d["kind"] == AvailabilityRule.Kind.WINDOW:
                listings.availability_window_add(listing=listing, start=d.get("start"), end=d.get("end"))
            else:
                listings.availability_weekly_add(
                    listing=listing,
                    weekday=d.get("weekday") if d.get("weekday") is not None else -1,
                    start_minute=d.get("start_minute") or 0,
                    end_minute=d.get("end_minute") or 0,
                )
        return Response(AvailabilityRuleSerializer(listing.rules.all(), many=True).data)

    @extend_schema(responses={204: None})
    @action(detail=True, methods=["delete"], url_path=r"availability/(?P<rule_id>\d+)")
    def availability_delete(self, request, pk=None, rule_id=None):
        rule = get_object_or_404(AvailabilityRule, pk=rule_id, listing=self.get_object())
        listings.availability_rule_delete(rule=rule)
        return Response(status=status.HTTP_204_NO_CONTENT)


class EarningsRowSerializer(serializers.Serializer):
    server = serializers.CharField(source="server.hostname")
    available_gpu_hours = serializers.DecimalField(max_digits=14, decimal_places=2)
    booked_gpu_hours = serializers.DecimalField(max_digits=14, decimal_places=2)
    utilisation = serializers.DecimalField(max_digits=6, decimal_places=4)
    earned = serializers.DecimalField(max_digits=14, decimal_places=6)
    escrow = serializers.DecimalField(max_digits=14, decimal_places=6)


class OwnerEarningsApi(APIView):
    permission_classes = [IsOwner]

    @extend_schema(parameters=[OpenApiParameter("days", int)], responses=EarningsRowSerializer(many=True))
    def get(self, request):
        try:
            days = max(1, min(int(request.query_params.get("days", 30)), 366))
        except ValueError:
            return Response({"days": ["A whole number of days, 1–366."]}, status=status.HTTP_400_BAD_REQUEST)
        until = timezone.now()
        rows = booking_selectors.owner_earnings(
            owner=owner_company_for_user(request.user), since=until - timedelta(days=days), until=until
        )
        return Response(EarningsRowSerializer(rows, many=True).data)


# --- Bookings ---------------------------------------------------------------------


class BookingRequestSerializer(serializers.Serializer):
    listing = serializers.IntegerField()
    gpu_count = serializers.IntegerField(min_value=1, max_value=16)
    start = serializers.DateTimeField()
    end = serializers.DateTimeField()
    quoted_price = serializers.DecimalField(max_digits=10, decimal_places=2, required=False, allow_null=True)


class QuoteSerializer(serializers.Serializer):
    listing = serializers.IntegerField(source="listing_id")
    gpu_count = serializers.IntegerField()
    start = serializers.DateTimeField()
    end = serializers.DateTimeField()
    minutes = serializers.IntegerField()
    price_per_gpu_hour = serializers.DecimalField(max_digits=10, decimal_places=2)
    exact_amount = serializers.DecimalField(max_digits=20, decimal_places=8)
    amount = serializers.DecimalField(max_digits=14, decimal_places=2)


class BookingSerializer(serializers.ModelSerializer):
    id = serializers.UUIDField(source="public_id")
    listing = serializers.IntegerField(source="listing_id")
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

    def get_progress_percent(self, booking) -> int:
        return booking_selectors.booking_progress(booking)

    def get_gpus(self, booking) -> list[str]:
        return list(booking.allocations.order_by("gpu__slot").values_list("gpu__serial", flat=True))


class PaySerializer(serializers.Serializer):
    payment_method = serializers.CharField(max_length=100, required=False, allow_blank=True, default="")


class UsageSerializer(serializers.Serializer):
    key = serializers.CharField(max_length=200)
    interval_start = serializers.DateTimeField()
    interval_end = serializers.DateTimeField()
    gpu_seconds = serializers.IntegerField(min_value=0)


class SettlementSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    gross_amount = serializers.DecimalField(max_digits=14, decimal_places=6)
    gpu_seconds = serializers.IntegerField()


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


class BookingViewSet(viewsets.GenericViewSet):
    """The requesting renter's bookings; ``id`` is the booking's public UUID."""

    permission_classes = [IsRenter]
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

    @extend_schema(request=BookingRequestSerializer, responses={201: BookingSerializer})
    def create(self, request):
        booking = bookings.booking_create(renter=request.user, **_request_args(request))
        return Response(BookingSerializer(booking).data, status=status.HTTP_201_CREATED)

    @extend_schema(request=PaySerializer, responses=BookingSerializer)
    @action(detail=True, methods=["post"])
    def pay(self, request, public_id=None):
        data = PaySerializer(data=request.data)
        data.is_valid(raise_exception=True)
        booking = bookings.booking_pay(booking=self.get_object(), renter=request.user, **data.validated_data)
        return Response(BookingSerializer(booking).data)

    @extend_schema(request=None, responses=BookingSerializer)
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


class UsageApi(APIView):
    """Delivered GPU-seconds for a booking, reported by the scheduler (operators only); idempotent by key."""

    permission_classes = [IsOperator]

    @extend_schema(request=UsageSerializer, responses={201: SettlementSerializer, 200: None})
    def post(self, request, public_id):
        booking = get_object_or_404(Booking, public_id=public_id)
        data = UsageSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        settlement = bookings.booking_record_usage(booking=booking, **data.validated_data)
        if settlement is None:
            return Response(status=status.HTTP_200_OK)
        return Response(SettlementSerializer(settlement).data, status=status.HTTP_201_CREATED)
