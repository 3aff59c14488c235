"""Revenue epochs: report the vault's inflows and anchor the proof of revenue.

``epoch_close`` (hourly, and before the daily vault work) takes every journal
entry that put cash into the vault (repaid principal, net interest, T-bill
interest), settled revenue, changed what the loans are worth
(``WRITE_LINES``) or what the vault accrues (``ACCRUAL_LINES``: a loan
disbursed, a loan in default), and is in no epoch yet, into a new epoch, in
one transaction that also queues the chain calls:

- ``SUSDai.recall(principal)``: principal repaid or recovered comes home;
- ``SUSDai.report(profit, accrued, rate, as_of)``: the cash income received,
  the income accrued and not yet received as of the close (``as_of``: the
  transaction is mined later, and the chain adds the seconds between at the
  rate), and the rate it accrues at from then (``financing.selectors.vault.vault_accrual``). The vault counts
  accrued income in its one price second by second, so only a surprise (income
  beyond what was accruing) is locked and streams in; a shortfall (interest
  reversed at default) is absorbed by locked profit first;
- ``SUSDai.write_down(amount)`` or ``write_up(amount)``: the net change in what
  the loans are worth without cash moving (impairments and their reversal,
  write-offs, a claim paid short: ``WRITE_LINES``);
- ``RevenueAnchor.anchor(epoch, root)``: the Merkle root (``financing.merkle``)
  of the epoch's settlements, one leaf per settlement in id order, whose data
  is ``financing.selectors.proofs.settlement_leaf_data``: anyone can take a settlement, recompute its
  leaf, follow its proof and compare with the root on chain.
"""

from decimal import ROUND_DOWN, Decimal

from django.db import transaction
from django.db.models import Max, Q, Sum
from django.utils import timezone

from core import money
from financing import lock_objects
from financing.chain.client import rate_wei, usd_to_wei
from financing.chart_of_accounts import ACCRUAL_LINES, INFLOW_LINES, WRITE_LINES
from financing.models import EpochEntry, JournalEntry, Posting, RevenueEpoch
from financing.selectors.proofs import epoch_tree
from financing.selectors.vault import vault_accrual
from financing.services.outbox import chainop_enqueue


def epoch_close(*, now=None) -> RevenueEpoch | None:
    """Close an epoch over everything not yet in one; None if there is nothing."""
    now = now or timezone.now()
    with transaction.atomic():
        pending = lock_objects.journal_entries_claim(
            JournalEntry.objects.filter(
                Q(settlement__isnull=False)
                | Q(postings__account__code="vault_cash", postings__line__in=INFLOW_LINES)
                | Q(postings__line__in=WRITE_LINES)
                | Q(postings__line__in=ACCRUAL_LINES),
                epoch_mark__isnull=True,
            )
        )
        ids = sorted(set(pending.values_list("pk", flat=True)))
        if not ids:
            return None
        sums = dict(
            Posting.objects.filter(entry_id__in=ids, account__code="vault_cash", line__in=INFLOW_LINES)
            .values("line")
            .annotate(s=Sum("amount"))
            .values_list("line", "s")
        )
        principal = money.usd(sums.get("to_vault_principal") or 0)
        profit = money.usd((sums.get("to_vault_interest") or 0) + (sums.get("tbill_interest") or 0))
        # The write lines' other side is credit losses: their net on the loan accounts is the
        # change in what the loans are worth.
        revalued = money.sum_of(
            Posting.objects.filter(entry_id__in=ids, line__in=WRITE_LINES).exclude(account__code="credit_losses")
        )
        accrual = vault_accrual(at=now)
        accrued = accrual.accrued
        number = (RevenueEpoch.objects.aggregate(n=Max("number"))["n"] or 0) + 1
        last = RevenueEpoch.objects.order_by("-number").values("accrued", "rate").first()
        epoch = RevenueEpoch.objects.create(
            number=number,
            closed_at=now,
            settlements=0,
            principal=principal,
            profit=profit,
            accrued=accrued,
            rate=accrual.per_second.quantize(Decimal("1e-18"), rounding=ROUND_DOWN),
        )
        EpochEntry.objects.bulk_create([EpochEntry(entry_id=pk, epoch=epoch) for pk in ids])
        entries, tree = epoch_tree(epoch)
        epoch.settlements = len(entries)
        if principal > 0:
            chainop_enqueue(
                key=f"epoch:{number}:recall", contract="SUSDai", function="recall", args=[usd_to_wei(principal)]
            )
        if revalued:
            chainop_enqueue(
                key=f"epoch:{number}:revalue",
                contract="SUSDai",
                function="write_up" if revalued > 0 else "write_down",
                args=[usd_to_wei(abs(revalued))],
            )
        # A report whenever the vault has income or accrues, or did until now (nothing to say otherwise).
        if profit or accrued or epoch.rate or (last and (last["accrued"] or last["rate"])):
            chainop_enqueue(
                key=f"epoch:{number}:report",
                contract="SUSDai",
                function="report",
                args=[usd_to_wei(profit), usd_to_wei(accrued), rate_wei(epoch.rate), int(now.timestamp())],
            )
        if tree is not None:
            epoch.root = "0x" + tree.root.hex()
            epoch.anchor_op = chainop_enqueue(
                key=f"epoch:{number}:anchor", contract="RevenueAnchor", function="anchor", args=[number, epoch.root]
            )
        epoch.save(update_fields=["settlements", "root", "anchor_op"])
    return epoch
