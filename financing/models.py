"""Financing models: collateral, loans, ledger and vault live here (see the app docstring)."""
