"""``KubernetesBackend`` over real HTTP against kmock's Kubernetes API emulator.

The official client talks to the emulator (``tests/kube_emulator.py``) on
127.0.0.1; the test plays the Job controller, the kubelet and the node
lifecycle through the same API. Nothing of ours is mocked.
"""

from datetime import UTC, datetime, timedelta

import pytest

from scheduler.backends.base import (
    LABEL_BOOKING,
    LABEL_JOB,
    BackendError,
    BackendForbidden,
    JobRef,
    JobSpec,
    JobState,
    NodeInfo,
    Phase,
)
from scheduler.backends.kubernetes import KubeconfigInvalid, KubernetesBackend
from scheduler.onboarding import PERMISSIONS

T0 = datetime(2026, 3, 2, 9, 30, 0, tzinfo=UTC)
T1 = T0 + timedelta(hours=2, minutes=15)
NS = "booking-41"
NAME = "job-77"
JOBS_PATH = f"/apis/batch/v1/namespaces/{NS}/jobs"


def make_spec(**overrides) -> JobSpec:
    values = {
        "name": NAME,
        "namespace": NS,
        "node": "gpu-node-1",
        "image": "ghcr.io/acme/train:1.4",
        "command": ["python", "-m", "train"],
        "args": ["--epochs", "3"],
        "env": {"WANDB_MODE": "offline", "BATCH": "64"},
        "gpu_count": 4,
        "active_deadline_seconds": 7200,
        "labels": {LABEL_BOOKING: "41", LABEL_JOB: "77"},
        "ttl_seconds_after_finished": 900,
    }
    return JobSpec(**{**values, **overrides})


@pytest.fixture
def job(kube_cluster, kube_backend):
    """A created Job, pinned to gpu-node-1 (which exists and is Ready)."""
    kube_cluster.add_node("gpu-node-1", gpus=8)
    kube_backend.ensure_namespace(NS)
    return kube_backend.create_job(make_spec())


# -- create_job: the manifest --


