"""Placement: which server gets a renter's GPUs.

A pure module: it sees servers as ``Node`` values and free GPU counts, never
the database, and imports nothing from Django, ``marketplace`` or
``financing``: collateral-aware placement gets a plain ``server_id → weight``
mapping from its caller.

How it is used today: the app calls ``choose`` only, on a snapshot read from
the database per call (quick book in ``services/quickbook.py``, failover in
``services/jobs.py``), with financing's collateral weights and no ``demand``.
``choose`` builds a throw-away ``Pool``, peeks at its choice and drops it;
nothing is allocated there and nothing is learnt between calls (the booking
services, under their locks, decide whether the GPUs are still free). No app
code keeps a long-lived ``Pool``: its allocating side (``place``,
``release``, ``set_weight``, demand learnt online) runs in the tests and in
the benchmark on a public trace (``bench/placement.py``, thousands of
servers, one placement per task).

Whole GPUs only, all GPUs of a placement on one server. Hard filters: enough
free GPUs, an accepted model, enough VRAM, a price under the cap. The region
is a soft preference: servers in the requested region first, the others only
when none of those fits.

Indexes. Servers with the same static attributes (model, VRAM, price,
region) form a group; per group and free count, the servers are the set bits
of one integer (bit = the server's position in the order the nodes were
given). A server has few GPUs (at most 8 in the trace), so a placement reads
one small integer per group to find the smallest free count that fits and
takes the lowest set bit of that bucket: no scan over servers. Allocation and
release move one bit between two buckets.

Policies (``POLICIES``; one picker function each, registered in ``_PICKERS``):

- ``random``: a uniformly random feasible server (the baseline).
- ``first_fit``: the first feasible server in the given order.
- ``best_fit``: the fewest GPUs left on the server afterwards, so that whole
  servers stay free for large requests (against fragmentation).
- ``cheapest``: the lowest price per GPU-hour, then best-fit.
- ``ours``: with weights (higher = that server's loan needs revenue more,
  e.g. the GPUs it still has to rent to cover its debt service), the
  feasible server with the highest positive weight, within the region
  preference (a loan's need never sends a renter abroad). Otherwise, and to break
  ties, model-aware packing: the model whose GPUs are least needed by
  model-constrained requests, best-fit within it (``Pool._harm``). A pool
  learns demand online from the requests it places, decaying with a
  half-life of ``DEMAND_HALF_LIFE`` constrained requests, and can be seeded
  with a known mix (``demand=``, e.g. last month's bookings). ``choose``
  learns nothing and the app passes no ``demand``, so there "ours" is the
  weights, then best-fit.
"""

import heapq
import math
import random
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal

POLICIES = ("random", "first_fit", "best_fit", "cheapest", "ours")

# Constrained requests after which past demand counts half as much as new demand: long enough to learn
# the mix from, short enough to follow a change of workload.
DEMAND_HALF_LIFE = 5_000
_DEMAND_GROWTH = 2.0 ** (1.0 / DEMAND_HALF_LIFE)
# What the decayed counters sum to in a steady state, in requests: a seeded mix is scaled to it, so that
# it weighs like a long history of observed requests and then fades like one.
_STEADY_STATE = DEMAND_HALF_LIFE / math.log(2)
# Exponent of the soft maximum over the sets of models a GPU belongs to (see Pool._harm).
_TIGHTNESS = 4
_PLAN_CACHE_LIMIT = 4_096
_CLASS_LIMIT = 1_024


@dataclass(frozen=True, slots=True)
class Node:
    """One server, as placement sees it: its GPUs and what a renter can filter on."""

    server_id: int
    model: str  # GPU model name, e.g. "V100M32", "A100", "G2"
    gpus: int  # total GPUs
    vram_gb: int = 0
    price: Decimal = Decimal(0)  # per GPU-hour
    region: str = ""


@dataclass(frozen=True, slots=True)
class Request:
    """What a renter asks for: ``gpu_count`` whole GPUs on one server, filtered as below."""

    gpu_count: int
    models: frozenset[str] | None = None  # None = any model
    min_vram_gb: int = 0
    price_cap: Decimal | None = None
    region: str | None = None  # preferred region: same region first, then others (soft)

    def __post_init__(self) -> None:
        if self.gpu_count < 1:
            raise ValueError(f"gpu_count must be at least 1, got {self.gpu_count}")


