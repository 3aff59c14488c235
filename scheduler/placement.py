"""Placement: which server gets a renter's GPUs.

A pure module: it sees servers as ``Node`` values and free GPU counts, never
the database, so the same code decides at booking time (``choose`` over the
handful of servers a listing search returned) and in the scheduler's
long-lived ``Pool`` (thousands of servers, one placement per job), and can be
benchmarked against a public trace (``bench/placement.py``). It imports
nothing from Django, ``marketplace`` or ``financing``: collateral-aware
placement gets a plain ``server_id → weight`` mapping from its caller.

Whole GPUs only, and all GPUs of a placement on one server. Hard filters:
the server has enough free GPUs, its model is accepted, its VRAM is large
enough and its price is under the cap. The region is a soft preference:
servers in the requested region first, the others only when none fits.

Indexes. Servers with the same static attributes (model, VRAM, price,
region) form a group, and for each group and free count the servers are one
bit each in an integer bitmask (bit = the server's position in the order the
nodes were given). A server has at most a handful of GPUs (8 in the trace),
so a placement looks at one small integer per group to find the smallest
free count that fits, and takes the lowest set bit of that bucket; no scan
over servers. Allocation and release move one bit between two buckets.

Policies (``POLICIES``; each is a picker function in ``_PICKERS``):

- ``random``: a uniformly random feasible server (the baseline).
- ``first_fit``: the first feasible server in the given order.
- ``best_fit``: the fewest GPUs left on the server afterwards, so that whole
  servers stay free for large requests (against fragmentation).
- ``cheapest``: the lowest price per GPU-hour, then best-fit.
- ``ours``: with weights (``server_id → weight``, higher = that server's
  loan needs revenue more, e.g. the GPUs it still has to rent to cover its
  debt service), the feasible server with the highest positive weight wins.
  Otherwise, and to break ties, it is model-aware packing: every model has a
  *pressure*, the recent demand of model-constrained requests on it divided
  by its free GPUs, and a request goes to the accepted model with the lowest
  pressure, best-fit within it. Unconstrained requests thus stay off the
  scarce models that constrained requests cannot do without (T4s in the
  trace), and constrained requests that accept several models take the one
  least needed by others. Demand is learnt online from the requests the pool
  sees and decays with a half-life of ``DEMAND_HALF_LIFE`` constrained
  requests.
"""

import heapq
import math
import random
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal

POLICIES = ("random", "first_fit", "best_fit", "cheapest", "ours")

# Constrained requests after which past demand counts half as much as new demand: long enough to see the mix, short
# enough to follow a change of workload within a day or so of bookings.
DEMAND_HALF_LIFE = 5_000
_DEMAND_GROWTH = 2.0 ** (1.0 / DEMAND_HALF_LIFE)
_CACHE_LIMIT = 4_096
_CLASS_LIMIT = 1_024
_STEADY_STATE = DEMAND_HALF_LIFE / math.log(2)
import os

K = float(os.environ.get("K", "4"))
PRIOR = float(os.environ.get("PRIOR", "0.01"))


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
    """What a request can use, resolved once per distinct request: groups in and out of its region."""

    preferred: tuple[int, ...]
    others: tuple[int, ...]
    demand_class: int  # index of the request's set of accepted models; -1 when it accepts every model


def _lowest(mask: int) -> int:
    return (mask & -mask).bit_length() - 1


