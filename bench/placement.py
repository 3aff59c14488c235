"""Placement policies on the Alibaba GPU trace: saturation, cold start, churn, speed, collateral, production.

Nodes are the 1,213 servers (6,212 GPUs) of ``openb_node_list_gpu_node.csv``, with their CPU
(``cpu_milli``) and memory (``memory_mib``); the listing's per-GPU share is 0, since every task
carries its own CPU and memory request. Tasks are the pods of an ``openb_pod_list_*.csv`` file:
``num_gpu`` whole GPUs (as before, a fractional ``gpu_milli`` on one GPU books that GPU whole, since
such rows have ``num_gpu`` = 1), their ``cpu_milli``/``memory_mib``, ``gpu_spec`` as the accepted
models (``|``-separated; empty = any). Pods without a GPU (``num_gpu`` = 0) are kept as CPU-only
requests (``Request(gpu_count=0, cpu_milli=...)``): they compete for the CPU and memory of GPU
servers, which is what makes the trace's cpu* variants distinct workloads. Time columns are not used
(multigpu50 has none). Trace: Alibaba cluster-trace-gpu-v2023, from Weng et al., "Beware of
Fragmentation: Scheduling GPU-Sharing Workloads with Fragmentation Gradient Descent", USENIX ATC '23;
copied to ``bench/data/alibaba-gpu-v2023``; more files via ``--tasks``.

1. Saturation (as in the FGD paper), over ``SEEDS`` shuffled orders of each file, cycled, no
   departures, until the requested GPUs reach 1.2x capacity: per policy the mean and the worst seed
   of the share of requested GPUs accepted and of the GPUs allocated at the first refusal (of any
   request, CPU-only ones included). Beside them an upper bound on GPUs accepted that no policy,
   even offline, can beat: a max-flow from the stream's demand per request type (accepted models,
   GPUs, CPU, memory) to the supply per node shape (model, GPUs, CPU, memory), an edge where the model
   is accepted and an empty node of that shape could hold the task. By max-flow/min-cut it is the
   tightest "for every set of request types, the GPUs requested cannot exceed the matching supply"
   bound; it does not sum the tasks' CPU and memory, so it stays valid but is looser when they bind.
   Likewise for the first refusal: the GPUs of the longest prefix of the stream that the same flow
   routes whole (every policy refuses the next task, if not an earlier one). Goal
   (``saturation_ok``, today's meaning kept, now on the mean over seeds): on every file "ours" (seeded
   with the file's mix of model constraints, the "known workload") at least the better of first-fit
   and best-fit, both at the first refusal and in GPUs accepted.
2. Cold start: ``ours_online`` is "ours" with no prior, learning only from the requests it sees.
   Goal (``cold_start_ok``): on every file and every seed, at least first-fit both at the first
   refusal and in GPUs accepted.
3. Churn: tasks in file order fill the pool (refusals skipped) until 95% of its GPUs are allocated
   (at most 3x capacity requested; a policy that stops short reports where it got to); then
   ``CHURN_STEPS`` steps each release a uniformly random running task (its GPUs, CPU and memory) and
   place the next task. Acceptance = accepted / steps, same release seed for every policy. This is the
   loaded steady state a marketplace runs in, where packing decisions are paid back. Goals: "ours" at
   least the prior-free "balanced" baseline on every file (``churn_ok``), and at least 97% on gpuspec33
   (``churn_gpuspec33_ok``).
4. Speed: ``time.process_time`` (CPU time, not wall-clock: the machine is shared) around the churn
   loop above, i.e. the place and release calls at ~95% occupancy plus the loop's bookkeeping (about
   1.5 us a step, measured with a no-op pool); placements per CPU-second per policy. Goal
   (``speed_ok``): "ours" at least 100,000 on every file.
5. Collateral sweep: load (share of capacity requested, default tasks in file order) x financed share
   of the nodes x three loan-book seeds. Each financed node needs ceil(gpus/2) GPUs rented (DSCR 1.0
   at 50% utilisation); "below DSCR 1.0" = fewer GPUs allocated on it than that. Per point: financed
   nodes below for each non-collateral policy (first-fit, best-fit, balanced, "ours" without needs;
   random is left out) and for "ours" given the needs, GPUs accepted, and a lower bound that holds for
   any policy: a task adds at most min(its GPUs, the largest need) towards one loan, so with E = that
   sum over the GPU tasks of the stream (all of them, as if all were accepted), covering k loans needs
   the k smallest needs to sum to at most E, and it needs k tasks; LB = |F| - the largest such k.
   CPU-only tasks cover nothing (a need counts GPUs). Goals: "ours" with needs within max(5% of LB,
   3 nodes) of LB at every point (``collateral_ok``), with no fewer GPUs accepted than the best
   non-collateral policy at every point (``collateral_acceptance_ok``).
6. Production path: ``bench.placement_production.run`` replays the choice as the app makes it (engine
   state kept in step with the database, on PostgreSQL, 10,000 servers); goal p99 <= 5 ms per choice
   (``production_p99_ok``). Without the module or ``DATABASE_URL`` it is skipped and the goal is False.

    python -m bench.placement [--tasks FILE ...] [--quick]

``--quick`` (CI) runs fewer seeds and steps, a smaller sweep and the production smoke size. The last
line of stdout is one JSON object with a ``goals`` object of booleans.
"""

