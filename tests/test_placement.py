"""Placement: hard filters, the soft region, each policy's choice, Pool bookkeeping, and properties.

Pure functions over ``Node`` values: no database, no Django.
"""

from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bench.placement import NODE_LIST, SATURATION_TASKS, load_nodes, load_tasks
from scheduler.placement import POLICIES, Node, Pool, Request, choose


def full(nodes: list[Node]) -> dict[int, int]:
    return {node.server_id: node.gpus for node in nodes}


# Hard filters


@pytest.mark.parametrize("policy", POLICIES)
def test_model_filter_excludes_other_models(policy):
    # given an idle G2 first in order and a busier T4 later
    nodes = [Node(1, "G2", 8), Node(2, "T4", 2)]
    # when the request accepts only T4
    chosen = choose(Request(1, models=frozenset({"T4"})), nodes, full(nodes), policy=policy)
    # then only the T4 server qualifies
    assert chosen == 2


@pytest.mark.parametrize("policy", POLICIES)
def test_vram_filter(policy):
    nodes = [Node(1, "T4", 8, vram_gb=16), Node(2, "A100", 8, vram_gb=80)]
    assert choose(Request(1, min_vram_gb=40), nodes, full(nodes), policy=policy) == 2
    assert choose(Request(1, min_vram_gb=81), nodes, full(nodes), policy=policy) is None


@pytest.mark.parametrize("policy", POLICIES)
def test_price_cap_filter_is_inclusive(policy):
    nodes = [Node(1, "A100", 8, price=Decimal("2.50")), Node(2, "A100", 8, price=Decimal("1.99"))]
    assert choose(Request(1, price_cap=Decimal("2.00")), nodes, full(nodes), policy=policy) == 2
    assert choose(Request(1, price_cap=Decimal("1.99")), nodes, full(nodes), policy=policy) == 2
    assert choose(Request(1, price_cap=Decimal("1.98")), nodes, full(nodes), policy=policy) is None


@pytest.mark.parametrize("policy", POLICIES)
def test_count_must_fit_on_one_server(policy):
    # given 3 + 3 free GPUs on two servers
    nodes = [Node(1, "G2", 8), Node(2, "G2", 8)]
    free = {1: 3, 2: 3}
    # then 4 GPUs are refused (no splitting across servers) and 3 fit
    assert choose(Request(4), nodes, free, policy=policy) is None
    assert choose(Request(3), nodes, free, policy=policy) in {1, 2}


def test_request_needs_at_least_one_gpu():
    with pytest.raises(ValueError, match="at least 1"):
        Request(0)


def test_unknown_policy_and_duplicate_servers_are_rejected():
    with pytest.raises(ValueError, match="unknown placement policy"):
        Pool([Node(1, "G2", 8)], policy="worst_fit")
    with pytest.raises(ValueError, match="given twice"):
        Pool([Node(1, "G2", 8), Node(1, "T4", 2)])
    with pytest.raises(ValueError, match="9 free GPUs of 8"):
        Pool([Node(1, "G2", 8)], free={1: 9})


# Region: a soft preference


@pytest.mark.parametrize("policy", POLICIES)
def test_region_preferred_even_when_elsewhere_fits_better(policy):
    # given a perfect fit (1 free) in eu and an idle server in us
    nodes = [Node(1, "G2", 8, region="eu"), Node(2, "G2", 8, region="us")]
    free = {1: 1, 2: 8}
    # when asking for us
    # then us wins, although best-fit alone would take the eu server
    assert choose(Request(1, region="us"), nodes, free, policy=policy) == 2


@pytest.mark.parametrize("policy", POLICIES)
def test_region_falls_back_to_others_when_it_is_full(policy):
    nodes = [Node(1, "G2", 8, region="eu"), Node(2, "G2", 8, region="us")]
    assert choose(Request(2, region="us"), nodes, {1: 8, 2: 1}, policy=policy) == 1
    assert choose(Request(2, region="ap"), nodes, {1: 0, 2: 4}, policy=policy) == 2


# Each policy's choice


def test_best_fit_picks_the_least_leftover():
    # given 8, 3 and 5 free GPUs
    nodes = [Node(1, "G2", 8), Node(2, "G2", 8), Node(3, "T4", 8)]
    free = {1: 8, 2: 3, 3: 5}
    # then 3 GPUs go where none is left over, 4 where 1 is
    assert choose(Request(3), nodes, free, policy="best_fit") == 2
    assert choose(Request(4), nodes, free, policy="best_fit") == 3
    assert choose(Request(6), nodes, free, policy="best_fit") == 1


