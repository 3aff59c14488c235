"""Secrets at rest: kubeconfigs and job environments, sealed with Fernet.

Keys come from ``SCHEDULER_ENCRYPTION_KEYS`` (newest first; older keys still
open what they sealed, so keys can be rotated). The embedded mode derives one
from ``SECRET_KEY`` so that ``make demo`` needs no set-up; production refuses
to start without the setting.
"""

import base64
import hashlib
import json

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from django.conf import settings


def _fernet() -> MultiFernet:
    keys = list(settings.SCHEDULER_ENCRYPTION_KEYS)
    if not keys:
        digest = hashlib.sha256(b"infrafi-scheduler:" + settings.SECRET_KEY.encode()).digest()
        keys = [base64.urlsafe_b64encode(digest).decode()]
    return MultiFernet([Fernet(k) for k in keys])


def seal(plaintext: str) -> str:
    return _fernet().encrypt(plaintext.encode()).decode()


def unseal(token: str) -> str:
    try:
        return _fernet().decrypt(token.encode()).decode()
    except InvalidToken as exc:
        raise ValueError("This secret was sealed with a key that is no longer configured.") from exc


def seal_json(value) -> str:
    return seal(json.dumps(value, separators=(",", ":"), sort_keys=True))


def unseal_json(token: str):
    return json.loads(unseal(token)) if token else {}
