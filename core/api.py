"""API plumbing shared by every app: errors in one shape, and the integer
ranges of the database's columns (the JSON parser is in ``core.parsers``).

Services raise Django's ``ValidationError``; the API turns it into HTTP 400
with field messages, the same messages the HTML forms show.
"""

from django.core.exceptions import PermissionDenied
from django.core.exceptions import ValidationError as DjangoValidationError
from rest_framework import exceptions, status
from rest_framework.views import exception_handler as drf_exception_handler

from core.errors import ConflictError


class Conflict(exceptions.APIException):
    status_code = status.HTTP_409_CONFLICT
    default_detail = "The request conflicts with the current state."
    default_code = "conflict"


def exception_handler(exc, context):
    if isinstance(exc, DjangoValidationError):
        if hasattr(exc, "error_dict"):
            detail = {field: [str(m) for m in msgs] for field, msgs in exc.message_dict.items()}
        else:
            detail = {"non_field_errors": exc.messages}
        exc = Conflict(detail=detail) if isinstance(exc, ConflictError) else exceptions.ValidationError(detail=detail)
    elif isinstance(exc, PermissionDenied):
        exc = exceptions.PermissionDenied(detail=str(exc) or None)
    return drf_exception_handler(exc, context)


# PostgreSQL column ranges: a serializer field that feeds a column says its
# ``max_value``, so an out-of-range number is a 400 with a field message, not
# a DataError (500) from the database.
SMALLINT_MAX = 2**15 - 1
INTEGER_MAX = 2**31 - 1
BIGINT_MAX = 2**63 - 1
