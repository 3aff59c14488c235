"""Placement: which server gets a renter's GPUs (and the CPU and memory that go with them).

A pure module: it sees servers as ``Node`` values, never the database, and imports nothing from Django,
``marketplace`` or ``financing``: collateral-aware placement gets a plain ``server_id → need`` mapping
(GPUs the server's loan needs rented) from its caller.

Whole GPUs only, all GPUs of a placement on one server. A placement takes ``take(node, request)`` CPU
and memory besides its GPUs. Hard filters: enough free GPUs, CPU and memory, an accepted model, enough
VRAM, a price under the cap. The region is a soft preference: servers in the requested region first,
the others only when none of those fits. ``Request(gpu_count=0, cpu_milli>0)`` is a CPU-only task (the
benchmark's trace has them; the product never asks for one).

Indexes. Servers with the same packing attributes (model, VRAM, region, GPUs, CPU and memory capacity and
per-GPU shares; not the price) form a group; per group and free GPU count, the servers are the set bits of
one integer (bit = the server's position in the pool). A placement reads one small integer per group to
find the smallest free count that fits and takes the lowest set bit of that bucket whose CPU and memory
fit: no scan over servers while CPU does not bind. Price is not in the group key, so 10,000 listings with
distinct prices stay a few groups: a price cap becomes a per-group mask of the servers under it (cached per
request shape), and ``cheapest`` reads per-group price bands.

Policies (``POLICIES``):

- ``random``: a uniformly random feasible server (the baseline).
- ``first_fit``: the first feasible server in pool order.
- ``best_fit``: the least left on the server afterwards, so that whole servers stay free for large
  requests. The leftover is multi-resource: the larger of the GPU share and the CPU share left (the
  CPU share to 1/``_LEVELS``), so that neither GPUs nor CPU are stranded; memory only decides
  feasibility. A CPU-only task goes, under every policy but ``first_fit`` and ``random``, to the
  feasible server with the fewest free GPUs (then the tightest CPU): it does not strand free GPUs.
- ``cheapest``: the lowest price per GPU-hour among fitting servers, then best-fit.
- ``balanced``: the accepted model with the largest free share (free GPUs / GPUs of that model), best-fit
  inside it: a prior-free baseline.
- ``ours``: model-aware packing: the model whose GPUs are least needed by constrained requests, best-fit
  within it (``Pool._harm``). A request is constrained by the models it names or, naming none, by the
  models with a server big enough for it (``Pool._capable_class``: a whole 8-GPU, 120-core server is a
  constraint as real as a model name). Demand is learnt online from the requests placed or observed,
  decaying with a half-life of ``DEMAND_HALF_LIFE`` constrained requests, and can be seeded (``demand=``).
  Without a seed, each model starts with a pseudo-count prior proportional to its capacity
  (``PRIOR_MASS`` requests' worth), under which the harm orders models exactly like ``balanced``; learnt
  demand outweighs it as it accumulates (safe cold start). When the choice would leave a server's last
  free GPUs without the CPU requests typically ask per GPU, the next tier of models (at most
  ``STRAND_HARM_FACTOR`` times as harmed) that strands none is taken instead. With ``needs``, while a model is far from
  scarce (``GUARD_FREE_SHARE``), ``ours`` puts the renter on the financed server of any of the request's
  groups whose remaining need it covers best: the largest need it covers whole (exact first), else the
  smallest remaining need, i.e. the smallest needs first as the collateral lower bound does. It breaks a
  whole server only while ``GUARD_WHOLE_SHARE`` of the servers that can stand in for it stay whole, and
  leaves a server at least its free GPUs' share of CPU (to a CPU level). Loans leave servers partly used,
  so while needs remain a CPU-only task skips a server whose free GPUs it would starve of CPU. Once the
  model is scarce, the loan only chooses among interchangeable servers (the winner's group and bucket),
  which costs renters nothing.
"""

import math
import random
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal

POLICIES = ("random", "first_fit", "best_fit", "cheapest", "balanced", "ours")

# Constrained requests after which past demand counts half as much as new demand: long enough to learn
# the mix from, short enough to follow a change of workload.
DEMAND_HALF_LIFE = 5_000
_DEMAND_GROWTH = 2.0 ** (1.0 / DEMAND_HALF_LIFE)
# What the decayed counters sum to in a steady state, in requests: a seeded mix is scaled to it, so that
# it weighs like a long history of observed requests and then fades like one.
_STEADY_STATE = DEMAND_HALF_LIFE / math.log(2)
# Requests' worth of the cold-start prior (demand per model proportional to its capacity): small against
# the steady state, so that a few hundred real constrained requests outweigh it.
PRIOR_MASS = 200.0
# Exponent of the soft maximum over the sets of models a GPU belongs to (see Pool._harm).
_TIGHTNESS = 4
_PLAN_CACHE_LIMIT = 4_096
# Stranding, for "ours": a placement strands a server's remaining free GPUs when it leaves them less CPU than
# a low quantile (STRAND_QUANTILE) of what GPU requests ask per GPU, learnt online (each request moves the
# estimate by _STRAND_STEP of itself). "ours" then takes the next tier of models whose harm is at most
# STRAND_HARM_FACTOR times the first's, if one fits without stranding (on the trace's pod lists, 2 and 3 gave
# the same saturation within 0.03 %; 3 kept 0.1 % more churn acceptance on gpuspec33).
STRAND_QUANTILE = 0.25
STRAND_HARM_FACTOR = 3.0
_STRAND_STEP = 0.02
_CLASS_LIMIT = 1_024
# Financed servers compared within a bucket (the first ones in pool order): bounds a pick's cost.
_NEED_SCAN = 64
_NO_MASK = -1  # "every server": x & -1 == x
# The collateral guard: a loan may draw a renter to a server that packs worse (any group of the request's
# plan) only while the server's model keeps at least this share of its GPUs free; scarce models:
# interchangeable servers only. It breaks a whole server only while this share of the servers that can
# stand in for it stay whole (for large requests): 0.25 refused more GPUs at 1.0x load and left more loans
# below in the bench's collateral sweep than 0.1, and 0 refused 8-GPU tasks from 0.5x load on.
GUARD_FREE_SHARE = 0.5
GUARD_WHOLE_SHARE = 0.1
# CPU levels per free-GPU count: a server's level is floor(LEVELS × free CPU / CPU capacity), so a request
# needing c CPU fits every server above level floor(LEVELS × c / capacity) and only that boundary level
# needs an exact check. Groups that do not model CPU keep every server at the top level.
_LEVELS = 16
_ROW = _LEVELS + 1
_FULL_ROW = (1 << _ROW) - 1


@dataclass(frozen=True, slots=True)
class Node:
    """One server, as placement sees it: its GPUs, CPU and memory, and what a renter can filter on."""

    server_id: int
    model: str  # GPU model name, e.g. "V100M32", "A100", "G2"
    gpus: int  # total GPUs
    vram_gb: int = 0
    price: Decimal = Decimal(0)  # per GPU-hour
    region: str = ""
    cpu_milli: int = 0  # the server's CPU capacity; 0 = CPU not modelled (never binds)
    memory_mib: int = 0  # likewise memory
    cpu_per_gpu_milli: int = 0  # what a booking takes per GPU at least (the listing's share)
    memory_per_gpu_mib: int = 0


