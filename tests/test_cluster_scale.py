"""The scheduler at scale (issue 15), against the Kubernetes API emulator over HTTP.

One snapshot per cluster per tick (the same requests for 1 job or 10), each
job's state from it exactly as a single read gives it; a slow cluster does not
delay another's tick; the tick's backend is closed; beat fans out one Celery
task per cluster, single-flight; watches resume at the snapshot's version
and 410 means relist; quantities parsed exactly and a job's share capped at
its node's allocatable; orphaned env Secrets collected.
"""

import threading
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
import yaml
from celery.signals import task_prerun
from django.core.cache import cache
from django.db import connection

from marketplace.services import bookings
from scheduler import tasks
from scheduler.backends import backend_for
from scheduler.backends.base import LABEL_BOOKING, LABEL_JOB, DeploymentState, JobSpec, Phase
from scheduler.backends.kubernetes import parse_quantity
from scheduler.models import Cluster, Job, Node
from scheduler.services import cluster_tick as ticks
from scheduler.services import clusters, jobs
from tests.factories import make_listing, make_owner, make_renter, next_hour
from tests.kube_emulator import KubeCluster

IMAGE = "ghcr.io/acme/trainer:1.4"
NS = "infrafi-renter-9"
T0 = datetime(2026, 3, 2, 9, 30, 0, tzinfo=UTC)


@pytest.fixture(autouse=True)
def _fast_kube(settings):
    settings.SCHEDULER_KUBE_TIMEOUT_SECONDS = 2
    settings.SCHEDULER_KUBE_RETRIES = 2
    settings.SCHEDULER_ALLOWED_PRIVATE_HOSTS = ["127.0.0.1"]


def _connect(owner, kube: KubeCluster, *, name: str, hostname: str, gpus: int = 2, cpu="64", memory="512Gi"):
    listing = make_listing(owner, gpu_count=gpus, price="2.00", hostname=hostname)
    kube.add_node(hostname, gpus=gpus, cpu=cpu, memory=memory)
    cluster = clusters.cluster_connect(
        owner=owner.owner_membership.company, name=name, kubeconfig=yaml.safe_dump(kube.kubeconfig)
    )
    return listing, cluster


def _booking(renter, listing, *, gpus: int, start: datetime):
    booking = bookings.booking_create(
        renter=renter, listing=listing, gpu_count=gpus, start=start, end=start + timedelta(hours=2)
    )
    return bookings.booking_pay(booking=booking, renter=renter)


def _submit(booking, renter, *, now: datetime, name: str = "train", env=None) -> Job:
    return jobs.job_submit(booking=booking, renter=renter, name=name, image=IMAGE, env=env or {}, gpu_count=1, now=now)


def _spec(name: str, **overrides) -> JobSpec:
    values = {
        "name": name,
        "namespace": NS,
        "node": "gpu-node-1",
        "image": IMAGE,
        "command": ["python", "train.py"],
        "args": [],
        "env": {},
        "gpu_count": 1,
        "active_deadline_seconds": 3600,
        "labels": {LABEL_BOOKING: "b", LABEL_JOB: name},
    }
    return JobSpec(**{**values, **overrides})


# -- the snapshot --