@dataclass(frozen=True, slots=True)
class _Plan:
    """A request resolved once against the pool's groups (the hard filters do not depend on free GPUs)."""

    preferred: tuple[int, ...]  # groups that pass the filters, in the requested region (all, without one)
    others: tuple[int, ...]  # groups that pass the filters, elsewhere
    demand_class: int  # index of the request's set of accepted models; -1 if it constrains nothing


def _lowest(mask: int) -> int:
    return (mask & -mask).bit_length() - 1


def _nth(mask: int, k: int) -> int:
    """Position of the k-th (from 0) set bit: binary search on the number of set bits below a position."""
    lo, hi = 0, mask.bit_length()
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if (mask & ((1 << mid) - 1)).bit_count() > k:
            hi = mid
        else:
            lo = mid
    return lo


class Pool:
    """Free GPUs per server, indexed so that one placement costs far less than a scan.

    ``free`` gives the initial free GPUs per server (a server missing from it has none free, since
    nothing said it had any); without it every GPU is free. ``weights`` maps servers to their collateral
    need (missing = 0, no preference) and ``set_weight`` updates it. ``seed`` drives ``random``.
    ``demand`` seeds the demand "ours" learns: GPUs requested per set of accepted models, in any unit.
    """

    def __init__(
        self,
        nodes: Iterable[Node],
        *,
        policy: str = "ours",
        weights: Mapping[int, float] | None = None,
        seed: int = 0,
        free: Mapping[int, int] | None = None,
        demand: Mapping[frozenset[str], float] | None = None,
    ) -> None:
        if policy not in _PICKERS:
            raise ValueError(f"unknown placement policy {policy!r}; choose one of {POLICIES}")
        self.policy = policy
        self._pick_in = _PICKERS[policy]
        self._learns = policy == "ours"
        self._rng = random.Random(seed)  # noqa: S311 - spreads load for the random-fit baseline, no secret
        self._nodes: list[Node] = list(nodes)
        self._index: dict[int, int] = {}
        for i, node in enumerate(self._nodes):
            if node.server_id in self._index:
                raise ValueError(f"server {node.server_id} given twice")
            if node.gpus < 0:
                raise ValueError(f"server {node.server_id} has a negative GPU count")
            self._index[node.server_id] = i

        group_of: dict[tuple, int] = {}
        self._model_of: dict[str, int] = {}
        self._group: list[int] = []
        for node in self._nodes:
            self._model_of.setdefault(node.model, len(self._model_of))
            self._group.append(group_of.setdefault((node.model, node.vram_gb, node.price, node.region), len(group_of)))
        self._group_keys = list(group_of)
        self._group_model = [self._model_of[key[0]] for key in self._group_keys]
        largest = [0] * len(self._group_keys)
        for node, g in zip(self._nodes, self._group, strict=True):
            largest[g] = max(largest[g], node.gpus)
        # _masks[g][f]: servers of group g with exactly f free GPUs; bit f of _nonempty[g]: that set is not empty.
        self._masks: list[list[int]] = [[0] * (n + 1) for n in largest]
        self._nonempty: list[int] = [0] * len(largest)
        self._free: list[int] = []
        self._model_free = [0] * len(self._model_of)
        for i, node in enumerate(self._nodes):
            f = node.gpus if free is None else free.get(node.server_id, 0)
            if not 0 <= f <= node.gpus:
                raise ValueError(f"server {node.server_id}: {f} free GPUs of {node.gpus}")
            g = self._group[i]
            self._free.append(f)
            self._masks[g][f] |= 1 << i
            self._nonempty[g] |= 1 << f
            self._model_free[self._group_model[g]] += f
        self._plans: dict[Request, _Plan] = {}

        # Demand classes, for "ours": the distinct sets of accepted models seen, as bitmasks over models.
        self._all_models = (1 << len(self._model_of)) - 1
        self._class_of: dict[int, int] = {}
        self._class_mask: list[int] = []
        self._class_own: list[float] = []  # decayed GPUs requested by this class itself
        self._class_demand: list[float] = []  # … by this class and every class whose models it includes
        self._class_free: list[int] = []  # free GPUs of the class's models
        self._supersets: list[list[int]] = []  # classes whose models include this class's (itself too)
        self._classes_of_model: list[list[int]] = [[] for _ in self._model_of]
        self._increment = 1.0
        if demand and self._learns:
            total = sum(amount for amount in demand.values() if amount > 0)
            for models, amount in demand.items():
                c = self._demand_class(models)
                if c >= 0 and amount > 0:
                    self._learn(c, amount * _STEADY_STATE / total, decay=False)

        # Weighted servers also sit in lazy max-heaps per (group, free count) of (-weight, position, version);
        # an entry is current while its version is the server's.
        self._weights: list[float] | None = None
        if weights is not None:
            self._weights = [0.0] * len(self._nodes)
            self._version = [0] * len(self._nodes)
            self._heaps: list[list[list[tuple[float, int, int]]]] = [[[] for _ in m] for m in self._masks]
            self._pushes = 0
            for server_id, weight in weights.items():
                self._weights[self._position(server_id)] = float(weight)
            self._rebuild_heaps()

    def place(self, request: Request) -> int | None:
        """Choose a server for ``request`` and allocate its GPUs there; ``None`` when nothing fits."""
        plan = self._plan(request)
        if plan.demand_class >= 0:
            self._learn(plan.demand_class, request.gpu_count)
        i = self._pick(plan, request.gpu_count)
        if i < 0:
            return None
        self._move(i, -request.gpu_count)
        return self._nodes[i].server_id

    def peek(self, request: Request) -> int | None:
        """The server ``place`` would choose now, without allocating or learning from the request."""
        i = self._pick(self._plan(request), request.gpu_count)
        return None if i < 0 else self._nodes[i].server_id

    def release(self, server_id: int, gpus: int) -> None:
        """Give ``gpus`` GPUs of ``server_id`` back (a job ended or moved)."""
        i = self._position(server_id)
        if gpus < 1 or self._free[i] + gpus > self._nodes[i].gpus:
            raise ValueError(f"server {server_id}: cannot release {gpus} GPUs with {self._free[i]} free")
        self._move(i, gpus)

    def free(self, server_id: int) -> int:
        """Free GPUs on ``server_id`` now."""
        return self._free[self._position(server_id)]

    def set_weight(self, server_id: int, weight: float) -> None:
        """Change a server's collateral weight: its loan's need changes as its GPUs are rented."""
        if self._weights is None:
            raise ValueError("this pool was built without weights; pass weights={} to use them")
        i = self._position(server_id)
        self._weights[i] = float(weight)
        self._version[i] += 1
        self._push(i)

    def _position(self, server_id: int) -> int:
        try:
            return self._index[server_id]
        except KeyError:
            raise KeyError(f"server {server_id} is not in this pool") from None

    def _plan(self, request: Request) -> _Plan:
        plan = self._plans.get(request)
        if plan is None:
            if len(self._plans) >= _PLAN_CACHE_LIMIT:
                self._plans.clear()
            preferred, others = [], []
            for g, (model, vram, price, region) in enumerate(self._group_keys):
                if request.models is not None and model not in request.models:
                    continue
                if vram < request.min_vram_gb or (request.price_cap is not None and price > request.price_cap):
                    continue
                (preferred if request.region is None or region == request.region else others).append(g)
            demand_class = -1
            if request.models is not None and self._learns:
                demand_class = self._demand_class(request.models)
            plan = self._plans[request] = _Plan(tuple(preferred), tuple(others), demand_class)
        return plan

    def _pick(self, plan: _Plan, n: int) -> int:
        """Position of the chosen server or -1: the preferred region first, the others only if nothing fits.

        Weights order servers within a region, not across: a loan's need does not send a renter abroad.
        """
        weighted = self._weights is not None and self._learns
        for groups in (plan.preferred, plan.others):
            if groups:
                i = _pick_weighted(self, groups, n) if weighted else -1
                if i < 0:
                    i = self._pick_in(self, groups, n)
                if i >= 0:
                    return i
        return -1

    def _move(self, i: int, delta: int) -> None:
        """Change server i's free GPUs by delta: its bit moves to the bucket of its new free count."""
        g = self._group[i]
        masks = self._masks[g]
        f = self._free[i]
        bit = 1 << i
        masks[f] ^= bit
        if not masks[f]:
            self._nonempty[g] &= ~(1 << f)
        f += delta
        self._free[i] = f
        masks[f] |= bit
        self._nonempty[g] |= 1 << f
        m = self._group_model[g]
        self._model_free[m] += delta
        for c in self._classes_of_model[m]:
            self._class_free[c] += delta
        if self._weights is not None:
            self._version[i] += 1
            self._push(i)

    # Demand, for "ours"

    def _demand_class(self, models: frozenset[str]) -> int:
        """Index of the class of requests accepting exactly ``models`` (those the pool has); -1 if no constraint."""
        mask = 0
        for model in models:
            if model in self._model_of:
                mask |= 1 << self._model_of[model]
        if mask in (0, self._all_models):
            return -1
        c = self._class_of.get(mask)
        if c is None:
            if len(self._class_mask) >= _CLASS_LIMIT:
                return -1
            c = self._class_of[mask] = len(self._class_mask)
            self._class_mask.append(mask)
            self._class_own.append(0.0)
            self._class_demand.append(0.0)
            self._class_free.append(0)
            self._supersets.append([])
            for other, other_mask in enumerate(self._class_mask):
                if other_mask & mask == other_mask:  # other ⊆ new (or is new): its demand weighs on the new set
                    self._class_demand[c] += self._class_own[other]
                    self._supersets[other].append(c)
                elif other_mask & mask == mask:  # new ⊂ other
                    self._supersets[c].append(other)
            for m in range(len(self._model_of)):
                if mask >> m & 1:
                    self._classes_of_model[m].append(c)
                    self._class_free[c] += self._model_free[m]
        return c

    def _learn(self, c: int, gpus: float, *, decay: bool = True) -> None:
        """Count a constrained request's GPUs as demand on its class and on every class that includes it.

        The increment grows by a constant factor per request instead of every counter shrinking each
        time: the same exponential decay at O(1) cost, rescaled now and then to stay finite.
        """
        if decay:
            self._increment *= _DEMAND_GROWTH
        amount = gpus * self._increment
        self._class_own[c] += amount
        demand = self._class_demand
        for s in self._supersets[c]:
            demand[s] += amount
        if self._increment > 1e100:
            self._class_own = [d / self._increment for d in self._class_own]
            self._class_demand = [d / self._increment for d in demand]
            self._increment = 1.0

    def _harm(self, g: int) -> float:
        """How much taking a GPU of group g's model brings a constrained request's refusal closer.

        For every set S of models that some requests are limited to, D(S)/F(S) is the decayed demand
        of the requests that can only use models in S over the GPUs of S still free: the reciprocal of
        the time until S runs dry (Hall's marriage condition, one set at a time). Taking a GPU of model
        m shortens that time for every S that contains m; a high power weighs the tightest set most, so
        a model needed only by requests that also accept others (A10 for "A10|T4" when T4 alone is
        also asked for) counts as less harmed than the model they compete for. Unconstrained demand can
        go anywhere and constrains no set.
        """
        harm = 0.0
        demand, free = self._class_demand, self._class_free
        for c in self._classes_of_model[self._group_model[g]]:  # none at all without constrained requests
            f = free[c]
            if not f:
                return math.inf
            harm += (demand[c] / f) ** _TIGHTNESS
        return harm

    # Collateral weights, for "ours"

    def _push(self, i: int) -> None:
        if self._weights[i] > 0 and self._free[i] > 0:
            heapq.heappush(self._heaps[self._group[i]][self._free[i]], (-self._weights[i], i, self._version[i]))
            self._pushes += 1
            if self._pushes > 4 * len(self._nodes) + 64:
                self._rebuild_heaps()

    def _rebuild_heaps(self) -> None:
        """Drop stale entries: every change pushes a new entry and leaves the old one behind."""
        for heaps in self._heaps:
            for heap in heaps:
                heap.clear()
        for i, weight in enumerate(self._weights):
            if weight > 0 and self._free[i] > 0:
                self._heaps[self._group[i]][self._free[i]].append((-weight, i, self._version[i]))
        for heaps in self._heaps:
            for heap in heaps:
                heapq.heapify(heap)
        self._pushes = 0


