"""The embedded chain for tests: deployed once per process, reset to the
fresh deployment before each test that asks for it (the database is fresh
too, so the two agree)."""

import pytest

from financing.chain import node
from financing.services import outbox


@pytest.fixture
def chain(db, settings):
    """This process's embedded chain, back at its fresh deployment."""
    settings.CHAIN_RPC_URL = ""
    c = node.get_chain()
    if not c.embedded:
        node.chain_reset()
        c = node.get_chain()
    c.revert(c.deploy_snapshot)
    c.deploy_snapshot = c.snapshot()
    return node.get_chain()


def drain(max_rounds: int = 20) -> dict[str, int]:
    """Send the outbox until nothing is left that can go now."""
    total = {"confirmed": 0, "failed": 0, "waiting": 0}
    for _ in range(max_rounds):
        done = outbox.chain_send()
        for k, v in done.items():
            if k in total:  # "halted" (a reset chain) is a reason, not a count
                total[k] += v
        if not done["confirmed"] and not done["failed"]:
            break
    return total