import argparse
import csv
import json
import math
import os
import random
import statistics
import time
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from itertools import cycle, islice
from pathlib import Path

from scheduler.placement import Node, Pool, Request

DATA = Path(__file__).resolve().parent / "data" / "alibaba-gpu-v2023"
NODE_LIST = DATA / "openb_node_list_gpu_node.csv"
TASK_FILES = (
    DATA / "openb_pod_list_default.csv",
    DATA / "openb_pod_list_gpuspec33.csv",
    DATA / "openb_pod_list_multigpu50.csv",
)
DEFAULT_TASKS = TASK_FILES[0]
GPUSPEC33 = "openb_pod_list_gpuspec33.csv"
# "ours_online" is "ours" without the file's prior; it is a pool option, not an engine policy.
COMPARED = ("random", "first_fit", "best_fit", "balanced", "ours", "ours_online")
NON_COLLATERAL = ("first_fit", "best_fit", "balanced", "ours")
SEEDS = 10
SATURATION_LOAD = 1.2
CHURN_OCCUPANCY = 0.95
CHURN_FILL_LIMIT = 3.0  # at most this many times capacity requested while filling
CHURN_STEPS = 20_000
CHURN_SEED = 7
CHURN_GOAL = 0.97
SPEED_GOAL = 100_000
COLLATERAL_LOADS = (0.1, 0.2, 0.4, 0.6, 0.8, 1.0, 1.2)
FINANCED_SHARES = (0.4, 0.7, 1.0)
LOAN_BOOK_SEEDS = (42, 43, 44)
PRODUCTION_P99_MS = 5.0


@dataclass(frozen=True, slots=True)
class Task:
    request: Request
    gpus: int
    cpu_milli: int
    memory_mib: int


def load_nodes(path: Path = NODE_LIST) -> list[Node]:
    """One ``Node`` per row, with its CPU and memory; the server id is the row's position (first-fit's order)."""
    with path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    nodes = []
    for k, row in enumerate(rows):
        nodes.append(
            Node(
                server_id=k,
                model=row["model"],
                gpus=int(row["gpu"]),
                cpu_milli=int(row["cpu_milli"]),
                memory_mib=int(row["memory_mib"]),
            )
        )
    return nodes


