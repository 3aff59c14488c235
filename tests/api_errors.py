"""Reading the API's error bodies in tests.

Every API error is ``{"type": ..., "errors": [{"code", "detail", "attr"}]}``
(drf-standardized-errors, see ``core.api``). These helpers turn a response's
body back into the plain shapes the tests assert on, checking the body has
exactly that shape on the way.
"""

NON_FIELD = "non_field_errors"
ERROR_TYPES = {"validation_error", "client_error", "server_error"}


def _errors(response) -> list[dict]:
    body = response.json()
    assert set(body) == {"type", "errors"}, body
    assert body["type"] in ERROR_TYPES, body
    assert body["errors"], body
    for error in body["errors"]:
        assert set(error) == {"code", "detail", "attr"}, error
    return body["errors"]


def error_list(response) -> list[tuple[str | None, str]]:
    """Each error as ``(attr, detail)``, in the order the body gives them."""
    return [(error["attr"], error["detail"]) for error in _errors(response)]


def field_errors(response) -> dict[str, list[str]]:
    """attr -> its messages, in order; an error about the whole request (attr null) is under ``"non_field_errors"``."""
    fields: dict[str, list[str]] = {}
    for attr, detail in error_list(response):
        fields.setdefault(NON_FIELD if attr is None else attr, []).append(detail)
    return fields


def error_detail(response) -> str:
    """The message of a response that carries one error about the whole request (the old ``{"detail": ...}``)."""
    ((attr, detail),) = error_list(response)
    assert attr is None, attr
    return detail