def test_best_fit_breaks_ties_by_order():
    nodes = [Node(7, "T4", 4), Node(3, "G2", 8), Node(5, "T4", 4)]
    assert choose(Request(2), nodes, {7: 3, 3: 3, 5: 3}, policy="best_fit") == 7


def test_first_fit_picks_the_first_in_the_given_order():
    # given servers listed 30, 10, 20 (not sorted by id), the first one too full
    nodes = [Node(30, "G2", 8), Node(10, "T4", 2), Node(20, "G2", 8)]
    free = {30: 1, 10: 2, 20: 8}
    # then first-fit takes the first in list order that fits, whatever its id or leftover
    assert choose(Request(2), nodes, free, policy="first_fit") == 10
    assert choose(Request(1), nodes, free, policy="first_fit") == 30
    assert choose(Request(3), nodes, free, policy="first_fit") == 20


def test_cheapest_picks_lowest_price_then_best_fit():
    nodes = [
        Node(1, "A100", 8, price=Decimal("2.00")),
        Node(2, "A100", 8, price=Decimal("1.50")),
        Node(3, "A100", 8, price=Decimal("1.50")),
    ]
    # the two cheap ones: 8 and 2 free → best-fit among them takes 3; the dear one is never chosen
    assert choose(Request(2), nodes, {1: 2, 2: 8, 3: 2}, policy="cheapest") == 3
    assert choose(Request(4), nodes, {1: 4, 2: 8, 3: 2}, policy="cheapest") == 2


def test_random_fit_only_picks_feasible_servers_and_reaches_all_of_them():
    nodes = [Node(k, "G2", 8) for k in range(6)]
    pool = Pool(nodes, policy="random", seed=7, free={0: 1, 1: 8, 2: 3, 3: 8, 4: 2, 5: 4})
    seen = {pool.peek(Request(3)) for _ in range(200)}  # peek does not allocate: the same pool each time
    assert seen == {1, 2, 3, 5}


def test_random_fit_is_reproducible_with_its_seed():
    nodes = [Node(k, "G2", 8) for k in range(50)]

    def run(seed: int) -> list[int | None]:
        pool = Pool(nodes, policy="random", seed=seed)
        return [pool.place(Request(1)) for _ in range(30)]

    assert run(1) == run(1)
    assert run(1) != run(2)


# "ours": weights, then model-aware packing


def test_weights_steer_ours_to_the_higher_weight_feasible_server():
    # given a best fit with no loan, a financed server needing 2 GPUs rented (the better fit of the two)
    # and one needing 4
    nodes = [Node(1, "G2", 8), Node(2, "G2", 8), Node(3, "G2", 8)]
    free = {1: 1, 2: 3, 3: 8}
    # then the neediest feasible loan wins
    assert choose(Request(1), nodes, free, weights={2: 2, 3: 4}) == 3
    # but not when it cannot hold the request: the other financed server does
    assert choose(Request(4), nodes, {1: 1, 2: 8, 3: 3}, weights={2: 2, 3: 4}) == 2
    # and without weights it is plain best-fit
    assert choose(Request(1), nodes, free) == 1


def test_weights_do_not_override_the_region():
    # given a financed server abroad and an unfinanced one in the requested region
    nodes = [Node(1, "G2", 8, region="eu"), Node(2, "G2", 8, region="us")]
    # then the region comes first; the loan's weight only counts among servers of the same region
    assert choose(Request(1, region="us"), nodes, full(nodes), weights={1: 5}) == 2
    assert choose(Request(1, region="eu"), nodes, full(nodes), weights={1: 5}) == 1
    assert choose(Request(1, region="us"), nodes, {1: 8, 2: 0}, weights={1: 5}) == 1


def test_set_weight_moves_the_preference_as_loans_are_served():
    nodes = [Node(1, "G2", 8), Node(2, "G2", 8)]
    pool = Pool(nodes, weights={2: 2})
    assert pool.place(Request(1)) == 2
    pool.set_weight(2, 1)
    assert pool.place(Request(1)) == 2
    # when the loan's need is covered its weight drops to zero: back to best-fit (2 has 6 free, 1 has 8)
    pool.set_weight(2, 0)
    pool.set_weight(1, 0)
    assert pool.place(Request(8)) == 1
    assert pool.place(Request(6)) == 2
    assert (pool.free(1), pool.free(2)) == (0, 0)


