"""A job's log followed live and downloaded: ``KubernetesBackend.logs_stream`` against the
emulator's streaming ``pods/log?follow=true`` (the text so far, each append, the end with the
container), the views ``/jobs/<id>/logs/stream`` (chunked, only for the job's renter) and
``/jobs/<id>/logs.txt`` (an attachment, cut at the cap with a note), and the simulated cluster's."""

import asyncio
import threading
from datetime import timedelta

import pytest
import yaml

from marketplace.services import bookings
from scheduler.backends.simulated import SimulatedBackend
from scheduler.services import clusters, jobs, logs
from tests.factories import PASSWORD, make_listing, make_renter, next_hour
from tests.test_browser import ARTIFACTS, app_server, browser_page  # noqa: F401 - fixtures

IMAGE = "ghcr.io/acme/trainer:1.4"
WAIT = 10  # seconds a step may take before the test gives up (a hang guard, not an assertion)


@pytest.fixture(autouse=True)
def _fast_kube(settings):
    settings.SCHEDULER_KUBE_TIMEOUT_SECONDS = 2
    settings.SCHEDULER_KUBE_RETRIES = 2
    settings.SCHEDULER_ALLOWED_PRIVATE_HOSTS = ["127.0.0.1"]


@pytest.fixture
def running(owner, renter, kube_cluster):
    """A job whose pod runs on the emulator, with one line of log."""
    listing = make_listing(owner, gpu_count=2, price="2.00", hostname="gpu-a")
    kube_cluster.add_node("gpu-a", gpus=2)
    clusters.cluster_connect(
        owner=owner.owner_membership.company, name="prod", kubeconfig=yaml.safe_dump(kube_cluster.kubeconfig)
    )
    start = next_hour(1)
    booking = bookings.booking_pay(
        booking=bookings.booking_create(
            renter=renter, listing=listing, gpu_count=1, start=start, end=start + timedelta(hours=1)
        ),
        renter=renter,
    )
    job = jobs.job_submit(booking=booking, renter=renter, name="train", image=IMAGE, gpu_count=1, now=start)
    job.refresh_from_db()
    kube_cluster.run_pod(job.namespace, job.k8s_name, started_at=start)
    kube_cluster.write_log(job.namespace, job.k8s_name, "epoch 1 loss 0.42\n")
    return job


class _Reader(threading.Thread):
    """Reads a chunk iterator to its end, noting each chunk as it comes."""

    def __init__(self, chunks):
        super().__init__(daemon=True)
        self.chunks = chunks
        self.got: list[bytes] = []
        self.changed = threading.Condition()

    def run(self):
        for chunk in self.chunks:
            with self.changed:
                self.got.append(chunk)
                self.changed.notify_all()

    def wait_for(self, text: bytes) -> bool:
        with self.changed:
            return self.changed.wait_for(lambda: text in b"".join(self.got), timeout=WAIT)


def test_following_streams_each_append_and_ends_with_the_container(running, kube_cluster, kube_backend):
    job = running
    reader = _Reader(kube_backend.logs_stream(job.namespace, job.k8s_name, follow=True))
    reader.start()
    assert reader.wait_for(b"epoch 1 loss 0.42\n")
    kube_cluster.write_log(job.namespace, job.k8s_name, "epoch 2 loss 0.31\n")
    assert reader.wait_for(b"epoch 2 loss 0.31\n")
    assert reader.is_alive()  # still following: the container runs
    kube_cluster.write_log(job.namespace, job.k8s_name, "done\n")
    kube_cluster.finish_pod(job.namespace, job.k8s_name, exit_code=0)
    reader.join(WAIT)
    assert not reader.is_alive()
    assert b"".join(reader.got) == b"epoch 1 loss 0.42\nepoch 2 loss 0.31\ndone\n"
    # each append came as its own chunk, not all at the end
    assert [c for c in reader.got if c] == [b"epoch 1 loss 0.42\n", b"epoch 2 loss 0.31\n", b"done\n"]


def test_the_stream_view_is_chunked_and_only_for_the_jobs_renter(running, kube_cluster, client_as, renter):
    job = running
    kube_cluster.finish_pod(job.namespace, job.k8s_name, exit_code=0)
    response = client_as(renter).get(f"/jobs/{job.public_id}/logs/stream")
    assert response.status_code == 200 and response.streaming
    assert response["Content-Type"] == "text/plain; charset=utf-8"
    assert b"".join(response.streaming_content) == b"epoch 1 loss 0.42\n"
    assert client_as(make_renter()).get(f"/jobs/{job.public_id}/logs/stream").status_code == 404
    page = client_as(renter).get(f"/jobs/{job.public_id}/")
    assert b'id="job-log-follow"' in page.content and b"js/job_logs.js" in page.content


def test_following_stops_at_the_cap_with_a_note(running, kube_cluster):
    job = running
    chunks = list(logs.job_log_follow(job=job, max_seconds=0))
    assert chunks[0] == b"epoch 1 loss 0.42\n"
    assert chunks[-1] == b"\n(stopped following after 0 s; reload to go on)\n"


