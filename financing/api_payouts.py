"""Owner payouts API (read-only; included under /api/v1/ from ``financing.urls_api_payouts``).

The same selectors as the owner's payouts page: the company's payouts, one payout (404 for
another company's), and the statement of a run (404 for a run the company has no statement
in). Decimals are strings. Token scope ``owner``.
"""

from dataclasses import asdict

from django.http import Http404
from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.permissions import IsOwner
from accounts.selectors import owner_company_for_user
from financing.selectors.payouts import company_payouts, company_runs, payout_statement


class PayoutSerializer(serializers.Serializer):
    id = serializers.IntegerField(read_only=True)
    run_id = serializers.IntegerField(read_only=True)
    period_start = serializers.DateTimeField()
    period_end = serializers.DateTimeField(help_text="Excluded: the period is [start, end).")
    amount = serializers.DecimalField(max_digits=20, decimal_places=6, help_text="USD.")
    rail = serializers.ChoiceField(choices=["usdai", "sepa"])
    status = serializers.ChoiceField(choices=["pending", "sent", "confirmed", "failed", "withheld", "carried"])
    reason = serializers.CharField(allow_blank=True, help_text="Why nothing was paid (withheld, failed, carried).")
    amount_eur = serializers.DecimalField(max_digits=14, decimal_places=2, allow_null=True, help_text="SEPA only.")
    usd_eur_rate = serializers.DecimalField(max_digits=12, decimal_places=6, allow_null=True)
    address = serializers.CharField(allow_blank=True, help_text="USDai: the address minted to.")
    chain_status = serializers.CharField(allow_blank=True)
    tx_hash = serializers.CharField(allow_blank=True)
    end_to_end_id = serializers.CharField(allow_blank=True, help_text="SEPA: the transfer's reference.")
    created_at = serializers.DateTimeField()


class StatementLineSerializer(serializers.Serializer):
    server_id = serializers.IntegerField(read_only=True, allow_null=True)
    server = serializers.CharField()
    gross = serializers.DecimalField(max_digits=20, decimal_places=6)
    platform_fee = serializers.DecimalField(max_digits=20, decimal_places=6)
    insurance = serializers.DecimalField(max_digits=20, decimal_places=6)
    debt_service = serializers.DecimalField(max_digits=20, decimal_places=6)
    reserve_held = serializers.DecimalField(max_digits=20, decimal_places=6)
    owner = serializers.DecimalField(max_digits=20, decimal_places=6)
    reserve_released = serializers.DecimalField(max_digits=20, decimal_places=6)
    claims = serializers.DecimalField(max_digits=20, decimal_places=6)
    net = serializers.DecimalField(max_digits=20, decimal_places=6)


class StatementSerializer(serializers.Serializer):
    run_id = serializers.IntegerField(read_only=True)
    period_start = serializers.DateTimeField()
    period_end = serializers.DateTimeField()
    lines = StatementLineSerializer(many=True)
    total = StatementLineSerializer()
    opening = serializers.DecimalField(max_digits=20, decimal_places=6)
    earned = serializers.DecimalField(max_digits=20, decimal_places=6)
    paid = serializers.DecimalField(max_digits=20, decimal_places=6)
    closing = serializers.DecimalField(max_digits=20, decimal_places=6)


@extend_schema(tags=["payouts"])
class OwnerPayoutsApi(APIView):
    """The company's payouts, newest period first."""

    permission_classes = [IsOwner]
    token_scope = "owner"

    @extend_schema(responses=PayoutSerializer(many=True))
    def get(self, request):
        rows = company_payouts(owner_company_for_user(request.user))
        return Response(PayoutSerializer([asdict(r) for r in rows], many=True).data)


@extend_schema(tags=["payouts"])
class OwnerPayoutApi(APIView):
    """One of the company's payouts (404 for any other)."""

    permission_classes = [IsOwner]
    token_scope = "owner"

    @extend_schema(responses=PayoutSerializer)
    def get(self, request, pk: int):
        row = next((r for r in company_payouts(owner_company_for_user(request.user)) if r.id == pk), None)
        if row is None:
            raise Http404
        return Response(PayoutSerializer(asdict(row)).data)


@extend_schema(tags=["payouts"])
class OwnerStatementApi(APIView):
    """The company's statement of one payout run: per server, the waterfall of the period."""

    permission_classes = [IsOwner]
    token_scope = "owner"

    @extend_schema(responses=StatementSerializer)
    def get(self, request, run_id: int):
        company = owner_company_for_user(request.user)
        run = next((r for r in company_runs(company) if r.pk == run_id), None)
        if run is None:
            raise Http404
        statement = payout_statement(company=company, run=run)
        return Response(StatementSerializer(asdict(statement)).data)
