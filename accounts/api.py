"""Account API: who am I, my roles and profiles; the API token."""

from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.exceptions import Throttled
from rest_framework.permissions import AllowAny
from rest_framework.response import Response
from rest_framework.throttling import AnonRateThrottle, ScopedRateThrottle
from rest_framework.views import APIView

from accounts.selectors import (
    lender_profile_for_user,
    owner_company_for_user,
    renter_profile_for_user,
    user_roles,
)
from accounts.services import LoginLocked, api_token_obtain


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


class TokenOutputSerializer(serializers.Serializer):
    token = serializers.CharField()


class TokenApi(APIView):
    """The API token for an e-mail address, its password and (with TOTP on) a current code.

    It shares the login form's lockout (429 with Retry-After once an account is
    locked) and has its own, stricter throttle scope.
    """

    authentication_classes = []
    permission_classes = [AllowAny]
    throttle_classes = [AnonRateThrottle, ScopedRateThrottle]
    throttle_scope = "token"

    @extend_schema(
        request=TokenInputSerializer, responses=TokenOutputSerializer, summary="Obtain the API token", auth=[]
    )
    def post(self, request):
        serializer = TokenInputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        try:
            token = api_token_obtain(
                request=request._request,
                email=serializer.validated_data["username"],
                password=serializer.validated_data["password"],
                code=serializer.validated_data.get("code", ""),
            )
        except LoginLocked as exc:
            raise Throttled(wait=exc.retry_after, detail=str(exc)) from exc
        return Response(TokenOutputSerializer({"token": token.key}).data)