def test_download_is_the_whole_log_as_an_attachment_cut_at_the_cap(running, kube_cluster, client_as, renter, settings):
    job = running
    kube_cluster.write_log(job.namespace, job.k8s_name, "".join(f"line {i}\n" for i in range(200)))
    response = client_as(renter).get(f"/jobs/{job.public_id}/logs.txt")
    assert response.status_code == 200
    assert response["Content-Disposition"] == 'attachment; filename="train-attempt-1.log"'
    assert response.content.startswith(b"epoch 1 loss 0.42\nline 0\n") and response.content.endswith(b"line 199\n")
    settings.SCHEDULER_LOG_DOWNLOAD_BYTES = 18
    cut = client_as(renter).get(f"/jobs/{job.public_id}/logs.txt").content
    assert cut == b"epoch 1 loss 0.42\n\n(cut at 18 bytes: the log is longer)\n"
    assert client_as(make_renter()).get(f"/jobs/{job.public_id}/logs.txt").status_code == 404


def test_a_job_not_started_says_so(owner, renter):
    listing = make_listing(owner, gpu_count=1, price="2.00", hostname="gpu-s")
    clusters.cluster_create_simulated(owner=owner.owner_membership.company, name="sim")
    start = next_hour(2)
    booking = bookings.booking_pay(
        booking=bookings.booking_create(
            renter=renter, listing=listing, gpu_count=1, start=start, end=start + timedelta(hours=1)
        ),
        renter=renter,
    )
    job = jobs.job_submit(booking=booking, renter=renter, name="later", image=IMAGE, gpu_count=1)
    assert list(logs.job_log_follow(job=job)) == [logs.NO_ATTEMPT.encode()]
    assert logs.job_log_download(job=job) == logs.NO_ATTEMPT.encode()


def test_the_simulated_cluster_streams_and_downloads_its_log(owner, renter):
    listing = make_listing(owner, gpu_count=1, price="2.00", hostname="gpu-s")
    cluster = clusters.cluster_create_simulated(owner=owner.owner_membership.company, name="sim")
    start = next_hour(1)
    booking = bookings.booking_pay(
        booking=bookings.booking_create(
            renter=renter, listing=listing, gpu_count=1, start=start, end=start + timedelta(hours=1)
        ),
        renter=renter,
    )
    job = jobs.job_submit(
        booking=booking, renter=renter, name="sim", image=IMAGE, command=["sleep", "60"], gpu_count=1, now=start
    )
    job.refresh_from_db()
    backend = SimulatedBackend(cluster, clock=lambda: start + timedelta(minutes=5))  # finished after 60 s
    streamed = b"".join(backend.logs_stream(job.namespace, job.k8s_name, follow=True))
    assert streamed.startswith(b"[simulated] pulled ghcr.io/acme/trainer:1.4")
    assert streamed.endswith(b"[simulated] succeeded: Completed (exit code 0)\n")
    assert backend.logs_full(job.namespace, job.k8s_name, limit_bytes=10) == streamed[:10]


@pytest.mark.browser
@pytest.mark.django_db(transaction=True)
def test_follow_live_in_chromium_appends_the_log_as_it_grows(
    catalogue,  # first: a flushed database gets its regions back before ``running`` needs them
    running,
    renter,
    kube_cluster,
    app_server,  # noqa: F811 - the imported fixture
    browser_page,  # noqa: F811 - the imported fixture
):
    from playwright.sync_api import expect

    job = running  # made before Playwright starts: the ORM must not run in its greenlet
    page = browser_page
    page.goto(app_server.url + "/accounts/login/")
    page.fill("input[name=login]", renter.email)
    page.fill("input[name=password]", PASSWORD)
    page.locator("form button[type=submit]").first.click()
    page.wait_for_url("**/renter/**")
    page.goto(f"{app_server.url}/jobs/{job.public_id}/")
    page.locator("#job-log-follow").click()
    logs_box, state = page.locator("#job-logs"), page.locator("#job-log-state")
    expect(logs_box).to_contain_text("epoch 1 loss 0.42", timeout=10_000)
    kube_cluster.write_log(job.namespace, job.k8s_name, "epoch 2 loss 0.31\n")
    expect(logs_box).to_contain_text("epoch 2 loss 0.31", timeout=10_000)
    assert state.inner_text() == "following…"
    kube_cluster.finish_pod(job.namespace, job.k8s_name, exit_code=0)
    expect(state).to_have_text("the stream ended", timeout=10_000)
    assert logs_box.text_content() == "epoch 1 loss 0.42\nepoch 2 loss 0.31\n"
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "job-log-follow.png"))


def test_under_asgi_each_chunk_is_handed_on_as_it_comes(running, kube_cluster):
    """Django sends a synchronous iterator under ASGI only once whole; the asynchronous one must
    hand over the first chunk while the container still runs, then the next once written."""
    job = running
    assert job.cluster is not None  # loaded here: the reading thread has a database connection of its own

    async def follow() -> list[bytes]:
        chunks = logs.job_log_follow_async(job=job)
        got = [await asyncio.wait_for(anext(chunks), WAIT)]  # before the container ends
        await asyncio.to_thread(kube_cluster.write_log, job.namespace, job.k8s_name, "epoch 2 loss 0.31\n")
        got.append(await asyncio.wait_for(anext(chunks), WAIT))
        await asyncio.to_thread(kube_cluster.finish_pod, job.namespace, job.k8s_name, exit_code=0)
        got.extend([chunk async for chunk in chunks])
        return got

    assert asyncio.run(follow()) == [b"epoch 1 loss 0.42\n", b"epoch 2 loss 0.31\n"]