def _nth(mask: int, k: int) -> int:
    """Position of the k-th (0-based) set bit: binary search on the count of set bits below a position."""
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

    ``free`` gives the initial free GPUs per server (a server missing from it has none free); without
    it every GPU is free. ``weights`` is the collateral need per server (see the module docstring);
    ``seed`` drives the ``random`` policy.
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
        self._rng = random.Random(seed)
        self._nodes: list[Node] = list(nodes)
        self._index: dict[int, int] = {}
        for i, node in enumerate(self._nodes):
            if node.server_id in self._index:
                raise ValueError(f"server {node.server_id} given twice")
            if node.gpus < 0:
                raise ValueError(f"server {node.server_id} has a negative GPU count")
            self._index[node.server_id] = i
        group_of: dict[tuple, int] = {}
        model_of: dict[str, int] = {}
        self._group: list[int] = []
        for node in self._nodes:
            model_of.setdefault(node.model, len(model_of))
            key = (node.model, node.vram_gb, node.price, node.region)
            self._group.append(group_of.setdefault(key, len(group_of)))
        self._group_keys = list(group_of)
        self._model_of = model_of
        self._group_model = [model_of[key[0]] for key in self._group_keys]
        size = [0] * len(self._group_keys)
        for node, g in zip(self._nodes, self._group, strict=True):
            size[g] = max(size[g], node.gpus)
        # _masks[g][f]: servers of group g with exactly f free GPUs; bit f of _nonempty[g] says it has any.
        self._masks: list[list[int]] = [[0] * (n + 1) for n in size]
        self._nonempty: list[int] = [0] * len(size)
        self._free: list[int] = []
        self._model_free = [0] * len(model_of)
        # Demand classes: the distinct sets of accepted models seen (bitmasks over model indexes).
        self._all_models = (1 << len(model_of)) - 1
        self._class_of: dict[int, int] = {}
        self._class_mask: list[int] = []
        self._class_own: list[float] = []  # decayed GPUs requested by this class itself
        self._class_demand: list[float] = []  # … by every class whose models are a subset of this one's
        self._class_free: list[int] = []  # free GPUs of this class's models
        self._supersets: list[list[int]] = []
        self._classes_of_model: list[list[int]] = [[] for _ in model_of]
        self._increment = 1.0
        self._demand_total = 0.0
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
        if demand:
            total = sum(demand.values())
            for models, amount in demand.items():
                mask = sum(1 << i for m, i in model_of.items() if m in models)
                c = self._demand_class(mask)
                if c >= 0 and amount > 0:
                    self._learn(c, amount * _STEADY_STATE / total, decay=False)
        # Weighted servers also sit in lazy max-heaps per (group, free count): (-weight, index, version).
        self._weights: list[float] | None = None
        if weights is not None:
            self._weights = [0.0] * len(self._nodes)
            self._version = [0] * len(self._nodes)
            self._heaps: list[list[list[tuple[float, int, int]]]] = [[[] for _ in m] for m in self._masks]
            self._pushes = 0
            for server_id, weight in weights.items():
                self._weights[self._position(server_id)] = float(weight)
            self._rebuild_heaps()

    # Public API

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
        """The server ``place`` would choose, without allocating or learning from the request."""
        i = self._pick(self._plan(request), request.gpu_count)
        return None if i < 0 else self._nodes[i].server_id

    def release(self, server_id: int, gpus: int) -> None:
        """Give ``gpus`` GPUs of ``server_id`` back (a job ended or was moved)."""
        i = self._position(server_id)
        if gpus < 1 or self._free[i] + gpus > self._nodes[i].gpus:
            raise ValueError(f"server {server_id}: cannot release {gpus} with {self._free[i]} free")
        self._move(i, gpus)

    def free(self, server_id: int) -> int:
        """Free GPUs on ``server_id`` now."""
        return self._free[self._position(server_id)]

    def set_weight(self, server_id: int, weight: float) -> None:
        """Change a server's collateral weight (its loan's need changes as its GPUs are rented)."""
        if self._weights is None:
            raise ValueError("this pool was built without weights; pass weights={} to enable them")
        i = self._position(server_id)
        self._weights[i] = float(weight)
        self._version[i] += 1
        self._push(i)

    # Internals

    def _position(self, server_id: int) -> int:
        try:
            return self._index[server_id]
        except KeyError:
            raise KeyError(f"server {server_id} is not in this pool") from None

    def _plan(self, request: Request) -> _Plan:
        plan = self._plans.get(request)
        if plan is None:
            if len(self._plans) >= _CACHE_LIMIT:
                self._plans.clear()
            preferred, others = [], []
            for g, (model, vram, price, region) in enumerate(self._group_keys):
                if request.models is not None and model not in request.models:
                    continue
                if vram < request.min_vram_gb or (request.price_cap is not None and price > request.price_cap):
                    continue
                (preferred if request.region is None or region == request.region else others).append(g)
            demand_class = -1
            if request.models is not None:
                mask = sum(1 << i for m, i in self._model_of.items() if m in request.models)
                demand_class = self._demand_class(mask)
            plan = self._plans[request] = _Plan(tuple(preferred), tuple(others), demand_class)
        return plan

    def _pick(self, plan: _Plan, n: int) -> int:
        """Position of the chosen server, or -1: the preferred region first, the others only if it is full."""
        if self._weights is not None and self.policy == "ours":
            i = _pick_weighted(self, plan.preferred, n)
            if i < 0 and plan.others:
                i = _pick_weighted(self, plan.others, n)
            if i >= 0:
                return i
        i = self._pick_in(self, plan.preferred, n)
        if i < 0 and plan.others:
            i = self._pick_in(self, plan.others, n)
        return i

    def _demand_class(self, mask: int) -> int:
        """Index of the class of requests accepting exactly the models in ``mask``; -1 if it is no constraint."""
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
                if other_mask & mask == other_mask:  # other ⊆ new: its demand also weighs on the new set
                    self._class_demand[c] += self._class_own[other]
                    self._supersets[other].append(c)
                elif other_mask & mask == mask:  # new ⊂ other
                    self._supersets[c].append(other)
            for m in range(len(self._model_of)):
                if mask >> m & 1:
                    self._classes_of_model[m].append(c)
                    self._class_free[c] += self._model_free[m]
        return c

    def _learn(self, c: int, n: float, *, decay: bool = True) -> None:
        """Count a constrained request's GPUs as demand on its class and on every superset of it.

        The increment grows by a constant factor per request instead of decaying every counter each
        time, which is the same exponential decay at O(1) cost; rescaled now and then to stay finite.
        """
        if decay:
            self._increment *= _DEMAND_GROWTH
        amount = n * self._increment
        self._class_own[c] += amount
        self._demand_total += amount
        demand = self._class_demand
        for s in self._supersets[c]:
            demand[s] += amount
        if self._increment > 1e100:
            self._class_own = [d / self._increment for d in self._class_own]
            self._class_demand = [d / self._increment for d in demand]
            self._demand_total /= self._increment
            self._increment = 1.0

    def _move(self, i: int, delta: int) -> None:
        """Change server i's free GPUs by delta: move its bit to the bucket of its new free count."""
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

    def _push(self, i: int) -> None:
        if self._weights[i] > 0 and self._free[i] > 0:
            heapq.heappush(self._heaps[self._group[i]][self._free[i]], (-self._weights[i], i, self._version[i]))
            self._pushes += 1
            if self._pushes > 4 * len(self._nodes) + 64:
                self._rebuild_heaps()

    def _rebuild_heaps(self) -> None:
        """Drop the stale heap entries (every change pushes a new one and leaves the old one behind)."""
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

    def _harm(self, g: int) -> float:
        """How much taking a GPU of group g's model brings the first refusal of a constrained request closer.

        For every set S of models that some requests are limited to, D(S)/F(S) is the (decayed) demand
        of the requests that can only use models in S over the GPUs of S still free: the reciprocal of
        the time until S runs dry (Hall's condition). Taking a GPU of model m shortens that time for
        every S containing m; the sum of the K-th powers weighs the tightest sets most.
        """
        demand, free = self._class_demand, self._class_free
        m = self._group_model[g]
        harm = (PRIOR * self._demand_total / self._model_free[m]) ** K if self._model_free[m] else float("inf")
        for c in self._classes_of_model[m]:
            f = free[c]
            if not f:
                return float("inf")
            harm += (demand[c] / f) ** K
        return harm


