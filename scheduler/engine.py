"""The placement engine the product uses: one ``placement.Pool`` per process, kept in step with the database.

Quick book and failover ask ``placement_options``. The pool holds the state *now* of every placeable
listing (an active listing on a ready node of a cluster that is not unhealthy): its GPUs, CPU and
memory, what is held on it, and the collateral need of its loan. It is built lazily from the database
at first use (never at import: tests and migrations must not touch the database there) and kept in step
by pulling, since marketplace may not call up into the scheduler (DESIGN.md):

- the change feed (``marketplace.AllocationChange``): every booking, hold, cancel, expiry, interrupt,
  move, GPU status and listing change writes a row in its own transaction; with each choice the
  engine reads the rows of the last few seconds (ids can commit out of order, so the slack re-reads a
  window and skips ids already seen) and re-derives each changed server from the database, never
  applying deltas blindly. The read rides in the verification's statement (one round trip a choice);
  when it names a change the pool is brought in step and asked again before answering;
- time passing: holds that ended or started since the last sync (a heap of the next event per server);
- a full rebuild every ``PLACEMENT_REBUILD_SECONDS`` as a safety net, and the loans' needs every
  ``PLACEMENT_NEEDS_REFRESH_SECONDS``.

The pool's answer is only a proposal: before returning, the options are verified against the database
for the requested window in one query (future bookings, availability slots, GPUs in service, CPU and
memory), so a stale engine costs a retry, never a wrong answer. ``booking_create`` under the server's
lock stays the authority.
"""

from __future__ import annotations

import copy
import heapq
import logging
import threading
import time
from collections.abc import Collection, Iterable
from dataclasses import dataclass, fields
from datetime import datetime, timedelta
from decimal import Decimal

import psycopg
from django.conf import settings
from django.core.cache import cache
from django.db import connection
from django.db.models import F, Func, OuterRef, QuerySet, Subquery
from django.utils import timezone

from marketplace.models import AllocationChange, Booking, BookingGpu, Gpu, Listing
from scheduler import placement, selectors
from scheduler.models import Cluster

# How far back each sync re-reads the change feed: a row written by a transaction that committed after
# a later one is still seen if it committed within this slack (the periodic rebuild catches the rest).
CHANGE_SLACK = timedelta(seconds=5)
# Rounds of "ask the pool, verify against the database" before giving up on filling k options.
VERIFY_ROUNDS = 3
# Options asked of the pool beyond k per round, so that a few stale ones do not cost a round.
SPARE = 2

_NODE_FIELDS = {f.name for f in fields(placement.Node)}
logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Candidate:
    """A server that can take the request for the window, verified against the database."""

    server_id: int
    listing: Listing  # with server, gpu_model, region loaded
    price: Decimal  # per GPU-hour
    region: str  # region code
    reliability: Decimal


def _count_distinct(field: str) -> Func:
    return Func(F(field), function="COUNT", template="COUNT(DISTINCT %(expressions)s)")


def _slots() -> Subquery:
    """All GPU slots of the listing's server (the even split's divisor, as ``Listing.share_per_gpu``)."""
    return Subquery(Gpu.objects.filter(server_id=OuterRef("server_id")).order_by().values(n=_count_distinct("id")))


def _placeable() -> QuerySet[Listing]:
    """Listings placement may use: active, with GPUs in service, on a ready node of a healthy cluster."""
    return (
        Listing.objects.filter(status=Listing.Status.ACTIVE, gpus_in_service__gte=1, server__cluster_node__ready=True)
        .exclude(server__cluster_node__cluster__health=Cluster.Health.UNHEALTHY)
        .select_related("server", "gpu_model", "region")
        .annotate(slot_count=_slots())
    )


