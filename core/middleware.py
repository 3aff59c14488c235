"""Project-wide response headers that no single view should have to remember."""

from collections.abc import Callable

from django.http import HttpRequest, HttpResponse


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
