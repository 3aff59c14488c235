"""Accounts: users, roles and the profiles behind them.

A user holds any of three roles, each backed by a profile row:
renter (``RenterProfile``: billing details), owner (membership of an
``OwnerCompany``: name, members, payout details) and lender
(``LenderProfile``: an EIP-55 wallet address). Operator is Django's
``is_staff``. Sign-up, e-mail verification, password reset and TOTP come from
django-allauth. Its row locks (the profiles) are taken in ``lock_objects``, in
the order of ``core/locks.py``. This is the lowest app: it imports only ``core``.
"""
