"""Placement: hard filters, the soft region, each policy's choice, Pool bookkeeping, and properties.

Pure functions over ``Node`` values: no database, no Django.
"""

from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scheduler.placement import GUARD_FREE_SHARE, POLICIES, Node, Pool, Request, choose, take


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


def test_request_needs_at_least_one_gpu_unless_it_is_a_cpu_only_task():
    with pytest.raises(ValueError, match="at least 1"):
        Request(0)
    with pytest.raises(ValueError, match="at least 1"):
        Request(-1, cpu_milli=1000)
    assert Request(0, cpu_milli=1000).gpu_count == 0


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
    nodes = [Node(7, "T4", 4), Node(3, "G2", 4), Node(5, "T4", 4)]
    assert choose(Request(2), nodes, {7: 3, 3: 3, 5: 3}, policy="best_fit") == 7


def test_best_fit_leftover_is_a_share_of_the_server_and_counts_cpu():
    # given one GPU left on a 4-GPU server and on an 8-GPU one: the larger server is the fuller
    nodes = [Node(7, "T4", 4), Node(3, "G2", 8)]
    assert choose(Request(2), nodes, {7: 3, 3: 3}, policy="best_fit") == 3
    # and a server whose CPU the request would fill is fuller than one with the same GPUs left but CPU to spare
    nodes = [Node(1, "G2", 8, cpu_milli=64_000), Node(2, "G2", 8, cpu_milli=64_000)]
    pool = Pool(nodes, policy="best_fit")
    pool.allocate(1, 4, cpu_milli=4_000)
    pool.allocate(2, 4, cpu_milli=40_000)
    assert pool.peek(Request(2, cpu_milli=20_000)) == 2


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


# "ours": model-aware packing, then collateral among interchangeable servers


def test_ours_keeps_unconstrained_requests_off_models_that_constrained_demand_needs():
    # given a T4 that would be the perfect fit and an idle G2
    nodes = [Node(1, "T4", 2), Node(2, "G2", 8)]
    best = Pool(nodes, policy="best_fit", free={1: 1, 2: 8})
    ours = Pool(nodes, policy="ours", free={1: 1, 2: 8})
    assert best.peek(Request(1)) == 1
    # when "ours" has seen many requests that only a T4 can serve (enough to outweigh its cold-start prior)
    assert ours.place(Request(2, models=frozenset({"T4"}))) is None
    for _ in range(100):
        ours.observe(Request(1, models=frozenset({"T4"})))
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


def test_ours_does_not_strand_a_servers_last_gpu_without_cpu_when_a_similar_model_fits():
    # given a P100 with 2 GPUs and 16 cores (the larger free share) and a G2 with 7 of 8 GPUs and 96 cores free
    nodes = [
        Node(1, "P100", 2, cpu_milli=16_000, memory_mib=64_000),
        Node(2, "G2", 8, cpu_milli=96_000, memory_mib=393_216),
    ]

    def pool(policy: str) -> Pool:
        p = Pool(nodes, policy=policy)
        p.allocate(2, 1)
        return p

    heavy, light = Request(1, cpu_milli=12_000), Request(1, cpu_milli=2_000)
    # then 12 cores on the P100 would leave its other GPU 4 cores, less than requests ask per GPU: ours takes
    # the G2, where balanced (the largest free share) strands the P100's GPU
    assert (pool("ours").place(heavy), pool("balanced").place(heavy)) == (2, 1)
    # and a light request leaves the P100 enough, so it goes there as balanced would
    assert pool("ours").place(light) == 1


def test_ours_takes_another_server_of_the_group_rather_than_strand_the_tightest_ones_last_gpu():
    # given two G2s with 2 GPUs free each, one with 10 cores left (the tightest fit), one with 40
    nodes = [Node(k, "G2", 8, cpu_milli=96_000, memory_mib=393_216) for k in (1, 2)]

    def pool(policy: str) -> Pool:
        p = Pool(nodes, policy=policy)
        p.allocate(1, 6, 86_000)
        p.allocate(2, 6, 56_000)
        return p

    # then an 8-core GPU goes where the other free GPU keeps 8 cores; balanced leaves the first one 2
    request = Request(1, cpu_milli=8_000)
    assert (pool("ours").place(request), pool("balanced").place(request)) == (2, 1)


