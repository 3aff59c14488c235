"""API plumbing shared by every app: errors in one shape, the schema class that
documents them, and the integer ranges of the database's columns (the JSON
parser is in ``core.parsers``).

Every API error is ``{"type": ..., "errors": [{"code", "detail", "attr"}]}``
(drf-standardized-errors): ``type`` is ``validation_error`` (400 with field
messages), ``client_error`` (any other 4xx) or ``server_error``; ``attr`` is
the field a message is about, null when it is about the whole request.

Services raise Django's ``ValidationError``; the API turns it into HTTP 400
with field messages, the same messages the HTML forms show, and a
``ConflictError`` into 409.
"""

from django.core.exceptions import NON_FIELD_ERRORS, PermissionDenied
from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import models
from django.http import Http404
from drf_spectacular.utils import OpenApiResponse
from drf_standardized_errors.formatter import ExceptionFormatter as BaseExceptionFormatter
from drf_standardized_errors.handler import ExceptionHandler as BaseExceptionHandler
from drf_standardized_errors.openapi import AutoSchema as BaseAutoSchema
from rest_framework import exceptions, serializers, status
from rest_framework.authentication import SessionAuthentication
from rest_framework.permissions import AllowAny
from rest_framework.settings import api_settings

from core.errors import ConflictError


class Conflict(exceptions.APIException):
    status_code = status.HTTP_409_CONFLICT
    default_detail = "The request conflicts with the current state."
    default_code = "conflict"


def _django_error_details(exc: DjangoValidationError) -> dict | list:
    """A Django ``ValidationError`` as DRF error details, keeping each message's code."""

    def details(errors) -> list:
        return [exceptions.ErrorDetail(message, code=error.code or "invalid") for error in errors for message in error]

    if hasattr(exc, "error_dict"):
        return {field: details(errors) for field, errors in exc.error_dict.items()}
    return details(exc.error_list)


def form_validation_error(form) -> exceptions.ValidationError:
    """A bound, invalid Django form's errors as the API's 400 (field messages, their codes)."""
    return exceptions.ValidationError(
        {
            field: [exceptions.ErrorDetail(e["message"], code=e["code"] or "invalid") for e in errors]
            for field, errors in form.errors.get_json_data().items()
        }
    )


class ExceptionHandler(BaseExceptionHandler):
    """drf-standardized-errors' handler, knowing our services' exceptions
    (``REST_FRAMEWORK["EXCEPTION_HANDLER"]`` is the package's function, which runs this class)."""

    def convert_known_exceptions(self, exc: Exception) -> Exception:
        if isinstance(exc, DjangoValidationError):
            detail = _django_error_details(exc)
            return Conflict(detail=detail) if isinstance(exc, ConflictError) else exceptions.ValidationError(detail)
        if isinstance(exc, PermissionDenied):
            return exceptions.PermissionDenied(detail=str(exc) or None)
        if isinstance(exc, Http404):
            return exceptions.NotFound(detail=str(exc) or None)
        return super().convert_known_exceptions(exc)


# Both the serializers' and Django's key for "about the whole request": attr null.
_NON_FIELD_KEYS = frozenset({api_settings.NON_FIELD_ERRORS_KEY, NON_FIELD_ERRORS})


class ExceptionFormatter(BaseExceptionFormatter):
    def get_errors(self):
        errors = super().get_errors()
        for error in errors:
            if error.attr in _NON_FIELD_KEYS:
                error.attr = None
        return errors


# --- The one error schema ------------------------------------------------------------


class ErrorType(models.TextChoices):
    VALIDATION_ERROR = "validation_error"
    CLIENT_ERROR = "client_error"
    SERVER_ERROR = "server_error"


class ErrorSerializer(serializers.Serializer):
    code = serializers.CharField(help_text='Machine-readable, e.g. "required", "not_found", "conflict", "throttled".')
    detail = serializers.CharField(help_text="The message for a person.")
    attr = serializers.CharField(
        allow_null=True, help_text='The field the message is about ("a.0.b" when nested); null for the whole request.'
    )


class ErrorResponseSerializer(serializers.Serializer):
    """Every error the API returns, whatever its status code."""

    type = serializers.ChoiceField(choices=ErrorType.choices)
    errors = ErrorSerializer(many=True)


CONFLICT_RESPONSE = OpenApiResponse(
    ErrorResponseSerializer, description="The request was valid but lost to the current state."
)


class AutoSchema(BaseAutoSchema):
    """drf-standardized-errors' schema class: each operation lists the error
    responses it can give, all as ``ErrorResponse``
    (``DRF_STANDARDIZED_ERRORS["ERROR_SCHEMAS"]``); a 409 is declared where the
    operation can conflict (``CONFLICT_RESPONSE``)."""

    def _get_response_bodies(self, direction="response"):
        responses = super()._get_response_bodies(direction=direction)
        if direction == "response" and "409" not in responses and self._takes_idempotency_key():
            # core.idempotency: a key reused for another request, or still running, is a 409.
            responses["409"] = self._get_response_for_code(ErrorResponseSerializer, "409")
        return responses

    def _takes_idempotency_key(self) -> bool:
        return any(p["in"] == "header" and p["name"] == "Idempotency-Key" for p in self._get_parameters())

    def _should_add_http403_error_response(self) -> bool:
        # Session authentication refuses an unsafe request without a CSRF token
        # with 403, whatever the permission classes say.
        permissions = self.view.get_permissions()
        if len(permissions) == 1 and type(permissions[0]) is AllowAny and not self._csrf_can_refuse():
            return False
        return super()._should_add_http403_error_response() or self._csrf_can_refuse()

    def _csrf_can_refuse(self) -> bool:
        return self.method not in ("GET", "HEAD", "OPTIONS") and any(
            isinstance(a, SessionAuthentication) for a in self.view.get_authenticators()
        )


# PostgreSQL column ranges: a serializer field that feeds a column says its
# ``max_value``, so an out-of-range number is a 400 with a field message, not
# a DataError (500) from the database.
SMALLINT_MAX = 2**15 - 1
INTEGER_MAX = 2**31 - 1
BIGINT_MAX = 2**63 - 1


def digits(value: object, *, maximum: int = BIGINT_MAX) -> int | None:
    """``value`` as a non-negative integer if it is ASCII digits no greater than ``maximum``, else ``None``.

    For ids and numbers that come in as text (query parameters, metadata, headers):
    ``str.isdigit`` alone is true for "²" and "٣", which ``int`` refuses, and says
    nothing of the column's range.
    """
    if not isinstance(value, str) or not value or len(value) > 19 or not (value.isascii() and value.isdigit()):
        return None
    number = int(value)
    return number if number <= maximum else None
