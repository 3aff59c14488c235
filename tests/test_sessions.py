"""Interactive sessions over HTTP against the Kubernetes emulator: a Jupyter-template job gets its
HTTP Service, its SSH Service and its keys Secret; the address the cluster assigns is read on the
next tick and the job page shows the exact ssh command and the proxy link; bad input reaches no
cluster; deleting the job deletes what the session created."""

import base64
from datetime import timedelta

import pytest
import yaml

from marketplace.services import bookings
from scheduler.models import Cluster, ExposedPort, Job, SimJob
from scheduler.services import clusters, jobs
from tests.api_errors import field_errors
from tests.factories import make_listing, make_renter, next_hour
from tests.test_ssh_keys import ED25519

NODE_ADDRESS = "203.0.113.10"


@pytest.fixture(autouse=True)
def _fast_kube(settings):
    settings.SCHEDULER_KUBE_TIMEOUT_SECONDS = 2
    settings.SCHEDULER_KUBE_RETRIES = 2
    settings.SCHEDULER_ALLOWED_PRIVATE_HOSTS = ["127.0.0.1"]


@pytest.fixture
def cluster(owner, kube_cluster):
    """A cluster with user namespaces (Kubernetes 1.33): the session's user is root."""
    listing = make_listing(owner, gpu_count=2, price="2.00", hostname="gpu-a")
    kube_cluster.add_node("gpu-a", gpus=2)
    kube_cluster.set_node_addresses("gpu-a", external=NODE_ADDRESS)
    kube_cluster.set_server_version("v1.33.1")
    connected = clusters.cluster_connect(
        owner=owner.owner_membership.company, name="prod", kubeconfig=yaml.safe_dump(kube_cluster.kubeconfig)
    )
    return listing, connected


def _booking(renter, listing):
    start = next_hour(1)
    booking = bookings.booking_create(
        renter=renter, listing=listing, gpu_count=2, start=start, end=start + timedelta(hours=2)
    )
    return bookings.booking_pay(booking=booking, renter=renter)


def _submit(api, booking, body):
    return api.post(f"/api/v1/bookings/{booking.public_id}/jobs/", body, format="json")


