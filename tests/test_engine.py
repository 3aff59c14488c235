"""The placement engine the product uses (scheduler.engine): built from the database, kept in step by the
change feed and time, and never trusted blindly (its options are verified against the database).

Real parts: PostgreSQL, the marketplace's booking services, simulated clusters, threads for another
connection."""

import random
import threading
from datetime import timedelta
from decimal import Decimal

import pytest
from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import connection
from django.db.models import Count
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from core.errors import ConflictError
from financing.models import Instalment
from financing.selectors.placement import HOURS_PER_MONTH, placement_needs
from marketplace.models import AllocationChange, Booking, BookingGpu, Gpu, Listing
from marketplace.services import bookings
from marketplace.services.listings import listing_set_status
from scheduler import engine, placement
from scheduler.models import Cluster, Node
from scheduler.services import clusters
from tests.factories import make_listing, make_owner

pytestmark = pytest.mark.skipif(
    not settings.DATABASES["default"]["ENGINE"].endswith("postgresql"), reason="PostgreSQL only"
)

H100 = frozenset({"H100 80GB"})


def _fleet(count: int = 4, gpus: int = 4):
    """``count`` listings of ``gpus`` H100s on one owner's simulated cluster (ready nodes)."""
    owner = make_owner()
    listings = [make_listing(owner, gpu_count=gpus, price=f"2.{i:02d}", hostname=f"gpu-{i}") for i in range(count)]
    cluster = clusters.cluster_create_simulated(
        owner=owner.owner_membership.company, name="sim", servers=[listing.server for listing in listings]
    )
    return listings, cluster


def _now_window(hours: int = 2):
    """A window holding now: bookings in it take GPUs from the engine's state of now."""
    start = timezone.now().replace(second=0, microsecond=0) - timedelta(minutes=1)
    return start, start + timedelta(hours=hours)


def _book(renter, listing, gpu_count: int, *, hours: int = 2) -> Booking:
    start, end = _now_window(hours)
    return bookings.booking_create(
        renter=renter, listing=listing, gpu_count=gpu_count, start=start, end=end, now=start - timedelta(minutes=1)
    )


def _db_free_now(server_id: int) -> int:
    now = timezone.now()
    in_service = Gpu.objects.filter(server_id=server_id, status=Gpu.Status.AVAILABLE).count()
    held = BookingGpu.objects.filter(server_id=server_id, held=True, start__lte=now, end__gt=now).aggregate(
        n=Count("gpu_id", distinct=True)
    )["n"]
    return in_service - held


def _options(gpu_count: int, *, k: int = 8, exclude=()):
    start, end = _now_window()
    request = placement.Request(gpu_count=gpu_count, models=H100)
    return engine.placement_options(request, start=start + timedelta(minutes=2), end=end, k=k, exclude=exclude)


def test_engine_free_gpus_equal_the_database_after_random_service_calls(renter):
    """Given a fleet and a built engine, when a random sequence of creates, cancels, expiries, moves and
    interrupts runs through the booking services, then after each the engine's free GPUs per server equal the
    database's."""
    listings, _ = _fleet(count=3, gpus=4)
    rng = random.Random(16)
    done = dict.fromkeys(["create", "cancel", "expire", "move", "interrupt"], 0)
    live: list[Booking] = []
    assert [engine.engine_free(listing.server_id) for listing in listings] == [4, 4, 4]
    for step in range(24):
        action = rng.choice(["create", "create", "cancel", "expire", "move", "interrupt"]) if live else "create"
        try:
            if action == "create":
                booking = _book(renter, rng.choice(listings), rng.randint(1, 2))
                if rng.random() < 0.6:  # paid: it can be moved and interrupted
                    booking = bookings.booking_pay(booking=booking, renter=renter)
                live.append(booking)
            elif action == "cancel":
                bookings.booking_cancel(booking=live.pop(rng.randrange(len(live))), renter=renter)
            elif action == "expire":
                booking = live.pop(rng.randrange(len(live)))
                Booking.objects.filter(pk=booking.pk, status=Booking.Status.PENDING_PAYMENT).update(
                    expires_at=timezone.now() - timedelta(minutes=1)
                )
                bookings.bookings_tick()
            elif action == "move":
                booking = live[rng.randrange(len(live))]
                booking.refresh_from_db()
                target = rng.choice([listing for listing in listings if listing.server_id != booking.server_id])
                bookings.booking_move(booking=booking, listing=target, at=timezone.now())
            else:
                booking = live.pop(rng.randrange(len(live)))
                booking.refresh_from_db()
                bookings.booking_interrupt(
                    booking=booking, failed_at=timezone.now(), resumed_at=None, key=f"fail-{step}"
                )
        except (ConflictError, ValidationError):  # a full server, or a booking in a state that refuses it
            done[action] -= 1
        done[action] += 1
        engine_view = {listing.server_id: engine.engine_free(listing.server_id) for listing in listings}
        db_view = {listing.server_id: _db_free_now(listing.server_id) for listing in listings}
        assert engine_view == db_view, (step, action)
    assert all(done.values()), done  # every kind of call ran at least once


