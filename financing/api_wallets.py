"""API for users' own wallets: link one with Sign-In with Ethereum, unlink it, the vault calls
to sign with it, and the transactions it sent (pending until the chain watcher credits them).

The same services as the pages (``financing.services.wallet_links``). Every POST is
``Idempotent`` under the ``book`` token scope; a service's ``ValidationError`` is 400 with
field messages. The SIWE domain is the request's host, as on the page.
"""

from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.permissions import IsAuthenticated
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.permissions import IsLender
from accounts.reauth import reauth_check
from core.api import BIGINT_MAX
from core.idempotency import IDEMPOTENCY_KEY_PARAMETER, Idempotent
from financing.models import WalletOperation
from financing.selectors import vault as vault_selectors
from financing.selectors.wallet_links import linked_wallet, own_wallet_position, wallet_operation, wallet_operations
from financing.services import wallet_links

# The kinds of call a linked wallet signs (a subset of WalletOperation.Kind).
CALL_KINDS = [(kind.value, kind.label) for kind in wallet_links.SUBMITTABLE]


class NonceRequestSerializer(serializers.Serializer):
    address = serializers.CharField(max_length=42, help_text="The address to link (0x + 40 hex digits).")


class NonceSerializer(serializers.Serializer):
    address = serializers.CharField(help_text="EIP-55.")
    nonce = serializers.CharField()
    message = serializers.CharField(help_text="The EIP-4361 message to sign with personal_sign, unchanged.")
    expires_at = serializers.DateTimeField()


class LinkRequestSerializer(serializers.Serializer):
    message = serializers.CharField(max_length=2000, trim_whitespace=False)
    signature = serializers.CharField(max_length=200, help_text="65 bytes, 0x-hex (personal_sign).")


class LinkedWalletSerializer(serializers.Serializer):
    address = serializers.CharField()
    chain_id = serializers.IntegerField(read_only=True)
    linked_at = serializers.DateTimeField()


class UnlinkSerializer(serializers.Serializer):
    reauth = serializers.CharField(
        required=False,
        allow_blank=True,
        default="",
        trim_whitespace=False,
        max_length=128,
        help_text="Your password again or, with TOTP on, a current code.",
    )


class OperationSerializer(serializers.Serializer):
    id = serializers.IntegerField(read_only=True)
    kind = serializers.ChoiceField(choices=WalletOperation.Kind.choices)
    status = serializers.ChoiceField(choices=WalletOperation.Status.choices, help_text="confirmed = credited.")
    address = serializers.CharField()
    tx_hash = serializers.CharField()
    amount = serializers.DecimalField(max_digits=20, decimal_places=6, allow_null=True)
    shares = serializers.DecimalField(max_digits=40, decimal_places=18, allow_null=True)
    request_id = serializers.IntegerField(read_only=True, allow_null=True)
    shares_left = serializers.DecimalField(max_digits=40, decimal_places=18, allow_null=True)
    paid = serializers.DecimalField(max_digits=20, decimal_places=6)
    failure_message = serializers.CharField(allow_blank=True)
    created_at = serializers.DateTimeField()
    confirmed_at = serializers.DateTimeField(allow_null=True)


def _money(**kwargs):
    return serializers.DecimalField(max_digits=20, decimal_places=6, allow_null=True, **kwargs)


def _shares(**kwargs):
    return serializers.DecimalField(max_digits=40, decimal_places=18, allow_null=True, **kwargs)


class OwnPositionSerializer(serializers.Serializer):
    address = serializers.CharField()
    usdai = _money(help_text="USDai at the linked address; null when the chain cannot be read.")
    shares = _shares(help_text="sUSDai at the linked address.")
    value = _money()
    queued = _shares(help_text="The linked address's shares waiting in the redemption queue.")
    queued_value = _money()
    deposited = _money(help_text="Credited deposits from the linked address.")
    redeemed = _money(help_text="USDai the queue paid to it.")
    pending = serializers.IntegerField(read_only=True, help_text="Operations not yet credited or failed.")
    total_shares = _shares(help_text="Custodial and linked, queued included.")
    total_value = _money()
    total_pnl = _money(help_text="Custodial and linked: value + redeemed - deposited.")
    error = serializers.CharField(allow_blank=True)


class OwnWalletSerializer(serializers.Serializer):
    linked = LinkedWalletSerializer(allow_null=True)
    position = OwnPositionSerializer(allow_null=True, help_text="Null without a linked wallet.")
    operations = OperationSerializer(many=True)


class CallsRequestSerializer(serializers.Serializer):
    kind = serializers.ChoiceField(choices=CALL_KINDS)
    amount = serializers.DecimalField(max_digits=20, decimal_places=6, required=False, allow_null=True, default=None)
    shares = serializers.DecimalField(max_digits=40, decimal_places=18, required=False, allow_null=True, default=None)
    request_id = serializers.IntegerField(
        max_value=BIGINT_MAX, min_value=0, required=False, allow_null=True, default=None
    )