def test_ours_keeps_the_only_servers_big_enough_for_a_request_free_for_it():
    # given an idle G3 (128 cores, 768 GiB) and a half-used G2 (96 cores, 384 GiB)
    nodes = [
        Node(1, "G3", 8, cpu_milli=128_000, memory_mib=786_432),
        Node(2, "G2", 8, cpu_milli=96_000, memory_mib=393_216),
    ]

    def pool() -> Pool:
        p = Pool(nodes)
        p.allocate(2, 4, 16_000)
        return p

    small, big = Request(1, cpu_milli=4_000), Request(8, cpu_milli=120_000, memory_mib=737_280)
    # then with nothing learnt a small request takes the G3 (the larger free share) …
    fresh = pool()
    assert fresh.peek(small) == 1
    # … but once whole-server requests that only a G3 can take have been seen, it goes to the G2
    learnt = pool()
    for _ in range(50):
        learnt.observe(big)
    assert (learnt.peek(small), learnt.peek(big)) == (2, 1)
    # while 8-GPU requests that either model can take do not make the G3 special
    either = pool()
    for _ in range(50):
        either.observe(Request(8, cpu_milli=8_000))
    assert either.peek(small) == 1


def test_ours_learns_demand_online():
    nodes = [Node(1, "T4", 4), Node(2, "P100", 4)]
    pool = Pool(nodes)
    for _ in range(3):
        assert pool.place(Request(1, models=frozenset({"P100"}))) == 2
    # P100 is now the contested model: a request accepting either takes the T4
    assert pool.place(Request(1, models=frozenset({"P100", "T4"}))) == 1


def test_a_pool_built_from_a_snapshot_goes_on_from_what_the_last_one_learnt():
    # given a pool that learnt that T4-only demand is heavy
    nodes = [Node(1, "T4", 2), Node(2, "G2", 8)]
    old = Pool(nodes, free={1: 2, 2: 4})
    for _ in range(100):
        old.observe(Request(1, models=frozenset({"T4"})))
    assert old.peek(Request(1)) == 2
    # when a new pool (a rebuild, another process) starts from its snapshot
    new = Pool(nodes, free={1: 2, 2: 4}, learnt=old.demand_snapshot())
    # then it chooses as the old one did, where a pool with only the prior takes the T4 (its largest free share) …
    assert new.peek(Request(1)) == 2
    assert Pool(nodes, free={1: 2, 2: 4}).peek(Request(1)) == 1
    # … and the prior is not added again: rebuilding from snapshots does not grow it
    assert new.demand_snapshot() == pytest.approx(old.demand_snapshot())


def test_ours_prefers_among_interchangeable_servers_the_loan_closest_to_covering():
    # given three idle servers of one group: no loan, a loan needing 3 GPUs rented, one needing 1
    nodes = [Node(1, "G2", 8), Node(2, "G2", 8), Node(3, "G2", 8)]
    needs = {2: 3, 3: 1}
    # then one GPU covers loan 3 exactly, three cover loan 2 exactly
    assert choose(Request(1), nodes, full(nodes), needs=needs) == 3
    assert choose(Request(3), nodes, full(nodes), needs=needs) == 2
    # two GPUs cover loan 3 (with one to spare) rather than leave loan 2 short
    assert choose(Request(2), nodes, full(nodes), needs=needs) == 3
    # and with a need of 5 against 4 requested, the smallest need above the request wins
    assert choose(Request(4), nodes, full(nodes), needs={2: 5, 3: 7}) == 2
    # weights= is the deprecated alias
    assert choose(Request(1), nodes, full(nodes), weights=needs) == 3


def test_a_loan_never_makes_ours_pack_worse():
    # given a best fit with no loan and an idle financed server (another free-GPU bucket)
    nodes = [Node(1, "G2", 8), Node(2, "G2", 8)]
    # then the request still goes to the best fit: the financed server is not interchangeable with it
    assert choose(Request(1), nodes, {1: 1, 2: 8}, needs={2: 4}) == 1