def test_a_snapshot_gives_each_job_the_state_a_single_read_gives(kube_cluster, kube_backend):
    kube_cluster.add_node("gpu-node-1", gpus=8)
    kube_cluster.add_node("gpu-node-2", gpus=8)
    kube_backend.ensure_namespace(NS)
    for name in ("pending", "running", "done", "evicted", "lost-node"):
        node = "gpu-node-2" if name == "lost-node" else "gpu-node-1"
        kube_backend.create_job(_spec(name, node=node))
    kube_cluster.run_pod(NS, "running", started_at=T0)
    kube_cluster.run_pod(NS, "done", started_at=T0)
    kube_cluster.finish_pod(NS, "done", finished_at=T0 + timedelta(minutes=5))
    kube_cluster.run_pod(NS, "evicted", started_at=T0)
    kube_cluster.evict_pod(NS, "evicted", at=T0 + timedelta(minutes=7))
    kube_cluster.run_pod(NS, "lost-node", started_at=T0)
    kube_cluster.set_node_ready("gpu-node-2", False, at=T0 + timedelta(minutes=9))
    foreign = {"metadata": {"name": "etl", "namespace": NS, "labels": {"team": "data"}}, "spec": {"template": {}}}
    kube_cluster.api("POST", f"/apis/batch/v1/namespaces/{NS}/jobs", foreign)
    deployment = {
        "metadata": {"name": "llm", "namespace": NS, "labels": {"app.kubernetes.io/managed-by": "infrafi"}},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"app": "llm"}},
            "template": {"spec": {"containers": [{"name": "main", "image": "vllm/vllm:0.6"}]}},
        },
        "status": {"readyReplicas": 1, "updatedReplicas": 2, "availableReplicas": 1, "observedGeneration": 1},
    }
    kube_cluster.api("POST", f"/apis/apps/v1/namespaces/{NS}/deployments", deployment)

    snapshot = kube_backend.snapshot()

    names = ("pending", "running", "done", "evicted", "lost-node")
    assert {name: snapshot.job_state(NS, name) for name in names} == {
        name: kube_backend.job_state(NS, name) for name in names
    }
    assert [snapshot.job_state(NS, n).phase for n in names] == [
        Phase.PENDING,
        Phase.RUNNING,
        Phase.SUCCEEDED,
        Phase.INTERRUPTED,
        Phase.INTERRUPTED,
    ]
    assert snapshot.job_state(NS, "lost-node").message == "Node gpu-node-2 is NotReady"
    assert snapshot.job_state(NS, "etl").phase == Phase.GONE  # not ours: not listed, never collected
    assert sorted(ref.name for ref in snapshot.refs) == sorted(names)
    state = snapshot.deployment(NS, "llm")
    assert isinstance(state, DeploymentState)
    assert (state.image, state.replicas, state.ready_replicas, state.updated_replicas) == ("vllm/vllm:0.6", 2, 1, 2)


def test_the_requests_of_a_tick_do_not_grow_with_the_jobs(owner, renter, kube_cluster):
    listing, cluster = _connect(owner, kube_cluster, name="prod", hostname="gpu-a", gpus=10)
    start = next_hour(1)
    booking = _booking(renter, listing, gpus=10, start=start)
    first = _submit(booking, renter, now=start - timedelta(minutes=1))
    jobs.jobs_tick(now=start)
    first.refresh_from_db()
    kube_cluster.run_pod(first.namespace, first.k8s_name, started_at=start + timedelta(seconds=5))

    def tick(now) -> tuple[dict, list[str]]:
        before = len(kube_cluster.requests())
        counts = ticks.cluster_tick(cluster_id=cluster.pk, now=now)
        return counts, kube_cluster.requests()[before:]

    counts_1, requests_1 = tick(start + timedelta(minutes=1))
    for i in range(9):
        job = _submit(booking, renter, now=start + timedelta(minutes=2), name=f"train-{i}")
        assert job.k8s_name
        kube_cluster.run_pod(job.namespace, job.k8s_name, started_at=start + timedelta(minutes=2))
    counts_10, requests_10 = tick(start + timedelta(minutes=3))

    assert counts_1["running"] == 1 and counts_10["running"] == 10
    assert (
        requests_1
        == requests_10
        == [
            "GET /apis/batch/v1/jobs",
            "GET /api/v1/pods",
            "GET /apis/apps/v1/deployments",
            "GET /api/v1/nodes",
            "GET /api/v1/secrets",
        ]
    )
    assert Job.objects.filter(status=Job.Status.RUNNING).count() == 10