class TxSerializer(serializers.Serializer):
    label = serializers.CharField()
    sender = serializers.CharField(help_text="from")
    to = serializers.CharField()
    data = serializers.CharField()
    value = serializers.CharField()
    chain_id = serializers.IntegerField(read_only=True)


class SubmitSerializer(CallsRequestSerializer):
    tx_hash = serializers.CharField(max_length=66)


@extend_schema(tags=["wallet"])
class OwnWalletApi(Idempotent, APIView):
    """GET: the linked wallet (null without one), its position in the vault beside the
    custodial one, and its operations. POST: link the address
    that signed a message from ``nonce`` (201); 400 on the field at fault for an expired or
    used nonce, another domain or chain, a changed message, a signature from another address,
    an address already linked or one of InfraFi's."""

    idempotent_atomic = True
    permission_classes = [IsAuthenticated]
    token_scope = "book"

    @extend_schema(responses=OwnWalletSerializer)
    def get(self, request):
        user = request.user
        position = vault_selectors.vault_position(user=user)
        pnl = vault_selectors.lender_pnl(user=user, position=position)
        data = {
            "linked": linked_wallet(user=user),
            "position": own_wallet_position(user=user, position=position, pnl=pnl),
            "operations": wallet_operations(user=user),
        }
        return Response(OwnWalletSerializer(data).data)

    @extend_schema(
        request=LinkRequestSerializer, responses={201: LinkedWalletSerializer}, parameters=[IDEMPOTENCY_KEY_PARAMETER]
    )
    def post(self, request):
        data = LinkRequestSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        link = wallet_links.wallet_link(user=request.user, domain=request.get_host(), **data.validated_data)
        return Response(LinkedWalletSerializer(link).data, status=status.HTTP_201_CREATED)


@extend_schema(tags=["wallet"])
class OwnWalletNonceApi(Idempotent, APIView):
    """A fresh EIP-4361 message for an address (single use, expiring)."""

    idempotent_atomic = True
    permission_classes = [IsAuthenticated]
    token_scope = "book"

    @extend_schema(
        request=NonceRequestSerializer, responses={201: NonceSerializer}, parameters=[IDEMPOTENCY_KEY_PARAMETER]
    )
    def post(self, request):
        data = NonceRequestSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        issued = wallet_links.siwe_nonce_issue(
            user=request.user,
            address=data.validated_data["address"],
            domain=request.get_host(),
            uri=request.build_absolute_uri("/"),
        )
        return Response(NonceSerializer(issued).data, status=status.HTTP_201_CREATED)


@extend_schema(tags=["wallet"])
class OwnWalletUnlinkApi(Idempotent, APIView):
    """End the link; needs the password (or, with TOTP on, a current code) in ``reauth``."""

    idempotent_atomic = True
    permission_classes = [IsAuthenticated]
    token_scope = "book"

    @extend_schema(
        request=UnlinkSerializer, responses={200: LinkedWalletSerializer}, parameters=[IDEMPOTENCY_KEY_PARAMETER]
    )
    def post(self, request):
        data = UnlinkSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        reauth_check(request=request._request, user=request.user, secret=data.validated_data["reauth"])
        return Response(LinkedWalletSerializer(wallet_links.wallet_unlink(user=request.user)).data)


@extend_schema(tags=["vault"])
class OwnWalletCallsApi(Idempotent, APIView):
    """The unsigned transactions for the linked wallet to sign (deposit: approve when needed,
    then deposit to itself; redeem; cancel a queued request). Checked against the chain first."""

    permission_classes = [IsLender]
    token_scope = "book"

    @extend_schema(
        request=CallsRequestSerializer, responses={200: TxSerializer(many=True)}, parameters=[IDEMPOTENCY_KEY_PARAMETER]
    )
    def post(self, request):
        data = CallsRequestSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        d = data.validated_data
        calls = wallet_links.wallet_calls(
            user=request.user, kind=d["kind"], amount=d["amount"], shares_amount=d["shares"], request_id=d["request_id"]
        )
        return Response(TxSerializer(calls, many=True).data)


@extend_schema(tags=["vault"])
class OwnWalletOperationsApi(Idempotent, APIView):
    """Report a transaction the linked wallet sent: pending (201) until the chain watcher
    credits it, or fails it when it reverted. The same hash again is the same row."""

    permission_classes = [IsLender]
    token_scope = "book"

    @extend_schema(
        request=SubmitSerializer, responses={201: OperationSerializer}, parameters=[IDEMPOTENCY_KEY_PARAMETER]
    )
    def post(self, request):
        data = SubmitSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        d = data.validated_data
        op = wallet_links.wallet_operation_submit(
            user=request.user,
            kind=d["kind"],
            tx_hash=d["tx_hash"],
            amount=d["amount"],
            shares_amount=d["shares"],
            request_id=d["request_id"],
        )
        return Response(
            OperationSerializer(wallet_operation(user=request.user, pk=op.pk)).data, status=status.HTTP_201_CREATED
        )
