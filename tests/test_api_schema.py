"""The OpenAPI schema and its viewers are served locally, with no CDN."""

import re

import pytest
from django.urls import reverse

pytestmark = pytest.mark.django_db


def test_schema_lists_the_inventory_api(client):
    response = client.get(reverse("schema"), HTTP_ACCEPT="application/vnd.oai.openapi+json")
    assert response.status_code == 200
    schema = response.json()
    assert schema["info"]["title"] == "InfraFi API"
    for path in (
        "/api/v1/inventory/servers/",
        "/api/v1/inventory/gpus/",
        "/api/v1/inventory/servers/import/",
        "/api/v1/inventory/gpu-models/",
        "/api/v1/me/",
    ):
        assert path in schema["paths"]
    assert {"tokenAuth", "cookieAuth"} <= set(schema["components"]["securitySchemes"])


@pytest.mark.parametrize("name", ["swagger-ui", "redoc"])
def test_viewers_load_their_assets_from_this_server(client, name):
    html = client.get(reverse(name)).content.decode()
    external = [
        u for u in re.findall(r"""(?:src|href)=["']([^"']+)""", html) if u.startswith(("http:", "https:", "//"))
    ]
    assert external == []
    assert "/static/drf_spectacular_sidecar/" in html