def load_tasks(path: Path) -> list[Task]:
    """The pods of a pod list in file order, GPU and CPU-only ones; identical requests share one ``Request``.

    A pod with neither GPUs nor CPU asks for nothing placement can refuse, and is left out (the trace has none).
    """
    requests: dict[tuple[int, str, int, int], Request] = {}
    tasks = []
    with path.open(newline="") as f:
        for row in csv.DictReader(f):
            gpus = int(row["num_gpu"])
            cpu, memory = int(row.get("cpu_milli") or 0), int(row.get("memory_mib") or 0)
            if gpus < 1 and cpu < 1:
                continue
            spec = (row.get("gpu_spec") or "") if gpus else ""
            key = (gpus, spec, cpu, memory)
            request = requests.get(key)
            if request is None:
                models = frozenset(m for m in spec.split("|") if m) or None
                request = Request(gpu_count=gpus, models=models, cpu_milli=cpu, memory_mib=memory)
                requests[key] = request
            tasks.append(Task(request, gpus, cpu, memory))
    return tasks


def demand_mix(tasks: Iterable[Task]) -> dict[frozenset[str], int]:
    """GPUs requested per set of accepted models: the "known workload" that seeds "ours"."""
    mix: dict[frozenset[str], int] = {}
    for task in tasks:
        if task.request.models:
            mix[task.request.models] = mix.get(task.request.models, 0) + task.gpus
    return mix


def make_pool(nodes: list[Node], tasks: list[Task], policy: str, needs: dict[int, float] | None = None) -> Pool:
    """A pool for ``policy``; "ours" gets the file's prior, "ours_online" none."""
    options: dict = {}
    if policy == "ours":
        options["demand"] = demand_mix(tasks)
    if policy == "ours_online":
        policy = "ours"
    if needs is not None:
        options["needs"] = dict(needs)
    return Pool(nodes, policy=policy, **options)


def stream(tasks: list[Task], capacity: int, load: float, seed: int | None = None) -> list[Task]:
    """Tasks (shuffled by ``seed``, else in file order), cycled, until the requested GPUs reach load x capacity."""
    order = list(tasks)
    if not any(task.gpus for task in order):
        return order  # nothing would ever reach the load: the file once
    if seed is not None:
        random.Random(seed).shuffle(order)
    out, requested = [], 0
    for task in cycle(order):
        if requested >= load * capacity:
            break
        out.append(task)
        requested += task.gpus
    return out


def fill(pool: Pool, tasks: list[Task], capacity: int, on_place=None) -> dict:
    """Place ``tasks`` in order, no departures: GPUs accepted and allocated at the first refusal."""
    place = pool.place
    requested = allocated = accepted = 0
    first_refusal = None
    for task in tasks:
        requested += task.gpus
        server_id = place(task.request)
        if server_id is None:
            if first_refusal is None:
                first_refusal = allocated / capacity
            continue
        accepted += 1
        allocated += task.gpus
        if on_place is not None:
            on_place(server_id, task.gpus)
    return {
        "acceptance": accepted / len(tasks) if tasks else 1.0,
        "gpu_acceptance": allocated / requested if requested else 1.0,
        # No refusal at all: the stream is placed whole, which is at least any policy's first refusal.
        "first_refusal": allocated / capacity if first_refusal is None else first_refusal,
        "allocated": allocated,
    }


def max_flow(capacity: dict[int, dict[int, int]], source: int, sink: int) -> int:
    """Edmonds-Karp on a residual-capacity map (changed in place); the graphs here have tens of nodes."""
    for u in list(capacity):
        for v in list(capacity[u]):
            capacity.setdefault(v, {}).setdefault(u, 0)
    total = 0
    while True:
        parent = {source: source}
        queue = deque([source])
        while queue and sink not in parent:
            u = queue.popleft()
            for v, c in capacity[u].items():
                if c > 0 and v not in parent:
                    parent[v] = u
                    queue.append(v)
        if sink not in parent:
            return total
        path, v = [], sink
        while v != source:
            path.append((parent[v], v))
            v = parent[v]
        pushed = min(capacity[u][v] for u, v in path)
        for u, v in path:
            capacity[u][v] -= pushed
            capacity[v][u] += pushed
        total += pushed


