"""Owner onboarding: the least-privilege access InfraFi needs on an owner's cluster.

``PERMISSIONS`` is the one table of what the platform does on a cluster, as
(API group, resource, verbs): the ClusterRole of the onboarding manifest is
rendered from it, and ``KubernetesBackend.check()`` reviews every verb of it
with a SelfSubjectAccessReview when a cluster is connected or checked, so the
manifest and the check cannot drift apart. Adding a call to the backend that
needs a new verb means adding it here.

The manifest (``onboarding_manifest``) is what the owner applies with
``kubectl apply -f``: the ``infrafi-system`` namespace, the ``infrafi``
ServiceAccount, the ClusterRole and its ClusterRoleBinding (cluster-wide:
renter namespaces ``infrafi-renter-<id>`` are created by us, so namespaces and
what lives in them cannot be granted per namespace in advance), and a
long-lived token Secret (``kubernetes.io/service-account-token``) whose token
goes into the kubeconfig given to InfraFi (``KUBECONFIG_COMMANDS``).

This module is pure: no database, no Kubernetes client.
"""

from __future__ import annotations

import yaml

SYSTEM_NAMESPACE = "infrafi-system"
SERVICE_ACCOUNT = "infrafi"
CLUSTER_ROLE = "infrafi-scheduler"
TOKEN_SECRET = "infrafi-token"

# (API group, resource[/subresource], verbs): everything the platform does on a cluster.
PERMISSIONS: list[tuple[str, str, tuple[str, ...]]] = [
    ("", "namespaces", ("get", "create", "patch")),  # renter namespaces; patch = their Pod Security label
    ("", "nodes", ("get", "list", "watch")),
    ("batch", "jobs", ("create", "get", "list", "watch", "delete")),
    ("", "pods", ("get", "list", "watch")),
    ("", "pods/log", ("get",)),
    ("", "secrets", ("create", "get", "list", "delete", "patch")),  # list: the collector's orphan sweep
    ("", "services", ("create", "get", "list", "delete", "patch")),
    ("apps", "deployments", ("create", "get", "list", "watch", "patch", "delete")),
    ("", "persistentvolumeclaims", ("create", "get", "list")),
    ("", "services/proxy", ("get", "create")),  # the platform's proxy to sessions and endpoints
    ("authorization.k8s.io", "selfsubjectaccessreviews", ("create",)),
]

# Building the kubeconfig InfraFi is given from the token Secret (run by the owner, after the apply).
KUBECONFIG_COMMANDS = f"""\
kubectl apply -f infrafi-onboarding.yaml
SERVER=$(kubectl config view --minify -o jsonpath='{{.clusters[0].cluster.server}}')
CA=$(kubectl -n {SYSTEM_NAMESPACE} get secret {TOKEN_SECRET} -o jsonpath='{{.data.ca\\.crt}}')
TOKEN=$(kubectl -n {SYSTEM_NAMESPACE} get secret {TOKEN_SECRET} -o jsonpath='{{.data.token}}' | base64 -d)
cat > infrafi-kubeconfig.yaml <<EOF
apiVersion: v1
kind: Config
clusters:
- name: gpu-cluster
  cluster:
    server: $SERVER
    certificate-authority-data: $CA
users:
- name: {SERVICE_ACCOUNT}
  user:
    token: $TOKEN
contexts:
- name: infrafi
  context:
    cluster: gpu-cluster
    user: {SERVICE_ACCOUNT}
current-context: infrafi
EOF
"""

# What the cluster must run before it is connected (shown on the onboarding page).
PREREQUISITES = [
    (
        "NVIDIA GPU Operator (or the NVIDIA device plugin)",
        "Nodes advertise their GPUs as the extended resource nvidia.com/gpu in status.allocatable; "
        "jobs ask for it as limits and requests.",
    ),
    (
        "GPU Feature Discovery (part of the GPU Operator)",
        "Labels each node nvidia.com/gpu.product (e.g. NVIDIA-H100-80GB-HBM3); node sync compares it "
        "with the GPU model you declared.",
    ),
    (
        "The NVIDIA container runtime",
        "Set as the default runtime (or a RuntimeClass named nvidia made the default by the GPU Operator), "
        "so that a pod asking for nvidia.com/gpu sees its devices.",
    ),
    (
        "Node names",
        "Each GPU node's kubernetes.io/hostname label equals the hostname of the server you declared.",
    ),
]


def permission_label(group: str, resource: str) -> str:
    """``batch/jobs``, ``services`` (the core group has no prefix), ``pods/log``."""
    return f"{group}/{resource}" if group else resource


def cluster_role_rules() -> list[dict]:
    """The ClusterRole's rules: one per entry of ``PERMISSIONS``."""
    return [
        {"apiGroups": [group], "resources": [resource], "verbs": list(verbs)} for group, resource, verbs in PERMISSIONS
    ]


def onboarding_documents() -> list[dict]:
    """The manifest's objects, in the order ``kubectl apply`` creates them."""
    labels = {"app.kubernetes.io/name": "infrafi", "app.kubernetes.io/part-of": "infrafi"}
    return [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": SYSTEM_NAMESPACE, "labels": labels}},
        {
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": {"name": SERVICE_ACCOUNT, "namespace": SYSTEM_NAMESPACE, "labels": labels},
            "automountServiceAccountToken": False,
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRole",
            "metadata": {"name": CLUSTER_ROLE, "labels": labels},
            "rules": cluster_role_rules(),
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": {"name": CLUSTER_ROLE, "labels": labels},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": CLUSTER_ROLE},
            "subjects": [{"kind": "ServiceAccount", "name": SERVICE_ACCOUNT, "namespace": SYSTEM_NAMESPACE}],
        },
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "type": "kubernetes.io/service-account-token",
            "metadata": {
                "name": TOKEN_SECRET,
                "namespace": SYSTEM_NAMESPACE,
                "labels": labels,
                "annotations": {"kubernetes.io/service-account.name": SERVICE_ACCOUNT},
            },
        },
    ]


def onboarding_manifest() -> str:
    """The multi-document YAML the owner applies with ``kubectl apply -f``."""
    header = (
        "# InfraFi onboarding: least-privilege access for the InfraFi scheduler.\n"
        "# Apply with: kubectl apply -f infrafi-onboarding.yaml\n"
    )
    return header + yaml.safe_dump_all(onboarding_documents(), sort_keys=False, explicit_start=True)
