"""Financing writes: collateral, loans, ledger postings, the waterfall (see the app docstring)."""