# Pickers: (pool, groups, gpu count) → position of the chosen server among the pool's nodes, or -1.

_PICKERS: dict[str, Callable[[Pool, tuple[int, ...], int], int]] = {}


def _picker(name: str):
    def register(fn: Callable[[Pool, tuple[int, ...], int], int]) -> Callable[[Pool, tuple[int, ...], int], int]:
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


@_picker("best_fit")
def _best_fit(pool: Pool, groups: tuple[int, ...], n: int) -> int:
    best, best_key = -1, None
    for g in groups:
        fits = pool._nonempty[g] >> n
        if fits:
            f = _lowest(fits)  # leftover GPUs after placing n on the fullest server that fits
            i = _lowest(pool._masks[g][n + f])
            if best_key is None or (f, i) < best_key:
                best, best_key = i, (f, i)
    return best


@_picker("cheapest")
def _cheapest(pool: Pool, groups: tuple[int, ...], n: int) -> int:
    best, best_key = -1, None
    for g in groups:
        fits = pool._nonempty[g] >> n
        if fits:
            f = _lowest(fits)
            i = _lowest(pool._masks[g][n + f])
            key = (pool._group_keys[g][2], f, i)
            if best_key is None or key < best_key:
                best, best_key = i, key
    return best


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
    best, best_key = -1, None
    nonempty, masks = pool._nonempty, pool._masks
    for g in groups:
        fits = nonempty[g] >> n
        if fits:
            f = _lowest(fits)
            i = _lowest(masks[g][n + f])
            key = (pool._harm(g), f, i)
            if best_key is None or key < best_key:
                best, best_key = i, key
    return best


def _pick_weighted(pool: Pool, groups: tuple[int, ...], n: int) -> int:
    """The feasible server with the highest positive weight; ties go to lower pressure, then best-fit."""
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
) -> int | None:
    """One-off choice without allocating (quick-book and failover at request time; pools there are small).

    Builds a throw-away ``Pool`` so that the answer is exactly the one the scheduler's pool would give
    for the same free counts. Without a request history "ours" has no demand to learn from, so it is
    the weights, then best-fit.
    """
    return Pool(nodes, policy=policy, weights=weights, free=free).peek(request)
