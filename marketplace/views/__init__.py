"""The marketplace's HTML pages, one module per concern, wired in ``marketplace/urls.py``:

- ``inventory``: home, the dashboards, an owner's servers and GPUs, CSV import;
- ``listings``: search, a listing's page, an owner's listings and availability;
- ``bookings``: book, checkout, a renter's bookings and invoices, an owner's earnings;
- ``webhooks``: the payment gateway's webhook endpoint.

Each page validates a form (``forms``), calls one service through
``core.forms.form_submit`` and renders a template.
"""