def test_weighted_servers_are_chosen_by_their_current_free_count():
    nodes = [Node(1, "G2", 8), Node(2, "G2", 8)]
    pool = Pool(nodes, weights={1: 5})
    assert pool.place(Request(6)) == 1
    # server 1 has 2 left: a 4-GPU request must go elsewhere despite the weight
    assert pool.place(Request(4)) == 2
    assert pool.place(Request(2)) == 1
    assert (pool.free(1), pool.free(2)) == (0, 4)
    # and after a release the weighted server is back in the running, ahead of the better fit
    pool.release(1, 6)
    assert pool.place(Request(4)) == 1
    assert (pool.free(1), pool.free(2)) == (2, 4)


def test_set_weight_needs_a_weighted_pool():
    pool = Pool([Node(1, "G2", 8)])
    with pytest.raises(ValueError, match="without weights"):
        pool.set_weight(1, 3)


def test_ours_keeps_unconstrained_requests_off_models_that_constrained_demand_needs():
    # given a T4 that would be the perfect fit and an idle G2
    nodes = [Node(1, "T4", 2), Node(2, "G2", 8)]
    best = Pool(nodes, policy="best_fit", free={1: 1, 2: 8})
    ours = Pool(nodes, policy="ours", free={1: 1, 2: 8})
    assert best.peek(Request(1)) == ours.peek(Request(1)) == 1  # nothing learnt yet: best-fit
    # when "ours" has seen a request that only a T4 can serve (refused here: it takes 2)
    assert ours.place(Request(2, models=frozenset({"T4"}))) is None
    # then unconstrained work goes to the G2, keeping the T4 GPU for T4-only demand
    assert ours.place(Request(1)) == 2
    assert best.place(Request(1)) == 1


def test_ours_sends_a_flexible_request_to_the_model_nobody_else_needs_exclusively():
    # given a known mix of T4-only and A10|T4 requests, and a T4, an A10 and a G2 with one GPU free each
    nodes = [Node(1, "T4", 2), Node(2, "A10", 1), Node(3, "G2", 8)]
    free = {1: 1, 2: 1, 3: 1}
    flexible = Request(1, models=frozenset({"A10", "T4"}))
    pool = Pool(nodes, free=free, demand={frozenset({"T4"}): 100, frozenset({"A10", "T4"}): 10})
    # then the flexible request takes the A10, which only it can use (first-fit and best-fit take the T4)
    assert pool.place(flexible) == 2
    assert choose(flexible, nodes, free, policy="first_fit") == 1
    assert choose(flexible, nodes, free, policy="best_fit") == 1
    # and once the A10 is taken it still gets the T4: a preference, not a filter
    assert pool.place(flexible) == 1


def test_ours_learns_demand_online():
    nodes = [Node(1, "T4", 4), Node(2, "P100", 4)]
    pool = Pool(nodes)
    for _ in range(3):
        assert pool.place(Request(1, models=frozenset({"P100"}))) == 2
    # P100 is now the contested model: a request accepting either takes the T4
    assert pool.place(Request(1, models=frozenset({"P100", "T4"}))) == 1


# Pool bookkeeping


def test_pool_allocates_refuses_and_releases():
    nodes = [Node(1, "G2", 8), Node(2, "T4", 2)]
    pool = Pool(nodes, policy="best_fit")
    # when placing 2 then 8 GPUs
    assert pool.place(Request(2)) == 2
    assert pool.place(Request(8)) == 1
    assert (pool.free(1), pool.free(2)) == (0, 0)
    # then a further request is refused and nothing changes
    assert pool.place(Request(1)) is None
    assert (pool.free(1), pool.free(2)) == (0, 0)
    # and a release makes room again, on that server
    pool.release(1, 3)
    assert pool.free(1) == 3
    assert pool.place(Request(3)) == 1
    assert pool.free(1) == 0


def test_release_beyond_the_server_size_is_rejected_and_changes_nothing():
    pool = Pool([Node(1, "G2", 8)], free={1: 7})
    with pytest.raises(ValueError, match="cannot release 2"):
        pool.release(1, 2)
    with pytest.raises(ValueError, match="cannot release 0"):
        pool.release(1, 0)
    with pytest.raises(KeyError, match="not in this pool"):
        pool.release(99, 1)
    assert pool.free(1) == 7


def test_servers_missing_from_free_have_nothing_free():
    nodes = [Node(1, "G2", 8), Node(2, "G2", 8)]
    assert Pool(nodes, free={2: 4}).free(1) == 0
    assert choose(Request(1), nodes, {2: 4}, policy="first_fit") == 2


def test_choose_treats_an_overbooked_server_as_full():
    nodes = [Node(1, "G2", 8), Node(2, "G2", 8)]
    assert choose(Request(1), nodes, {1: -2, 2: 3}, policy="first_fit") == 2
    assert choose(Request(1), nodes, {1: -2, 2: 0}, policy="first_fit") is None