def test_a_jupyter_session_from_launch_to_ssh_command_and_deletion(cluster, kube_cluster, renter, api_as, client_as):
    listing, _ = cluster
    assert Cluster.objects.get().nodes.get().external_address == NODE_ADDRESS  # from status.addresses
    booking = _booking(renter, listing)
    api = api_as(renter)
    assert api.post("/api/v1/ssh-keys/", {"public_key": ED25519}, format="json").status_code == 201
    created = _submit(api, booking, {"template": "jupyter", "name": "notebook", "gpu_count": 1})
    assert created.status_code == 201, created.content
    job = Job.objects.get()
    assert (job.name, job.image) == ("notebook", "quay.io/jupyter/pytorch-notebook:cuda12-latest")
    assert [(p.port, p.protocol, p.label) for p in job.ports.all()] == [
        (22, "ssh", "SSH"),
        (8888, "http", "JupyterLab"),
    ]

    assert jobs.jobs_tick(now=booking.start).get("launched") == 1
    job.refresh_from_db()
    ns, name, proxy = job.namespace, job.k8s_name, f"/proxy/{job.public_id}/8888/"
    pod = kube_cluster.stored("batch/v1/jobs", ns, name)["spec"]["template"]
    container = pod["spec"]["containers"][0]
    assert f"--ServerApp.base_url={proxy}" in container["args"]
    assert container["ports"] == [
        {"name": "http-8888", "containerPort": 8888, "protocol": "TCP"},
        {"name": "ssh", "containerPort": 22, "protocol": "TCP"},
    ]
    assert container["env"] == [
        {"name": "PUBLIC_KEY", "valueFrom": {"secretKeyRef": {"name": f"{name}-ssh", "key": "authorized_keys"}}}
    ]
    assert {"name": "ssh-keys", "mountPath": "/etc/infrafi/ssh", "readOnly": True} in container["volumeMounts"]
    # sshd binds port 22 with every capability dropped.
    assert pod["spec"]["securityContext"]["sysctls"] == [{"name": "net.ipv4.ip_unprivileged_port_start", "value": "0"}]
    owner_ref = {"kind": "Job", "name": name, "uid": job.k8s_uid}

    http = kube_cluster.stored("v1/services", ns, f"{name}-http")
    assert http["spec"]["type"] == "ClusterIP"
    assert http["spec"]["selector"] == {"infrafi.io/job": str(job.public_id)}
    assert [(p["port"], p["targetPort"]) for p in http["spec"]["ports"]] == [(8888, 8888)]
    assert owner_ref.items() <= http["metadata"]["ownerReferences"][0].items()
    ssh = kube_cluster.stored("v1/services", ns, f"{name}-ssh")
    assert ssh["spec"]["type"] == "NodePort" and [p["port"] for p in ssh["spec"]["ports"]] == [22]
    secret = kube_cluster.stored("v1/secrets", ns, f"{name}-ssh")
    assert base64.b64decode(secret["data"]["authorized_keys"]).decode() == ED25519 + "\n"
    assert owner_ref.items() <= secret["metadata"]["ownerReferences"][0].items()
    # The Services select the pod the Job controller makes from the template.
    kube_cluster.run_pod(ns, name, started_at=booking.start + timedelta(seconds=5))
    (made,) = kube_cluster.pods(ns, name)
    assert http["spec"]["selector"].items() <= made["metadata"]["labels"].items()
    assert ExposedPort.objects.get(job=job, port=8888).service_name == f"{name}-http"

    page = client_as(renter).get(f"/jobs/{job.public_id}/").content.decode()
    assert f'href="{proxy}"' in page and "Open JupyterLab" in page
    assert "Waiting for the cluster to assign an address" in page and "ssh -p" not in page

    # The API server allocates the nodePort; the next tick reads it.
    kube_cluster.assign_node_port(ns, f"{name}-ssh", 31022)
    jobs.jobs_tick(now=booking.start + timedelta(minutes=1))
    port = ExposedPort.objects.get(job=job, port=22)
    assert (port.service_name, port.external_host, port.external_port) == (f"{name}-ssh", NODE_ADDRESS, 31022)
    page = client_as(renter).get(f"/jobs/{job.public_id}/").content.decode()
    assert f"<code>ssh -p 31022 root@{NODE_ADDRESS}</code>" in page
    session = api.get(f"/api/v1/jobs/{job.public_id}/").json()["session"]
    assert session["ssh"]["command"] == f"ssh -p 31022 root@{NODE_ADDRESS}"
    assert session["http"] == [{"port": 8888, "label": "JupyterLab", "url": proxy}]

    # Nobody else sees it.
    stranger = make_renter()
    assert client_as(stranger).get(f"/jobs/{job.public_id}/").status_code == 404
    assert api_as(stranger).get(f"/api/v1/jobs/{job.public_id}/").status_code == 404

    # Stopping the job deletes its Services and keys Secret with it.
    jobs.job_cancel(job=job, renter=renter, now=booking.start + timedelta(minutes=2))
    assert kube_cluster.stored("batch/v1/jobs", ns, name) is None
    for resource, object_name in (("v1/services", f"{name}-http"), ("v1/services", f"{name}-ssh")):
        assert kube_cluster.stored(resource, ns, object_name) is None
    assert kube_cluster.stored("v1/secrets", ns, f"{name}-ssh") is None