def test_remaining_need_falls_as_the_pool_allocates_and_rises_on_release():
    nodes = [Node(1, "G2", 8), Node(2, "G2", 8)]
    pool = Pool(nodes, needs={2: 2})
    # the financed server takes the first GPUs until its loan's need is met …
    assert pool.place(Request(2)) == 2
    # … then the two servers differ (6 and 8 free): best-fit decides, so 2 still, as the fuller one
    assert pool.place(Request(6)) == 2
    assert pool.place(Request(1)) == 1
    # after releasing everything on 2 its loan needs revenue again and wins among the equals
    pool.release(2, 8)
    pool.release(1, 1)
    assert pool.peek(Request(1)) == 2
    # and set_need(…, 0) (the loan covered elsewhere) gives back plain pool order
    pool.set_need(2, 0)
    assert pool.peek(Request(1)) == 1
    pool.set_weight(2, 3)  # deprecated alias of set_need
    assert pool.peek(Request(1)) == 2


def test_while_models_are_free_a_loan_takes_the_renter_across_groups_smallest_need_first():
    # given two G2 and two T4 servers, all idle; the second of each financed (needing 4 and 2 GPUs rented)
    nodes = [Node(1, "G2", 8), Node(2, "T4", 2), Node(3, "G2", 8), Node(4, "T4", 2)]
    plain, financed = Pool(nodes), Pool(nodes, needs={3: 4, 4: 2})
    # then a request that covers a need whole goes to it (2 GPUs: the T4's loan) …
    assert (plain.peek(Request(2)), financed.peek(Request(2))) == (2, 4)
    # … one that covers none goes to the smallest need it fits (3 GPUs only fit a G2) …
    assert (plain.peek(Request(3)), financed.peek(Request(3))) == (1, 3)
    # … and a single GPU goes towards the smallest need, in whichever group it is
    assert financed.peek(Request(1)) == 4


def test_a_loan_draws_a_renter_to_a_worse_fit_only_while_the_guard_is_open():
    # given eight servers of one group: server 1 financed (needing 4 GPUs rented) with 6 free, server 2 the
    # best fit with 4 free, the rest whole
    nodes = [Node(k, "G2", 8) for k in range(1, 9)]
    pool = Pool(nodes, needs={1: 6})
    pool.allocate(1, 2)
    pool.allocate(2, 4)
    # when the model is mostly free and most servers are whole: the loan wins over the best fit
    assert pool.peek(Request(2)) == 1
    # a loan breaks a whole server while a tenth of those that can stand in for it stay whole …
    assert Pool(nodes, needs={8: 4}, free={k: 8 if k != 2 else 4 for k in range(1, 9)}).peek(Request(2)) == 8
    # … but not the last whole one (kept for a request that needs it whole)
    assert Pool(nodes, needs={8: 4}, free={k: 4 if k != 8 else 8 for k in range(1, 9)}).peek(Request(2)) == 1
    # and once the model is scarce (under half free) the renter gets the best fit
    for k in range(3, 7):
        pool.allocate(k, 8)
    assert pool.peek(Request(2)) == 2


def test_needs_do_not_override_the_region():
    nodes = [Node(1, "G2", 8, region="eu"), Node(2, "G2", 8, region="us")]
    assert choose(Request(1, region="us"), nodes, full(nodes), needs={1: 5}) == 2
    assert choose(Request(1, region="us"), nodes, {1: 8, 2: 0}, needs={1: 5}) == 1


# CPU and memory


def test_take_is_the_request_minimum_or_the_listing_share():
    node = Node(1, "A100", 8, cpu_milli=64_000, memory_mib=512_000, cpu_per_gpu_milli=8_000, memory_per_gpu_mib=1_000)
    assert take(node, Request(2)) == (16_000, 2_000)
    assert take(node, Request(2, cpu_milli=20_000, memory_mib=100)) == (20_000, 2_000)
    assert take(Node(2, "A100", 8), Request(2, cpu_milli=3_000)) == (3_000, 0)