# Pickers: (pool, groups that pass the filters, GPU count) → position of the chosen server, or -1.
Picker = Callable[[Pool, tuple[int, ...], int], int]
_PICKERS: dict[str, Picker] = {}


def _picker(name: str) -> Callable[[Picker], Picker]:
    def register(fn: Picker) -> Picker:
        _PICKERS[name] = fn
        return fn

    return register


@_picker("first_fit")
def _first_fit(pool: Pool, groups: tuple[int, ...], n: int) -> int:
    best = -1
    for g in groups:
        fits = pool._nonempty[g] >> n
        if not fits:
            continue
        masks, f, union = pool._masks[g], n, 0
        while fits:
            if fits & 1:
                union |= masks[f]
            fits >>= 1
            f += 1
        i = _lowest(union)
        if best < 0 or i < best:
            best = i
    return best


def _pack(pool: Pool, groups: tuple[int, ...], n: int, score: Callable[[Pool, int], object] | None) -> int:
    """Best-fit after ``score``: the lowest (score, GPUs left, position) over the groups' fullest fitting servers.

    Only the winner's bucket (and those tied with it) is searched for its lowest position: the per-group
    part is a few operations on small integers.
    """
    nonempty, masks = pool._nonempty, pool._masks
    best_g, best_key, best_i = -1, None, -1
    for g in groups:
        fits = nonempty[g] >> n
        if fits:
            left = (fits & -fits).bit_length() - 1  # GPUs left on the fullest server of the group that fits
            key = (score(pool, g), left) if score else left
            if best_key is None or key < best_key:
                best_g, best_key, best_i = g, key, -1
            elif key == best_key:
                if best_i < 0:
                    best_i = _lowest(masks[best_g][n + (key[1] if score else key)])
                i = _lowest(masks[g][n + (key[1] if score else key)])
                if i < best_i:
                    best_g, best_i = g, i
    if best_g < 0 or best_i >= 0:
        return best_i if best_g >= 0 else -1
    return _lowest(masks[best_g][n + (best_key[1] if score else best_key)])