def test_bad_ports_and_ssh_without_keys_are_400_and_reach_no_cluster(cluster, kube_cluster, renter, api_as):
    listing, _ = cluster
    booking = _booking(renter, listing)
    api = api_as(renter)
    posts = len(kube_cluster.requests("POST"))
    body = {"name": "nb", "image": "ghcr.io/acme/nb:1", "gpu_count": 1}
    out_of_range = _submit(api, booking, {**body, "ports": [{"port": 70000}, {"port": 8888}, {"port": 8888}]})
    assert out_of_range.status_code == 400
    assert field_errors(out_of_range)["ports"] == ["port 70000 is outside 1–65535", "port 8888 is already exposed"]
    too_many = _submit(api, booking, {**body, "ports": [{"port": 8000 + i} for i in range(9)]})
    assert field_errors(too_many)["ports"] == ["At most 8 HTTP ports."]
    no_keys = _submit(api, booking, {**body, "ssh": True})
    assert no_keys.status_code == 400 and "at least one public key" in field_errors(no_keys)["ssh"][0]
    bad_key = api.post("/api/v1/ssh-keys/", {"public_key": "ssh-ed25519 !!"}, format="json")
    assert field_errors(bad_key)["public_key"] == ["The key data is not valid base64."]
    unknown = _submit(api, booking, {"template": "tensorflow", "gpu_count": 1})
    assert "No template 'tensorflow'" in field_errors(unknown)["template"][0]
    # Booking started: a valid job would launch at once; these created nothing, here or on the cluster.
    jobs.jobs_tick(now=booking.start)
    assert not Job.objects.exists() and not ExposedPort.objects.exists()
    assert len(kube_cluster.requests("POST")) == posts


def test_the_new_job_page_prefills_a_template_and_submits_ports(cluster, renter, client_as):
    listing, _ = cluster
    booking = _booking(renter, listing)
    client = client_as(renter)
    url = f"/bookings/{booking.public_id}/jobs/new/"
    page = client.get(url + "?template=jupyter").content.decode()
    assert 'value="quay.io/jupyter/pytorch-notebook:cuda12-latest"' in page
    assert ">\n8888 JupyterLab</textarea>" in page and 'id="id_ssh" checked' in page
    assert f'href="/bookings/{booking.public_id}/endpoints/new/?template=vllm"' in page
    vllm = client.get(url + "?template=vllm")
    assert vllm.status_code == 302 and vllm["Location"] == f"/bookings/{booking.public_id}/endpoints/new/?template=vllm"

    form = {"name": "board", "image": "ghcr.io/acme/tb:2", "command": "tensorboard", "args": "--logdir /runs"}
    bad = client.post(url, {**form, "gpu_count": 1, "ports": "6006 TensorBoard\n6006 again"})
    assert bad.status_code == 400 and "port 6006 is already exposed" in bad.content.decode()
    done = client.post(url, {**form, "gpu_count": 1, "ports": "6006 TensorBoard"})
    assert done.status_code == 302
    job = Job.objects.get()
    assert job.args == ["--logdir", "/runs"]
    assert [(p.port, p.label) for p in job.ports.all()] == [(6006, "TensorBoard")]


def test_a_load_balancer_cluster_gives_ssh_its_ingress(cluster, kube_cluster, owner, renter, api_as, client_as):
    listing, connected = cluster
    owner_client = client_as(owner)
    assert owner_client.get(f"/owner/clusters/{connected.pk}/").status_code == 200
    saved = owner_client.post(f"/owner/clusters/{connected.pk}/ssh/", {"ssh_service_type": "LoadBalancer"})
    assert saved.status_code == 302
    assert client_as(make_renter()).post(f"/owner/clusters/{connected.pk}/ssh/", {}).status_code == 403
    booking = _booking(renter, listing)
    api = api_as(renter)
    api.post("/api/v1/ssh-keys/", {"public_key": ED25519}, format="json")
    assert (
        _submit(api, booking, {"name": "box", "image": "ghcr.io/acme/box:1", "gpu_count": 1, "ssh": True}).status_code
        == 201
    )
    jobs.jobs_tick(now=booking.start)
    job = Job.objects.get()
    service = kube_cluster.stored("v1/services", job.namespace, f"{job.k8s_name}-ssh")
    assert service["spec"]["type"] == "LoadBalancer"
    assert kube_cluster.stored("v1/services", job.namespace, f"{job.k8s_name}-http") is None  # no HTTP port asked
    kube_cluster.set_load_balancer_ingress(job.namespace, f"{job.k8s_name}-ssh", ip="198.51.100.7")
    jobs.jobs_tick(now=booking.start + timedelta(minutes=1))
    port = ExposedPort.objects.get(job=job)
    assert (port.external_host, port.external_port) == ("198.51.100.7", 22)
    assert (
        api.get(f"/api/v1/jobs/{job.public_id}/").json()["session"]["ssh"]["command"] == "ssh -p 22 root@198.51.100.7"
    )


