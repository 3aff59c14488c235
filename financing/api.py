"""Financing API (USDai wallet, sUSDai vault, proof of revenue, loan applications), registered in
``config.urls``.

The same services and selectors as the pages. Service ``ValidationError`` →
400 with field messages; wrong role → 403. Decimals are strings.
"""

from decimal import ROUND_DOWN

from django.conf import settings
from django.shortcuts import get_object_or_404
from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.permissions import AllowAny, IsAuthenticated
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.permissions import IsLender, IsOwner
from accounts.reauth import reauth_check
from accounts.selectors import owner_company_for_user
from core.api import BIGINT_MAX
from core.idempotency import IDEMPOTENCY_KEY_PARAMETER, Idempotent
from financing.chain.client import wei_to_usd
from financing.models import ChainOp, Collateral, Loan, Redemption, UsdaiPurchase, VaultDeposit
from financing.selectors import vault as vault_selectors
from financing.selectors.ledger import usdai_balance
from financing.selectors.loans import borrowing_limit, loan_warnings
from financing.selectors.proofs import settlement_proof_check
from financing.selectors.vault import RedemptionEstimate, user_redemptions, wallet_address
from financing.services import vault, wallets
from financing.services.loans import loan_apply
from marketplace.models import Settlement
from marketplace.payments import get_gateway

# --- Wallet ------------------------------------------------------------------------------


class WalletSerializer(serializers.Serializer):
    address = serializers.CharField(help_text='The custodial address; "" before the first USDai.')
    balance = serializers.DecimalField(max_digits=20, decimal_places=6, help_text="USDai.")


@extend_schema(tags=["wallet"])
class WalletApi(APIView):
    """The requesting user's USDai balance and custodial address."""

    permission_classes = [IsAuthenticated]

    @extend_schema(responses=WalletSerializer)
    def get(self, request):
        data = {"address": wallet_address(user=request.user), "balance": usdai_balance(user=request.user)}
        return Response(WalletSerializer(data).data)


class UsdaiBuySerializer(serializers.Serializer):
    amount = serializers.DecimalField(max_digits=14, decimal_places=2, help_text="USD; as much USDai is minted.")
    payment_method = serializers.CharField(max_length=100, required=False, allow_blank=True, default="")


class UsdaiPurchaseSerializer(serializers.ModelSerializer):
    client_secret = serializers.SerializerMethodField(
        help_text="While the purchase waits for a card entered in the browser (Stripe mode): the PaymentIntent's "
        "client secret for Stripe.js `confirmCardPayment`; empty otherwise. The webhook completes the purchase."
    )

    class Meta:
        model = UsdaiPurchase
        fields = ["id", "amount", "status", "gateway", "reference", "is_test", "failure_message", "created_at"]
        fields += ["client_secret"]

    def get_client_secret(self, purchase: UsdaiPurchase) -> str:
        card = self.context.get("card")
        return card.client_secret if card is not None and card.purchase.pk == purchase.pk else ""


def _purchase_answer(request, purchase: UsdaiPurchase) -> dict:
    """The purchase, with the client secret while a card must still be confirmed in the browser."""
    card = None
    if purchase.status == UsdaiPurchase.Status.PENDING and not purchase.payment_method:
        card = wallets.usdai_purchase_card(user=request.user, purchase_id=purchase.pk)
    return UsdaiPurchaseSerializer(purchase, context={"card": card}).data


@extend_schema(tags=["wallet"])
class UsdaiBuyApi(Idempotent, APIView):
    """Buy USDai through the payment gateway (the offline demo gateway is a test payment)."""

    permission_classes = [IsAuthenticated]
    token_scope = "book"

    @extend_schema(
        request=UsdaiBuySerializer, responses={201: UsdaiPurchaseSerializer}, parameters=[IDEMPOTENCY_KEY_PARAMETER]
    )
    def post(self, request):
        data = UsdaiBuySerializer(data=request.data)
        data.is_valid(raise_exception=True)
        # The key's lifetime names the charge too: a retry after a crash presents the same one.
        key = self.idempotency_token()
        if data.validated_data["payment_method"] or not get_gateway().browser_cards:
            purchase = wallets.usdai_buy(user=request.user, idempotency_key=key, **data.validated_data)
        else:
            # No payment method with a card gateway: the PaymentIntent waits for Stripe.js (3-D Secure
            # and all); the answer carries its client secret, and the webhook completes the purchase.
            purchase = wallets.usdai_buy_start(
                user=request.user, amount=data.validated_data["amount"], idempotency_key=key
            )
        return Response(_purchase_answer(request, purchase), status=status.HTTP_201_CREATED)