def upper_bound(nodes: list[Node], tasks: Iterable[Task]) -> int:
    """Most GPUs any placement could accept of ``tasks``: max-flow from demand per request type (accepted
    models, GPUs, CPU, memory) to supply per node shape (model, GPUs, CPU, memory); a type reaches a shape
    whose model it accepts and whose empty node could hold it. The CPU and memory the tasks sum to are
    not counted against the nodes', so it is an upper bound still (looser where they bind)."""
    demand: dict[tuple[frozenset[str] | None, int, int, int], int] = {}
    for task in tasks:
        if task.gpus:
            key = (task.request.models, task.gpus, task.cpu_milli, task.memory_mib)
            demand[key] = demand.get(key, 0) + task.gpus
    supply: dict[tuple[str, int, int, int], int] = {}
    for node in nodes:
        key = (node.model, node.gpus, node.cpu_milli, node.memory_mib)
        supply[key] = supply.get(key, 0) + node.gpus
    source, sink = 0, 1
    types = {key: 2 + k for k, key in enumerate(demand)}
    groups = {key: 2 + len(types) + k for k, key in enumerate(supply)}
    infinite = sum(demand.values()) + 1
    graph: dict[int, dict[int, int]] = {source: {types[t]: d for t, d in demand.items()}}
    for (models, n, cpu, memory), t in types.items():
        graph[t] = {
            g: infinite
            for (m, size, node_cpu, node_memory), g in groups.items()
            if size >= n
            and (models is None or m in models)
            and (not node_cpu or node_cpu >= cpu)
            and (not node_memory or node_memory >= memory)
        }
    for key, g in groups.items():
        graph[g] = {sink: supply[key]}
    return max_flow(graph, source, sink)


def first_refusal_bound(nodes: list[Node], tasks: list[Task]) -> int:
    """Most GPUs any placement could hold at its first refusal: the GPUs of the longest prefix of ``tasks``
    whose demand ``upper_bound`` can route whole (a prefix of a routable prefix is routable, so a binary
    search finds it); the task after it is refused by every policy, if not an earlier one."""
    gpus = [0]
    for task in tasks:
        gpus.append(gpus[-1] + task.gpus)
    lo, hi = 0, len(tasks)  # the prefix of lo tasks is routable
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if upper_bound(nodes, tasks[:mid]) == gpus[mid]:
            lo = mid
        else:
            hi = mid - 1
    return gpus[lo]


def collateral_lower_bound(needs: Iterable[int], tasks: Iterable[Task]) -> int:
    """Fewest financed nodes any policy leaves below their need with these tasks (see the module docstring)."""
    ordered = sorted(needs)
    largest = ordered[-1] if ordered else 0
    gpu_tasks = [task.gpus for task in tasks if task.gpus]
    supply = sum(min(n, largest) for n in gpu_tasks)
    covered = 0
    for need in ordered:
        if covered >= len(gpu_tasks) or need > supply:
            break
        supply -= need
        covered += 1
    return len(ordered) - covered


def summarise(values: list[float]) -> dict:
    return {"mean": round(statistics.fmean(values), 4), "worst": round(min(values), 4)}


def saturation(nodes: list[Node], tasks: list[Task], capacity: int, seeds: int) -> dict:
    """Per policy, per seed: GPUs accepted and allocated at the first refusal; the upper bound per seed."""
    policies = COMPARED
    runs: dict[str, dict[str, list[float]]] = {p: {"gpu_acceptance": [], "first_refusal": []} for p in policies}
    bounds, refusal_bounds = [], []
    for seed in range(seeds):
        order = stream(tasks, capacity, SATURATION_LOAD, seed)
        requested = sum(task.gpus for task in order)
        bounds.append(upper_bound(nodes, order) / requested)
        refusal_bounds.append(first_refusal_bound(nodes, order) / capacity)
        for policy in policies:
            r = fill(make_pool(nodes, tasks, policy), order, capacity)
            runs[policy]["gpu_acceptance"].append(r["gpu_acceptance"])
            runs[policy]["first_refusal"].append(r["first_refusal"])
    return {
        "policies": {
            p: {key: {**summarise(values), "seeds": [round(v, 4) for v in values]} for key, values in r.items()}
            for p, r in runs.items()
        },
        "upper_bound_gpu_acceptance": summarise(bounds),
        "upper_bound_first_refusal": summarise(refusal_bounds),
    }