def test_later_ticks_watch_from_where_the_last_one_stopped_and_a_410_lists_again(owner, renter, kube_cluster):
    listing, cluster = _connect(owner, kube_cluster, name="prod", hostname="gpu-a")
    start = next_hour(1)
    job = _submit(_booking(renter, listing, gpus=1, start=start), renter, now=start - timedelta(minutes=1))
    ticks._reflectors.pop(cluster.pk, None)
    jobs.jobs_tick(now=start)  # launches the Job; this first tick of the cluster lists
    job.refresh_from_db()

    def params(since: int) -> list[dict]:
        return kube_cluster.in_loop(lambda: [dict(r.params) for r in list(kube_cluster.emulator)[since:]])

    def tick(now) -> tuple[dict, list[dict]]:
        before = kube_cluster.in_loop(lambda: len(list(kube_cluster.emulator)))
        counts = ticks.cluster_tick(cluster_id=cluster.pk, now=now)
        return counts, params(before)

    kube_cluster.run_pod(job.namespace, job.k8s_name, started_at=start + timedelta(seconds=5))
    running, seen_running = tick(start + timedelta(minutes=1))
    kube_cluster.finish_pod(job.namespace, job.k8s_name, finished_at=start + timedelta(minutes=2))
    finished, seen_finished = tick(start + timedelta(minutes=3))
    reflector = ticks._reflectors[cluster.pk][1]

    job.refresh_from_db()
    assert running["running"] == 1 and finished["succeeded"] == 1 and job.status == Job.Status.SUCCEEDED
    for seen in (seen_running, seen_finished):  # Jobs and pods watched from a version, never listed again
        watches = [p for p in seen if p.get("watch") == "true"]
        assert len(watches) == 2 and all(p["resourceVersion"] for p in watches)
    assert (reflector.listed, reflector.watched) == (2, 4)  # the first tick's two lists, then watches

    def compact() -> None:  # the API server compacted its history: the next watch answers 410 Gone
        kube_cluster.emulator.compacted_rv = kube_cluster.emulator.current_rv

    kube_cluster.in_loop(compact)
    _, seen_relist = tick(start + timedelta(minutes=4))
    assert reflector.listed == 4  # Jobs and pods listed again
    assert [p for p in seen_relist if p.get("watch") == "true" and not p.get("resourceVersion")] == []


def test_a_job_a_lagging_watch_has_not_shown_yet_is_read_directly_not_taken_for_gone(owner, renter, kube_cluster):
    listing, cluster = _connect(owner, kube_cluster, name="prod", hostname="gpu-a")
    start = next_hour(1)
    job = _submit(_booking(renter, listing, gpus=1, start=start), renter, now=start - timedelta(minutes=1))
    ticks._reflectors.pop(cluster.pk, None)
    jobs.jobs_tick(now=start)  # the cluster's reflector lists (no Job yet), then the Job is created
    job.refresh_from_db()
    kube_cluster.run_pod(job.namespace, job.k8s_name, started_at=start + timedelta(seconds=5))

    def lag() -> None:  # the watch cache has not caught up with the Job's creation and its pod yet
        kube_cluster.emulator.history.clear()

    kube_cluster.in_loop(lag)
    counts = ticks.cluster_tick(cluster_id=cluster.pk, now=start + timedelta(minutes=1))

    job.refresh_from_db()
    assert counts.get("running") == 1 and job.status == Job.Status.RUNNING and job.attempt == 1
    assert not kube_cluster.requests("POST", f"/apis/batch/v1/namespaces/{job.namespace}/jobs")[1:]  # no relaunch


def test_the_ticks_backend_is_closed_and_extra_steps_get_its_snapshot(owner, renter, kube_cluster):
    listing, cluster = _connect(owner, kube_cluster, name="prod", hostname="gpu-a")
    start = next_hour(1)
    job = _submit(_booking(renter, listing, gpus=1, start=start), renter, now=start - timedelta(minutes=1))
    jobs.jobs_tick(now=start)
    job.refresh_from_db()
    seen = []

    def step(cluster_, backend, snapshot, now):
        seen.append((cluster_.pk, backend, snapshot.job_state(job.namespace, job.k8s_name).phase, now))
        return {"extra": 1}

    ticks.CLUSTER_STEPS.append(step)
    try:
        counts = ticks.cluster_tick(cluster_id=cluster.pk, now=start + timedelta(minutes=1))
    finally:
        ticks.CLUSTER_STEPS.remove(step)

    [(cluster_id, backend, phase, now)] = seen
    assert (cluster_id, phase, now, counts["extra"], counts["pending"]) == (
        cluster.pk,
        Phase.PENDING,
        start + timedelta(minutes=1),
        1,
        1,
    )
    assert backend.closed and len(backend._api.rest_client.pool_manager.pools) == 0
    cluster.refresh_from_db()
    # The Jobs list's resourceVersion, kept where a watch resumes.
    assert cluster.jobs_resource_version == str(kube_cluster.in_loop(lambda: kube_cluster.emulator.current_rv))