@dataclass(frozen=True, slots=True)
class Request:
    """What a renter asks for: ``gpu_count`` whole GPUs on one server, filtered as below."""

    gpu_count: int  # >= 0; 0 only with cpu_milli > 0 (a CPU-only task)
    models: frozenset[str] | None = None  # None = any model
    min_vram_gb: int = 0
    price_cap: Decimal | None = None
    region: str | None = None  # preferred region: same region first, then others (soft)
    cpu_milli: int = 0  # the minimum for the whole request
    memory_mib: int = 0

    def __post_init__(self) -> None:
        if self.gpu_count < 0 or (self.gpu_count == 0 and self.cpu_milli <= 0):
            raise ValueError(f"gpu_count must be at least 1 (or 0 with cpu_milli > 0), got {self.gpu_count}")


def take(node: Node, request: Request) -> tuple[int, int]:
    """(cpu_milli, memory_mib) a placement of ``request`` on ``node`` takes: the request's minimum or the
    listing's per-GPU share, whichever is larger."""
    return (
        max(request.cpu_milli, node.cpu_per_gpu_milli * request.gpu_count),
        max(request.memory_mib, node.memory_per_gpu_mib * request.gpu_count),
    )


@dataclass(frozen=True, slots=True)
class _Plan:
    """A request shape resolved once against the groups (the hard filters do not depend on free GPUs).

    Each entry is (group, mask of its servers that pass the price cap, or _NO_MASK for all).
    """

    preferred: tuple[tuple[int, int], ...]  # in the requested region (all, without one)
    others: tuple[tuple[int, int], ...]  # elsewhere
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


def _bits(mask: int) -> Iterable[int]:
    while mask:
        low = mask & -mask
        yield low.bit_length() - 1
        mask ^= low


