"""Property tests of the sUSDai vault on the in-process EVM: any interleaving of deposits,
redemption requests, cancels, queue service, reports (with and without surprises), write-downs
and write-ups, at any times.

After every operation, evaluated at the operation's own block time:

- no lender's value moves because another acted (a deposit, a request, a cancel, the queue
  paying someone): the other holders' value changes by at most one micro-dollar (10**12 wei);
- a report that brings what was accruing, and any write-up, leaves the price where it was (the
  surprise part is locked and streams in); a loss lowers every holder's value by the same
  fraction (queued shares too: nobody is paid first), after locked profit has absorbed what it can;
- every wei is accounted for: USDai supply = holders' balances + the vault's idle; the shares
  escrowed by the queue = the queued shares.

At the end every holder exits and the queue empties: nothing stalls.
"""

import os

from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from tests.test_contracts import AT_BLOCK, DEAD, DEAD_SHARES, UNLOCK, WAD, chain, send, travel  # noqa: F401 (fixture)

PHASES = [Phase.explicit, Phase.reuse, Phase.generate] + ([Phase.shrink] if os.environ.get("HYPOTHESIS_SHRINK") else [])
MICRO = 10**12  # one micro-dollar in wei
START = 2_000_000_000

who = st.sampled_from(["alice", "bob", "carol"])
operation = st.one_of(
    st.tuples(st.just("wait"), st.integers(1, 3 * 24 * 3600)),
    st.tuples(st.just("deposit"), who, st.integers(10**7, 50_000 * WAD)),
    st.tuples(st.just("request"), who, st.integers(1, 100)),
    st.tuples(st.just("cancel"), who),
    st.tuples(st.just("service"), st.integers(1, 5)),
    st.tuples(st.just("deploy"), st.integers(1, 100)),
    st.tuples(st.just("recall"), st.integers(1, 100)),
    st.tuples(
        st.just("report"),
        st.integers(0, 100),
        st.integers(-500 * WAD, 500 * WAD),
        st.integers(0, 10**15),
        st.integers(0, 600),
    ),
    st.tuples(st.just("write_down"), st.integers(1, 100)),
    st.tuples(st.just("write_up"), st.integers(1, 1_000 * WAD)),
)


