"""Core: what belongs to no domain, and that every app may use.

- ``core.money``: the quanta and rounding of every currency (USD micro-dollars
  in the ledger, cents for charges, 18-decimal shares), splits that sum
  exactly, and ``sum_of`` for the sums the ledger and the vault take;
- ``core.errors``: the errors services raise that pages and the API both
  understand; ``core.api``: the API's one error shape;
- ``core.forms``: the one way an HTML form feeds a service;
- ``core.admin``: read-only admin base classes for money and external events;
- ``core.downloads``: CSV downloads;
- ``core.locks``: the one order in which every service takes row locks;
- commands that touch every app: ``seed_demo`` (the demo data) and
  ``run_scheduler`` (the embedded stand-in for Celery beat).

Its library modules import no app. Only its management commands reach the
apps, because seeding the demo is about all of them (the import-linter
contracts in ``pyproject.toml`` allow exactly those imports).
"""
