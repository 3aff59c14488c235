"""Outbound requests to owners' clusters (SSRF) and the security headers of our pages.

A kubeconfig names a URL an owner chose: it must not make us send the owner's
token to a loopback, private or link-local address (unless an operator
allowed that cluster), and an upstream's error body is never shown back.
Every page carries a Content-Security-Policy with no inline script, and what
a signed-in user sees is never stored by a cache.
"""

from datetime import timedelta

import pytest
import yaml
from django.core.exceptions import ValidationError
from django.urls import reverse

from marketplace.services import bookings
from scheduler.models import Cluster
from scheduler.services import clusters
from tests.factories import make_listing, next_hour

SECRET = "upstream-secret-marker-7f3a"


@pytest.fixture(autouse=True)
def _fast_kube(settings):
    settings.SCHEDULER_KUBE_TIMEOUT_SECONDS = 2
    settings.SCHEDULER_KUBE_RETRIES = 0
    settings.SCHEDULER_ALLOWED_PRIVATE_HOSTS = []  # production's default: nothing private allowed


def _pointed_at(kubeconfig: dict, server: str) -> str:
    kubeconfig["clusters"][0]["cluster"]["server"] = server
    return yaml.safe_dump(kubeconfig)


@pytest.mark.parametrize(
    ("host", "address"),
    [
        ("127.0.0.1", "127.0.0.1"),
        ("10.0.0.5", "10.0.0.5"),
        ("169.254.169.254", "169.254.169.254"),
        ("localhost", None),  # resolves to 127.0.0.1 and/or ::1
        ("[::1]", "::1"),
        ("[fd00::1]", "fd00::1"),
        ("0.0.0.0", "0.0.0.0"),
        ("224.0.0.1", "224.0.0.1"),
        ("[::ffff:127.0.0.1]", "127.0.0.1"),
    ],
)
def test_a_kubeconfig_on_a_private_address_is_refused_before_any_request(owner, kube_cluster, host, address):
    port = kube_cluster.url.rsplit(":", 1)[1]
    text = _pointed_at(kube_cluster.kubeconfig, f"http://{host}:{port}")

    with pytest.raises(ValidationError) as exc:
        clusters.cluster_connect(owner=owner.owner_membership.company, name="prod", kubeconfig=text)

    [message] = exc.value.message_dict["kubeconfig"]
    assert message.startswith("The cluster's API server resolves to a private address (")
    assert message.endswith("); an operator must allow it.")
    if address is not None:
        assert f"({address})" in message or host == "[::ffff:127.0.0.1]"
    assert kube_cluster.requests() == []  # the token went nowhere
    assert not Cluster.objects.exists()


def test_the_exact_field_error_names_the_address(owner, kube_cluster):
    with pytest.raises(ValidationError) as exc:
        clusters.cluster_connect(
            owner=owner.owner_membership.company,
            name="prod",
            kubeconfig=_pointed_at(kube_cluster.kubeconfig, "https://10.0.0.5:6443"),
        )
    assert exc.value.message_dict == {
        "kubeconfig": ["The cluster's API server resolves to a private address (10.0.0.5); an operator must allow it."]
    }


def test_an_operator_allowed_cluster_is_driven_and_others_are_refused_at_each_use(owner, kube_cluster, settings):
    kube_cluster.add_node("gpu-a", gpus=2, product="NVIDIA-H100-80GB-HBM3")
    settings.SCHEDULER_ALLOWED_PRIVATE_HOSTS = ["127.0.0.1"]  # so the emulator can be registered
    cluster = clusters.cluster_connect(
        owner=owner.owner_membership.company, name="prod", kubeconfig=yaml.safe_dump(kube_cluster.kubeconfig)
    )
    settings.SCHEDULER_ALLOWED_PRIVATE_HOSTS = []
    before = len(kube_cluster.requests())

    # Not allowed by an operator: the next use resolves again and refuses, sending nothing.
    clusters.cluster_sync(cluster=cluster)
    cluster.refresh_from_db()
    assert cluster.health == Cluster.Health.UNHEALTHY
    assert cluster.health_message == (
        "The cluster's API server resolves to a private address (127.0.0.1); an operator must allow it."
    )
    assert len(kube_cluster.requests()) == before

    # An operator allows it (the admin's field): it is driven again.
    Cluster.objects.filter(pk=cluster.pk).update(private_network_allowed=True)
    cluster.refresh_from_db()
    nodes = clusters.cluster_sync(cluster=cluster)
    cluster.refresh_from_db()
    assert cluster.health == Cluster.Health.HEALTHY and [n.name for n in nodes] == ["gpu-a"]
    assert kube_cluster.requests("GET", "/api/v1/nodes")