class Pool:
    """Free GPUs, CPU and memory per server, indexed so that one placement costs far less than a scan.

    ``free`` gives the initial free GPUs per server (a server missing from it has none free); without it
    every GPU is free. ``needs`` maps servers to the GPUs their loan needs rented (missing = none);
    ``weights`` is a deprecated alias. ``seed`` drives ``random``. ``demand`` seeds the demand "ours"
    learns: GPUs requested per set of accepted models, in any unit. ``learnt`` is what an earlier pool learnt
    (its ``demand_snapshot``), taken as it was, in place of the prior or a seed: a rebuilt or restarted engine
    goes on from it.
    """

    def __init__(
        self,
        nodes: Iterable[Node],
        *,
        policy: str = "ours",
        seed: int = 0,
        demand: Mapping[frozenset[str] | None, float] | None = None,
        needs: Mapping[int, float] | None = None,
        free: Mapping[int, int] | None = None,
        weights: Mapping[int, float] | None = None,
        learnt: Mapping[frozenset[str], float] | None = None,
    ) -> None:
        if policy not in POLICIES:
            raise ValueError(f"unknown placement policy {policy!r}; choose one of {POLICIES}")
        self.policy = policy
        self._learns = policy == "ours"
        self._rng = random.Random(seed)  # noqa: S311 - spreads load for the random-fit baseline, no secret
        self._nodes: list[Node | None] = []
        self._index: dict[int, int] = {}
        self._group: list[int] = []
        self._static: list[tuple[int, int, int, int]] = []  # per server: (group, GPUs, CPU capacity, model)
        self._free: list[int] = []  # free GPUs
        self._slot: list[int] = []  # the server's bucket in its group: free GPUs × _ROW + CPU level
        self._used_gpu: list[int] = []
        self._used_cpu: list[int] = []
        self._used_mem: list[int] = []
        self._need: list[float] = []
        self._needy = 0  # servers whose remaining need is positive
        self._need_masks: list[int] = [0]  # per remaining need rounded up (1, 2, …): its servers; [0] unused
        self._need_slot: list[int] = []  # the server's index into _need_masks (0: none)
        self._group_of: dict[tuple, int] = {}
        self._group_keys: list[tuple] = []
        self._group_model: list[int] = []
        self._group_cpu: list[bool] = []  # does CPU or memory bind in this group?
        self._group_levels: list[list[int]] = []  # _level_masks of the group's GPU count
        self._group_members: list[int] = []
        self._bands: list[list[tuple[Decimal, int]] | None] = []  # per group: (price, servers), cheapest first
        self._masks: list[list[int]] = []
        self._nonempty: list[int] = []
        self._model_of: dict[str, int] = {}
        self._model_names: list[str] = []
        self._model_total: list[int] = []
        self._model_free: list[int] = []
        self._plans: dict[tuple, _Plan] = {}
        self._capable: dict[Request, int] = {}  # per request: _capable_class
        # per request object (by id, the object kept so that its id is not reused): its plan and class
        self._seen: dict[int, tuple[Request, _Plan, int]] = {}
        # Demand classes, for "ours": the distinct sets of accepted models seen, as bitmasks over models.
        self._class_of: dict[int, int] = {}
        self._class_mask: list[int] = []
        self._class_own: list[float] = []  # decayed GPUs requested by this class itself
        self._class_demand: list[float] = []  # … by this class and every class whose models it includes
        self._class_free: list[int] = []  # free GPUs of the class's models, as of the last harm refresh
        self._class_free_stale = True
        self._class_models: list[list[int]] = []  # the class's models
        self._supersets: list[list[int]] = []  # classes whose models include this class's (itself too)
        self._classes_of_model: list[list[int]] = []
        self._increment = 1.0
        self._harm_cache: dict[int, float] = {}
        self._harm_groups: list[float] | None = None  # _harm per group, while the cache holds
        self._orders: dict[int, tuple] = {}  # per plan's group tuple: ours's score order (see _score_order)
        self._changes = 0
        self._total_gpus = 0
        self._cpu_q = 0.0  # STRAND_QUANTILE of the CPU per GPU that GPU requests ask; 0: none seen

        needs = needs if needs is not None else weights
        self._has_needs = needs is not None
        for node in nodes:
            if node.server_id in self._index:
                raise ValueError(f"server {node.server_id} given twice")
            f = node.gpus if free is None else free.get(node.server_id, 0)
            if node.gpus < 0 or not 0 <= f <= node.gpus:
                raise ValueError(f"server {node.server_id}: {f} free GPUs of {node.gpus}")
            self._add(node, used_gpu=node.gpus - f)
        for server_id, need in (needs or {}).items():
            if server_id in self._index:
                self.set_need(server_id, need)

        if self._learns:
            if learnt:
                for models, amount in learnt.items():
                    c = self._demand_class(models)
                    if c >= 0 and amount > 0:
                        self._learn(c, amount, decay=False)
            elif demand:
                total = sum(amount for amount in demand.values() if amount > 0)
                for models, amount in demand.items():
                    c = self._demand_class(models) if models is not None else -1
                    if c >= 0 and amount > 0:
                        self._learn(c, amount * _STEADY_STATE / total, decay=False)
            elif self._total_gpus:
                for m, name in enumerate(self._model_names):
                    c = self._demand_class(frozenset({name}))
                    if c >= 0 and self._model_total[m]:
                        self._learn(c, PRIOR_MASS * self._model_total[m] / self._total_gpus, decay=False)

    # The public interface

    def place(self, request: Request) -> int | None:
        """Learn the request, choose a server for it and allocate its GPUs, CPU and memory there."""
        plan, c = self._resolve(request)
        if c >= 0:
            self._learn(c, max(1, request.gpu_count))
        n = request.gpu_count
        if n and self._learns:  # _learn_cpu, inlined: this is the hot path
            x, q = request.cpu_milli / n, self._cpu_q
            self._cpu_q = q + _STRAND_STEP * q * ((STRAND_QUANTILE - 1.0) if x < q else STRAND_QUANTILE) if q else x
        i = self._pick(plan, request, _NO_MASK)
        if i < 0:
            return None
        node = self._nodes[i]
        cpu = node.cpu_per_gpu_milli * n
        mem = node.memory_per_gpu_mib * n
        self._allocate(
            i,
            n,
            request.cpu_milli if request.cpu_milli > cpu else cpu,
            request.memory_mib if request.memory_mib > mem else mem,
        )
        return node.server_id

    def peek(self, request: Request) -> int | None:
        """The server ``place`` would choose now, without allocating or learning from the request."""
        i = self._pick(self._plan(request), request, _NO_MASK)
        return None if i < 0 else self._nodes[i].server_id

    def options(self, request: Request, k: int = 3, *, exclude: Collection[int] = ()) -> list[int]:
        """Up to ``k`` distinct feasible servers, best first (the first is ``peek``'s choice unless excluded)."""
        plan = self._plan(request)
        allow = _NO_MASK
        for server_id in exclude:
            i = self._index.get(server_id)
            if i is not None:
                allow &= ~(1 << i)
        chosen: list[int] = []
        while len(chosen) < k:
            i = self._pick(plan, request, allow)
            if i < 0:
                break
            chosen.append(self._nodes[i].server_id)
            allow &= ~(1 << i)
        return chosen

    def observe(self, request: Request) -> None:
        """Learn the request's demand without placing it (the product learns every request, booked or not)."""
        _, c = self._resolve(request)
        if c >= 0:
            self._learn(c, max(1, request.gpu_count))
        if request.gpu_count and self._learns:
            self._learn_cpu(request)

    def allocate(self, server_id: int, gpus: int, cpu_milli: int = 0, memory_mib: int = 0) -> None:
        """Record an allocation made elsewhere (a hold the database made). CPU and memory are not checked."""
        i = self._position(server_id)
        if gpus < 0 or cpu_milli < 0 or memory_mib < 0 or gpus > self._free[i]:
            raise ValueError(f"server {server_id}: cannot allocate {gpus} GPUs with {self._free[i]} free")
        self._allocate(i, gpus, cpu_milli, memory_mib)

    def release(self, server_id: int, gpus: int, cpu_milli: int = 0, memory_mib: int = 0) -> None:
        """Give ``gpus`` GPUs (and CPU, memory) of ``server_id`` back (a job ended or moved)."""
        i = self._position(server_id)
        if (
            gpus < 0
            or gpus > self._used_gpu[i]
            or not 0 <= cpu_milli <= self._used_cpu[i]
            or not 0 <= memory_mib <= self._used_mem[i]
            or (gpus == cpu_milli == memory_mib == 0)
        ):
            raise ValueError(f"server {server_id}: cannot release {gpus} GPUs with {self._free[i]} free")
        self._allocate(i, -gpus, -cpu_milli, -memory_mib)

    def free(self, server_id: int) -> int:
        """Free GPUs on ``server_id`` now."""
        return self._free[self._position(server_id)]

    def used(self, server_id: int) -> tuple[int, int, int]:
        """(GPUs, CPU milli, memory MiB) allocated on ``server_id``."""
        i = self._position(server_id)
        return self._used_gpu[i], self._used_cpu[i], self._used_mem[i]

    def set_need(self, server_id: int, need: float) -> None:
        """GPUs the server's loan needs rented; 0 = none. Its remaining need falls as GPUs are allocated."""
        i = self._position(server_id)
        self._need[i] = max(0.0, float(need))
        self._has_needs = True
        self._update_needy(i)

    set_weight = set_need  # deprecated alias (the caller's weights were a need in another unit)

    def upsert_node(self, node: Node) -> None:
        """A new server, or its listing changed (price, share, GPUs in service); its allocation is kept."""
        i = self._index.get(node.server_id)
        if i is None:
            self._add(node, used_gpu=0)
        else:
            used = (self._used_gpu[i], self._used_cpu[i], self._used_mem[i])
            self._unplace(i)
            self._used_gpu[i] = self._used_cpu[i] = self._used_mem[i] = 0
            self._place_node(i, node)
            self._allocate(i, *used)
        self._plans.clear()
        self._capable.clear()
        self._seen.clear()

    def remove_node(self, server_id: int) -> None:
        """The server is not placeable any more (paused, node not ready); its allocation is forgotten."""
        i = self._position(server_id)
        self._unplace(i)
        del self._index[server_id]
        self._nodes[i] = None
        self._used_gpu[i] = self._used_cpu[i] = self._used_mem[i] = 0
        self._need[i] = 0.0
        self._update_needy(i)
        self._plans.clear()
        self._capable.clear()
        self._seen.clear()

    def demand_snapshot(self) -> dict[frozenset[str], float]:
        """The learnt mix (GPUs per set of accepted models, decayed), to seed ``demand=`` after a restart."""
        names = self._model_names
        return {
            frozenset(names[m] for m in range(len(names)) if mask >> m & 1): own / self._increment
            for mask, own in zip(self._class_mask, self._class_own, strict=True)
            if own > 0
        }

    # Bookkeeping

    def _position(self, server_id: int) -> int:
        try:
            return self._index[server_id]
        except KeyError:
            raise KeyError(f"server {server_id} is not in this pool") from None

    def _add(self, node: Node, *, used_gpu: int) -> None:
        i = len(self._nodes)
        self._index[node.server_id] = i
        self._nodes.append(None)
        self._group.append(-1)
        self._static.append((-1, 0, 0, -1))
        self._free.append(0)
        self._slot.append(0)
        self._used_gpu.append(0)
        self._used_cpu.append(0)
        self._used_mem.append(0)
        self._need.append(0.0)
        self._need_slot.append(0)
        self._place_node(i, node)
        if used_gpu:
            self._allocate(i, used_gpu, 0, 0)

    def _place_node(self, i: int, node: Node) -> None:
        """Put a server (with nothing allocated) into its group's bucket of free GPUs."""
        if node.gpus < 0:
            raise ValueError(f"server {node.server_id} has a negative GPU count")
        m = self._model_of.get(node.model)
        if m is None:
            m = self._model_of[node.model] = len(self._model_names)
            self._model_names.append(node.model)
            self._model_total.append(0)
            self._model_free.append(0)
            self._classes_of_model.append([])
        key = (
            node.model,
            node.vram_gb,
            node.region,
            node.gpus,
            node.cpu_milli,
            node.memory_mib,
            node.cpu_per_gpu_milli,
            node.memory_per_gpu_mib,
        )
        g = self._group_of.get(key)
        if g is None:
            g = self._group_of[key] = len(self._group_keys)
            self._group_keys.append(key)
            self._group_model.append(m)
            self._group_cpu.append(node.cpu_milli > 0 or node.memory_mib > 0)
            self._group_levels.append(_level_masks(node.gpus))
            self._group_members.append(0)
            self._bands.append(None)
            self._masks.append([0] * ((node.gpus + 1) * _ROW))
            self._nonempty.append(0)
        self._nodes[i] = node
        self._group[i] = g
        self._static[i] = (g, node.gpus, node.cpu_milli, m)
        self._group_members[g] |= 1 << i
        self._bands[g] = None
        slot = node.gpus * _ROW + _LEVELS
        self._masks[g][slot] |= 1 << i
        self._nonempty[g] |= 1 << slot
        self._slot[i] = slot
        self._free[i] = node.gpus
        self._model_total[m] += node.gpus
        self._total_gpus += node.gpus
        self._shift_free(m, node.gpus)
        self._update_needy(i)

    def _unplace(self, i: int) -> None:
        """Take a server out of its bucket and its model's totals (its allocation stays in the counters)."""
        node, g = self._nodes[i], self._group[i]
        f, slot = self._free[i], self._slot[i]
        bit = 1 << i
        masks = self._masks[g]
        masks[slot] &= ~bit
        if not masks[slot]:
            self._nonempty[g] &= ~(1 << slot)
        self._group_members[g] &= ~bit
        self._bands[g] = None
        m = self._group_model[g]
        self._model_total[m] -= node.gpus
        self._total_gpus -= node.gpus
        self._shift_free(m, -f)
        self._free[i] = 0

    def _allocate(self, i: int, gpus: int, cpu: int, mem: int) -> None:
        """Add an allocation (negative: a release); the server's bit moves to the bucket of its free count.
        (The hot path of every place and release: ``_shift_free`` is inlined.)"""
        used_gpu = self._used_gpu[i] = self._used_gpu[i] + gpus
        used_cpu = self._used_cpu[i] = self._used_cpu[i] + cpu
        self._used_mem[i] += mem
        if not (gpus or cpu):
            return
        g, size, cap_cpu, m = self._static[i]
        f = self._free[i]
        new = size - used_gpu
        if new < 0:
            new = 0
        level = _LEVELS
        if cap_cpu > 0:
            level = (cap_cpu - used_cpu) * _LEVELS // cap_cpu
            level = 0 if level < 0 else _LEVELS if level > _LEVELS else level
        slot = new * _ROW + level
        old = self._slot[i]
        if slot != old:
            masks = self._masks[g]
            bit = 1 << i
            left = masks[old] ^ bit
            masks[old] = left
            if not left:
                self._nonempty[g] &= ~(1 << old)
            was = masks[slot]
            masks[slot] = was | bit
            if not was:
                self._nonempty[g] |= 1 << slot
            self._slot[i] = slot
        if new != f:
            delta = new - f
            self._free[i] = new
            model_free = self._model_free[m] = self._model_free[m] + delta
            if not model_free:  # a set of models may have run dry: its harm is infinite now
                self._forget_harm()
            self._changes += 1
        if self._need[i]:
            self._update_needy(i)

    def _shift_free(self, m: int, delta: int) -> None:
        if not delta:
            return
        self._model_free[m] += delta
        if not self._model_free[m]:
            self._forget_harm()
        self._changes += 1

    def _update_needy(self, i: int) -> None:
        remaining = self._need[i] - self._used_gpu[i] if self._nodes[i] is not None else 0.0
        slot = math.ceil(remaining) if remaining > 0 else 0
        old = self._need_slot[i]
        if slot == old:
            return
        bit = 1 << i
        masks = self._need_masks
        masks[old] &= ~bit
        if slot:
            while len(masks) <= slot:
                masks.append(0)
            masks[slot] |= bit
            self._needy |= bit
        else:
            self._needy &= ~bit
        self._need_slot[i] = slot

    def _plan(self, request: Request) -> _Plan:
        shape = (request.models, request.min_vram_gb, request.price_cap, request.region)
        plan = self._plans.get(shape)
        if plan is None:
            if len(self._plans) >= _PLAN_CACHE_LIMIT:
                self._plans.clear()
            preferred, others = [], []
            cap = request.price_cap
            for g, (model, vram, region, *_rest) in enumerate(self._group_keys):
                members = self._group_members[g]
                if not members or (request.models is not None and model not in request.models):
                    continue
                if vram < request.min_vram_gb:
                    continue
                allow = _NO_MASK
                if cap is not None:
                    under = 0
                    for price, band in self._price_bands(g):
                        if price > cap:
                            break
                        under |= band
                    if not under:
                        continue
                    allow = _NO_MASK if under == members else under
                (preferred if request.region is None or region == request.region else others).append((g, allow))
            demand_class = -1
            if request.models is not None and self._learns:
                demand_class = self._demand_class(request.models)
            plan = self._plans[shape] = _Plan(tuple(preferred), tuple(others), demand_class)
        return plan

    def _price_bands(self, g: int) -> list[tuple[Decimal, int]]:
        bands = self._bands[g]
        if bands is None:
            by_price: dict[Decimal, int] = {}
            for i in _bits(self._group_members[g]):
                price = self._nodes[i].price
                by_price[price] = by_price.get(price, 0) | 1 << i
            bands = self._bands[g] = sorted(by_price.items())
        return bands

    # Picking

    def _pick(self, plan: _Plan, request: Request, allow: int) -> int:
        """Position of the chosen server or -1: the preferred region first, the others only if nothing fits."""
        picker = _PICKERS[self.policy]
        if not request.gpu_count and self.policy not in ("first_fit", "random"):
            picker = _best_fit  # a CPU-only task: on the server with the fewest free GPUs, to strand none
        for groups in (plan.preferred, plan.others):
            if groups:
                i = picker(self, groups, request, allow)
                if i >= 0:
                    return i
        return -1

    def _fit_in(self, g: int, mask: int, cpu: int, mem: int) -> int:
        """The lowest server of ``mask`` (all in group g) with ``cpu`` and ``mem`` free; -1 if none."""
        if not mask:
            return -1
        if not self._group_cpu[g] or (cpu <= 0 and mem <= 0):
            return _lowest(mask)
        _, _, _, _, cap_cpu, cap_mem, _, _ = self._group_keys[g]
        used_cpu, used_mem = self._used_cpu, self._used_mem
        for i in _bits(mask):
            if (not cap_cpu or cap_cpu - used_cpu[i] >= cpu) and (not cap_mem or cap_mem - used_mem[i] >= mem):
                return i
        return -1

    def _take(self, g: int, request: Request) -> tuple[int, int]:
        key = self._group_keys[g]
        n = request.gpu_count
        return max(request.cpu_milli, key[6] * n), max(request.memory_mib, key[7] * n)

    def _boundary(self, g: int, cpu: int) -> int:
        """The CPU level from which servers of group g may have ``cpu`` free (exact check at it); -1: none can."""
        cap = self._group_keys[g][4]
        if cpu <= 0 or cap <= 0:
            return 0
        if cpu > cap:
            return -1
        return cpu * _LEVELS // cap

    def _fullest(self, g: int, request: Request, allow: int) -> tuple[float, int]:
        """(leftover, position) of the server of group g that fits tightest; (-1, -1) if none.

        The leftover is the larger of the GPU and CPU shares the server would have left (CPU by its level,
        so to 1/_LEVELS): a multi-resource best fit, so that neither GPUs nor CPU are stranded. Per free-GPU
        count, the lowest CPU level that fits is that count's candidate. (The hot path of every policy but
        ``first_fit`` and ``random``: ``_take``, ``_boundary`` and ``_fit_in`` are inlined.)
        """
        n = request.gpu_count
        rows = self._nonempty[g] >> (n * _ROW)
        if not rows:
            return -1, -1
        _, _, _, gpus, cap_cpu, cap_mem, cpu_per, mem_per = self._group_keys[g]
        cpu = cpu_per * n
        if request.cpu_milli > cpu:
            cpu = request.cpu_milli
        mem = mem_per * n
        if request.memory_mib > mem:
            mem = request.memory_mib
        if cap_cpu <= 0 or cpu <= 0:
            low, cpu, need_share = 0, 0, 0.0
        elif cpu > cap_cpu:
            return -1, -1
        else:
            low, need_share = cpu * _LEVELS // cap_cpu, cpu / cap_cpu
        if cap_mem <= 0:
            mem = 0
        elif mem > cap_mem:
            return -1, -1
        used_cpu, used_mem = self._used_cpu, self._used_mem
        masks, f = self._masks[g], n
        best_left, best_i = -1.0, -1
        spread = cap_cpu and n
        while rows:
            gpu_left = (f - n) / gpus if gpus else 0.0
            if best_i >= 0 and gpu_left >= best_left:
                break
            row = (rows & _FULL_ROW) >> low
            base = f * _ROW + low
            while row:
                bit = row & -row
                level = bit.bit_length() - 1
                row ^= bit
                mask = masks[base + level] & allow
                need_cpu = cpu if level == 0 else 0  # above the boundary level every server has the CPU
                i = -1
                while mask:
                    low_bit = mask & -mask
                    j = low_bit.bit_length() - 1
                    if (not need_cpu or cap_cpu - used_cpu[j] >= need_cpu) and (
                        not mem or cap_mem - used_mem[j] >= mem
                    ):
                        i = j
                        break
                    mask ^= low_bit
                if i >= 0:
                    left = gpu_left
                    if spread:
                        over = (low + level) / _LEVELS - need_share
                        if over > left:
                            left = over
                    if best_i < 0 or left < best_left:
                        best_left, best_i = left, i
                    break
            rows >>= _ROW
            f += 1
        return best_left, best_i

    def _unstranded(self, g: int, request: Request, allow: int) -> int:
        """The server of group g with the fewest free GPUs that the request leaves with CPU for the rest
        (``_strands``), the tightest such CPU level first; -1 if none."""
        n = request.gpu_count
        rows = self._nonempty[g] >> (n * _ROW)
        _, _, _, _, cap_cpu, cap_mem, cpu_per, mem_per = self._group_keys[g]
        cpu = max(cpu_per * n, request.cpu_milli)
        mem = max(mem_per * n, request.memory_mib)
        masks, used_cpu, used_mem, q = self._masks[g], self._used_cpu, self._used_mem, self._cpu_q
        f = n
        while rows:
            row = rows & _FULL_ROW
            if row:
                need = cpu + (f - n) * q  # free CPU the server must have
                low = min(_LEVELS, max(0, int(need * _LEVELS // cap_cpu))) if cap_cpu else 0
                row >>= low
                level = low
                while row:
                    if row & 1:
                        mask = masks[f * _ROW + level] & allow
                        while mask:
                            bit = mask & -mask
                            j = bit.bit_length() - 1
                            if cap_cpu - used_cpu[j] >= need and (not cap_mem or cap_mem - used_mem[j] >= mem):
                                return j
                            mask ^= bit
                    row >>= 1
                    level += 1
            rows >>= _ROW
            f += 1
        return -1

    def _union(self, g: int, n: int, low: int) -> tuple[int, int]:
        """(servers at the boundary CPU level, servers above it) of group g with at least n GPUs free."""
        rows = self._nonempty[g] >> (n * _ROW)
        masks, f = self._masks[g], n
        boundary = above = 0
        while rows:
            if rows & ((1 << _ROW) - 1):
                base = f * _ROW
                boundary |= masks[base + low]
                for level in range(low + 1, _ROW):
                    above |= masks[base + level]
            rows >>= _ROW
            f += 1
        return boundary, above

    def _guard_open(self, g: int) -> bool:
        """May a loan draw a renter to a server of group g that packs worse? Only while its model is far from
        scarce, so that the deviation cannot cause a refusal soon."""
        m = self._group_model[g]
        total = self._model_total[m]
        return bool(total) and self._model_free[m] >= GUARD_FREE_SHARE * total

    def _closest_to_cover(
        self, groups: tuple[tuple[int, int], ...], g: int, i: int, cap: int, request: Request, allow: int
    ) -> int:
        """The financed server closest to covering its loan; i (the packing choice, in group g, whose servers
        under the price cap are ``cap``) if none fits.

        While the guard is open (``_guard_open``), across every group of the plan (``_loan_pick``); once it
        is closed, among the servers interchangeable with i (same group, free GPUs and CPU level): the
        largest remaining need the request covers, else the smallest. A CPU-only task: ``_cpu_home``.
        """
        n = request.gpu_count
        if not n:
            j = self._cpu_home(groups, i, request, allow)
            return i if j < 0 else j
        j = self._loan_pick(groups, g, request, allow)
        if j >= 0:
            return j
        candidates = self._masks[g][self._slot[i]] & cap & allow & self._needy
        cpu, mem = self._take(g, request)
        best, best_key = i, None
        for count, j in enumerate(_bits(candidates)):
            if count >= _NEED_SCAN:
                break
            if self._fit_in(g, 1 << j, cpu, mem) < 0:
                continue
            remaining = self._need[j] - self._used_gpu[j]
            key = (0, -remaining) if remaining <= n else (1, remaining)
            if best_key is None or key < best_key:
                best, best_key = j, key
        return best

    def _loan_pick(self, groups: tuple[tuple[int, int], ...], g: int, request: Request, allow: int) -> int:
        """The financed server whose remaining need the request covers best, in the groups whose guard is open
        and whose model is at most ``STRAND_HARM_FACTOR`` times as harmed as the packing choice's (group g);
        -1 if none fits: remaining needs n, n - 1, …, 1 (an exact cover first, then the least GPUs
        wasted), then n + 1, n + 2, … (the closest to covered); best-fit among equals. This is the lower
        bound's own order: the smallest needs first, no GPU wasted. Each need is one mask
        (``_need_masks``), so a pick costs a few mask operations per group and need, not a scan."""
        needy = self._needy & allow
        members = self._group_members
        harms = self._harm_by_group()
        limit = harms[g] * STRAND_HARM_FACTOR  # a loan does not take GPUs that constrained demand needs
        open_groups = [
            (h, cap) for h, cap in groups if members[h] & needy and harms[h] <= limit and self._guard_open(h)
        ]
        if not open_groups:
            return -1
        n = request.gpu_count
        need_masks = self._need_masks
        top = len(need_masks) - 1
        usable: dict[int, int] = {}  # per group: its servers a loan may draw this request to
        spare: dict[int, bool] = {}  # _whole_to_spare per size below the largest, per group of the largest
        largest = max(self._group_keys[h][3] for h, _cap in groups)
        for r in (*range(min(n, top), 0, -1), *range(n + 1, top + 1)):
            by_need = need_masks[r] & needy
            if not by_need:
                continue
            best_key, best = None, -1
            for h, cap in open_groups:
                mask = by_need & cap & members[h]
                if not mask:
                    continue
                if h not in usable:
                    usable[h] = self._loan_usable(groups, h, request, largest, spare)
                left, j = self._fullest(h, request, mask & usable[h])
                if j >= 0 and (best_key is None or (left, j) < best_key):
                    best_key, best = (left, j), j
            if best >= 0:
                return best
        return -1

    def _loan_usable(
        self, groups: tuple[tuple[int, int], ...], h: int, request: Request, largest: int, spare: dict[int, bool]
    ) -> int:
        """Servers of group h a loan may draw the request to: not a whole one unless ``_whole_to_spare``,
        and one it leaves with its free GPUs' share of CPU (a CPU level of slack: the renter covers a need)."""
        usable = _NO_MASK
        gpus = self._group_keys[h][3]
        if self._nonempty[h] >> (gpus * _ROW):  # some server of h is whole
            key = gpus if gpus < largest else -1 - h
            if key not in spare:
                spare[key] = self._whole_to_spare(groups, h, largest)
            if not spare[key]:
                masks = self._masks[h]
                for slot in range(gpus * _ROW, (gpus + 1) * _ROW):
                    usable &= ~masks[slot]
        if self._group_cpu[h]:
            usable &= self._balanced_after(h, request, slack=1)
        return usable

    def _whole_to_spare(self, groups: tuple[tuple[int, int], ...], h: int, largest: int) -> bool:
        """May a loan break one more whole server of group h? Only while ``GUARD_WHOLE_SHARE`` of the servers
        that could stand in for it stay able to: the group's own whole servers when it has the plan's largest
        servers (a request for one needs it whole, with its CPU and memory), else every server of the plan
        with as many GPUs free (any larger server can take a smaller server's requests)."""
        size = self._group_keys[h][3]
        able = total = 0
        for g, _cap in ((h, _NO_MASK),) if size == largest else groups:
            if self._group_keys[g][3] < size:
                continue
            members = self._group_members[g].bit_count()
            total += members
            able += members
            masks, short = self._masks[g], self._nonempty[g] & ((1 << (size * _ROW)) - 1)
            while short:  # the servers with fewer than size GPUs free: fewer buckets than those with more
                low = short & -short
                able -= masks[low.bit_length() - 1].bit_count()
                short ^= low
        return able - 1 >= GUARD_WHOLE_SHARE * total

    def _balanced_after(self, g: int, request: Request, slack: int = 0) -> int:
        """Servers of group g that would keep at least their free GPUs' share of CPU free after the request,
        to the CPU level (``slack`` levels less): else the server's last GPUs are stranded without CPU."""
        key = self._group_keys[g]
        gpus, cap_cpu = key[3], key[4]
        if not cap_cpu or not gpus:
            return _NO_MASK
        n = request.gpu_count
        cpu = self._take(g, request)[0] / cap_cpu
        masks = self._masks[g]
        rows, f = self._nonempty[g] >> (n * _ROW), n
        fit = 0
        while rows:
            row = rows & ((1 << _ROW) - 1)
            if row:
                # the lowest level whose servers surely have (f - n)/gpus of the CPU left after the request
                low = max(0, math.ceil(_LEVELS * ((f - n) / gpus + cpu) - 1e-9) - slack)
                row >>= low
                slot = f * _ROW + low
                while row:
                    if row & 1:
                        fit |= masks[slot]
                    row >>= 1
                    slot += 1
            rows >>= _ROW
            f += 1
        return fit

    def _cpu_home(self, groups: tuple[tuple[int, int], ...], i: int, request: Request, allow: int) -> int:
        """A CPU-only task's server while loans remain: i (the fewest free GPUs) unless the task would leave
        i's free GPUs without their share of CPU; then the fullest server it leaves balanced; -1 if none."""
        if not self._free[i] or self._balanced_after(self._group[i], request) >> i & 1:
            return i
        best_key, best = None, -1
        for h, cap in groups:
            if not self._group_cpu[h]:
                continue
            left, j = self._fullest(h, request, self._balanced_after(h, request) & cap & allow)
            if j >= 0 and (best_key is None or (left, j) < best_key):
                best_key, best = (left, j), j
        return best

    def _forget_harm(self) -> None:
        self._harm_cache.clear()
        self._harm_groups = None
        self._class_free_stale = True

    def _harm_by_group(self) -> list[float]:
        """``_harm`` of every group, computed once per refresh of the cache (the score ``ours`` sorts by)."""
        if self._changes > min(64, self._total_gpus >> 8):
            self._forget_harm()
            self._changes = 0
        harms = self._harm_groups
        if harms is None or len(harms) < len(self._group_keys):
            by_model: dict[int, float] = {}
            harms = self._harm_groups = [
                by_model[m] if m in by_model else by_model.setdefault(m, self._harm_of(m)) for m in self._group_model
            ]
        return harms

    def _harm(self, g: int) -> float:
        """How much taking a GPU of group g's model brings a constrained request's refusal closer.

        For every set S of models that some requests are limited to, D(S)/F(S) is the decayed demand
        of the requests that can only use models in S over the GPUs of S still free: the reciprocal of
        the time until S runs dry (Hall's marriage condition, one set at a time). Taking a GPU of model
        m shortens that time for every S that contains m; a high power weighs the tightest set most.
        Under the cold-start prior (each model's own demand proportional to its capacity) this is
        (capacity/free)^4 per model: the largest free share first, as ``balanced``.

        Cached per model, refreshed after a number of changes that grows with the pool (a small pool
        refreshes at every change) and whenever a set of models runs dry.
        """
        if self._changes > min(64, self._total_gpus >> 8):
            self._forget_harm()
            self._changes = 0
        return self._harm_of(self._group_model[g])

    def _harm_of(self, m: int) -> float:
        """``_harm`` of model m, from the cache."""
        harm = self._harm_cache.get(m)
        if harm is None:
            if self._class_free_stale:  # free GPUs per class, summed from the models' when the cache refreshes
                model_free = self._model_free
                self._class_free = [sum(model_free[k] for k in models) for models in self._class_models]
                self._class_free_stale = False
            harm = 0.0
            demand, free = self._class_demand, self._class_free
            for c in self._classes_of_model[m]:
                f = free[c]
                if not f:
                    harm = math.inf
                    break
                harm += (demand[c] / f) ** _TIGHTNESS
            self._harm_cache[m] = harm
        return harm

    # Demand, for "ours"

    def _capable_class(self, plan: _Plan, request: Request) -> int:
        """The demand class a request counts towards: the models it names or, when it names none, the models
        with a server that could take it empty (the GPUs, CPU and memory): a request for a whole 8-GPU server
        with 120 cores is limited to the few models that have one, and "ours" then keeps their servers whole
        for it. -1 if every model could. (Intersecting a named set with the capable models, instead, cost
        0.25 % of churn acceptance on the trace's gpuspec33 pod list.)"""
        if request.models is not None:
            return plan.demand_class
        c = self._capable.get(request)
        if c is None:
            if len(self._capable) >= _PLAN_CACHE_LIMIT:
                self._capable.clear()
            n = request.gpu_count
            names = set()
            for g, _cap in (*plan.preferred, *plan.others):
                _, _, _, gpus, cap_cpu, cap_mem, cpu_per, mem_per = self._group_keys[g]
                if gpus < n:
                    continue
                if cap_cpu and max(request.cpu_milli, cpu_per * n) > cap_cpu:
                    continue
                if cap_mem and max(request.memory_mib, mem_per * n) > cap_mem:
                    continue
                names.add(self._model_names[self._group_model[g]])
            c = self._capable[request] = self._demand_class(frozenset(names)) if names else -1
        return c

    def _resolve(self, request: Request) -> tuple[_Plan, int]:
        """The request's plan and demand class, by the request object's identity first: a marketplace and the
        bench send the same few request objects again and again, and hashing one costs more than the rest."""
        seen = self._seen.get(id(request))
        if seen is not None and seen[0] is request:
            return seen[1], seen[2]
        plan = self._plan(request)
        c = self._capable_class(plan, request) if self._learns else -1
        if len(self._seen) >= _PLAN_CACHE_LIMIT:
            self._seen.clear()
        self._seen[id(request)] = (request, plan, c)
        return plan, c

    def _learn_cpu(self, request: Request) -> None:
        """Move the CPU-per-GPU quantile towards the request's (a stochastic quantile estimate)."""
        x = request.cpu_milli / request.gpu_count
        q = self._cpu_q
        if not q:
            self._cpu_q = x
        else:
            self._cpu_q = q + _STRAND_STEP * q * ((STRAND_QUANTILE - 1.0) if x < q else STRAND_QUANTILE)

    def _demand_class(self, models: frozenset[str]) -> int:
        """Index of the class of requests accepting exactly ``models`` (those the pool has); -1 if no constraint."""
        mask = 0
        for model in models:
            if model in self._model_of:
                mask |= 1 << self._model_of[model]
        if mask in (0, (1 << len(self._model_names)) - 1):
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
            self._class_models.append([m for m in range(len(self._model_names)) if mask >> m & 1])
            for m in self._class_models[c]:
                self._classes_of_model[m].append(c)
            self._forget_harm()
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
        self._changes += 1
        if self._increment > 1e100:
            self._class_own = [d / self._increment for d in self._class_own]
            self._class_demand = [d / self._increment for d in demand]
            self._increment = 1.0
            self._forget_harm()


# Pickers: (pool, groups with their price masks, request, allowed servers) → position of the chosen server, or -1.


def _first_fit(pool: Pool, groups: tuple[tuple[int, int], ...], request: Request, allow: int) -> int:
    n = request.gpu_count
    best = -1
    for g, cap in groups:
        if not pool._nonempty[g] >> (n * _ROW):
            continue
        cpu, mem = pool._take(g, request)
        low = pool._boundary(g, cpu)
        if low < 0:
            continue
        boundary, above = pool._union(g, n, low)
        for i in (pool._fit_in(g, boundary & cap & allow, cpu, mem), pool._fit_in(g, above & cap & allow, 0, mem)):
            if i >= 0 and (best < 0 or i < best):
                best = i
    return best


_LEVEL_MASKS: dict[int, list[int]] = {}


def _level_masks(gpus: int) -> list[int]:
    """Per CPU level ``low``: the bits of levels ``low`` and above in every row of a ``gpus``-GPU group's buckets."""
    masks = _LEVEL_MASKS.get(gpus)
    if masks is None:
        masks = _LEVEL_MASKS[gpus] = [
            sum((_FULL_ROW >> low << low) << (f * _ROW) for f in range(gpus + 1)) for low in range(_ROW)
        ]
    return masks


def _score_tiers(pool: Pool, groups: tuple[tuple[int, int], ...], score) -> list[tuple[tuple[int, int], ...]]:
    """``groups`` in tiers of equal score, lowest first, each in group order. ``ours``'s scores change only when
    its harm cache refreshes, so its tiers are kept per plan until then; best-fit's are one tier."""
    if score is None:
        return [groups]
    if score is Pool._harm:
        harms = pool._harm_by_group()
        cached = pool._orders.get(id(groups))
        if cached is not None and cached[0] is groups and cached[1] is harms:
            return cached[2]
        scores = harms.__getitem__
    else:
        harms, scores = None, lambda g: score(pool, g)
    tiers: list[list[tuple[int, int]]] = []
    last = None
    for value, g, cap in sorted((scores(g), g, cap) for g, cap in groups):
        if not tiers or value != last:
            tiers.append([])
            last = value
        tiers[-1].append((g, cap))
    out = [tuple(tier) for tier in tiers]
    if harms is not None:
        if len(pool._orders) >= _PLAN_CACHE_LIMIT:
            pool._orders.clear()
        pool._orders[id(groups)] = (groups, harms, out)
    return out


def _settle(pool: Pool, tier: list[tuple[float, int, int]], request: Request, allow: int) -> tuple | None:
    """The (group, position, price mask) with the least leftover among a tier of equal score; None if none fits.

    Visited by their bound (a group's leftover is at least its bound), stopping once a bound reaches the best."""
    if len(tier) > 1:
        tier.sort()
    best_f, best = 0.0, None
    for left, g, cap in tier:
        if best is not None and left >= best_f:
            break
        f, i = pool._fullest(g, request, cap & allow)
        if i >= 0 and (best is None or f < best_f):
            best_f, best = f, (g, i, cap)
    return best


def _strands(pool: Pool, i: int, request: Request) -> bool:
    """Would the request leave server i's remaining free GPUs less CPU than requests typically ask per GPU?"""
    g, _, cap_cpu, _ = pool._static[i]
    n = request.gpu_count
    left = pool._free[i] - n
    if not cap_cpu or left <= 0:
        return False
    cpu = pool._group_keys[g][6] * n
    if request.cpu_milli > cpu:
        cpu = request.cpu_milli
    return cap_cpu - pool._used_cpu[i] - cpu < left * pool._cpu_q


def _pack(pool: Pool, groups: tuple[tuple[int, int], ...], request: Request, allow: int, score) -> int:
    """Best-fit after ``score``: the lowest score, then the least leftover, over the groups' fullest fitting
    servers (``Pool._fullest``; a tie between groups goes to the one visited first).

    Tiers of equal score are visited lowest first (``_score_tiers``) until one has a fitting server; inside a
    tier, groups in the order of a lower bound of their leftover (the GPUs left on their fullest server with
    n GPUs free and CPU above the boundary level), stopping once that bound reaches the best found
    (``_settle``): most picks look into one or two groups. Under ``ours``, a choice that strands
    (``_strands``) gives way to the first one in the following tiers, at most ``STRAND_HARM_FACTOR`` times
    as harmed, that does not. Then the loans (``Pool._closest_to_cover``).
    """
    n = request.gpu_count
    start = n * _ROW
    nonempty, keys, levels = pool._nonempty, pool._group_keys, pool._group_levels
    cpu_min, mem_min = request.cpu_milli, request.memory_mib
    found = first = None
    tiers = _score_tiers(pool, groups, score)
    check = score is Pool._harm and n and pool._cpu_q > 0
    limit = 0.0
    for tier in tiers:
        if first is not None and pool._harm_groups[tier[0][0]] > limit:
            break
        found = None
        if len(tier) == 1:  # no bound to sort by: straight to the group's fullest server
            g, cap = tier[0]
            _, i = pool._fullest(g, request, cap & allow)
            if i >= 0:
                found = (g, i, cap)
        else:
            bounds: list[tuple[float, int, int]] = []  # (bound, group, price mask)
            for g, cap in tier:
                rows = nonempty[g] >> start
                if not rows:
                    continue
                _, _, _, gpus, cap_cpu, cap_mem, cpu_per, mem_per = keys[g]
                if cap_cpu > 0:
                    cpu = cpu_per * n if cpu_per * n > cpu_min else cpu_min
                    if cpu > cap_cpu:
                        continue
                    if cpu > 0:
                        rows &= levels[g][cpu * _LEVELS // cap_cpu]  # servers at or above the boundary CPU level
                        if not rows:
                            continue
                if cap_mem > 0 and (mem_per * n if mem_per * n > mem_min else mem_min) > cap_mem:
                    continue
                bounds.append(((((rows & -rows).bit_length() - 1) // _ROW) / gpus if gpus else 0.0, g, cap))
            if bounds:
                found = _settle(pool, bounds, request, allow)
        if found is None:
            continue
        if not check or not _strands(pool, found[1], request):
            break
        g, _, cap = found
        j = pool._unstranded(g, request, cap & allow)  # another server of the group that strands nothing
        if j >= 0:
            found = (g, j, cap)
            break
        if first is None:  # look on, in tiers not much more harmed, for one that strands nothing
            first, limit = found, pool._harm_groups[g] * STRAND_HARM_FACTOR
        found = None
    if found is None:
        found = first
    if found is None:
        return -1
    g, i, cap = found
    if pool._needy and (score is Pool._harm or (not n and pool._learns)):  # "ours" and its CPU-only tasks
        return pool._closest_to_cover(groups, g, i, cap, request, allow)
    return i


def _best_fit(pool: Pool, groups, request: Request, allow: int) -> int:
    return _pack(pool, groups, request, allow, None)


def _free_share(pool: Pool, g: int) -> float:
    m = pool._group_model[g]
    total = pool._model_total[m]
    return -pool._model_free[m] / total if total else 0.0


def _balanced(pool: Pool, groups, request: Request, allow: int) -> int:
    return _pack(pool, groups, request, allow, _free_share)


def _ours(pool: Pool, groups, request: Request, allow: int) -> int:
    """The least harmed model (see ``Pool._harm``), best-fit within it; then the loan closest to covering."""
    return _pack(pool, groups, request, allow, Pool._harm)


def _cheapest(pool: Pool, groups, request: Request, allow: int) -> int:
    """The lowest price among fitting servers (per group, its price bands cheapest first), then best-fit."""
    n = request.gpu_count
    best_key, best = None, -1
    for g, cap in groups:
        if not pool._nonempty[g] >> (n * _ROW):
            continue
        for price, band in pool._price_bands(g):
            if best_key is not None and price > best_key[0]:
                break
            f, i = pool._fullest(g, request, band & cap & allow)
            if i >= 0:
                key = (price, f - n, i)
                if best_key is None or key < best_key:
                    best_key, best = key, i
                break
    return best


def _random_fit(pool: Pool, groups, request: Request, allow: int) -> int:
    """A uniformly random feasible server: draw among the servers with the GPUs free (and CPU above the
    boundary level), keep the draw if it fits exactly; after a few misses, draw among the exact fits."""
    n = request.gpu_count
    candidates: list[tuple[int, int, int, int]] = []  # (group, servers, cpu, mem)
    total = 0
    for g, cap in groups:
        cpu, mem = pool._take(g, request)
        low = pool._boundary(g, cpu)
        if low < 0:
            continue
        boundary, above = pool._union(g, n, low)
        mask = (boundary | above) & cap & allow
        if mask:
            candidates.append((g, mask, cpu, mem))
            total += mask.bit_count()
    if not total:
        return -1
    for _ in range(8):
        k = pool._rng.randrange(total)
        for g, mask, cpu, mem in candidates:
            count = mask.bit_count()
            if k < count:
                i = _nth(mask, k)
                if pool._fit_in(g, 1 << i, cpu, mem) >= 0:
                    return i
                break
            k -= count
    feasible = sorted(
        i for g, mask, cpu, mem in candidates for i in _bits(mask) if pool._fit_in(g, 1 << i, cpu, mem) >= 0
    )
    return feasible[pool._rng.randrange(len(feasible))] if feasible else -1


_PICKERS = {
    "random": _random_fit,
    "first_fit": _first_fit,
    "best_fit": _best_fit,
    "cheapest": _cheapest,
    "balanced": _balanced,
    "ours": _ours,
}


def choose(
    request: Request,
    nodes: Iterable[Node],
    free: Mapping[int, int],
    *,
    policy: str = "ours",
    needs: Mapping[int, float] | None = None,
    demand: Mapping[frozenset[str], float] | None = None,
    weights: Mapping[int, float] | None = None,
) -> int | None:
    """One-off choice without allocating (tests, fallback; not the product path, which keeps a ``Pool``).

    Builds a throw-away ``Pool`` from the given free counts and peeks at its choice. Without ``demand``
    "ours" has no history here, so it is the cold-start prior (``balanced``), then the loans' needs among
    interchangeable servers. ``weights`` is a deprecated alias of ``needs``. A negative free count (an
    overbooked snapshot) counts as none free.
    """
    nodes = list(nodes)
    free = {node.server_id: max(0, min(node.gpus, free.get(node.server_id, 0))) for node in nodes}
    needs = needs if needs is not None else weights
    return Pool(nodes, policy=policy, needs=needs, free=free, demand=demand).peek(request)