@pytest.mark.parametrize("policy", POLICIES)
def test_cpu_binds_a_placement(policy):
    # given two servers with free GPUs, the first with too little CPU left
    nodes = [Node(1, "T4", 4, cpu_milli=8_000, memory_mib=1_000), Node(2, "T4", 4, cpu_milli=8_000)]
    pool = Pool(nodes, policy=policy)
    pool.allocate(1, 1, cpu_milli=6_000, memory_mib=0)
    pool.allocate(2, 1, cpu_milli=1_000)
    # then a request needing 4 CPUs goes to the second, whatever the policy
    assert pool.peek(Request(1, cpu_milli=4_000)) == 2
    # memory binds likewise (server 2 does not model memory: it never binds there)
    assert pool.peek(Request(1, memory_mib=2_000)) == 2
    # and nothing fits 8 CPUs
    assert pool.place(Request(1, cpu_milli=8_000)) is None
    assert pool.options(Request(1, cpu_milli=8_000)) == []


def test_a_cpu_only_task_fits_any_server_with_the_cpu_free():
    # given one server with every GPU taken but CPU left, and an idle one
    nodes = [Node(1, "T4", 2, cpu_milli=16_000), Node(2, "T4", 2, cpu_milli=16_000)]
    pool = Pool(nodes, policy="best_fit")
    pool.allocate(1, 2, cpu_milli=4_000)
    # when a CPU-only task comes
    chosen = pool.place(Request(0, cpu_milli=10_000))
    # then it takes the server with no GPU free (keeping the idle one whole) and only CPU there
    assert chosen == 1
    assert pool.used(1) == (2, 14_000, 0)
    assert pool.free(2) == 2
    # and a second one no longer fits there
    assert pool.place(Request(0, cpu_milli=10_000)) == 2


def test_allocate_and_release_round_trip_with_cpu():
    nodes = [Node(1, "A100", 8, cpu_milli=64_000, memory_mib=256_000, cpu_per_gpu_milli=4_000)]
    pool = Pool(nodes)
    assert pool.place(Request(2, memory_mib=10_000)) == 1
    assert pool.used(1) == (2, 8_000, 10_000)
    pool.allocate(1, 3, 1_000, 5)
    assert (pool.free(1), pool.used(1)) == (3, (5, 9_000, 10_005))
    pool.release(1, 3, 1_000, 5)
    pool.release(1, 2, 8_000, 10_000)
    assert (pool.free(1), pool.used(1)) == (8, (0, 0, 0))
    with pytest.raises(ValueError, match="cannot release"):
        pool.release(1, 0, 1)
    with pytest.raises(ValueError, match="cannot allocate"):
        pool.allocate(1, 9)


# options, balanced, price inside a group, node changes


@pytest.mark.parametrize("policy", POLICIES)
def test_options_are_distinct_feasible_servers_best_first(policy):
    nodes = [Node(1, "G2", 8), Node(2, "G2", 8), Node(3, "T4", 2), Node(4, "G2", 8)]
    pool = Pool(nodes, policy=policy, free={1: 8, 2: 3, 3: 2, 4: 1})
    request = Request(2)
    options = pool.options(request, k=3)
    # then three different servers, each with room, the first being peek's choice
    assert len(options) == len(set(options)) == 3
    assert all(pool.free(server_id) >= 2 for server_id in options)
    assert options[0] == pool.peek(request)
    # excluding the first gives the others; asking for more than exist gives every feasible one
    assert pool.options(request, k=5, exclude={options[0]}) == [
        s for s in pool.options(request, k=5) if s != options[0]
    ]
    assert sorted(pool.options(request, k=10)) == [1, 2, 3]
    # and nothing was allocated
    assert [pool.free(s) for s in (1, 2, 3, 4)] == [8, 3, 2, 1]


def test_best_fit_options_follow_the_leftover():
    nodes = [Node(1, "G2", 8), Node(2, "G2", 8), Node(3, "T4", 2)]
    pool = Pool(nodes, policy="best_fit", free={1: 8, 2: 3, 3: 2})
    assert pool.options(Request(2), k=3) == [3, 2, 1]