@_picker("best_fit")
def _best_fit(pool: Pool, groups: tuple[int, ...], n: int) -> int:
    return _pack(pool, groups, n, None)


@_picker("cheapest")
def _cheapest(pool: Pool, groups: tuple[int, ...], n: int) -> int:
    return _pack(pool, groups, n, lambda pool, g: pool._group_keys[g][2])


@_picker("random")
def _random_fit(pool: Pool, groups: tuple[int, ...], n: int) -> int:
    buckets, total = [], 0
    for g in groups:
        fits, f = pool._nonempty[g] >> n, n
        while fits:
            if fits & 1:
                mask = pool._masks[g][f]
                buckets.append(mask)
                total += mask.bit_count()
            fits >>= 1
            f += 1
    if not total:
        return -1
    k = pool._rng.randrange(total)
    for mask in buckets:
        count = mask.bit_count()
        if k < count:
            return _nth(mask, k)
        k -= count
    raise AssertionError("unreachable: k < total")


@_picker("ours")
def _ours(pool: Pool, groups: tuple[int, ...], n: int) -> int:
    """The least harmed model (see ``Pool._harm``), best-fit within it; plain best-fit while nothing is constrained."""
    return _pack(pool, groups, n, Pool._harm if pool._class_mask else None)


def _pick_weighted(pool: Pool, groups: tuple[int, ...], n: int) -> int:
    """The feasible server with the highest positive weight; ties to the least harmed model, then best-fit."""
    best, best_key = -1, None
    version = pool._version
    for g in groups:
        heaps = pool._heaps[g]
        fits, f = pool._nonempty[g] >> n, n
        while fits:
            if fits & 1:
                heap = heaps[f]
                while heap and heap[0][2] != version[heap[0][1]]:
                    heapq.heappop(heap)
                if heap:
                    weight, i, _ = heap[0]
                    key = (weight, pool._harm(g), f - n, i)
                    if best_key is None or key < best_key:
                        best, best_key = i, key
            fits >>= 1
            f += 1
    return best


def choose(
    request: Request,
    nodes: Iterable[Node],
    free: Mapping[int, int],
    *,
    policy: str = "ours",
    weights: Mapping[int, float] | None = None,
    demand: Mapping[frozenset[str], float] | None = None,
) -> int | None:
    """One-off choice without allocating (quick-book and failover at request time; pools there are small).

    Builds a throw-away ``Pool`` from the given free counts and peeks at its choice, so the answer is the
    one a ``Pool`` in that state would give. Without ``demand`` "ours" has no history to learn from here,
    so it is the weights, then best-fit. A negative free count (an overbooked snapshot) counts as none free.
    """
    nodes = list(nodes)
    # A snapshot read at request time can be overbooked for a moment (held > in service): none free, then.
    free = {node.server_id: max(0, free.get(node.server_id, 0)) for node in nodes}
    return Pool(nodes, policy=policy, weights=weights, free=free, demand=demand).peek(request)