def _node(listing: Listing) -> placement.Node:
    cpu_per_gpu, memory_per_gpu = listing.share_per_gpu(
        listing.server, gpus=listing.slot_count or listing.gpus_in_service
    )
    values = {
        "server_id": listing.server_id,
        "model": listing.gpu_model.name,
        "gpus": listing.gpus_in_service,
        "vram_gb": listing.vram_gb or 0,
        "price": listing.price_per_gpu_hour,
        "region": listing.region.code,
        "cpu_milli": listing.server.cpu_milli,
        "memory_mib": listing.server.memory_mib,
        "cpu_per_gpu_milli": cpu_per_gpu,
        "memory_per_gpu_mib": memory_per_gpu,
    }
    return placement.Node(**{k: v for k, v in values.items() if k in _NODE_FIELDS})


class _Engine:
    """The process's pool and what keeps it in step (callers hold ``_LOCK``)."""

    def __init__(self) -> None:
        self.pool: placement.Pool | None = None
        self.nodes: dict[int, placement.Node] = {}
        self.listings: dict[int, Listing] = {}  # server -> its listing (server, gpu_model, region loaded)
        self.used: dict[int, tuple[int, int, int]] = {}  # server -> (gpus, cpu, memory) held now, as the pool has it
        self.events: list[tuple[datetime, int]] = []  # (when a hold on the server starts or ends, server)
        self.seen: set[int] = set()  # change ids already applied within the slack window
        self.synced_at: datetime | None = None
        self.built_at = 0.0
        self.needs_at = 0.0
        self.needs: dict[int, float] = {}
        self.stale: set[int] = set()  # servers a verification found out of step: re-read at the next sync

    # --- building and syncing ------------------------------------------------------------------

    def rebuild(self) -> None:
        """Everything from the database: nodes, what is held now, the loans' needs."""
        now = timezone.now()
        listings = list(_placeable())
        self.listings = {listing.server_id: listing for listing in listings}
        self.nodes = {listing.server_id: _node(listing) for listing in listings}
        self.used, self.events = {}, []
        self._holds(now, self.nodes)
        self.seen = set(
            AllocationChange.objects.filter(changed_at__gte=now - CHANGE_SLACK).values_list("id", flat=True)
        )
        self.synced_at = now
        self.built_at = self.needs_at = time.monotonic()
        self.needs = selectors.collateral_needs(self.nodes, now=now)
        self._new_pool()

    def _new_pool(self) -> None:
        # A rebuild keeps what the process learnt; a new process starts from what the last one saved.
        demand = self.pool.demand_snapshot() if self.pool is not None else load_demand()
        self.pool = placement.Pool(list(self.nodes.values()), policy="ours", needs=self.needs, learnt=demand)
        for server_id, (gpus, cpu, memory) in self.used.items():
            if server_id in self.nodes and (gpus or cpu or memory):
                self.pool.allocate(server_id, min(gpus, self.nodes[server_id].gpus), cpu, memory)

    def _holds(self, now: datetime, servers: Collection[int]) -> None:
        """Read the held GPUs of ``servers`` that end after now: what is held now goes to ``used``, the next
        start or end of a hold to ``events``."""
        rows = BookingGpu.objects.filter(held=True, end__gt=now)
        if len(servers) < len(self.nodes) or not self.nodes:
            rows = rows.filter(server_id__in=list(servers))
        gpus: dict[int, set[int]] = {}
        shares: dict[int, dict[int, tuple[int, int]]] = {}
        nxt: dict[int, datetime] = {}
        for server_id, booking_id, gpu_id, start, end, cpu, memory in rows.values_list(
            "server_id", "booking_id", "gpu_id", "start", "end", "booking__cpu_milli", "booking__memory_mib"
        ):
            if start <= now:
                gpus.setdefault(server_id, set()).add(gpu_id)
                shares.setdefault(server_id, {})[booking_id] = (cpu, memory)
                when = end
            else:
                when = start
            if server_id not in nxt or when < nxt[server_id]:
                nxt[server_id] = when
        for server_id in servers:
            share = shares.get(server_id, {}).values()
            self.used[server_id] = (
                len(gpus.get(server_id, ())),
                sum(c for c, _ in share),
                sum(m for _, m in share),
            )
        for server_id, when in nxt.items():
            heapq.heappush(self.events, (when, server_id))

    def sync(self) -> None:
        """Bring the pool in step: a rebuild when due, else the servers the change feed names and those whose
        holds started or ended since the last sync."""
        if self.prepare():
            return
        read_at = timezone.now()
        if "changes" not in _SQL:
            table = AllocationChange._meta.db_table  # a model's table name, not input
            _SQL["changes"] = f"SELECT id, server_id FROM {table} WHERE changed_at >= %s"  # noqa: S608
        self.take_feed(_prepared(_SQL["changes"], [self.synced_at - CHANGE_SLACK]), read_at)

    def prepare(self) -> bool:
        """All of a sync but the change feed: a rebuild when due (True: the pool is in step, no feed to read), the
        servers whose holds started or ended since the last sync and those a verification found stale, the loans'
        needs when due."""
        mono = time.monotonic()
        if self.synced_at is None or mono - self.built_at >= settings.PLACEMENT_REBUILD_SECONDS:
            self.rebuild()
            return True
        now = timezone.now()
        due = set()
        while self.events and self.events[0][0] <= now:
            due.add(heapq.heappop(self.events)[1])
        retry, self.stale = self.stale, set()
        if due or retry:
            self.refresh(due | retry, now)
        if mono - self.needs_at >= settings.PLACEMENT_NEEDS_REFRESH_SECONDS:
            self.needs_at = mono
            needs = selectors.collateral_needs(self.nodes, now=now)
            for server_id in set(self.needs) | set(needs):
                if server_id in self.nodes:
                    self.pool.set_need(server_id, needs.get(server_id, 0.0))
            self.needs = needs
            save_demand(self.pool.demand_snapshot())
        return False

    def take_feed(self, rows: list[tuple[int, int]], read_at: datetime) -> bool:
        """Re-derive the servers named by change-feed rows not seen yet, ``rows`` being the feed since
        ``synced_at - CHANGE_SLACK`` read at or after ``read_at``. True when a server changed."""
        changed = {server_id for change_id, server_id in rows if change_id not in self.seen}
        self.seen = {change_id for change_id, _ in rows}
        self.synced_at = read_at
        if changed:
            self.refresh(changed, read_at)
            if connection.in_atomic_block:  # read inside the caller's transaction: re-read once more next time
                self.stale |= changed
        return bool(changed)

    def refresh(self, servers: Iterable[int], now: datetime) -> None:
        """Re-derive ``servers`` from the database (idempotent: the same state however often it runs)."""
        servers = set(servers)
        listings = {listing.server_id: listing for listing in _placeable().filter(server_id__in=servers)}
        self._holds(now, servers)
        for server_id in servers:
            listing = listings.get(server_id)
            if listing is None:
                self.listings.pop(server_id, None)
                if server_id in self.nodes:
                    del self.nodes[server_id]
                    self.pool.remove_node(server_id)
                self.used.pop(server_id, None)
                continue
            node = _node(listing)
            known = server_id in self.nodes
            self.listings[server_id] = listing
            self.nodes[server_id] = node
            self.pool.upsert_node(node)  # a known server keeps its allocation; a new one has none
            if not known:
                self.pool.set_need(server_id, self.needs.get(server_id, 0.0))
            self._shift(server_id, self.pool.used(server_id), self.used[server_id])

    def _shift(self, server_id: int, old: tuple[int, int, int], new: tuple[int, int, int]) -> None:
        """Move the pool's allocation of the server from ``old`` to ``new`` (each dimension up or down)."""
        up = [max(0, n - o) for o, n in zip(old, new, strict=True)]
        down = [max(0, o - n) for o, n in zip(old, new, strict=True)]
        if any(down):
            self.pool.release(server_id, *down)
        up[0] = min(up[0], self.pool.free(server_id))  # more held than in service (a GPU taken out): all taken
        if any(up):
            self.pool.allocate(server_id, *up)

    # --- choosing -----------------------------------------------------------------------------

    def options(
        self,
        request: placement.Request,
        *,
        start: datetime,
        end: datetime,
        k: int,
        exclude: Collection[int],
        feed: bool = False,
    ) -> list[Candidate]:
        """Up to k verified candidates. ``feed``: the change feed is still to be read (``prepare`` ran, not
        ``sync``): the first verification reads it in its round trip, and when it names a changed server the pool is
        brought in step and asked again, so the proposal is the one a sync first would have made."""
        excluded = set(exclude)
        found: list[Candidate] = []
        rounds = 0
        while rounds < VERIFY_ROUNDS:
            proposed = self.pool.options(request, k - len(found) + SPARE, exclude=excluded)
            if not proposed and not feed:
                break
            read_at = timezone.now()
            since = self.synced_at - CHANGE_SLACK if feed else None
            verified, changes = _verify(request, proposed, self.listings, start=start, end=end, since=since)
            if feed:
                feed = False
                if self.take_feed(changes, read_at):
                    continue  # the pool was behind the database: ask it again
            if not proposed:
                break
            rounds += 1
            for server_id in proposed:
                excluded.add(server_id)
                fresh = verified.get(server_id)
                if fresh is None:
                    self.stale.add(server_id)  # the pool thought it fit: re-read it at the next sync
                elif len(found) < k:
                    listing = copy.copy(self.listings[server_id])  # with the price and reliability just read
                    listing.price_per_gpu_hour, listing.reliability = fresh
                    found.append(
                        Candidate(
                            server_id=server_id,
                            listing=listing,
                            price=listing.price_per_gpu_hour,
                            region=listing.region.code,
                            reliability=listing.reliability,
                        )
                    )
            if len(found) >= k:
                break
        return found

    def free(self, server_id: int) -> int:
        """Free GPUs of the server now, as the engine has it (0 when not placeable)."""
        return self.pool.free(server_id) if server_id in self.nodes else 0


