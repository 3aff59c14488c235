"""Account API: who am I, my roles and profiles."""

from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.authtoken.views import ObtainAuthToken
from rest_framework.response import Response
from rest_framework.settings import api_settings
from rest_framework.views import APIView

from accounts.selectors import (
    lender_profile_for_user,
    owner_company_for_user,
    renter_profile_for_user,
    user_roles,
)


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


class TokenApi(ObtainAuthToken):
    """DRF's token endpoint with the project's parsers (its own list has the unbounded JSON parser)."""

    parser_classes = api_settings.DEFAULT_PARSER_CLASSES
