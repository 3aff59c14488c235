"""Owner onboarding (issue 15): the least-privilege manifest, rendered from the one table of
permissions, and the connect-time review of every permission in it, against the emulator."""

import pytest
import yaml
from django.core.exceptions import ValidationError
from django.urls import reverse

from scheduler import onboarding
from scheduler.backends.kubernetes import PermissionsMissing
from scheduler.models import Cluster
from scheduler.services import clusters


@pytest.fixture(autouse=True)
def _fast_kube(settings):
    settings.SCHEDULER_KUBE_TIMEOUT_SECONDS = 2
    settings.SCHEDULER_KUBE_RETRIES = 2
    settings.SCHEDULER_ALLOWED_PRIVATE_HOSTS = ["127.0.0.1"]


def test_the_manifest_is_multi_document_yaml_with_every_permission_in_its_cluster_role():
    documents = list(yaml.safe_load_all(onboarding.onboarding_manifest()))

    assert [d["kind"] for d in documents] == [
        "Namespace",
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
        "Secret",
    ]
    namespace, account, role, binding, token = documents
    assert namespace["metadata"]["name"] == account["metadata"]["namespace"] == "infrafi-system"
    rules = {(r["apiGroups"][0], r["resources"][0]): set(r["verbs"]) for r in role["rules"]}
    assert rules == {(group, resource): set(verbs) for group, resource, verbs in onboarding.PERMISSIONS}
    assert len(role["rules"]) == len(onboarding.PERMISSIONS)
    assert rules[("batch", "jobs")] == {"create", "get", "list", "watch", "delete"}
    assert rules[("", "services/proxy")] == {"get", "create"}
    assert "*" not in {verb for verbs in rules.values() for verb in verbs}  # least privilege: no wildcard
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "infrafi", "namespace": "infrafi-system"}]
    assert token["type"] == "kubernetes.io/service-account-token"
    assert token["metadata"]["annotations"] == {"kubernetes.io/service-account.name": "infrafi"}


def test_connect_reviews_every_permission_and_names_each_one_missing(owner, kube_cluster):
    kube_cluster.add_node("gpu-a", gpus=2)
    kube_cluster.deny("create", "batch", "jobs")
    kube_cluster.deny("delete", "", "services")
    before = kube_cluster.requests(method="POST")

    with pytest.raises(ValidationError) as exc:
        clusters.cluster_connect(
            owner=owner.owner_membership.company, name="prod", kubeconfig=yaml.safe_dump(kube_cluster.kubeconfig)
        )

    [message] = exc.value.message_dict["kubeconfig"]
    assert "These credentials may not: create batch/jobs, delete services." in message
    assert "/owner/clusters/onboarding/" in message
    assert not Cluster.objects.exists()
    posts = kube_cluster.requests(method="POST")[len(before) :]
    reviews = [line for line in posts if line.endswith("/selfsubjectaccessreviews")]
    assert len(reviews) == sum(len(verbs) for _, _, verbs in onboarding.PERMISSIONS)  # one per verb × resource
    assert posts == reviews  # nothing created on the cluster


def test_the_review_asks_for_subresources_as_such(kube_cluster, kube_backend):
    kube_cluster.deny("get", "", "pods")  # the emulator denies by resource, subresources with it
    with pytest.raises(PermissionsMissing) as exc:
        kube_backend.check()
    assert exc.value.missing == ["get pods", "get pods/log"]
    reviews = [
        obj["spec"]["resourceAttributes"]
        for (resource, _, _), obj in kube_cluster.in_loop(lambda: list(kube_cluster.emulator.objects.items()))
        if resource.plural == "selfsubjectaccessreviews"
    ]
    assert {"verb": "get", "group": "", "resource": "pods", "subresource": "log"} in reviews


def test_the_onboarding_page_and_download_are_for_owners(owner, renter, client_as):
    page = client_as(owner).get(reverse("scheduler_scale:owner_onboarding"))
    assert page.status_code == 200
    body = page.content.decode()
    assert "kubectl apply -f infrafi-onboarding.yaml" in body
    assert "nvidia.com/gpu.product" in body and "GPU Operator" in body
    assert "kind: ClusterRole" in body and "services/proxy" in body

    download = client_as(owner).get(reverse("scheduler_scale:owner_onboarding_manifest"))
    assert download.status_code == 200 and download["Content-Type"].startswith("application/yaml")
    assert "infrafi-onboarding.yaml" in download["Content-Disposition"]
    assert download.content.decode() == onboarding.onboarding_manifest()

    clusters_page = client_as(owner).get(reverse("scheduler:owner_clusters"))
    assert reverse("scheduler_scale:owner_onboarding") in clusters_page.content.decode()

    assert client_as(renter).get(reverse("scheduler_scale:owner_onboarding")).status_code == 403
    assert client_as(renter).get(reverse("scheduler_scale:owner_onboarding_manifest")).status_code == 403
    anonymous = client_as(None).get(reverse("scheduler_scale:owner_onboarding"))
    assert anonymous.status_code == 302 and "login" in anonymous["Location"]