@pytest.mark.django_db(transaction=True)
def test_a_slow_cluster_does_not_delay_another_clusters_tick(catalogue, kube_cluster, settings):
    settings.SCHEDULER_KUBE_TIMEOUT_SECONDS = 60  # the held request must not time out: the test releases it
    slow = KubeCluster()
    slow.start()
    try:
        owner, renter = make_owner(), make_renter()
        fast_listing, fast_cluster = _connect(owner, kube_cluster, name="fast", hostname="gpu-fast")
        slow_listing, slow_cluster = _connect(owner, slow, name="slow", hostname="gpu-slow")
        start = next_hour(1)
        fast_job = _submit(_booking(renter, fast_listing, gpus=1, start=start), renter, now=start - timedelta(hours=1))
        slow_job = _submit(_booking(renter, slow_listing, gpus=1, start=start), renter, now=start - timedelta(hours=1))
        assert jobs.jobs_tick(now=start)["launched"] == 2
        fast_job.refresh_from_db()
        slow_job.refresh_from_db()
        kube_cluster.run_pod(fast_job.namespace, fast_job.k8s_name, started_at=start)
        slow.run_pod(slow_job.namespace, slow_job.k8s_name, started_at=start)
        gate = slow.hold(method="GET", path="/apis/batch/v1/jobs")
        later = start + timedelta(minutes=10)
        results: dict[str, dict] = {}

        def run(key: str, cluster_id: int) -> None:
            try:
                results[key] = ticks.cluster_tick(cluster_id=cluster_id, now=later)
            finally:
                connection.close()

        slow_thread = threading.Thread(target=run, args=("slow", slow_cluster.pk))
        slow_thread.start()
        assert gate.entered.wait(30), "the slow cluster's tick never asked for its Jobs"
        fast_thread = threading.Thread(target=run, args=("fast", fast_cluster.pk))
        fast_thread.start()
        fast_thread.join(60)

        # The fast cluster's tick is done while the slow one is still waiting for its cluster.
        assert not fast_thread.is_alive() and slow_thread.is_alive()
        fast_job.refresh_from_db()
        slow_job.refresh_from_db()
        assert results["fast"]["running"] == 1 and "slow" not in results
        assert (fast_job.status, fast_job.gpu_seconds) == (Job.Status.RUNNING, 600)
        assert (slow_job.status, slow_job.gpu_seconds) == (Job.Status.PENDING, 0)

        gate.release()
        slow_thread.join(60)
        slow_job.refresh_from_db()
        assert not slow_thread.is_alive() and results["slow"]["running"] == 1
        assert (slow_job.status, slow_job.gpu_seconds) == (Job.Status.RUNNING, 600)
    finally:
        slow.stop()


def test_an_unreachable_cluster_only_holds_its_own_jobs(owner, renter, kube_cluster):
    listing, cluster = _connect(owner, kube_cluster, name="prod", hostname="gpu-a")
    start = next_hour(1)
    job = _submit(_booking(renter, listing, gpus=1, start=start), renter, now=start - timedelta(minutes=1))
    jobs.jobs_tick(now=start)
    job.refresh_from_db()
    name = job.k8s_name
    kube_cluster.fail(1000, 503, path="/apis/batch/v1/jobs")

    counts = ticks.cluster_tick(cluster_id=cluster.pk, now=start + timedelta(minutes=1))

    cluster.refresh_from_db()
    job.refresh_from_db()
    assert counts == {"unreachable": 1}
    assert cluster.health == Cluster.Health.UNHEALTHY and "503" in cluster.health_message
    assert (job.status, job.k8s_name, job.gpu_seconds) == (Job.Status.PENDING, name, 0)
    assert kube_cluster.stored("batch/v1/jobs", job.namespace, name) is not None


# -- Celery: one task per cluster, single-flight --


