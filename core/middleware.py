"""Project-wide response headers that no single view should have to remember."""

from collections.abc import Callable

from django.http import HttpRequest, HttpResponse, HttpResponseBadRequest, JsonResponse


class NoStoreForSignedInMiddleware:
    """``Cache-Control: no-store`` on what a signed-in user (or an API caller) is shown.

    Such pages can hold secrets: the API token, TOTP secrets and recovery
    codes, sealed-at-rest data shown once. A browser or proxy must not keep
    them. A view that chose its own ``Cache-Control`` keeps it.
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)
        user = getattr(request, "user", None)
        signed_in = bool(user is not None and user.is_authenticated)
        api = request.path.startswith("/api/v1/") or "HTTP_AUTHORIZATION" in request.META
        if (signed_in or api) and not response.has_header("Cache-Control"):
            response["Cache-Control"] = "no-store, private"
        return response


class RejectNulBytesMiddleware:
    """A 400 for a request whose path or query string holds a NUL byte (``%00``).

    PostgreSQL text cannot hold NUL: a query parameter that reaches a lookup
    (``?payment_intent=pi_%00``) would raise ``DataError``, a 500. Forms and
    serializers already refuse NUL in bodies (``ProhibitNullCharactersValidator``);
    this closes the parameters that views read directly, for every view at once.
    The API answers in its error shape.
    """

    MESSAGE = "The request's address holds a NUL character."

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if _holds_nul(request):
            if request.path.startswith("/api/"):
                error = {"code": "invalid", "detail": self.MESSAGE, "attr": None}
                return JsonResponse({"type": "client_error", "errors": [error]}, status=400)
            return HttpResponseBadRequest(self.MESSAGE)
        return self.get_response(request)


def _holds_nul(request: HttpRequest) -> bool:
    if "\x00" in request.path:
        return True
    return any("\x00" in key or any("\x00" in value for value in values) for key, values in request.GET.lists())