@extend_schema(tags=["wallet"])
class UsdaiPurchaseApi(APIView):
    """One of your USDai purchases: pending until the gateway confirms it (the webhook), then succeeded or failed."""

    permission_classes = [IsAuthenticated]
    token_scope = "book"

    @extend_schema(responses={200: UsdaiPurchaseSerializer})
    def get(self, request, pk: int):
        purchase = get_object_or_404(UsdaiPurchase, pk=pk, user=request.user)
        return Response(_purchase_answer(request, purchase))


class UsdaiWithdrawSerializer(serializers.Serializer):
    address = serializers.CharField(max_length=100, help_text="An outside address, EIP-55 checksummed.")
    amount = serializers.DecimalField(max_digits=20, decimal_places=6, help_text="USDai, at most your balance.")
    reauth = serializers.CharField(
        required=False,
        allow_blank=True,
        default="",
        trim_whitespace=False,
        max_length=128,
        write_only=True,
        help_text="Your password again or, when the account has TOTP, a current code (400 on the `reauth` field "
        "when missing or wrong; wrong ones count towards the login lockout).",
    )


class UsdaiWithdrawalSerializer(serializers.Serializer):
    id = serializers.IntegerField(read_only=True, help_text="The transfer's chain transaction.")
    address = serializers.CharField()
    amount = serializers.DecimalField(max_digits=20, decimal_places=6)
    status = serializers.ChoiceField(choices=ChainOp.Status.choices, help_text="Of its chain transaction.")
    tx_hash = serializers.CharField(allow_blank=True, help_text='"" until it is signed.')
    created_at = serializers.DateTimeField()


class UsdaiWithdrawalsApi(Idempotent, APIView):
    """Send USDai from the custodial wallet to an outside address: the ledger is debited at
    once and the transfer queued for the chain (201 with it). A bad address, an amount
    above the balance, or a missing or wrong password (``reauth``; a TOTP code when the
    account has one) is 400 with field messages, and nothing is sent."""

    idempotent_atomic = True  # database-only: the work and its saved answer commit together
    permission_classes = [IsAuthenticated]
    token_scope = "book"

    @extend_schema(
        request=UsdaiWithdrawSerializer,
        responses={201: UsdaiWithdrawalSerializer},
        parameters=[IDEMPOTENCY_KEY_PARAMETER],
    )
    def post(self, request):
        data = UsdaiWithdrawSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        fields = dict(data.validated_data)
        reauth_check(request=request._request, user=request.user, secret=fields.pop("reauth"))
        op = wallets.usdai_withdraw(user=request.user, **fields)
        address, wei = op.args
        sent = {
            "id": op.pk,
            "address": address,
            "amount": wei_to_usd(int(wei)),
            "status": op.status,
            "tx_hash": op.tx_hash,
            "created_at": op.created_at,
        }
        return Response(UsdaiWithdrawalSerializer(sent).data, status=status.HTTP_201_CREATED)


# --- Vault -------------------------------------------------------------------------------


def _money(**kwargs):
    return serializers.DecimalField(max_digits=20, decimal_places=6, allow_null=True, **kwargs)


def _shares(**kwargs):
    return serializers.DecimalField(max_digits=40, decimal_places=18, allow_null=True, **kwargs)


def _rate(**kwargs):
    return serializers.DecimalField(max_digits=10, decimal_places=4, allow_null=True, **kwargs)


class VaultSummarySerializer(serializers.Serializer):
    cash = _money()
    cash_on_chain = _money()
    tbills = _money()
    loans = _money()
    nav = _money()
    apr_7 = _rate(help_text="Realised over 7 days, a fraction; null without history.")
    apr_30 = _rate(help_text="Realised over 30 days, a fraction; null without history.")
    apy_30 = _rate(help_text="The 30-day APR compounded daily, (1 + apr_30/365)^365 - 1; null without history.")
    share_price = _shares(
        help_text="USDai a share is worth: the one price for deposits and redemptions (accrued interest included)."
    )
    redeem_price = _money(source="share_price", rounding=ROUND_DOWN, help_text="share_price, kept for old clients.")
    deposit_price = _money(source="share_price", rounding=ROUND_DOWN, help_text="share_price, kept for old clients.")
    accrued = _money(help_text="Interest accrued and not yet received, counted in the share price.")
    locked_profit = _money(help_text="Surprise income still streaming into the share price.")
    total_assets = _money(required=False)
    supply = _shares(required=False)
    chain_error = serializers.CharField(required=False)