def test_beat_fans_out_one_task_per_cluster_and_each_is_single_flight(owner, renter):
    one = clusters.cluster_create_simulated(
        owner=owner.owner_membership.company, name="one", servers=[make_listing(owner, gpu_count=1).server]
    )
    two = clusters.cluster_create_simulated(
        owner=owner.owner_membership.company, name="two", servers=[make_listing(owner, gpu_count=1).server]
    )
    ran = []

    def record(sender=None, task=None, args=None, **kwargs):
        ran.append((task.name, tuple(args or ())))

    task_prerun.connect(record)
    try:
        sent = tasks.jobs_tick.delay().get()
    finally:
        task_prerun.disconnect(record)

    assert sent == {"clusters": 2, "unplaced": 1}
    assert ran == [
        ("scheduler.tasks.jobs_tick", ()),
        ("scheduler.tasks.cluster_tick", (one.pk,)),
        ("scheduler.tasks.cluster_tick", (two.pk,)),
        ("scheduler.tasks.unplaced_tick", ()),
    ]
    assert (tasks.cluster_tick.soft_time_limit, tasks.cluster_tick.time_limit) == (60, 90)

    assert cache.add(tasks.lock_key(one.pk), "another worker", 60)  # a tick of cluster one is running
    assert tasks.cluster_tick.delay(one.pk).get() == {"skipped": 1}
    assert tasks.cluster_tick.delay(two.pk).get()["collected"] == 0
    assert cache.get(tasks.lock_key(one.pk)) == "another worker"  # not ours to release
    assert cache.get(tasks.lock_key(two.pk)) is None  # released
    cache.delete(tasks.lock_key(one.pk))
    assert tasks.cluster_tick.delay(one.pk).get()["collected"] == 0


def test_the_embedded_tick_advances_each_job_once_on_a_simulated_cluster(owner, renter, settings):
    settings.SCHEDULER_SIM_START_SECONDS = 5
    listing = make_listing(owner, gpu_count=2)
    clusters.cluster_create_simulated(owner=owner.owner_membership.company, name="sim", servers=[listing.server])
    start = next_hour(1)
    job = _submit(_booking(renter, listing, gpus=1, start=start), renter, now=start - timedelta(minutes=1))

    outcomes = {a.value for a in jobs.Advance}  # other counts come from CLUSTER_STEPS and the collectors

    def advanced(counts: dict) -> dict:
        return {key: value for key, value in counts.items() if key in outcomes}

    assert advanced(jobs.jobs_tick(now=start - timedelta(seconds=30))) == {"waiting": 1}
    assert advanced(jobs.jobs_tick(now=start)) == {"launched": 1}
    counts = jobs.jobs_tick(now=start + timedelta(minutes=6))
    assert advanced(counts) == {"running": 1} and counts["collected"] == 0
    job.refresh_from_db()
    assert job.status == Job.Status.RUNNING and job.gpu_seconds == 6 * 60 - 5


# -- watches --


def test_a_watch_resumes_at_the_snapshots_version_and_410_means_relist(kube_cluster, kube_backend):
    kube_cluster.add_node("gpu-node-1", gpus=8)
    kube_backend.ensure_namespace(NS)
    kube_backend.create_job(_spec("train"))
    snapshot = kube_backend.snapshot()

    unchanged = kube_backend.watch_jobs(snapshot.resource_version, timeout_seconds=1)
    kube_backend.create_job(_spec("eval"))
    kube_cluster.fail_job(NS, "train")
    changed = kube_backend.watch_jobs(snapshot.resource_version, timeout_seconds=1)
    resumed = kube_backend.watch_jobs(changed.resource_version, timeout_seconds=1)

    assert unchanged.changed == frozenset() and not unchanged.expired
    assert changed.changed == frozenset({(NS, "train"), (NS, "eval")}) and not changed.expired
    assert resumed.changed == frozenset() and int(resumed.resource_version) >= int(changed.resource_version)
    watches = kube_cluster.in_loop(
        lambda: [dict(r.params) for r in kube_cluster.emulator if r.params.get("watch") == "true"]
    )
    assert watches[0]["resourceVersion"] == snapshot.resource_version
    assert watches[0]["labelSelector"] == "app.kubernetes.io/managed-by=infrafi"
    assert watches[0]["timeoutSeconds"] == "1"

    def compact() -> None:
        kube_cluster.emulator.compacted_rv = kube_cluster.emulator.current_rv

    kube_cluster.in_loop(compact)  # the API server compacted its history: an ERROR event, code 410
    gone = kube_backend.watch_jobs(changed.resource_version, timeout_seconds=1)
    kube_cluster.fail(1, 410, method="GET", path="/apis/batch/v1/jobs", message="too old resource version")
    refused = kube_backend.watch_jobs("1", timeout_seconds=1)  # or 410 as the answer itself
    assert gone.expired and gone.resource_version == ""
    assert refused.expired and refused.changed == frozenset() and refused.resource_version == ""