def churn(nodes: list[Node], tasks: list[Task], capacity: int, policy: str, steps: int) -> dict:
    """Fill to 95% of the GPUs, then ``steps`` of release-a-random-running-task, place-the-next-one."""
    pool = make_pool(nodes, tasks, policy)
    place, release = pool.place, pool.release
    source = cycle(tasks)
    running: list[tuple[int, Task]] = []
    allocated = requested = attempts = 0
    limit = CHURN_FILL_LIMIT * capacity
    while allocated < CHURN_OCCUPANCY * capacity and requested < limit and attempts < limit:
        task = next(source)
        requested += task.gpus
        attempts += 1
        server_id = place(task.request)
        if server_id is not None:
            running.append((server_id, task))
            allocated += task.gpus
    filled = allocated / capacity
    rng = random.Random(CHURN_SEED)
    upcoming = list(islice(source, steps))
    accepted = 0
    draw, keep = rng.random, running.append
    t0 = time.process_time()
    for task in upcoming:
        if running:
            k = int(draw() * len(running))
            server_id, gone = running[k]
            running[k] = running[-1]
            running.pop()
            release(server_id, gone.gpus, gone.cpu_milli, gone.memory_mib)
            allocated -= gone.gpus
        server_id = place(task.request)
        if server_id is not None:
            accepted += 1
            keep((server_id, task))
            allocated += task.gpus
    seconds = time.process_time() - t0
    return {
        "filled": round(filled, 4),
        "acceptance": round(accepted / steps, 4),
        "occupancy_at_end": round(allocated / capacity, 4),
        "placements_per_cpu_s": round(steps / seconds) if seconds > 0 else None,
        "cpu_s": round(seconds, 3),
    }


def collateral_point(nodes: list[Node], tasks: list[Task], capacity: int, load: float, share: float, seed: int) -> dict:
    """One sweep point: below DSCR 1.0 and GPUs accepted per policy, and the lower bound."""
    rng = random.Random(seed)
    financed = rng.sample(nodes, round(share * len(nodes)))
    need = {node.server_id: math.ceil(node.gpus / 2) for node in financed}
    order = stream(tasks, capacity, load)
    point: dict = {"load": load, "share": share, "seed": seed, "financed": len(need)}
    point["lower_bound"] = collateral_lower_bound(need.values(), order)
    runs = [(p, p, None) for p in NON_COLLATERAL]
    runs.append(("ours_needs", "ours", need))
    for name, policy, needs in runs:
        rented = dict.fromkeys(need, 0)
        pool = make_pool(nodes, tasks, policy, needs=needs)

        # The pool tracks each loan's remaining need itself as GPUs are allocated on it.
        def on_place(server_id: int, n: int, rented=rented) -> None:
            if server_id in rented:
                rented[server_id] += n

        r = fill(pool, order, capacity, on_place)
        point[name] = {
            "below": sum(1 for server_id, n in need.items() if rented[server_id] < n),
            "gpus_accepted": r["allocated"],
        }
    return point


def collateral_sweep(nodes, tasks, capacity, loads, shares, seeds) -> list[dict]:
    return [
        collateral_point(nodes, tasks, capacity, load, share, seed)
        for load in loads
        for share in shares
        for seed in seeds
    ]


def within_bound(below: int, bound: int) -> bool:
    """ "Within 5% of the lower bound": 5% of the LB itself, or 3 nodes when that is more."""
    return below <= bound + max(0.05 * bound, 3)


