"""Financing API (loans, collateral, vault), registered in ``config.urls``."""