class PositionSerializer(serializers.Serializer):
    address = serializers.CharField()
    shares = _shares()
    value = _money()
    available = _shares(required=False, help_text="Shares not already asked to redeem.")
    queued = _shares(help_text="Shares waiting in the redemption queue.")
    error = serializers.CharField(required=False)


class PnlSerializer(serializers.Serializer):
    deposited = _money(help_text="Every deposit's USDai.")
    redeemed = _money(help_text="USDai the redemption queue has paid.")
    sending = _money(help_text="Deposits whose shares are not minted yet, counted at their amount.")
    wallet_value = _money(help_text="Shares in the wallet at the share price.")
    queued_value = _money(help_text="Shares escrowed in the queue at the share price.")
    value = _money(help_text="wallet_value + queued_value + sending; null when the chain cannot be read.")
    pnl = _money(help_text="value + redeemed - deposited.")
    error = serializers.CharField()


class VaultSerializer(serializers.Serializer):
    summary = VaultSummarySerializer()
    position = PositionSerializer()
    pnl = PnlSerializer()


@extend_schema(tags=["vault"])
class VaultApi(APIView):
    """The vault (NAV split, share price, realised APR and APY) and the requesting lender's
    position and P&L."""

    permission_classes = [IsLender]

    @extend_schema(responses=VaultSerializer)
    def get(self, request):
        position = vault_selectors.vault_position(user=request.user)
        data = {
            "summary": vault_selectors.vault_summary(),
            "position": position,
            "pnl": vault_selectors.lender_pnl(user=request.user, position=position),
        }
        return Response(VaultSerializer(data).data)


class VaultDaySerializer(serializers.Serializer):
    date = serializers.DateField()
    nav = _money()
    income = _money(help_text="Income earned that day (by economic date).")
    share_price = _shares(help_text="Read from the chain by the day's run; null when it could not be.")


@extend_schema(tags=["vault"])
class VaultHistoryApi(APIView):
    """The vault's recorded days over the last 90, oldest first: NAV, income, share price."""

    permission_classes = [IsLender]

    @extend_schema(responses=VaultDaySerializer(many=True))
    def get(self, request):
        return Response(VaultDaySerializer(vault_selectors.vault_history(), many=True).data)


class DepositSerializer(serializers.Serializer):
    amount = serializers.DecimalField(max_digits=20, decimal_places=6, help_text="USDai, at most your balance.")


class VaultDepositSerializer(serializers.ModelSerializer):
    status = serializers.CharField(source="op.status", help_text="Of its chain transaction.")

    class Meta:
        model = VaultDeposit
        fields = ["id", "amount", "shares", "status", "created_at"]


@extend_schema(tags=["vault"])
class VaultDepositApi(Idempotent, APIView):
    """Deposit USDai into the vault for sUSDai shares (counted from the chain's receipt)."""

    idempotent_atomic = True  # database-only: the work and its saved answer commit together
    permission_classes = [IsLender]
    token_scope = "book"

    @extend_schema(
        request=DepositSerializer, responses={201: VaultDepositSerializer}, parameters=[IDEMPOTENCY_KEY_PARAMETER]
    )
    def post(self, request):
        data = DepositSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        deposit = vault.vault_deposit(user=request.user, **data.validated_data)
        return Response(VaultDepositSerializer(deposit).data, status=status.HTTP_201_CREATED)


class RedemptionRequestSerializer(serializers.Serializer):
    shares = serializers.DecimalField(
        max_digits=40,
        decimal_places=18,
        help_text=f"sUSDai to redeem, at least {settings.VAULT_MIN_REDEMPTION}.",
    )