def _tables() -> dict[str, str]:
    from marketplace.models import AvailabilitySlot, GpuModel, Server
    from scheduler.models import Node

    models = {
        "listing": Listing,
        "server": Server,
        "gpu": Gpu,
        "hold": BookingGpu,
        "booking": Booking,
        "slot": AvailabilitySlot,
        "model": GpuModel,
        "node": Node,
        "cluster": Cluster,
        "change": AllocationChange,
    }
    return {name: model._meta.db_table for name, model in models.items()}


# One round trip in SQL written once (building the ORM query per call cost more than running it): the
# listing, its node and cluster still placeable; GPUs in service; GPUs held in the window; the CPU and
# memory of the bookings holding in the window (a conservative sum: the exact peak only when it binds).
_VERIFY_SQL = """
SELECT NULL::bigint AS change_id, l.server_id, l.price_per_gpu_hour, l.reliability, l.cpu_milli_per_gpu,
       l.memory_mib_per_gpu, s.cpu_milli, s.memory_mib, g.slots, g.in_service, h.busy,
       coalesce(b.cpu, 0) AS cpu_held, coalesce(b.memory, 0) AS memory_held
FROM {listing} l
JOIN {server} s ON s.id = l.server_id
JOIN {model} m ON m.id = l.gpu_model_id
JOIN {node} n ON n.server_id = l.server_id AND n.ready
JOIN {cluster} c ON c.id = n.cluster_id AND c.health <> %(unhealthy)s
CROSS JOIN LATERAL (
  SELECT count(*) AS slots, count(*) FILTER (WHERE status = %(available)s) AS in_service
  FROM {gpu} WHERE server_id = l.server_id) g
CROSS JOIN LATERAL (
  SELECT count(DISTINCT gpu_id) AS busy, array_agg(DISTINCT booking_id) AS bookings
  FROM {hold} WHERE server_id = l.server_id AND held AND start < %(end)s AND "end" > %(start)s) h
LEFT JOIN LATERAL (
  SELECT sum(cpu_milli) AS cpu, sum(memory_mib) AS memory FROM {booking} WHERE id = ANY(h.bookings)) b ON true
WHERE l.server_id = ANY(%(servers)s::bigint[]) AND l.status = %(active)s AND l.gpus_in_service >= %(n)s
  AND (l.always_available OR EXISTS (SELECT 1 FROM {slot} a
       WHERE a.listing_id = l.id AND a.start <= %(start)s AND a."end" >= %(end)s))
  AND (%(any_model)s OR m.name = ANY(%(models)s))
  AND coalesce(l.vram_gb, 0) >= %(vram)s
  AND (%(no_cap)s OR l.price_per_gpu_hour <= %(cap)s)
UNION ALL
SELECT id, server_id, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL
FROM {change} WHERE %(feed)s AND changed_at >= %(since)s
"""
_SQL: dict[str, str] = {}
# A threshold no statement reaches: psycopg then prepares only what is executed with prepare=True (ours).
_EXPLICIT_PREPARE_ONLY = 2**31 - 1