def test_a_failover_recreates_the_session_for_the_new_attempt(owner, kube_cluster, renter, api_as):
    listing = make_listing(owner, gpu_count=2, price="2.00", hostname="gpu-a")
    make_listing(owner, gpu_count=2, price="2.00", hostname="gpu-b")
    for node, address in (("gpu-a", NODE_ADDRESS), ("gpu-b", "203.0.113.11")):
        kube_cluster.add_node(node, gpus=2)
        kube_cluster.set_node_addresses(node, external=address)
    clusters.cluster_connect(
        owner=owner.owner_membership.company, name="prod", kubeconfig=yaml.safe_dump(kube_cluster.kubeconfig)
    )
    booking = _booking(renter, listing)
    api = api_as(renter)
    api.post("/api/v1/ssh-keys/", {"public_key": ED25519}, format="json")
    body = {"template": "jupyter", "name": "nb", "gpu_count": 2}
    assert _submit(api, booking, body).status_code == 201
    jobs.jobs_tick(now=booking.start)
    job = Job.objects.get()
    first = job.k8s_name
    kube_cluster.run_pod(job.namespace, first, started_at=booking.start + timedelta(seconds=5))
    kube_cluster.assign_node_port(job.namespace, f"{first}-ssh", 31022)
    jobs.jobs_tick(now=booking.start + timedelta(minutes=1))
    assert ExposedPort.objects.get(job=job, port=22).external_port == 31022

    kube_cluster.evict_pod(job.namespace, first, at=booking.start + timedelta(minutes=5))
    assert jobs.jobs_tick(now=booking.start + timedelta(minutes=6)).get("failover") == 1
    job.refresh_from_db()
    second = job.k8s_name
    assert second != first and job.node_name == "gpu-b" and job.attempt == 2
    # The lost attempt's session is gone; the new one has its own, waiting for its address again.
    assert kube_cluster.stored("v1/services", job.namespace, f"{first}-http") is None
    assert kube_cluster.stored("v1/services", job.namespace, f"{first}-ssh") is None
    http = kube_cluster.stored("v1/services", job.namespace, f"{second}-http")
    assert http["metadata"]["ownerReferences"][0]["uid"] == job.k8s_uid
    assert kube_cluster.stored("v1/secrets", job.namespace, f"{second}-ssh") is not None
    ssh = ExposedPort.objects.get(job=job, port=22)
    assert (ssh.service_name, ssh.external_port) == (f"{second}-ssh", None)
    kube_cluster.assign_node_port(job.namespace, f"{second}-ssh", 30522)
    jobs.jobs_tick(now=booking.start + timedelta(minutes=7))
    ssh.refresh_from_db()
    assert (ssh.external_host, ssh.external_port) == ("203.0.113.11", 30522)


def test_on_the_simulated_cluster_the_page_says_there_is_no_ssh(owner, renter, api_as, client_as):
    listing = make_listing(owner, gpu_count=2, price="2.00", hostname="gpu-a")
    clusters.cluster_create_simulated(owner=owner.owner_membership.company, name="sim")
    booking = _booking(renter, listing)
    api = api_as(renter)
    api.post("/api/v1/ssh-keys/", {"public_key": ED25519}, format="json")
    assert _submit(api, booking, {"template": "jupyter", "gpu_count": 1}).status_code == 201
    jobs.jobs_tick(now=booking.start)
    job = Job.objects.get()
    assert SimJob.objects.get().spec["services"] == {
        "http": f"{job.k8s_name}-http",
        "http_ports": [8888],
        "ssh": f"{job.k8s_name}-ssh",
    }
    page = client_as(renter).get(f"/jobs/{job.public_id}/").content.decode()
    assert "The simulated cluster runs no containers" in page and "Waiting for the cluster" not in page
    assert f'href="/proxy/{job.public_id}/8888/"' in page