@pytest.mark.django_db(transaction=True)
def test_a_booking_made_by_another_connection_is_seen_after_sync(catalogue, renter):
    """Given a built engine, when another thread (its own connection) books 3 GPUs and commits, then the engine's
    next sync sees them taken."""
    listings, _ = _fleet(count=1, gpus=4)
    server_id = listings[0].server_id
    assert engine.engine_free(server_id) == 4

    def book():
        try:
            _book(renter, Listing.objects.get(pk=listings[0].pk), 3)
        finally:
            connection.close()

    worker = threading.Thread(target=book)
    worker.start()
    worker.join()
    assert engine.engine_free(server_id) == 1
    assert [c.server_id for c in _options(2)] == []


@pytest.mark.django_db(transaction=True)
def test_a_choice_sees_a_server_freed_and_one_filled_by_another_connection_since_the_last(catalogue, renter):
    """Given a warm engine that has server A full and B free, when another connection frees A and fills B and
    commits, then the very next choice offers A (the change feed is read with its verification, and the pool is
    brought in step before it answers) and the engine has both servers as the database does."""
    (a, b), _ = _fleet(count=2, gpus=4)
    held = _book(renter, a, 4)  # pending payment: expiring it frees A now
    assert [c.server_id for c in _options(4)] == [b.server_id]

    def free_a_fill_b():
        try:
            Booking.objects.filter(pk=held.pk).update(expires_at=timezone.now() - timedelta(minutes=1))
            bookings.bookings_tick()
            _book(renter, Listing.objects.get(pk=b.pk), 4)
        finally:
            connection.close()

    worker = threading.Thread(target=free_a_fill_b)
    worker.start()
    worker.join()
    assert [c.server_id for c in _options(4)] == [a.server_id]
    assert engine.engine_free(a.server_id) == 4 and engine.engine_free(b.server_id) == 0


