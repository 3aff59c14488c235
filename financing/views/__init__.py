"""Financing's pages: ``loans`` (owner financing, lender loan book, collateral) and
``onchain`` (wallet, vault, paying with USDai, proof of revenue, CALIBER metadata,
the operator's chain page)."""
