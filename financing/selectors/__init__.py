"""Financing's reads, by concern; each returns rows or frozen dataclasses.

- ``ledger``: balances derived from postings;
- ``loans``: loan summaries, the loan book, a loan's revenue by month, collateral;
- ``placement``: how much each financed server's loan needs revenue (the one
  read the scheduler may use);
- ``vault``: USDai balances, the vault's books and position, redemptions and
  their estimates, realised APR;
- ``proofs``: revenue epochs, settlement leaves and proofs, the anchored roots;
- ``chain``: the operator's view of the outbox and reconciliation.

Selectors read; they never write and import no service.
"""