def test_balanced_picks_the_model_with_the_largest_free_share():
    # given T4s with 3 of 4 GPUs free (75 %) and G2s with 10 of 16 free (62 %)
    nodes = [Node(1, "T4", 2), Node(2, "T4", 2), Node(3, "G2", 8), Node(4, "G2", 8)]
    free = {1: 1, 2: 2, 3: 8, 4: 2}
    # then balanced takes a T4, best-fit inside it (server 1), while best-fit overall prefers server 4 for 2 GPUs
    assert choose(Request(1), nodes, free, policy="balanced") == 1
    assert choose(Request(2), nodes, free, policy="balanced") == 2
    assert choose(Request(2), nodes, free, policy="best_fit") == 2
    assert choose(Request(2), nodes, {1: 1, 2: 1, 3: 8, 4: 2}, policy="balanced") == 4


@pytest.mark.parametrize("policy", POLICIES)
def test_price_cap_inside_one_group_of_distinct_prices(policy):
    # given 40 servers of one kind, each at its own price (one group, not 40)
    nodes = [Node(k, "A100", 8, price=Decimal(100 - k) / 10) for k in range(40)]
    pool = Pool(nodes, policy=policy)
    assert len(pool._group_keys) == 1
    # then a cap admits exactly the servers at or under it
    cap = Decimal("6.5")
    under = {node.server_id for node in nodes if node.price <= cap}
    chosen = pool.place(Request(1, price_cap=cap))
    assert chosen in under
    assert set(pool.options(Request(1, price_cap=cap), k=100)) == under
    assert pool.peek(Request(1, price_cap=Decimal("6.0"))) is None
    # and cheapest takes the cheapest of all
    assert choose(Request(1), nodes, full(nodes), policy="cheapest") == 39


def test_upsert_and_remove_node_keep_the_allocation_in_step():
    pool = Pool([Node(1, "G2", 8, price=Decimal(2)), Node(2, "G2", 8, price=Decimal(3))], policy="first_fit")
    assert pool.place(Request(6)) == 1
    # a listing change (price, fewer GPUs in service) keeps what is allocated
    pool.upsert_node(Node(1, "G2", 7, price=Decimal(4)))
    assert (pool.free(1), pool.used(1)) == (1, (6, 0, 0))
    assert pool.peek(Request(1, price_cap=Decimal(3))) == 2
    # a new server is placeable at once
    pool.upsert_node(Node(3, "T4", 2))
    assert pool.peek(Request(2, models=frozenset({"T4"}))) == 3
    # a removed one is not, and its allocation is forgotten
    pool.remove_node(1)
    assert pool.options(Request(1), k=5) == [2, 3]
    with pytest.raises(KeyError, match="not in this pool"):
        pool.free(1)
    pool.upsert_node(Node(1, "G2", 8))
    assert (pool.free(1), pool.used(1)) == (8, (0, 0, 0))


# Cold start


def test_ours_without_a_prior_does_not_strand_a_constrained_model():
    # given a small T4 server first in pool order and a big G2, and a stream where T4-only work comes,
    # then unconstrained work, then T4-only work again: first-fit fills the T4 with the unconstrained work
    nodes = [Node(1, "T4", 4), Node(2, "G2", 8)]
    t4_only = Request(1, models=frozenset({"T4"}))
    stream = [t4_only] * 2 + [Request(1)] * 4 + [t4_only] * 2

    def accepted(policy: str) -> int:
        pool = Pool(nodes, policy=policy)
        return sum(pool.place(request) is not None for request in stream)

    # then first-fit refuses T4-only requests that ours (no demand prior) accepts
    assert accepted("first_fit") == 6
    assert accepted("ours") == 8


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
    pool = Pool(NODES, policy=policy, needs={0: 3, 4: 1} if weighted else None, seed=1)
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