def _statement_runs() -> int:
    """Executions of this connection's prepared statements (each runs a generic or a custom plan)."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT coalesce(sum(generic_plans + custom_plans), 0) FROM pg_prepared_statements")
        return cursor.fetchone()[0]


@pytest.mark.django_db(transaction=True)
def test_a_choice_when_nothing_changed_is_one_round_trip(catalogue):
    """Given a warm engine, when nothing changed since its last choice, then the next choice runs one statement
    (the verification, the change feed read with it) and no other query."""
    listings, _ = _fleet(count=3, gpus=4)
    assert len(_options(1, k=2)) == 2
    before = _statement_runs()
    with CaptureQueriesContext(connection) as queries:
        options = _options(1, k=2)
    assert len(options) == 2 and {c.server_id for c in options} < {listing.server_id for listing in listings}
    assert _statement_runs() - before == 1
    assert len(queries) == 0  # nothing through Django's cursor either


def test_a_stale_engine_never_offers_a_server_that_is_not_free(renter):
    """Given a built engine, when a booking fills a server and its change row is lost (the engine is not told),
    then the engine still does not offer that server: the options are verified against the database."""
    listings, _ = _fleet(count=2, gpus=4)
    assert {c.server_id for c in _options(4)} == {listing.server_id for listing in listings}
    _book(renter, listings[0], 4)
    AllocationChange.objects.all().delete()  # the feed lost the change
    options = _options(4)
    assert [c.server_id for c in options] == [listings[1].server_id]
    assert options[0].listing.pk == listings[1].pk and options[0].price == Decimal("2.01")


def test_a_future_booking_in_the_window_is_checked_per_candidate(renter):
    """A booking that starts later (not held now, so free in the engine's state) still excludes the server from a
    window it overlaps."""
    listings, _ = _fleet(count=2, gpus=2)
    later = timezone.now().replace(second=0, microsecond=0) + timedelta(minutes=30)
    bookings.booking_create(
        renter=renter, listing=listings[0], gpu_count=2, start=later, end=later + timedelta(hours=1)
    )
    assert engine.engine_free(listings[0].server_id) == 2  # nothing held now
    assert [c.server_id for c in _options(2)] == [listings[1].server_id]


def test_options_exclude_unready_nodes_unhealthy_clusters_and_paused_listings(db):
    """Given four servers and a built engine, when one node goes not ready, one listing is paused and another
    owner's cluster goes unhealthy, then only the fourth is offered; and a rebuild agrees."""
    listings, cluster = _fleet(count=3, gpus=2)
    other = make_owner()
    elsewhere = make_listing(other, gpu_count=2, price="2.50", hostname="gpu-x")
    other_cluster = clusters.cluster_create_simulated(
        owner=other.owner_membership.company, name="other", servers=[elsewhere.server]
    )
    assert len(_options(1)) == 4
    clusters.simulated_node_set_ready(cluster=cluster, node_name="gpu-0", ready=False)
    listing_set_status(listing=listings[1], status=Listing.Status.PAUSED)
    clusters.cluster_mark_unhealthy(cluster=other_cluster, error=RuntimeError("unreachable"), now=timezone.now())
    assert not Node.objects.get(server=listings[0].server).ready
    assert Cluster.objects.get(pk=other_cluster.pk).health == Cluster.Health.UNHEALTHY
    assert [c.server_id for c in _options(1)] == [listings[2].server_id]
    assert engine.engine_free(listings[0].server_id) == 0  # not placeable: the engine dropped it
    engine.reset_engine()
    assert [c.server_id for c in _options(1)] == [listings[2].server_id]


def test_options_are_distinct_and_honour_exclude_and_k(db):
    listings, _ = _fleet(count=4, gpus=2)
    options = _options(1, k=3, exclude={listings[0].server_id})
    ids = [c.server_id for c in options]
    assert len(ids) == 3 and len(set(ids)) == 3 and listings[0].server_id not in ids


def test_needs_are_the_gpus_whose_rent_after_fee_and_insurance_pays_the_next_instalment(loan):
    """A financed server needs payment / (price × (1 − fee − insurance) × hours a month) GPUs rented; a server
    without a loan is absent; a dearer loan needs more (the engine prefers the one closest to covering)."""
    server = loan.collateral.server
    upcoming = Instalment.objects.filter(loan=loan, due__gt=timezone.now()).order_by("number").first()
    payment = upcoming.payment if upcoming else loan.scheduled_payment
    price = server.listing.price_per_gpu_hour
    reaching = 1 - settings.WATERFALL_PLATFORM_FEE - settings.WATERFALL_INSURANCE
    unfinanced = make_listing(make_owner(), gpu_count=2, hostname="plain")
    needs = placement_needs([server.pk, unfinanced.server_id])
    assert set(needs) == {server.pk}
    assert needs[server.pk] == pytest.approx(float(payment / (price * reaching * HOURS_PER_MONTH)))
    Listing.objects.filter(pk=server.listing.pk).update(price_per_gpu_hour=price * 2)
    assert placement_needs([server.pk])[server.pk] == pytest.approx(needs[server.pk] / 2)


def test_failover_uses_the_engine(renter):
    """A failed server's booking moves to the engine's choice, not to the excluded server, and the engine then
    sees the moved GPUs held on the target."""
    from scheduler.services.jobs import _equivalent_listing

    listings, _ = _fleet(count=3, gpus=2)
    booking = bookings.booking_pay(booking=_book(renter, listings[2], 2), renter=renter)  # the dearest
    target = _equivalent_listing(booking, timezone.now())
    assert target is not None and target.server_id != listings[2].server_id
    bookings.booking_move(booking=booking, listing=target, at=timezone.now())
    assert engine.engine_free(target.server_id) == 0
    assert engine.engine_free(listings[2].server_id) == 2


def test_a_new_process_starts_from_the_demand_the_last_one_saved(db, settings):
    # given an engine over two models that learnt from requests and refreshed its loans' needs (which saves
    # the demand)
    owner = make_owner()
    servers = [
        make_listing(owner, model=model, hostname=f"gpu-{model[:4]}").server for model in ("H100 80GB", "A100 80GB")
    ]
    clusters.cluster_create_simulated(owner=owner.owner_membership.company, name="sim", servers=servers)
    start, end = _now_window()
    settings.PLACEMENT_NEEDS_REFRESH_SECONDS = 0
    engine.reset_engine()
    for _ in range(20):
        engine.placement_options(placement.Request(1, models=H100), start=start, end=end)
    engine.placement_options(placement.Request(1), start=start, end=end)
    learnt = engine._engine().pool.demand_snapshot()
    assert learnt[H100] > 0
    assert engine.load_demand() == pytest.approx(learnt)
    # when the process is replaced (a new engine, built from the database)
    engine.reset_engine()
    engine.rebuild_engine()
    # then its pool starts from that demand, not from the prior alone
    assert engine._engine().pool.demand_snapshot() == pytest.approx(learnt)