def _prepared(sql: str, params) -> list[tuple]:
    """Run ``sql`` as a prepared statement on PostgreSQL (planning the verify query cost more than running it
    at 10,000 servers); through Django's cursor elsewhere. Same connection and transaction either way."""
    connection.ensure_connection()
    if connection.vendor != "postgresql":  # pragma: no cover - the engine's SQL is PostgreSQL's
        with connection.cursor() as cursor:
            cursor.execute(sql, params)
            return cursor.fetchall()
    raw = connection.connection
    if raw.prepare_threshold is None:  # Django's default turns psycopg's prepared statements off altogether
        raw.prepare_threshold = _EXPLICIT_PREPARE_ONLY
    # Django's cursors bind on the client and never prepare: a server-side binding cursor on the same connection.
    with psycopg.Cursor(raw) as cursor:
        cursor.execute(sql, params, prepare=True)
        return cursor.fetchall()


def _verify(
    request: placement.Request,
    server_ids: list[int],
    listings: dict[int, Listing],
    *,
    start: datetime,
    end: datetime,
    since: datetime | None = None,
) -> tuple[dict[int, tuple[Decimal, Decimal]], list[tuple[int, int]]]:
    """Of ``server_ids``, those whose listing can take ``request`` for [start, end), by the database (one query;
    a second, exact one only for servers whose CPU or memory looks short by the conservative sum), each with the
    price and reliability just read; and, given ``since``, the change feed (id, server) since then, read by the same
    query."""
    if "verify" not in _SQL:
        _SQL["verify"] = _VERIFY_SQL.format(**_tables())
    params = {
        "available": Gpu.Status.AVAILABLE.value,
        "unhealthy": Cluster.Health.UNHEALTHY.value,
        "active": Listing.Status.ACTIVE.value,
        "servers": list(server_ids),
        "n": int(request.gpu_count),
        "start": start,
        "end": end,
        "any_model": request.models is None,
        "models": sorted(request.models or ()),
        "vram": request.min_vram_gb,
        "no_cap": request.price_cap is None,
        "cap": request.price_cap or Decimal(0),
        "feed": since is not None,
        "since": since or start,
    }
    rows = _prepared(_SQL["verify"], params)
    out, tight, changes = {}, {}, []
    n = request.gpu_count
    for row in rows:
        if row[0] is not None:
            changes.append((row[0], row[1]))
            continue
        sid, price, reliability, cpu_per, memory_per, cpu_total, memory_total = row[1:8]
        slots, in_service, busy, cpu_held, memory_held = row[8:]
        known = listings.get(sid)
        if known is None or in_service - busy < n:
            continue
        slots = max(slots or 0, 1)
        cpu = max(getattr(request, "cpu_milli", 0), (cpu_per if cpu_per is not None else cpu_total // slots) * n)
        memory = max(
            getattr(request, "memory_mib", 0), (memory_per if memory_per is not None else memory_total // slots) * n
        )
        if cpu_held + cpu <= cpu_total and memory_held + memory <= memory_total:
            out[sid] = (price, reliability)
        else:
            tight[sid] = (price, reliability, cpu, memory, cpu_total, memory_total)
    if tight:
        out.update(_peak_fits(tight, start=start, end=end))
    return out, changes


def _peak_fits(
    tight: dict[int, tuple[Decimal, Decimal, int, int, int, int]], *, start: datetime, end: datetime
) -> dict[int, tuple[Decimal, Decimal]]:
    """The exact check ``booking_create`` makes: the peak of the shares held at one instant, plus the take."""
    events: dict[int, list[tuple[datetime, int, int]]] = {}
    rows = (
        BookingGpu.objects.filter(server_id__in=list(tight), held=True, start__lt=end, end__gt=start)
        .values_list("server_id", "booking_id", "start", "end", "booking__cpu_milli", "booking__memory_mib")
        .distinct()
    )
    for server_id, _, s, e, cpu, memory in rows:
        events.setdefault(server_id, []).extend([(max(s, start), cpu, memory), (min(e, end), -cpu, -memory)])
    out = {}
    for server_id, (price, reliability, cpu, memory, cpu_total, memory_total) in tight.items():
        cpu_now = memory_now = cpu_peak = memory_peak = 0
        for _, c, m in sorted(events.get(server_id, ()), key=lambda e: (e[0], e[1] > 0 or e[2] > 0)):
            cpu_now, memory_now = cpu_now + c, memory_now + m
            cpu_peak, memory_peak = max(cpu_peak, cpu_now), max(memory_peak, memory_now)
        if cpu_peak + cpu <= cpu_total and memory_peak + memory <= memory_total:
            out[server_id] = (price, reliability)
    return out


# The learnt demand, shared by the processes through the cache (Redis in production): saved with each refresh
# of the loans' needs, read by a process's first build. Losing it costs a cold start, nothing else.
DEMAND_CACHE_KEY = "placement:demand:v1"
DEMAND_CACHE_SECONDS = 7 * 24 * 3600


def save_demand(demand: dict[frozenset[str], float]) -> None:
    rows = [[sorted(models), amount] for models, amount in demand.items()]
    try:
        cache.set(DEMAND_CACHE_KEY, rows, DEMAND_CACHE_SECONDS)
    except Exception:  # an unreachable cache must not fail a booking; the next refresh saves again
        logger.warning("placement demand not saved", exc_info=True)


def load_demand() -> dict[frozenset[str], float] | None:
    try:
        rows = cache.get(DEMAND_CACHE_KEY)
    except Exception:  # without it the engine starts from its prior
        logger.warning("placement demand not read", exc_info=True)
        return None
    return {frozenset(models): float(amount) for models, amount in rows} if rows else None


_LOCK = threading.Lock()
_ENGINE: _Engine | None = None


def _engine() -> _Engine:
    global _ENGINE
    if _ENGINE is None:
        _ENGINE = _Engine()
    return _ENGINE


def placement_options(
    request: placement.Request,
    *,
    start: datetime,
    end: datetime,
    k: int = 3,
    exclude: Collection[int] = (),
    learn: bool = True,
) -> list[Candidate]:
    """Up to k distinct servers that can take the request for [start, end), best first by the engine's policy
    ("ours", collateral needs applied): active listings on ready nodes of healthy clusters, price <= cap, an accepted
    model, free GPUs/CPU/memory for the window (verified against the database in one query before returning: a stale
    engine costs a retry, never a wrong answer). learn=True: the request teaches the engine's demand statistics."""
    with _LOCK:
        engine = _engine()
        feed = not engine.prepare()  # the change feed is read with the first verification
        if learn:
            engine.pool.observe(request)
        return engine.options(request, start=start, end=end, k=k, exclude=exclude, feed=feed)


def engine_free(server_id: int) -> int:
    """Free GPUs of the server now, as the process's engine has it after a sync (tests, diagnostics)."""
    with _LOCK:
        engine = _engine()
        engine.sync()
        return engine.free(server_id)


def rebuild_engine() -> None:
    """Rebuild the process's engine from the database now (a warm-up, or after a bulk change)."""
    with _LOCK:
        _engine().rebuild()


def reset_engine() -> None:
    """Forget the process's engine (tests: each starts from its own database)."""
    global _ENGINE
    with _LOCK:
        _ENGINE = None
