"""Listings API: search, public listings with their availability calendar, and an
owner's listings (terms, pause, availability rules).

The same services and selectors as the pages (``views.listings``). Service
``ValidationError`` → 400 with field messages (``core.api.exception_handler``);
another owner's listing → 404; wrong role → 403.
"""

from django.http import Http404
from django.shortcuts import get_object_or_404
from drf_spectacular.utils import OpenApiParameter, extend_schema, inline_serializer
from rest_framework import serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.permissions import AllowAny
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.permissions import IsOwner
from accounts.selectors import owner_company_for_user
from core.api import BIGINT_MAX, INTEGER_MAX, form_validation_error
from marketplace.forms.listings import SearchForm
from marketplace.models import MAX_CPU_MILLI_PER_GPU, MAX_MEMORY_MIB_PER_GPU, AvailabilityRule, Listing, Server
from marketplace.selectors import bookings as booking_selectors
from marketplace.selectors.search import listing_search_page
from marketplace.services import listings


class ListingSerializer(serializers.ModelSerializer):
    gpu_model = serializers.CharField(source="gpu_model.name")
    region = serializers.CharField(source="region.code")
    cpu_milli = serializers.IntegerField(read_only=True, source="server.cpu_milli")
    memory_mib = serializers.IntegerField(read_only=True, source="server.memory_mib")

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
            "cpu_milli_per_gpu",
            "memory_mib_per_gpu",
        ]


SEARCH_PAGE_SIZE = 20
# Far past any real result set, and keeps the SQL offset inside a bigint.
SEARCH_MAX_PAGE = 10_000


@extend_schema(tags=["listings"])
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
                "count": serializers.IntegerField(read_only=True, help_text="Matches, counted up to 1,000."),
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
            raise form_validation_error(form)
        size = SEARCH_PAGE_SIZE
        try:
            number = max(1, int(request.query_params.get("page", 1)))
        except ValueError as exc:
            raise serializers.ValidationError({"page": ["A page number, from 1."]}) from exc
        if number > SEARCH_MAX_PAGE:
            raise Http404("Invalid page.")
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
    free_gpus_per_hour = serializers.ListField(child=serializers.IntegerField(read_only=True, allow_null=True))


@extend_schema(tags=["listings"])
class ListingViewSet(viewsets.ReadOnlyModelViewSet):
    """Active listings, readable by anyone, with their 14-day availability calendar."""

    permission_classes = [AllowAny]
    serializer_class = ListingSerializer
    lookup_value_regex = r"\d+"

    def get_queryset(self):
        return Listing.objects.select_related("server", "region", "gpu_model").order_by("price_per_gpu_hour", "id")

    @extend_schema(responses=CalendarDaySerializer(many=True))
    @action(detail=True, methods=["get"], pagination_class=None)
    def calendar(self, request, pk=None):
        rows = booking_selectors.listing_calendar(listing=self.get_object())
        return Response([{"day": r["day"], "free_gpus_per_hour": r["cells"]} for r in rows])


# --- Owner listings ---------------------------------------------------------------


class ListingTermsSerializer(serializers.Serializer):
    price_per_gpu_hour = serializers.DecimalField(max_digits=10, decimal_places=2)
    min_duration_minutes = serializers.IntegerField(default=60, max_value=INTEGER_MAX)
    max_duration_minutes = serializers.IntegerField(default=30 * 24 * 60, max_value=INTEGER_MAX)
    # What a booking takes per GPU; null = an even split of the server. Left as it is when absent.
    cpu_milli_per_gpu = serializers.IntegerField(
        required=False, allow_null=True, min_value=1, max_value=MAX_CPU_MILLI_PER_GPU
    )
    memory_mib_per_gpu = serializers.IntegerField(
        required=False, allow_null=True, min_value=1, max_value=MAX_MEMORY_MIB_PER_GPU
    )


class ListingCreateSerializer(ListingTermsSerializer):
    server = serializers.IntegerField(min_value=1, max_value=BIGINT_MAX)


class ListingStatusSerializer(serializers.Serializer):
    status = serializers.ChoiceField(choices=Listing.Status.choices)


class AvailabilityRuleSerializer(serializers.ModelSerializer):
    class Meta:
        model = AvailabilityRule
        fields = ["id", "kind", "start", "end", "weekday", "start_minute", "end_minute"]
        read_only_fields = ["id"]


@extend_schema(tags=["listings"])
class OwnerListingViewSet(viewsets.GenericViewSet):
    """The requesting owner's listings: create, change terms, pause, availability rules."""

    permission_classes = [IsOwner]
    token_scope = "owner"
    serializer_class = ListingSerializer
    queryset = Listing.objects.none()  # for the schema
    lookup_value_regex = r"\d+"

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
    @action(detail=True, methods=["get", "post"], pagination_class=None)
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
