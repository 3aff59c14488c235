"""Account API: who am I, my roles and profiles; API tokens (obtain, list, revoke)."""

from django.conf import settings
from django.http import Http404
from drf_spectacular.contrib.knox_auth_token import KnoxTokenScheme
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import serializers, status
from rest_framework.exceptions import Throttled
from rest_framework.permissions import AllowAny
from rest_framework.response import Response
from rest_framework.throttling import AnonRateThrottle, ScopedRateThrottle
from rest_framework.views import APIView

from accounts.models import ApiToken
from accounts.selectors import (
    lender_profile_for_user,
    owner_company_for_user,
    renter_profile_for_user,
    user_roles,
)
from accounts.services import LoginLocked, api_token_obtain, api_token_revoke
from core.api import ErrorResponseSerializer


class ApiTokenScheme(KnoxTokenScheme):
    """The schema's security scheme for our knox authentication: ``Authorization: Token <token>``."""

    target_class = "accounts.permissions.ApiTokenAuthentication"
    name = "tokenAuth"


class MeOutputSerializer(serializers.Serializer):
    email = serializers.EmailField()
    roles = serializers.ListField(child=serializers.CharField())
    company = serializers.CharField(allow_null=True)
    wallet_address = serializers.CharField(allow_null=True)
    billing_name = serializers.CharField(allow_null=True)


class MeApi(APIView):
    @extend_schema(responses=MeOutputSerializer, summary="The current user, their roles and profiles")
    def get(self, request):
        user = request.user
        company = owner_company_for_user(user)
        lender = lender_profile_for_user(user)
        renter = renter_profile_for_user(user)
        data = {
            "email": user.email,
            "roles": sorted(user_roles(user)),
            "company": company.name if company else None,
            "wallet_address": (lender.wallet_address or None) if lender else None,
            "billing_name": (renter.billing_name or None) if renter else None,
        }
        return Response(MeOutputSerializer(data).data)


class TokenInputSerializer(serializers.Serializer):
    username = serializers.EmailField(help_text="The account's e-mail address.")
    password = serializers.CharField(trim_whitespace=False, style={"input_type": "password"})
    code = serializers.CharField(
        required=False, allow_blank=True, max_length=16, help_text="A current TOTP code, when the account uses one."
    )
    name = serializers.CharField(
        required=False, allow_blank=True, max_length=100, help_text="Unique among your tokens; made up when blank."
    )
    scope = serializers.ChoiceField(
        choices=ApiToken.Scope.choices,
        default=ApiToken.Scope.READ,
        help_text="read: safe methods only; book: renter and lender actions; owner: inventory, listings, "
        "clusters, loans; admin: everything the account may do.",
    )
    expires_in_days = serializers.IntegerField(
        required=False,
        min_value=1,
        max_value=settings.API_TOKEN_TTL_DAYS,
        help_text=f"1 to {settings.API_TOKEN_TTL_DAYS}; {settings.API_TOKEN_TTL_DAYS} when left out.",
    )


class ApiTokenSerializer(serializers.ModelSerializer):
    prefix = serializers.CharField(source="token_key", help_text="The token's first characters.")

    class Meta:
        model = ApiToken
        fields = ["id", "name", "scope", "prefix", "created", "expiry", "last_used_at"]


class TokenOutputSerializer(ApiTokenSerializer):
    token = serializers.CharField(help_text="The token itself, shown this once: only a digest is stored.")

    class Meta(ApiTokenSerializer.Meta):
        fields = ["token", *ApiTokenSerializer.Meta.fields]


class TokenApi(APIView):
    """A new API token for an e-mail address, its password and (with TOTP on) a current code.

    It shares the login form's lockout (429 with Retry-After once an account is
    locked) and has its own, stricter throttle scope. Each call makes a new token
    (``read`` scope unless another is asked for).
    """

    authentication_classes = []
    permission_classes = [AllowAny]
    throttle_classes = [AnonRateThrottle, ScopedRateThrottle]
    throttle_scope = "token"

    @extend_schema(
        request=TokenInputSerializer,
        responses={
            200: TokenOutputSerializer,
            # allauth's lockout counts per client address; behind TRUSTED_PROXY_COUNT proxies a
            # request without their X-Forwarded-For has none, and is refused.
            403: OpenApiResponse(ErrorResponseSerializer, description="The client's address cannot be determined."),
        },
        summary="Obtain an API token",
        auth=[],
    )
    def post(self, request):
        serializer = TokenInputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        try:
            issued = api_token_obtain(
                request=request._request,
                email=data["username"],
                password=data["password"],
                code=data.get("code", ""),
                name=data.get("name", ""),
                scope=data["scope"],
                expires_in_days=data.get("expires_in_days"),
            )
        except LoginLocked as exc:
            raise Throttled(wait=exc.retry_after, detail=str(exc)) from exc
        return Response({"token": issued.key, **ApiTokenSerializer(issued.token).data})


class TokenListApi(APIView):
    """The caller's live API tokens, without their secrets."""

    @extend_schema(responses=ApiTokenSerializer(many=True), summary="List my API tokens")
    def get(self, request):
        return Response(ApiTokenSerializer(ApiToken.objects.live_for(request.user), many=True).data)


class TokenDetailApi(APIView):
    """Revoke one of the caller's API tokens; it stops working at once."""

    # Managing tokens with a token: only an admin token (a session is not scoped).
    token_scope = ApiToken.Scope.ADMIN

    @extend_schema(responses={204: None}, summary="Revoke an API token")
    def delete(self, request, pk: int):
        if not api_token_revoke(user=request.user, token_id=pk):
            raise Http404
        return Response(status=status.HTTP_204_NO_CONTENT)