# -- quantities, and the share capped at the node's allocatable --


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("64", Decimal(64)),
        ("63500m", Decimal("63.5")),
        ("512Gi", Decimal(512 * 2**30)),
        ("1048576Ki", Decimal(2**30)),
        ("1.5Gi", Decimal(3 * 2**29)),
        ("100M", Decimal(10**8)),
        ("1e3", Decimal(1000)),
        ("250u", Decimal("0.000250")),
    ],
)
def test_quantities_are_parsed_exactly(text, value):
    assert parse_quantity(text) == value


@pytest.mark.parametrize("text", ["", "12Qi", "1.2.3", "Gi", "--1"])
def test_a_malformed_quantity_is_refused(text):
    with pytest.raises(ValueError, match="not a Kubernetes quantity"):
        parse_quantity(text)


def test_a_jobs_share_is_capped_at_its_nodes_allocatable(owner, renter, kube_cluster):
    # The server declares 64 cores and 256 GiB for its 2 GPUs; its node offers 63.5 cores and 1 GiB.
    listing, _ = _connect(owner, kube_cluster, name="prod", hostname="gpu-a", cpu="63500m", memory="1048576Ki")
    node = Node.objects.get(name="gpu-a")
    assert (node.cpu_allocatable_milli, node.memory_allocatable_mib) == (63500, 1024)
    start = next_hour(1)
    job = _submit(_booking(renter, listing, gpus=1, start=start), renter, now=start - timedelta(minutes=1))

    jobs.jobs_tick(now=start)

    job.refresh_from_db()
    pod = kube_cluster.stored("batch/v1/jobs", job.namespace, job.k8s_name)["spec"]["template"]["spec"]
    # 1 of 2 GPUs: min(64000, 63500) // 2 millicores and min(262144, 1024) // 2 MiB.
    assert pod["containers"][0]["resources"]["limits"] == {"nvidia.com/gpu": "1", "cpu": "31750m", "memory": "512Mi"}
    kube_cluster.run_pod(job.namespace, job.k8s_name, started_at=start)
    jobs.jobs_tick(now=start + timedelta(minutes=1))
    job.refresh_from_db()
    assert job.status == Job.Status.RUNNING  # it fits the node


# -- orphaned env Secrets --


def test_an_env_secret_that_outlived_its_job_is_collected(owner, renter, kube_cluster):
    listing, cluster = _connect(owner, kube_cluster, name="prod", hostname="gpu-a")
    start = next_hour(1)
    booking = _booking(renter, listing, gpus=2, start=start)
    gone = _submit(booking, renter, now=start - timedelta(minutes=1), name="gone", env={"TOKEN": "s3cret"})
    kept = _submit(booking, renter, now=start - timedelta(minutes=1), name="kept", env={"TOKEN": "other"})
    jobs.jobs_tick(now=start)
    gone.refresh_from_db()
    kept.refresh_from_db()
    foreign = {
        "metadata": {
            "name": "registry-env",
            "namespace": gone.namespace,
            "labels": {"app.kubernetes.io/managed-by": "infrafi"},
        }
    }
    kube_cluster.api("POST", f"/api/v1/namespaces/{gone.namespace}/secrets", foreign)
    jobs.job_cancel(job=gone, renter=renter, now=start + timedelta(minutes=1))
    gone.refresh_from_db()
    assert kube_cluster.stored("batch/v1/jobs", gone.namespace, gone.k8s_name) is None
    # Its Secret survives the Job (a garbage collector that lags, a Job deleted by hand, a failed delete).
    labels = {"app.kubernetes.io/managed-by": "infrafi", LABEL_JOB: str(gone.public_id)}
    leftover = {"metadata": {"name": f"{gone.k8s_name}-env", "namespace": gone.namespace, "labels": labels}}
    kube_cluster.api("POST", f"/api/v1/namespaces/{gone.namespace}/secrets", leftover)

    counts = ticks.cluster_tick(cluster_id=cluster.pk, now=start + timedelta(minutes=2))

    assert counts["secrets_collected"] == 1
    assert kube_cluster.stored("v1/secrets", gone.namespace, f"{gone.k8s_name}-env") is None
    assert kube_cluster.stored("v1/secrets", kept.namespace, f"{kept.k8s_name}-env") is not None  # its job lives
    assert kube_cluster.stored("v1/secrets", gone.namespace, "registry-env") is not None  # names no job