@settings(max_examples=200, deadline=None)
@given(
    request=requests,
    needs=st.dictionaries(st.sampled_from([node.server_id for node in NODES]), st.integers(0, 9)),
    data=st.data(),
)
def test_needs_never_make_ours_refuse_and_only_reorder_interchangeable_servers_once_models_are_scarce(
    request, needs, data
):
    # given "ours" with and without loans on the same state
    free = {node.server_id: data.draw(st.integers(0, node.gpus)) for node in NODES}
    plain, financed = Pool(NODES, free=free), Pool(NODES, needs=needs, free=free)
    a, b = plain.peek(request), financed.peek(request)
    # then a loan never refuses what fits: both accept or both refuse …
    assert (a is None) == (b is None)
    # … and once every model is under half free (the guard closed), a loan only chooses among servers
    # interchangeable with the packing choice (NODES has one server per group: the same server)
    by_model: dict[str, list[int]] = {}
    for node in NODES:
        by_model.setdefault(node.model, [0, 0])
        by_model[node.model][0] += free[node.server_id]
        by_model[node.model][1] += node.gpus
    if a is not None and all(f < GUARD_FREE_SHARE * total for f, total in by_model.values()):
        assert a == b


# The indexed search against a scan: best-fit's choice is the least (leftover, group, free GPUs, CPU level,
# position) over every feasible server, however the buckets and bounds prune the search.

CPU_NODES = [
    Node(k, model, gpus, cpu_milli=cpu, memory_mib=memory)
    for k, (model, gpus, cpu, memory) in enumerate(
        [
            ("P100", 2, 16_000, 64_000),
            ("G2", 8, 96_000, 393_216),
            ("P100", 2, 16_000, 64_000),
            ("T4", 2, 104_000, 524_288),
            ("G2", 8, 96_000, 393_216),
            ("P100", 2, 64_000, 262_144),
            ("V100M16", 4, 32_000, 131_072),
            ("G2", 8, 96_000, 393_216),
            ("V100M16", 4, 32_000, 131_072),
        ]
    )
]
CPU_MODELS = sorted({node.model for node in CPU_NODES})
cpu_requests = st.builds(
    Request,
    gpu_count=st.integers(0, 8),
    models=st.none() | st.frozensets(st.sampled_from(CPU_MODELS), min_size=1),
    cpu_milli=st.integers(1, 40).map(lambda k: k * 1_000),
    memory_mib=st.integers(0, 200_000),
)


def scan_best_fit(pool: Pool, request: Request) -> int | None:
    """Best-fit by scanning every server, from the policy's definition (``Pool._fullest``, ``_pack``)."""
    groups: list[tuple] = []
    best = None
    for position, node in enumerate(CPU_NODES):
        shape = (node.model, node.gpus, node.cpu_milli, node.memory_mib)
        if shape not in groups:
            groups.append(shape)
        used_gpu, used_cpu, used_memory = pool.used(node.server_id)
        free = node.gpus - used_gpu
        cpu, memory = take(node, request)
        n = request.gpu_count
        if request.models is not None and node.model not in request.models:
            continue
        if free < n or node.cpu_milli - used_cpu < cpu or node.memory_mib - used_memory < memory:
            continue
        level = min(16, (node.cpu_milli - used_cpu) * 16 // node.cpu_milli)
        left = (free - n) / node.gpus
        if n:
            left = max(left, level / 16 - cpu / node.cpu_milli)
        key = (left, groups.index(shape), free, level, position)
        if best is None or key < best:
            best = key
    return None if best is None else CPU_NODES[best[-1]].server_id


@settings(max_examples=300, deadline=None)
@given(steps=st.lists(st.tuples(st.booleans(), cpu_requests, st.integers(0, 100)), max_size=100))
def test_best_fit_choice_is_the_least_leftover_of_a_full_scan(steps):
    # given a best-fit pool of servers whose CPU and memory bind, and a stream of placements and releases
    pool = Pool(CPU_NODES, policy="best_fit")
    held: list[tuple[int, Request]] = []
    for is_place, request, pick in steps:
        if is_place or not held:
            # when placing, then the indexed choice is the scan's
            expected = scan_best_fit(pool, request)
            chosen = pool.place(request)
            assert chosen == expected
            if chosen is not None:
                held.append((chosen, request))
        else:
            server_id, request = held.pop(pick % len(held))
            cpu, memory = take(CPU_NODES[server_id], request)
            pool.release(server_id, request.gpu_count, cpu, memory)