def production(quick: bool) -> dict:
    """The production path's latency per choice, or why it was skipped."""
    if not os.environ.get("DATABASE_URL"):
        return {"skipped": "DATABASE_URL is not set (the production path needs PostgreSQL)"}
    try:
        from bench.placement_production import run as production_run
    except ImportError as e:
        return {"skipped": f"bench.placement_production is not importable: {e}"}
    try:
        return production_run(smoke=True) if quick else production_run()
    except Exception as e:
        return {"skipped": f"bench.placement_production failed: {e!r}"}


def cold_start_gaps(policies: dict) -> dict:
    """The seeds on which ours without a prior is below first-fit, per measure."""
    gaps: dict = {}
    for key in ("first_refusal", "gpu_acceptance"):
        pairs = zip(policies["ours_online"][key]["seeds"], policies["first_fit"][key]["seeds"], strict=True)
        gaps[key] = [seed for seed, (ours, ff) in enumerate(pairs) if ours < ff]
    return gaps


def pct(x: float | None) -> str:
    return "—" if x is None else f"{100 * x:.1f}%"


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", action="extend", nargs="+", default=[], type=Path, help="more openb_* pod lists")
    parser.add_argument("--quick", action="store_true", help="a CI-sized run: seconds, not minutes")
    args = parser.parse_args(argv)
    quick = args.quick
    seeds = 2 if quick else SEEDS
    steps = 2_000 if quick else CHURN_STEPS
    files = [*(TASK_FILES[:2] if quick else TASK_FILES), *args.tasks]
    loads = (0.1, 0.6, 1.2) if quick else COLLATERAL_LOADS
    shares = (0.4, 1.0) if quick else FINANCED_SHARES
    loan_seeds = LOAN_BOOK_SEEDS[:1] if quick else LOAN_BOOK_SEEDS

    nodes = load_nodes()
    capacity = sum(node.gpus for node in nodes)
    print(f"Alibaba GPU trace (cluster-trace-gpu-v2023): {len(nodes):,} nodes, {capacity:,} GPUs")
    workloads = {path.name: load_tasks(path) for path in files}

    saturated = {name: saturation(nodes, tasks, capacity, seeds) for name, tasks in workloads.items()}
    print(
        f"\nSaturation: {seeds} shuffled orders, cycled, no departures, until {SATURATION_LOAD}x capacity is requested"
    )
    print(f"  {'tasks':<30} {'policy':<12} {'GPUs mean':>10} {'worst':>7} {'1st refusal':>12} {'worst':>7}")
    for name, s in saturated.items():
        for policy, r in s["policies"].items():
            g, f = r["gpu_acceptance"], r["first_refusal"]
            print(
                f"  {name:<30} {policy:<12} {pct(g['mean']):>10} {pct(g['worst']):>7}"
                f" {pct(f['mean']):>12} {pct(f['worst']):>7}"
            )
        ub, ur = s["upper_bound_gpu_acceptance"], s["upper_bound_first_refusal"]
        print(
            f"  {name:<30} {'upper bound':<12} {pct(ub['mean']):>10} {pct(ub['worst']):>7}"
            f" {pct(ur['mean']):>12} {pct(ur['worst']):>7}"
        )
    print("  GPUs: share of the requested GPUs accepted; 1st refusal: share of all GPUs allocated then")

    churned = {
        name: {policy: churn(nodes, tasks, capacity, policy, steps) for policy in COMPARED}
        for name, tasks in workloads.items()
    }
    print(f"\nChurn: fill to {CHURN_OCCUPANCY:.0%} of the GPUs, then {steps:,} steps of release-one, place-one")
    print(f"  {'tasks':<30} {'policy':<12} {'filled':>7} {'accepted':>9} {'at end':>7} {'placements/CPU-s':>17}")
    for name, results in churned.items():
        for policy, c in results.items():
            speed = c["placements_per_cpu_s"]
            print(
                f"  {name:<30} {policy:<12} {pct(c['filled']):>7} {pct(c['acceptance']):>9}"
                f" {pct(c['occupancy_at_end']):>7} {speed or 0:>17,}"
            )

    sweep = collateral_sweep(nodes, workloads[DEFAULT_TASKS.name], capacity, loads, shares, loan_seeds)
    print(
        f"\nCollateral sweep: {DEFAULT_TASKS.name} in file order; need = ceil(gpus/2) per financed node;"
        " financed nodes below DSCR 1.0 (GPUs accepted)"
    )
    named = [*NON_COLLATERAL, "ours_needs"]
    print(f"  {'load':>5} {'share':>6} {'seed':>5} {'LB':>5} " + " ".join(f"{p:>18}" for p in named))
    for point in sweep:
        cells = " ".join(f"{point[p]['below']:>6,} ({point[p]['gpus_accepted']:>6,})" + " " * 3 for p in named)
        print(f"  {point['load']:>5} {point['share']:>6} {point['seed']:>5} {point['lower_bound']:>5,} {cells}")

    cold_start = {name: cold_start_gaps(s["policies"]) for name, s in saturated.items()}
    print("\nCold start: seeds where ours_online (no prior) is below first-fit, at the first refusal / in GPUs")
    for name, gaps in cold_start.items():
        print(f"  {name:<30} {len(gaps['first_refusal'])} / {len(gaps['gpu_acceptance'])} of {seeds}")
    print("\nSpeed: placements per CPU-second in the churn loop at ~95% occupancy, ours / balanced / first-fit")
    for name, results in churned.items():
        cells = " / ".join(f"{results[p]['placements_per_cpu_s'] or 0:,}" for p in ("ours", "balanced", "first_fit"))
        print(f"  {name:<30} {cells}")
    misses = [
        (p["load"], p["share"], p["seed"])
        for p in sweep
        if not within_bound(p["ours_needs"]["below"], p["lower_bound"])
    ]
    print(f"\nCollateral: points where ours is not within max(5% of LB, 3) of the LB: {misses or 'none'}")

    prod = production(quick)
    if "skipped" in prod:
        print(f"\nProduction path: skipped ({prod['skipped']})")
    else:
        print(
            f"\nProduction path: {prod.get('servers', 0):,} servers, {prod.get('choices', 0):,} choices:"
            f" p50 {prod.get('p50_ms')} ms, p99 {prod.get('p99_ms')} ms"
        )

    def ours_vs(key: str, others: tuple[str, ...]) -> bool:
        rows = [s["policies"] for s in saturated.values()]
        return all(r["ours"][key]["mean"] >= max(r[p][key]["mean"] for p in others) for r in rows)

    def cold(key: str) -> bool:
        return all(not gaps[key] for gaps in cold_start.values())

    goals = {
        "saturation_ok": ours_vs("first_refusal", ("first_fit", "best_fit"))
        and ours_vs("gpu_acceptance", ("first_fit", "best_fit")),
        "cold_start_ok": cold("first_refusal") and cold("gpu_acceptance"),
        "churn_ok": all(r["ours"]["acceptance"] >= r["balanced"]["acceptance"] for r in churned.values()),
        "churn_gpuspec33_ok": GPUSPEC33 in churned and churned[GPUSPEC33]["ours"]["acceptance"] >= CHURN_GOAL,
        "collateral_ok": not misses,
        "collateral_acceptance_ok": all(
            p["ours_needs"]["gpus_accepted"] >= max(p[q]["gpus_accepted"] for q in NON_COLLATERAL) for p in sweep
        ),
        "speed_ok": all((r["ours"]["placements_per_cpu_s"] or 0) >= SPEED_GOAL for r in churned.values()),
        "production_p99_ok": "skipped" not in prod and float(prod.get("p99_ms", math.inf)) <= PRODUCTION_P99_MS,
    }
    print(f"\nGoals: {', '.join(f'{k}={v}' for k, v in goals.items())}")
    result = {
        "benchmark": "placement",
        "quick": quick,
        "nodes": len(nodes),
        "gpus": capacity,
        "saturation": saturated,
        "churn": churned,
        "collateral": sweep,
        "cold_start_seeds_below_first_fit": cold_start,
        "production": prod,
        "goals": goals,
    }
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
