"""Error pages: an API path's 404 is JSON in the API's one error shape, not an HTML page.

A path under ``/api/`` that no route matches (an id that is not a number, a
path with a typo) is answered the way the API's own 404s are, so a client
reads every error the same way.
"""

from django.http import JsonResponse
from django.views.defaults import page_not_found

API_PREFIX = "/api/"
NOT_FOUND = {"type": "client_error", "errors": [{"code": "not_found", "detail": "Not found.", "attr": None}]}


def not_found(request, exception):
    if request.path.startswith(API_PREFIX):
        return JsonResponse(NOT_FOUND, status=404)
    return page_not_found(request, exception)