def test_the_operator_flag_is_editable_in_the_admin_only(operator, client_as, owner, kube_cluster, settings):
    from scheduler.api import ClusterSerializer

    settings.SCHEDULER_ALLOWED_PRIVATE_HOSTS = ["127.0.0.1"]
    cluster = clusters.cluster_connect(
        owner=owner.owner_membership.company, name="prod", kubeconfig=yaml.safe_dump(kube_cluster.kubeconfig)
    )
    assert "private_network_allowed" not in ClusterSerializer.Meta.fields
    page = client_as(operator).get(reverse("admin:scheduler_cluster_change", args=[cluster.pk]))
    assert page.status_code == 200 and 'name="private_network_allowed"' in page.content.decode()


def test_an_upstream_error_body_is_not_reflected(owner, kube_cluster, settings):
    settings.SCHEDULER_ALLOWED_PRIVATE_HOSTS = ["127.0.0.1"]
    kube_cluster.fail(5, 500, method="GET", path="/version/", message=SECRET)

    with pytest.raises(ValidationError) as exc:
        clusters.cluster_connect(
            owner=owner.owner_membership.company, name="prod", kubeconfig=yaml.safe_dump(kube_cluster.kubeconfig)
        )

    [message] = exc.value.message_dict["kubeconfig"]
    assert SECRET not in message
    assert message.endswith("Could not read the server version: HTTP 500 Internal Server Error (after 4 attempts)")


def test_an_upstream_error_body_is_not_reflected_in_the_cluster_health(owner, kube_cluster, settings, api_as):
    settings.SCHEDULER_ALLOWED_PRIVATE_HOSTS = ["127.0.0.1"]
    cluster = clusters.cluster_connect(
        owner=owner.owner_membership.company, name="prod", kubeconfig=yaml.safe_dump(kube_cluster.kubeconfig)
    )
    kube_cluster.fail(5, 503, method="GET", path="/api/v1/nodes", message=SECRET)

    clusters.cluster_sync(cluster=cluster)

    cluster.refresh_from_db()
    assert cluster.health_message == "Could not list nodes: HTTP 503 Service Unavailable (after 1 attempts)"


# -- headers --


def _csp(response) -> dict[str, list[str]]:
    policy = response["Content-Security-Policy"]
    return {part.split()[0]: part.split()[1:] for part in (p.strip() for p in policy.split(";")) if part}


def _assert_strict(response) -> None:
    policy = _csp(response)
    assert policy["default-src"] == ["'self'"]
    assert policy["script-src"] == ["'self'"]
    assert policy["style-src"] == ["'self'"]
    assert policy["img-src"] == ["'self'", "data:"]
    assert policy["object-src"] == ["'none'"]


def test_public_pages_carry_a_strict_csp(client, db):
    for url in (reverse("home"), reverse("account_login")):
        response = client.get(url)
        assert response.status_code == 200, url
        _assert_strict(response)


def test_signed_in_pages_carry_a_strict_csp_and_are_not_stored(owner, renter, lender, client_as):
    listing = make_listing(owner, gpu_count=1)
    start = next_hour(2)
    booking = bookings.booking_create(
        renter=renter, listing=listing, gpu_count=1, start=start, end=start + timedelta(hours=1)
    )
    pages = [
        (renter, reverse("marketplace:checkout", args=[booking.public_id])),
        (lender, reverse("financing:vault")),
        (renter, reverse("accounts:api_token")),
    ]
    for user, url in pages:
        response = client_as(user).get(url)
        assert response.status_code == 200, url
        _assert_strict(response)
        assert response["Cache-Control"] == "no-store, private", url


def test_the_api_answers_are_not_stored(renter, api_as):
    response = api_as(renter).get(reverse("api:wallet"))
    assert response.status_code == 200
    assert response["Cache-Control"] == "no-store, private"