@pytest.mark.parametrize("policy", POLICIES)
def test_choose_does_not_allocate(policy):
    nodes = [Node(1, "G2", 8), Node(2, "T4", 2)]
    free = {1: 8, 2: 2}
    first = choose(Request(2), nodes, free, policy=policy)
    assert first is not None
    assert free == {1: 8, 2: 2}
    assert choose(Request(2), nodes, free, policy=policy) == first


# Properties

NODES = [
    Node(k, model, gpus, region=region)
    for k, (model, gpus, region) in enumerate(
        [("G2", 8, "eu"), ("T4", 2, "us"), ("T4", 4, "eu"), ("A10", 1, "us"), ("G2", 8, "us"), ("P100", 2, "eu")]
    )
]
MODELS = sorted({node.model for node in NODES})

requests = st.builds(
    Request,
    gpu_count=st.integers(1, 9),
    models=st.none() | st.frozensets(st.sampled_from(MODELS), min_size=1),
    region=st.none() | st.sampled_from(["eu", "us", "ap"]),
)


@settings(max_examples=150, deadline=None)
@given(
    policy=st.sampled_from(POLICIES),
    weighted=st.booleans(),
    steps=st.lists(st.tuples(st.booleans(), requests, st.integers(0, 10)), max_size=60),
)
def test_pool_never_over_allocates_and_refuses_only_when_nothing_fits(policy, weighted, steps):
    # given a pool and a reference copy of its free counts
    pool = Pool(NODES, policy=policy, weights={0: 3, 4: 1} if weighted else None, seed=1)
    free = full(NODES)
    held: list[tuple[int, int]] = []
    for is_place, request, pick in steps:
        if is_place or not held:
            feasible = [
                node
                for node in NODES
                if free[node.server_id] >= request.gpu_count
                and (request.models is None or node.model in request.models)
            ]
            # when placing
            chosen = pool.place(request)
            # then a refusal means nothing fits anywhere (the region is only a preference) …
            if chosen is None:
                assert feasible == []
                continue
            # … and a placement lands on a feasible server, in the preferred region when one fits there
            assert chosen in {node.server_id for node in feasible}
            if request.region and any(node.region == request.region for node in feasible):
                assert NODES[chosen].region == request.region
            free[chosen] -= request.gpu_count
            held.append((chosen, request.gpu_count))
        else:
            server_id, gpus = held.pop(pick % len(held))
            pool.release(server_id, gpus)
            free[server_id] += gpus
        assert all(0 <= pool.free(node.server_id) == free[node.server_id] <= node.gpus for node in NODES)
    # and releasing everything restores every server
    for server_id, gpus in held:
        pool.release(server_id, gpus)
    assert all(pool.free(node.server_id) == node.gpus for node in NODES)


@settings(max_examples=100, deadline=None)
@given(policy=st.sampled_from(POLICIES), request=requests, data=st.data())
def test_place_then_release_restores_free_counts(policy, request, data):
    free = {node.server_id: data.draw(st.integers(0, node.gpus)) for node in NODES}
    pool = Pool(NODES, policy=policy, free=free)
    before = {node.server_id: pool.free(node.server_id) for node in NODES}
    chosen = pool.place(request)
    if chosen is not None:
        assert pool.free(chosen) == before[chosen] - request.gpu_count
        pool.release(chosen, request.gpu_count)
    assert {node.server_id: pool.free(node.server_id) for node in NODES} == before


# The benchmark's loader


def test_bench_loader_reads_the_alibaba_node_list():
    nodes = load_nodes(NODE_LIST)
    assert len(nodes) == 1213
    assert sum(node.gpus for node in nodes) == 6212
    assert nodes[0] == Node(0, "P100", 2)
    assert {node.model for node in nodes} == {"G2", "T4", "P100", "V100M16", "G3", "V100M32", "A10"}


def test_bench_loader_keeps_gpu_tasks_and_their_model_constraints():
    tasks = load_tasks(SATURATION_TASKS[1])  # gpuspec33
    assert len(tasks) == 7064  # 8,152 pods, those without a GPU skipped
    assert sum(task.request.gpu_count for task in tasks) == 7433
    assert tasks[0].request == Request(1) and (tasks[0].created, tasks[0].deleted) == (0, 12537496)
    constrained = [task.request.models for task in tasks if task.request.models]
    assert frozenset({"V100M16", "V100M32"}) in constrained
    assert len(constrained) == 7064 - 4676