class RedemptionSerializer(serializers.Serializer):
    id = serializers.IntegerField(read_only=True)
    shares = _shares()
    status = serializers.ChoiceField(choices=Redemption.Status.choices)
    shares_left = _shares()
    paid = _money(help_text="USDai received so far.")
    created_at = serializers.DateTimeField()
    paid_at = serializers.DateTimeField(allow_null=True)
    position = serializers.IntegerField(read_only=True, allow_null=True, help_text="In the queue; null once paid.")
    value = _money(help_text="What the shares left are worth (books' view); null unless waiting.")
    estimate = serializers.DateField(allow_null=True, help_text="Estimated payment date; null when unknown.")


def _redemption(redemption: Redemption, estimate: RedemptionEstimate | None) -> dict:
    row = {
        f: getattr(redemption, f) for f in ("id", "shares", "status", "shares_left", "paid", "created_at", "paid_at")
    }
    row |= {k: getattr(estimate, k) if estimate else None for k in ("position", "value", "estimate")}
    return RedemptionSerializer(row).data


@extend_schema(tags=["vault"])
class RedemptionsApi(Idempotent, APIView):
    """The requesting lender's redemptions (queue position, estimated date); queue a new one."""

    idempotent_atomic = True  # database-only: the work and its saved answer commit together
    permission_classes = [IsLender]
    token_scope = "book"

    @extend_schema(responses=RedemptionSerializer(many=True))
    def get(self, request):
        return Response([_redemption(r, est) for r, est in user_redemptions(user=request.user)])

    @extend_schema(
        request=RedemptionRequestSerializer,
        responses={201: RedemptionSerializer},
        parameters=[IDEMPOTENCY_KEY_PARAMETER],
    )
    def post(self, request):
        data = RedemptionRequestSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        redemption = vault.redemption_request(user=request.user, shares_amount=data.validated_data["shares"])
        return Response(
            _redemption(redemption, vault_selectors.redemption_estimate(redemption=redemption)),
            status=status.HTTP_201_CREATED,
        )


@extend_schema(tags=["vault"])
class RedemptionCancelApi(Idempotent, APIView):
    """Cancel one of the requesting lender's queued redemptions: its unpaid shares come back
    to the wallet once the chain confirms (status "cancelling", then "cancelled"). Another
    lender's redemption is 404; one that is not queued is 400 with the reason."""

    idempotent_atomic = True  # database-only: the work and its saved answer commit together
    permission_classes = [IsLender]
    token_scope = "book"

    @extend_schema(request=None, responses={200: RedemptionSerializer}, parameters=[IDEMPOTENCY_KEY_PARAMETER])
    def post(self, request, pk: int):
        redemption = get_object_or_404(Redemption, pk=pk, user=request.user)
        return Response(_redemption(vault.redemption_cancel(user=request.user, redemption=redemption), None))


# --- Proof of revenue (public) ------------------------------------------------------------


class SettlementProofSerializer(serializers.Serializer):
    settlement = serializers.IntegerField(read_only=True)
    epoch = serializers.IntegerField(
        read_only=True, allow_null=True, help_text="Null until the settlement is in an epoch."
    )
    index = serializers.IntegerField(read_only=True, allow_null=True, help_text="The leaf's position in the epoch.")
    data = serializers.CharField(allow_null=True, help_text="The leaf's record: canonical JSON, hashed as UTF-8.")
    leaf = serializers.CharField(allow_null=True)
    proof = serializers.ListField(child=serializers.CharField(), allow_null=True)
    root = serializers.CharField(allow_null=True, help_text="The epoch's root, as we computed it.")
    anchored_root = serializers.CharField(allow_null=True, help_text="The root RevenueAnchor holds.")
    anchor_tx = serializers.CharField(allow_null=True)
    matches = serializers.BooleanField(help_text="The proof leads from the leaf to the root on chain.")
    chain_error = serializers.CharField(allow_blank=True)


@extend_schema(tags=["proofs"])
class SettlementProofApi(APIView):
    """A settlement's proof of revenue (SHA-256 Merkle tree; rules at /proof/algorithm/)."""

    permission_classes = [AllowAny]

    @extend_schema(responses=SettlementProofSerializer)
    def get(self, request, pk: int):
        settlement = get_object_or_404(Settlement, pk=pk)
        check = settlement_proof_check(settlement_id=settlement.pk)
        if check is None:
            empty = dict.fromkeys(["epoch", "index", "data", "leaf", "proof", "root", "anchored_root", "anchor_tx"])
            data = {"settlement": settlement.pk, **empty, "matches": False, "chain_error": ""}
        else:
            anchor = check.epoch.anchor_op
            data = {
                "settlement": settlement.pk,
                "epoch": check.epoch.number,
                "index": check.index,
                "data": check.data,
                "leaf": check.leaf,
                "proof": check.proof,
                "root": check.root,
                "anchored_root": check.anchored_root,
                "anchor_tx": (anchor.tx_hash or None) if anchor else None,
                "matches": check.matches,
                "chain_error": check.chain_error,
            }
        return Response(SettlementProofSerializer(data).data)


