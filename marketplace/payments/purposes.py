"""What a gateway payment that is not a booking's is for, and who records it.

A payment's metadata names its purpose (``{"usdai_purchase": "42"}``). The
app that owns the purpose registers, from its ``AppConfig.ready``, what to do
when such a payment succeeds or fails; ``marketplace.services.webhooks``
dispatches to it by the metadata key. This keeps the dependency one way:
financing imports marketplace, marketplace never imports financing.

A handler must be idempotent and tolerate any order (the webhook, the return
page and a sweep may each report the same payment): it is called with the
purpose's id from the metadata (a string), the payment's reference at the
gateway and, for ``on_paid``, the amount received (``Decimal`` USD); for
``on_failed``, the gateway's message. An id that names nothing is the
handler's to ignore.
"""

from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal


@dataclass(frozen=True)
class Purpose:
    key: str  # the metadata key, e.g. "usdai_purchase"
    on_paid: Callable[..., object]  # (*, ident: str, reference: str, amount: Decimal)
    on_failed: Callable[..., object]  # (*, ident: str, reference: str, message: str)


_registry: dict[str, Purpose] = {}


def register(key: str, *, on_paid: Callable[..., object], on_failed: Callable[..., object]) -> None:
    """Register (or replace: ``ready`` may run more than once) the handlers of a purpose."""
    _registry[key] = Purpose(key=key, on_paid=on_paid, on_failed=on_failed)


def purpose_of(metadata: dict[str, str]) -> tuple[Purpose, str] | None:
    """The registered purpose a payment's metadata names, with its id; ``None`` if none."""
    for key, purpose in _registry.items():
        ident = str((metadata or {}).get(key) or "")
        if ident:
            return purpose, ident
    return None


def paid(metadata: dict[str, str], *, reference: str, amount: Decimal) -> bool:
    """Hand a succeeded payment to its purpose; false if its metadata names none."""
    found = purpose_of(metadata)
    if found is None:
        return False
    purpose, ident = found
    purpose.on_paid(ident=ident, reference=reference, amount=amount)
    return True


def failed(metadata: dict[str, str], *, reference: str, message: str) -> bool:
    """Hand a failed payment to its purpose; false if its metadata names none."""
    found = purpose_of(metadata)
    if found is None:
        return False
    purpose, ident = found
    purpose.on_failed(ident=ident, reference=reference, message=message)
    return True
