"""Marketplace: GPU inventory, listings, search, bookings, payments, settlements.

It owns what renters and owners see of the hardware: the GPU model catalogue,
regions, servers and their GPUs (each GPU with a platform-unique serial), the
listings of servers with their availability, and bookings with their
payments, refunds and settlements.

Layout:

- ``services`` (writes) and ``selectors`` (reads) hold the business logic,
  one module per concern: ``inventory``, ``listings``, ``bookings`` (plus
  ``search`` for reads and ``webhooks`` for gateway events);
- ``views``, ``forms`` and ``api`` are thin, split the same way (``inventory``,
  ``listings``, ``bookings``; the webhook endpoint in ``views.webhooks``): the
  pages and the API call the same services;
- ``payments`` hides the payment gateways (the only place that knows Stripe):
  frozen dataclasses out, gateway events translated into ``PaymentEvent``;
- ``lock_objects`` takes every row lock of the app, in the order of
  ``core/locks.py``;
- ``urls`` routes the pages; the API is routed in ``config/urls.py``.

It imports ``core`` and ``accounts`` only; ``financing`` and ``scheduler``
build on it and pull from it, never the other way round.
"""