def test_created_job_is_pinned_gpu_limited_deadlined_and_unprivileged(kube_cluster, kube_backend):
    state = kube_backend.create_job(make_spec())

    stored = kube_cluster.stored("batch/v1/jobs", NS, NAME)
    labels = {LABEL_BOOKING: "41", LABEL_JOB: "77", "app.kubernetes.io/managed-by": "infrafi"}
    assert state == JobState(uid=stored["metadata"]["uid"], phase=Phase.PENDING, node="gpu-node-1")
    assert stored["metadata"]["name"] == NAME
    assert stored["metadata"]["namespace"] == NS
    assert stored["metadata"]["labels"] == labels
    job_spec = stored["spec"]
    assert job_spec["backoffLimit"] == 0
    assert job_spec["activeDeadlineSeconds"] == 7200
    assert job_spec["ttlSecondsAfterFinished"] == 900
    assert job_spec["template"]["metadata"]["labels"] == labels
    pod = job_spec["template"]["spec"]
    assert pod["restartPolicy"] == "Never"
    assert pod["nodeSelector"] == {"kubernetes.io/hostname": "gpu-node-1"}
    assert pod["tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    assert pod["automountServiceAccountToken"] is False
    # No user namespaces on this (v1.29) cluster: the configured user, never root.
    assert pod["securityContext"] == {
        "runAsNonRoot": True,
        "runAsUser": 1000,
        "runAsGroup": 1000,
        "fsGroup": 1000,
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    assert "hostUsers" not in pod
    assert pod["hostNetwork"] is False
    assert pod["hostPID"] is False
    assert pod["hostIPC"] is False
    assert "volumes" not in pod
    [container] = pod["containers"]
    assert container["name"] == "main"
    assert container["image"] == "ghcr.io/acme/train:1.4"
    assert container["command"] == ["python", "-m", "train"]
    assert container["args"] == ["--epochs", "3"]
    assert "env" not in container  # the values are in the job's Secret
    assert container["envFrom"] == [{"secretRef": {"name": "job-77-env"}}]
    assert container["resources"] == {"limits": {"nvidia.com/gpu": "4"}, "requests": {"nvidia.com/gpu": "4"}}
    assert container["securityContext"] == {
        "allowPrivilegeEscalation": False,
        "privileged": False,
        "runAsNonRoot": True,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    assert "volumeMounts" not in container  # no memory share given, so no /dev/shm either


def test_managed_by_label_cannot_be_overridden_by_the_spec(kube_cluster, kube_backend):
    kube_backend.create_job(make_spec(labels={"app.kubernetes.io/managed-by": "someone-else"}))

    stored = kube_cluster.stored("batch/v1/jobs", NS, NAME)
    assert stored["metadata"]["labels"] == {"app.kubernetes.io/managed-by": "infrafi"}


def test_creating_an_existing_job_returns_its_state(kube_cluster, kube_backend, job):
    kube_cluster.run_pod(NS, NAME, started_at=T0)

    again = kube_backend.create_job(make_spec())

    assert again == JobState(uid=job.uid, phase=Phase.RUNNING, running_since=T0, node="gpu-node-1")
    assert kube_cluster.requests("POST", JOBS_PATH) == [f"POST {JOBS_PATH}"] * 2
    assert kube_cluster.stored("batch/v1/jobs", NS, NAME)["metadata"]["uid"] == job.uid


def test_a_foreign_job_of_the_same_name_is_not_taken_over(kube_cluster, kube_backend):
    foreign = {"metadata": {"name": NAME, "namespace": NS, "labels": {"team": "ml"}}, "spec": {"template": {}}}
    kube_cluster.api("POST", JOBS_PATH, foreign)

    with pytest.raises(BackendError, match="not managed by infrafi"):
        kube_backend.create_job(make_spec())

    assert kube_cluster.stored("batch/v1/jobs", NS, NAME)["metadata"]["labels"] == {"team": "ml"}


def test_ensure_namespace_creates_it_once(kube_cluster, kube_backend):
    kube_backend.ensure_namespace(NS)
    kube_backend.ensure_namespace(NS)

    stored = kube_cluster.stored("v1/namespaces", None, NS)
    assert stored["metadata"]["labels"] == {
        "app.kubernetes.io/managed-by": "infrafi",
        "pod-security.kubernetes.io/enforce": "restricted",
    }
    assert kube_cluster.requests("POST", "/api/v1/namespaces") == ["POST /api/v1/namespaces"] * 2


# -- job_state: the kubelet and the Job controller move it along --


def test_job_state_follows_its_pod_from_pending_to_succeeded(kube_cluster, kube_backend, job):
    assert kube_backend.job_state(NS, NAME) == JobState(uid=job.uid, phase=Phase.PENDING, node="gpu-node-1")

    kube_cluster.create_pod(NS, NAME)
    assert kube_backend.job_state(NS, NAME) == JobState(uid=job.uid, phase=Phase.PENDING, node="gpu-node-1")

    kube_cluster.run_pod(NS, NAME, started_at=T0)
    assert kube_backend.job_state(NS, NAME) == JobState(
        uid=job.uid, phase=Phase.RUNNING, running_since=T0, node="gpu-node-1"
    )

    kube_cluster.finish_pod(NS, NAME, exit_code=0, finished_at=T1)
    state = kube_backend.job_state(NS, NAME)
    assert state == JobState(uid=job.uid, phase=Phase.SUCCEEDED, running_since=T0, finished_at=T1, node="gpu-node-1")
    assert (state.running_since.tzinfo, state.finished_at.tzinfo) == (UTC, UTC)


def test_a_non_zero_exit_fails_the_job_with_the_controllers_reason(kube_cluster, kube_backend, job):
    kube_cluster.run_pod(NS, NAME, started_at=T0)

    kube_cluster.finish_pod(NS, NAME, exit_code=3, finished_at=T1)

    assert kube_backend.job_state(NS, NAME) == JobState(
        uid=job.uid,
        phase=Phase.FAILED,
        running_since=T0,
        finished_at=T1,
        node="gpu-node-1",
        message="BackoffLimitExceeded",
    )


def test_a_failed_pod_fails_the_job_before_the_controller_reacts(kube_cluster, kube_backend, job):
    kube_cluster.run_pod(NS, NAME, started_at=T0)

    kube_cluster.finish_pod(NS, NAME, exit_code=3, finished_at=T1, job_controller=False)

    assert kube_backend.job_state(NS, NAME) == JobState(
        uid=job.uid,
        phase=Phase.FAILED,
        running_since=T0,
        finished_at=T1,
        node="gpu-node-1",
        message="Error (exit code 3)",
    )


def test_a_succeeded_pod_succeeds_the_job_before_the_controller_reacts(kube_cluster, kube_backend, job):
    kube_cluster.run_pod(NS, NAME, started_at=T0)

    kube_cluster.finish_pod(NS, NAME, exit_code=0, finished_at=T1, job_controller=False)

    assert kube_backend.job_state(NS, NAME) == JobState(
        uid=job.uid, phase=Phase.SUCCEEDED, running_since=T0, finished_at=T1, node="gpu-node-1"
    )


def test_a_passed_deadline_fails_the_job_with_deadline_exceeded(kube_cluster, kube_backend, job):
    kube_cluster.run_pod(NS, NAME, started_at=T0)

    kube_cluster.fail_job(NS, NAME, reason="DeadlineExceeded", at=T1)  # and deletes the pod

    assert kube_cluster.pods(NS, NAME) == []
    assert kube_backend.job_state(NS, NAME) == JobState(
        uid=job.uid, phase=Phase.FAILED, finished_at=T1, node="gpu-node-1", message="DeadlineExceeded"
    )


@pytest.mark.parametrize("job_controller", [False, True], ids=["pod-evicted", "then-job-failed"])
def test_an_evicted_pod_interrupts_the_job(kube_cluster, kube_backend, job, job_controller):
    kube_cluster.run_pod(NS, NAME, started_at=T0)

    kube_cluster.evict_pod(NS, NAME, at=T1, job_controller=job_controller)

    assert kube_backend.job_state(NS, NAME) == JobState(
        uid=job.uid,
        phase=Phase.INTERRUPTED,
        running_since=T0,
        finished_at=T1,
        node="gpu-node-1",
        message="Evicted: The node was low on resource: memory.",
    )


def test_a_not_ready_node_interrupts_its_running_job(kube_cluster, kube_backend, job):
    kube_cluster.run_pod(NS, NAME, started_at=T0)

    kube_cluster.set_node_ready("gpu-node-1", False, at=T1)

    assert kube_backend.job_state(NS, NAME) == JobState(
        uid=job.uid,
        phase=Phase.INTERRUPTED,
        running_since=T0,
        finished_at=T1,
        node="gpu-node-1",
        message="Node gpu-node-1 is NotReady",
    )
    # The pod still reads Running: once the node is back, so is the job (the caller decides what
    # a blip means).
    kube_cluster.set_node_ready("gpu-node-1", True)
    assert kube_backend.job_state(NS, NAME).phase is Phase.RUNNING


def test_a_running_pod_on_a_deleted_node_is_interrupted(kube_cluster, kube_backend, job):
    kube_cluster.run_pod(NS, NAME, started_at=T0)

    kube_cluster.api("DELETE", "/api/v1/nodes/gpu-node-1")

    state = kube_backend.job_state(NS, NAME)
    assert (state.phase, state.message, state.running_since) == (Phase.INTERRUPTED, "Node gpu-node-1 is NotReady", T0)
    assert state.finished_at is not None
    assert state.finished_at.tzinfo is UTC


def test_job_state_reads_pods_with_only_the_legacy_job_name_label(kube_cluster, kube_backend, job):
    pod = kube_cluster.create_pod(NS, NAME)
    kube_cluster.api(
        "PATCH", f"/api/v1/namespaces/{NS}/pods/{pod}", {"metadata": {"labels": {"batch.kubernetes.io/job-name": None}}}
    )
    kube_cluster.run_pod(NS, NAME, started_at=T0)

    assert kube_backend.job_state(NS, NAME).phase is Phase.RUNNING


def test_pods_of_an_earlier_job_of_the_same_name_are_ignored(kube_cluster, kube_backend, job):
    kube_cluster.run_pod(NS, NAME, started_at=T0)
    kube_backend.delete_job(NS, NAME)  # the emulator does not garbage-collect the pod
    new = kube_backend.create_job(make_spec())

    assert new.uid != job.uid
    assert kube_backend.job_state(NS, NAME) == JobState(uid=new.uid, phase=Phase.PENDING, node="gpu-node-1")


def test_job_state_of_a_missing_job_is_gone(kube_backend):
    assert kube_backend.job_state(NS, "never-created") == JobState(uid="", phase=Phase.GONE)


# -- delete_job --

SESSION_OBJECTS = (("services", "http"), ("services", "ssh"), ("secrets", "ssh"))


def test_delete_job_removes_it_and_can_be_repeated(kube_cluster, kube_backend, job):
    kube_backend.delete_job(NS, NAME)

    assert kube_cluster.stored("batch/v1/jobs", NS, NAME) is None
    assert kube_backend.job_state(NS, NAME) == JobState(uid="", phase=Phase.GONE)
    kube_backend.delete_job(NS, NAME)  # 404: fine
    deletes = kube_cluster.in_loop(
        lambda: [(r.url.path, dict(r.params)) for r in kube_cluster.emulator if r.method.value == "DELETE"]
    )
    job_delete = (f"{JOBS_PATH}/{NAME}", {"propagationPolicy": "Background"})
    secret_delete = (f"/api/v1/namespaces/{NS}/secrets/{NAME}-env", {})
    # A session's Services and keys Secret (sessions helper): 404 when the job had none.
    session = [(f"/api/v1/namespaces/{NS}/{kind}/{NAME}-{suffix}", {}) for kind, suffix in SESSION_OBJECTS]
    mine = [job_delete, secret_delete, *session]
    assert [d for d in deletes if d in mine] == mine * 2


# -- list_jobs and logs_tail --


def test_list_jobs_finds_only_managed_jobs_in_every_namespace(kube_cluster, kube_backend):
    kube_backend.create_job(make_spec())
    kube_backend.create_job(make_spec(namespace="booking-42", name="job-78", labels={LABEL_JOB: "78"}))
    foreign = {"metadata": {"name": "etl", "namespace": NS, "labels": {"team": "data"}}, "spec": {"template": {}}}
    kube_cluster.api("POST", JOBS_PATH, foreign)

    jobs = kube_backend.list_jobs()

    managed = {"app.kubernetes.io/managed-by": "infrafi"}
    assert sorted(jobs, key=lambda ref: ref.namespace) == [
        JobRef(namespace=NS, name=NAME, labels={LABEL_BOOKING: "41", LABEL_JOB: "77", **managed}),
        JobRef(namespace="booking-42", name="job-78", labels={LABEL_JOB: "78", **managed}),
    ]


def test_logs_tail_returns_the_last_lines_of_the_pod_log(kube_cluster, kube_backend, job):
    assert kube_backend.logs_tail(NS, NAME) == ""  # no pod yet

    kube_cluster.run_pod(NS, NAME, started_at=T0)
    kube_cluster.write_log(NS, NAME, "".join(f"step {i}\n" for i in range(1, 151)))
    kube_cluster.write_log(NS, NAME, '{"loss": 0.25}\n')

    assert kube_backend.logs_tail(NS, NAME, lines=3) == 'step 149\nstep 150\n{"loss": 0.25}\n'
    assert kube_backend.logs_tail(NS, NAME).splitlines() == [f"step {i}" for i in range(52, 151)] + ['{"loss": 0.25}']


# -- list_nodes --


def test_list_nodes_reports_gpus_product_hostname_and_readiness(kube_cluster, kube_backend):
    kube_cluster.add_node("gpu-node-1", gpus=8, product="NVIDIA-H100-80GB-HBM3")
    kube_cluster.add_node("gpu-node-2", gpus=4, product="NVIDIA-A100-SXM4-40GB", ready=False, hostname="rack2-a100")
    kube_cluster.add_node("cpu-node-1", gpus=0, product="")

    nodes = sorted(kube_backend.list_nodes(), key=lambda node: node.name)

    assert nodes == [
        NodeInfo(
            name="cpu-node-1",
            hostname="cpu-node-1",
            gpu_allocatable=0,
            gpu_product="",
            ready=True,
            cpu_allocatable_milli=64000,
            memory_allocatable_mib=524288,
        ),
        NodeInfo(
            name="gpu-node-1",
            hostname="gpu-node-1",
            gpu_allocatable=8,
            gpu_product="NVIDIA-H100-80GB-HBM3",
            ready=True,
            cpu_allocatable_milli=64000,
            memory_allocatable_mib=524288,
        ),
        NodeInfo(
            name="gpu-node-2",
            hostname="rack2-a100",
            gpu_allocatable=4,
            gpu_product="NVIDIA-A100-SXM4-40GB",
            ready=False,
            cpu_allocatable_milli=64000,
            memory_allocatable_mib=524288,
        ),
    ]


def test_a_node_without_the_device_plugin_has_no_gpus(kube_cluster, kube_backend):
    kube_cluster.api(
        "POST",
        "/api/v1/nodes",
        {"metadata": {"name": "bare"}, "status": {"allocatable": {"cpu": "8"}, "conditions": []}},
    )

    assert kube_backend.list_nodes() == [
        NodeInfo(
            name="bare", hostname="bare", gpu_allocatable=0, gpu_product="", ready=False, cpu_allocatable_milli=8000
        )
    ]


# -- retries and errors --


def test_transient_500s_are_retried(kube_cluster, kube_backend):
    kube_cluster.add_node("gpu-node-1", gpus=8)
    fault = kube_cluster.fail(2, 500, method="GET", path="/api/v1/nodes")

    nodes = kube_backend.list_nodes()

    assert [node.name for node in nodes] == ["gpu-node-1"]
    assert fault.served == 2
    assert kube_cluster.requests("GET", "/api/v1/nodes") == ["GET /api/v1/nodes"] * 3


def test_429_is_retried(kube_cluster, kube_backend):
    fault = kube_cluster.fail(1, 429, method="GET", path="/api/v1/nodes")

    assert kube_backend.list_nodes() == []
    assert fault.served == 1


def test_a_500_on_create_is_retried_into_the_existing_job(kube_cluster, kube_backend):
    # The server stored the Job but the answer was lost: the retry meets 409 and reads the Job.
    fault = kube_cluster.fail(1, 503, method="POST", path=JOBS_PATH)

    state = kube_backend.create_job(make_spec())

    assert fault.served == 1
    assert state == JobState(
        uid=kube_cluster.stored("batch/v1/jobs", NS, NAME)["metadata"]["uid"], phase=Phase.PENDING, node="gpu-node-1"
    )
    assert kube_cluster.requests("POST", JOBS_PATH) == [f"POST {JOBS_PATH}"] * 2


def test_persistent_500s_raise_backend_error_after_the_retries(kube_cluster, kube_backend):
    fault = kube_cluster.fail(10, 500, method="GET", path="/api/v1/nodes")

    with pytest.raises(
        BackendError, match=r"Could not list nodes: HTTP 500 Internal Server Error \(after 3 attempts\)"
    ):
        kube_backend.list_nodes()

    assert fault.served == 3  # retries=2
    assert fault.left == 7


def test_a_timed_out_request_is_retried(kube_cluster):
    backend = KubernetesBackend(
        kube_cluster.kubeconfig, timeout=0.2, retries=1, backoff=0.01, private_network_allowed=True
    )
    fault = kube_cluster.fail(1, 500, method="GET", path="/api/v1/nodes", delay=0.6)

    assert backend.list_nodes() == []
    assert fault.served == 1
    assert len(kube_cluster.requests("GET", "/api/v1/nodes")) == 2


def test_an_unreachable_server_raises_backend_error(kube_cluster):
    config = kube_cluster.kubeconfig
    config["clusters"][0]["cluster"]["server"] = f"http://127.0.0.1:{kube_cluster.free_port()}"
    backend = KubernetesBackend(config, timeout=0.5, retries=1, backoff=0.01, private_network_allowed=True)

    with pytest.raises(BackendError, match=r"Could not read the server version: .*\(after 2 attempts\)"):
        backend.check()


def test_a_tls_failure_raises_backend_error_without_retry(kube_cluster):
    config = kube_cluster.kubeconfig
    config["clusters"][0]["cluster"]["server"] = kube_cluster.url.replace("http://", "https://")
    backend = KubernetesBackend(
        config, timeout=2, retries=3, backoff=5, private_network_allowed=True
    )  # a retry would take 5 s

    with pytest.raises(BackendError, match=r"Could not list nodes: SSLError"):
        backend.list_nodes()


@pytest.mark.parametrize("status", [401, 403])
def test_unauthorized_and_forbidden_raise_backend_forbidden_without_retry(kube_cluster, kube_backend, status):
    fault = kube_cluster.fail(5, status, method="POST", path=JOBS_PATH)

    with pytest.raises(BackendForbidden, match=f"Could not create job {NS}/{NAME}: HTTP {status}"):
        kube_backend.create_job(make_spec())

    assert fault.served == 1


def test_a_rejected_manifest_raises_backend_error_without_retry(kube_cluster, kube_backend):
    fault = kube_cluster.fail(5, 422, method="POST", path=JOBS_PATH)

    with pytest.raises(BackendError, match=r"HTTP 422 Unprocessable (Entity|Content)$"):
        kube_backend.create_job(make_spec())

    assert fault.served == 1


# -- check and the kubeconfig --


def test_check_passes_when_jobs_may_be_created(kube_cluster, kube_backend):
    kube_backend.check()

    reviews = [
        obj
        for (resource, _, _), obj in kube_cluster.in_loop(lambda: list(kube_cluster.emulator.objects.items()))
        if resource.plural == "selfsubjectaccessreviews"
    ]
    assert sorted(
        (a["verb"], a["group"], a["resource"] + ("/" + a["subresource"] if a.get("subresource") else ""))
        for a in (review["spec"]["resourceAttributes"] for review in reviews)
    ) == sorted((verb, group, resource) for group, resource, verbs in PERMISSIONS for verb in verbs)
    assert {"resourceAttributes": {"verb": "create", "group": "batch", "resource": "jobs"}} in [
        review["spec"] for review in reviews
    ]


def test_check_raises_forbidden_when_jobs_may_not_be_created(kube_cluster, kube_backend):
    kube_cluster.deny("create", "batch", "jobs")

    with pytest.raises(BackendForbidden, match=r"These credentials may not: create batch/jobs\. "):
        kube_backend.check()


def test_the_token_is_sent_as_a_bearer_token(kube_cluster, kube_backend):
    kube_backend.list_nodes()

    headers = kube_cluster.in_loop(lambda: [r.headers for r in kube_cluster.emulator])
    assert headers[-1]["Authorization"] == "Bearer kube-emulator-token"


def test_a_yaml_kubeconfig_is_accepted(kube_cluster):
    import yaml

    backend = KubernetesBackend(
        yaml.safe_dump(kube_cluster.kubeconfig), timeout=2, retries=0, private_network_allowed=True
    )

    backend.check()


def _kubeconfig_with(user: dict | None = None, cluster: dict | None = None) -> dict:
    return {
        "clusters": [{"name": "c", "cluster": cluster or {"server": "https://k8s.example:6443"}}],
        "users": [{"name": "u", "user": user or {"token": "t"}}],
        "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
        "current-context": "x",
    }


@pytest.mark.parametrize(
    ("kubeconfig", "message"),
    [
        ("clusters: [unclosed", "not valid YAML"),
        ("just some text", "must be a YAML mapping"),
        ({}, "no current-context"),
        ({**_kubeconfig_with(), "current-context": "elsewhere"}, "no entry named 'elsewhere' in 'contexts'"),
        (_kubeconfig_with(cluster={"insecure-skip-tls-verify": True}), "has no server URL"),
        (_kubeconfig_with(cluster={"server": "k8s.example:6443"}), "must be an http"),
        (_kubeconfig_with(user={"exec": {"command": "/bin/sh"}}), "uses exec: only inline credentials"),
        (_kubeconfig_with(user={"tokenFile": "/etc/shadow"}), "uses tokenFile"),
        (
            _kubeconfig_with(cluster={"server": "https://k8s.example", "certificate-authority": "/etc/ca.pem"}),
            "uses certificate-authority",
        ),
    ],
    ids=["yaml", "not-mapping", "empty", "no-context", "no-server", "bad-server", "exec", "token-file", "ca-file"],
)
def test_a_malformed_or_unsafe_kubeconfig_is_refused(kubeconfig, message):
    with pytest.raises(KubeconfigInvalid, match=message):
        KubernetesBackend(kubeconfig)
