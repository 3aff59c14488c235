"""Financing: GPU collateral, appraisals, loans, the ledger, the waterfall, the vault.

It owns collateral records (CALIBER-style: identity, custody, insurance,
appraisal, lien), loans and their schedules, the double-entry ledger, the
revenue waterfall, the sUSDai vault with its redemption queue, the chain
adapter and its outbox, and the lender pages. It imports ``marketplace`` and
pulls settlements from it (a periodic task reads unprocessed rows and marks
them); ``marketplace`` never imports it, and the scheduler reads it only
through ``financing.selectors``.

Layout, and the one way its imports run (an import-linter contract):

- pure calculations, no database: ``appraisal``, ``schedules``, ``waterfall``,
  ``merkle``, ``chart_of_accounts``, ``svg_charts``;
- the chain adapter at the bottom: ``chain.client`` (web3), ``chain.deploy``,
  ``chain.node`` (this process's chain, the embedded one rebuilt from the
  outbox);
- ``services.ledger`` (every dollar moves through ``journal_post``) and
  ``services.outbox`` (every chain effect is a row written with its ledger
  change);
- ``selectors`` (reads, frozen dataclasses out);
- the writes that build on them: ``services.wallets``, then
  ``servicing``/``titles``, ``revenue``/``loans``/``collateral``,
  ``delinquency``, ``epochs``/``reconcile``, ``vault``;
- ``chain.receipts`` at the top: what the books record when a call is mined,
  registered by ``FinancingConfig.ready()``.

Row locks are taken only through ``lock_objects`` (order: ``core/locks.py``).
Pages are in ``views/`` (``loans``, ``onchain``), the REST API in ``api``.
"""
