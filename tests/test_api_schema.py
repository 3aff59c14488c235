"""The OpenAPI schema and its viewers are served locally, with no CDN."""

import io
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from django.core.management import call_command
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


def test_the_schema_validates_with_no_warning():
    """``manage.py spectacular --validate --fail-on-warn``: the OpenAPI document is valid
    and drf-spectacular could type every field and response (a warning fails it)."""
    out, err = io.StringIO(), io.StringIO()
    call_command("spectacular", "--validate", "--fail-on-warn", "--file", os.devnull, stdout=out, stderr=err)
    assert "Warning" not in err.getvalue() and "Error" not in err.getvalue()


def test_the_schema_offers_json_bodies_and_tags_every_operation(client):
    schema = client.get(reverse("schema"), HTTP_ACCEPT="application/vnd.oai.openapi+json").json()
    operations = [op for item in schema["paths"].values() for op in item.values() if "operationId" in op]
    assert operations
    untagged = [op["operationId"] for op in operations if not op.get("tags")]
    assert untagged == []
    bodies = {(op["operationId"], media) for op in operations for media in op.get("requestBody", {}).get("content", {})}
    assert {media for _, media in bodies} <= {"application/json", "multipart/form-data"}
    assert {op for op, media in bodies if media == "multipart/form-data"} == {"inventory_servers_import_create"}
    errors = schema["paths"]["/api/v1/bookings/{public_id}/pay/"]["post"]["responses"]
    assert {"400", "401", "403", "404", "409", "429"} <= set(errors)
    assert errors["404"]["content"]["application/json"]["schema"]["$ref"].endswith("/ErrorResponse")


@pytest.mark.parametrize(
    "path", ["/api/v1/bookings/not-a-uuid/usage/", "/api/v1/no-such-area/", "/api/v1/vault/redemptions/x/cancel/"]
)
def test_an_api_path_no_route_matches_is_a_json_404_in_the_error_shape(client, path):
    response = client.get(path)
    assert response.status_code == 404 and response["Content-Type"] == "application/json"
    assert response.json() == {
        "type": "client_error",
        "errors": [{"code": "not_found", "detail": "Not found.", "attr": None}],
    }


def test_a_page_no_route_matches_is_still_the_html_404(client):
    response = client.get("/no-such-page/")
    assert response.status_code == 404 and "text/html" in response["Content-Type"]


IMPORT_EVERY_MODULE = """
import importlib, pkgutil, sys
import infra_fi_api_client
from infra_fi_api_client import api, models
names = [m.name for m in pkgutil.walk_packages(api.__path__, "infra_fi_api_client.api.")]
for name in names:
    importlib.import_module(name)
from infra_fi_api_client.api.bookings import bookings_pay_create
print(len(names), len(models.__all__), bookings_pay_create.sync_detailed.__annotations__["return"])
"""


def test_a_client_generated_from_the_schema_imports(tmp_path):
    """The finding: a client generated from the schema did not import. openapi-python-client
    generates one (warnings are errors), and every module of it imports."""
    schema_file = tmp_path / "schema.json"
    call_command("spectacular", "--format", "openapi-json", "--file", str(schema_file))
    bin_dir = Path(sys.executable).parent
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"}
    generated = subprocess.run(
        [str(bin_dir / "openapi-python-client"), "generate", "--path", str(schema_file), "--meta", "none"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert generated.returncode == 0, generated.stdout + generated.stderr
    assert "Warning" not in generated.stdout + generated.stderr, generated.stdout + generated.stderr
    imported = subprocess.run(
        [sys.executable, "-c", IMPORT_EVERY_MODULE], cwd=tmp_path, capture_output=True, text=True, timeout=300
    )
    assert imported.returncode == 0, imported.stderr
    modules, model_count, pay_returns = imported.stdout.split(maxsplit=2)
    assert int(modules) > 50 and int(model_count) > 50
    assert "Booking" in pay_returns and "ErrorResponse" in pay_returns  # typed success and error bodies