def test_a_cluster_whose_answer_cannot_be_read_only_holds_its_own_jobs(owner, renter, kube_cluster):
    listing, cluster = _connect(owner, kube_cluster, name="prod", hostname="gpu-a")
    start = next_hour(1)
    job = _submit(_booking(renter, listing, gpus=1, start=start), renter, now=start - timedelta(minutes=1))
    jobs.jobs_tick(now=start)
    # A Deployment the client cannot read (no selector: a real API server would have refused it).
    broken = {"metadata": {"name": "odd", "namespace": "ns", "labels": {"app.kubernetes.io/managed-by": "infrafi"}}}
    kube_cluster.api("POST", "/apis/apps/v1/namespaces/ns/deployments", {**broken, "spec": {"replicas": 1}})

    counts = jobs.jobs_tick(now=start + timedelta(minutes=1))

    cluster.refresh_from_db()
    job.refresh_from_db()
    assert counts["unreachable"] == 1 and "error" not in counts
    assert cluster.health == Cluster.Health.UNHEALTHY
    assert cluster.health_message == "Could not read the cluster's state (ValueError)."
    assert job.status == Job.Status.PENDING and job.k8s_name


def test_the_simulated_snapshot_gives_each_job_the_state_a_single_read_gives(owner, settings):
    from scheduler.backends.simulated import SimulatedBackend

    settings.SCHEDULER_SIM_START_SECONDS = 5
    cluster = clusters.cluster_create_simulated(owner=owner.owner_membership.company, name="sim", servers=[])
    backend = SimulatedBackend(cluster, clock=lambda: T0)
    backend.add_node(name="n1", gpus=4, product="NVIDIA-H100")
    backend.add_node(name="n2", gpus=4, product="NVIDIA-H100")
    for name, node, command in (("runs", "n1", ["python"]), ("sleeps", "n1", ["sleep", "1"]), ("lost", "n2", [])):
        SimulatedBackend(cluster, clock=lambda: T0 - timedelta(minutes=5)).create_job(
            _spec(name, node=node, command=command)
        )
    backend.set_node_ready("n2", False)

    snapshot = backend.snapshot()

    names = ("runs", "sleeps", "lost")
    assert {n: snapshot.job_state(NS, n) for n in names} == {n: backend.job_state(NS, n) for n in names}
    assert [snapshot.job_state(NS, n).phase for n in names] == [Phase.RUNNING, Phase.SUCCEEDED, Phase.INTERRUPTED]
    assert sorted(ref.name for ref in snapshot.refs) == sorted(names)


def test_a_job_whose_launch_is_in_flight_is_not_collected_but_a_stale_attempt_is(owner, renter, kube_cluster):
    listing, cluster = _connect(owner, kube_cluster, name="prod", hostname="gpu-a")
    start = next_hour(1)
    booking = _booking(renter, listing, gpus=1, start=start)
    job = _submit(booking, renter, now=start - timedelta(minutes=5))  # not launched: no attempt yet
    labels = {LABEL_BOOKING: str(booking.public_id), LABEL_JOB: str(job.public_id)}
    backend = backend_for(cluster)
    backend.ensure_namespace(NS)
    # Created by a launch whose row update has not landed yet (the next attempt's name), and an older attempt.
    in_flight = f"infrafi-{job.public_id.hex[:12]}-1"
    backend.create_job(_spec(in_flight, node="gpu-a", labels=labels, env={"K": "v"}))
    backend.create_job(_spec(f"infrafi-{job.public_id.hex[:12]}-0", node="gpu-a", labels=labels, env={"K": "v"}))
    backend.close()

    counts = ticks.cluster_tick(cluster_id=cluster.pk, now=start - timedelta(minutes=1))

    assert (counts["collected"], counts["secrets_collected"]) == (1, 0)
    assert kube_cluster.stored("batch/v1/jobs", NS, in_flight) is not None
    assert kube_cluster.stored("v1/secrets", NS, f"{in_flight}-env") is not None
    assert kube_cluster.stored("batch/v1/jobs", NS, f"infrafi-{job.public_id.hex[:12]}-0") is None