class Vault:
    """Reads the vault and evaluates its NAV at any time from its public state (an oracle
    written from the contract's documented formulas)."""

    def __init__(self, c):
        self.c, self.v = c, c.vault.functions
        self.requests: dict[str, list[int]] = {"alice": [], "bob": [], "carol": []}

    def get(self, name, *args):
        return getattr(self.v, name)(*args).call()

    def nav(self, t: int) -> int:
        rate = self.get("accrual_rate")
        accrued = self.get("accrued_interest") + (rate * (t - self.get("accrued_at")) if rate else 0)
        locked, locked_at, end = self.get("locked"), self.get("locked_at"), self.get("unlock_end")
        streaming = 0 if locked == 0 or t >= end else -(-locked * (end - t) // (end - locked_at))
        return max(self.get("idle") + self.get("deployed") + accrued - streaming, 0)

    def shares_of(self, name: str) -> int:
        address = getattr(self.c, name)
        queued = sum(self.get("redemptions", i)[1] for i in self.requests[name])
        return self.get("balanceOf", address) + queued

    def values(self, t: int) -> dict[str, int]:
        nav, supply = self.nav(t), self.get("totalSupply")
        return {name: self.shares_of(name) * (nav + 1) // (supply + 1) for name in self.requests}

    def conserved(self) -> None:
        c = self.c
        holders = [c.alice, c.bob, c.carol, c.attacker, c.admin, c.operator]
        usdai = c.usdai.functions
        assert usdai.totalSupply().call() == sum(usdai.balanceOf(h).call() for h in holders) + self.get("idle")
        assert usdai.balanceOf(c.vault.address).call() == self.get("idle")
        assert self.get("balanceOf", c.vault.address) == self.get("queued_shares")
        supply = self.get("totalSupply")
        if supply:
            wallets = sum(self.get("balanceOf", getattr(c, n)) for n in self.requests) + self.get("balanceOf", DEAD)
            assert supply == wallets + self.get("queued_shares")


def apply(vault: Vault, op: tuple, t: int) -> None:
    """Send ``op`` (mined at ``t``) when it is possible; check what it did to the others."""
    c, kind = vault.c, op[0]
    before = vault.values(t)
    nav_before = vault.nav(t)
    # Shares are whole units of 10**-18 sUSDai: rounding one costs at most one unit's price, far
    # below a micro-dollar unless the supply is down to the dead shares (everyone else gone).
    tolerance = MICRO + (nav_before + 1) // (vault.get("totalSupply") + 1) + 1
    actor = op[1] if kind in ("deposit", "request", "cancel") else None
    if kind == "deposit":
        if vault.get("totalSupply") == 0 and op[2] <= DEAD_SHARES:
            return
        travel(c, t)
        if c.vault.functions.previewDeposit(op[2]).call(block_identifier="pending") == 0:
            return
        send(c.vault.functions.deposit(op[2], getattr(c, actor)), getattr(c, actor))
        after = vault.values(t)
        assert op[2] - tolerance <= after[actor] - before[actor] <= op[2]  # rounded in the vault's favour
    elif kind == "request":
        balance = vault.get("balanceOf", getattr(c, actor))
        shares = balance * op[2] // 100
        if shares == 0 or (shares < vault.get("min_redemption") and shares != balance):
            return
        travel(c, t)
        send(c.vault.functions.request_redeem(shares), getattr(c, actor))
        vault.requests[actor].append(vault.get("queue_tail") - 1)
    elif kind == "cancel":
        live = [i for i in vault.requests[actor] if vault.get("redemptions", i)[1] > 0]
        if not live:
            return
        travel(c, t)
        send(c.vault.functions.cancel_redeem(live[-1]), getattr(c, actor))
        vault.requests[actor].remove(live[-1])
    elif kind == "service":
        travel(c, t)
        send(c.vault.functions.service(op[1]), c.operator)
    elif kind == "deploy":
        amount = vault.get("idle") * op[1] // 100
        if not amount:
            return
        travel(c, t)
        send(c.vault.functions.deploy(amount), c.operator)
    elif kind == "recall":
        amount = vault.get("deployed") * op[1] // 100
        if not amount:
            return
        travel(c, t)
        send(c.vault.functions.recall(amount), c.operator)
    elif kind == "report":
        rate = vault.get("accrual_rate")
        expected = vault.get("accrued_interest") + (rate * (t - vault.get("accrued_at")) if rate else 0)
        profit = expected * op[1] // 100  # interest received: part of what was accruing
        # the books closed ``lag`` seconds before the report is mined: their accrued is as of then
        lag = min(op[4], t - START)
        accrued = max(expected - profit + op[2] - op[3] * lag, 0)
        travel(c, t)
        send(c.vault.functions.report(profit, accrued, op[3], t - lag), c.operator)
    elif kind == "write_down":
        amount = vault.get("deployed") * op[1] // 100
        if not amount:
            return
        travel(c, t)
        send(c.vault.functions.write_down(amount), c.operator)
    elif kind == "write_up":
        travel(c, t)
        send(c.vault.functions.write_up(op[1]), c.operator)

    after = vault.values(t)
    nav_after = vault.nav(t)
    loss = kind == "write_down" or (kind == "report" and nav_after < nav_before)
    if loss:
        # every holder loses the same fraction: value_after ≈ value_before × nav_after / nav_before
        for name, value in before.items():
            fair = value * nav_after // nav_before if nav_before else 0
            assert abs(after[name] - fair) <= tolerance, (name, value, after[name], fair)
    else:
        # nobody else's value moved: not by another's action, not by a report or a recovery
        for name, value in before.items():
            if name != actor and kind != "service":
                assert abs(after[name] - value) <= tolerance, (kind, name, value, after[name])
        if kind == "service":  # the holders paid got their value in USDai; the rest kept theirs
            for name, value in before.items():
                if not any(vault.get("redemptions", i)[2] for i in vault.requests[name]):
                    assert abs(after[name] - value) <= tolerance
    vault.conserved()


# Random everywhere but CI, where the same 40 interleavings run every time (a rare failing
# interleaving found locally is an open finding, not a coin CI tosses on every submission).
@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
    phases=PHASES,
    derandomize=bool(os.environ.get("CI")),
)
@given(ops=st.lists(operation, min_size=1, max_size=25), gaps=st.lists(st.integers(1, 6 * 3600), min_size=25))
def test_no_interleaving_moves_value_between_lenders_and_every_wei_is_accounted(chain, ops, gaps):  # noqa: F811
    chain.tester.revert_to_snapshot(chain.snapshot)
    vault = Vault(chain)
    t = max(START, chain.tester.get_block_by_number("latest")["timestamp"] + 1)
    for op, gap in zip(ops, gaps, strict=False):
        t += gap + (op[1] if op[0] == "wait" else 0)
        if op[0] != "wait":
            apply(vault, op, t)

    # everyone leaves: their queued requests stay, the rest of their shares join the queue;
    # loans come home and the queue is serviced until it is empty
    for name in vault.requests:
        balance = vault.get("balanceOf", getattr(chain, name))
        if balance:
            t += 1
            travel(chain, t)
            send(chain.vault.functions.request_redeem(balance), getattr(chain, name))
            vault.requests[name].append(vault.get("queue_tail") - 1)
    if vault.get("deployed"):
        t += 1
        travel(chain, t)
        send(chain.vault.functions.recall(vault.get("deployed")), chain.operator)
    # the interest that was accruing arrives, and nothing accrues any more
    t += 1
    rate = vault.get("accrual_rate")
    expected = vault.get("accrued_interest") + (rate * (t - vault.get("accrued_at")) if rate else 0)
    travel(chain, t)
    send(chain.vault.functions.report(expected, 0, 0, AT_BLOCK), chain.operator)
    t = max(t, vault.get("unlock_end")) + 1
    for _ in range(10):
        if vault.get("queue_head") == vault.get("queue_tail"):
            break
        travel(chain, t)
        send(chain.vault.functions.service(256), chain.operator)
        t += 1
    assert vault.get("queue_head") == vault.get("queue_tail")  # nothing stalls
    assert vault.get("queued_shares") == 0
    # only the dead shares are left (10**6, and one per wei of assets booked before the first deposit)
    assert vault.get("totalSupply") == vault.get("balanceOf", DEAD)
    vault.conserved()
