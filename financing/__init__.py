"""Financing: GPU collateral, appraisals, loans, the ledger, the waterfall, the vault.

It owns collateral records (CALIBER-style: identity, custody, insurance,
appraisal, lien), loans and their schedules, the double-entry ledger, the
revenue waterfall, the sUSDai vault with its redemption queue, the chain
adapter and its outbox, and the lender pages. It imports ``marketplace`` and
pulls settlements from it (a periodic task reads unprocessed rows and marks
them); ``marketplace`` never imports it.
"""