# --- Loans (owner) ---------------------------------------------------------------------------


class BorrowingLimitSerializer(serializers.Serializer):
    collateral = serializers.IntegerField(read_only=True, source="appraisal.collateral_id", allow_null=True)
    appraisal_value = _money(source="appraisal.value")
    depreciated_value = _money(source="appraisal.depreciated_value")
    income_value = _money(source="appraisal.income_value")
    income_approach = serializers.CharField(source="appraisal.income_approach", allow_null=True)
    tenor_months = serializers.IntegerField(read_only=True)
    ltv_limit = _rate()
    ltv_maximum = _money()
    monthly_income = _money(help_text="Projected net income a month, from the appraisal.")
    min_dscr = _rate()
    dscr_maximum = _money(help_text="The largest principal whose payments the projected income covers.")
    maximum = _money()
    minimum_principal = _money()
    binding = serializers.CharField(help_text='"ltv", "dscr", or "appraisal" when not appraised yet.')
    valuation = serializers.CharField(help_text='"income" or "depreciation": which value the appraisal took.')
    reasons = serializers.ListField(child=serializers.CharField())


@extend_schema(tags=["loans"])
class CollateralLimitApi(APIView):
    """What the owner can borrow against one collateral record over 36 months, and what limits it."""

    permission_classes = [IsOwner]

    @extend_schema(responses=BorrowingLimitSerializer)
    def get(self, request, pk: int):
        company = owner_company_for_user(request.user)
        collateral = get_object_or_404(Collateral, pk=pk, server__owner=company)
        return Response(BorrowingLimitSerializer(borrowing_limit(collateral)).data)


class LoanApplySerializer(serializers.Serializer):
    collateral = serializers.IntegerField(max_value=BIGINT_MAX, help_text="The collateral record's id.")
    amount = serializers.DecimalField(max_digits=14, decimal_places=2, help_text="USD.")
    tenor_months = serializers.IntegerField(max_value=36, help_text="12 to 36.")
    kind = serializers.CharField(default=Loan.Kind.FIXED_PAYMENT, help_text="fixed_payment or fixed_principal.")


class LoanSerializer(serializers.ModelSerializer):
    warnings = serializers.SerializerMethodField(help_text="E.g. a projected DSCR below the warning level.")

    class Meta:
        model = Loan
        fields = [
            "public_id",
            "collateral",
            "principal",
            "apr",
            "tenor_months",
            "kind",
            "status",
            "ltv_at_origination",
            "projected_monthly_income",
            "scheduled_payment",
            "projected_dscr",
            "applied_at",
            "warnings",
        ]

    def get_warnings(self, loan: Loan) -> list[str]:
        return loan_warnings(loan)


@extend_schema(tags=["loans"])
class LoanApplyApi(Idempotent, APIView):
    """Apply for a loan against approved collateral: refused (400, field messages) above the
    LTV limit, below the minimum principal or at a projected DSCR below the minimum; taken
    with a warning at a thin projected DSCR."""

    idempotent_atomic = True  # database-only: the work and its saved answer commit together
    permission_classes = [IsOwner]
    token_scope = "owner"

    @extend_schema(request=LoanApplySerializer, responses={201: LoanSerializer}, parameters=[IDEMPOTENCY_KEY_PARAMETER])
    def post(self, request):
        data = LoanApplySerializer(data=request.data)
        data.is_valid(raise_exception=True)
        fields = dict(data.validated_data)
        collateral = get_object_or_404(Collateral.objects.select_related("server"), pk=fields.pop("collateral"))
        loan = loan_apply(owner=owner_company_for_user(request.user), collateral=collateral, **fields)
        return Response(LoanSerializer(loan).data, status=status.HTTP_201_CREATED)
