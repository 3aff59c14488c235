"""``Idempotency-Key`` on the API's money-moving POSTs, with Stripe's semantics.

A client that may retry (a timeout, a dropped connection) sends a key of its
choosing; the same request under the same key then acts once:

- same user + key + same request (method, path, body) → the first answer's
  status and body, without running the view again, with
  ``Idempotent-Replayed: true``;
- the same key with another body or another path → 409, and nothing runs;
- while the first request with a key still runs → 409 ("being processed").

Keys are per user (two users may pick the same key) and live
``IDEMPOTENCY_KEY_TTL_HOURS`` (24 h, as Stripe keeps them); an expired key is
a new key, and ``idempotency_keys_purge`` (periodic) deletes them.

What is saved, as Stripe does: an answer is saved once the endpoint began
executing — any 2xx, and any 4xx the endpoint gave (a service's refusal such
as "the GPUs are no longer free", a 404 of a booking). A request refused
before it ran is not saved and can be retried: authentication and permission
(401/403) and throttling (429) come first, the 409s above, a body that does
not parse, and a 400 from the request's own validation (the serializer: the
endpoint did not begin, nothing changed, and the client fixes the body and
retries under the same key — Stripe: "If incoming parameters fail
validation ... no idempotent result is saved"). Unlike Stripe, a 5xx is not
saved either: the key stays bound to that request, and the same request again
runs again (the services are idempotent at the crash level), so a client can
retry it.

Crash safety: on PostgreSQL the request holds a session advisory lock on
(user, key) for its whole run (``pg_try_advisory_lock``; released in
``finally``, and by PostgreSQL when a dead worker's connection closes). A
second request that cannot take it answers 409 at once, so a retry never runs
the view beside the first. A key row without an answer whose lock is free is
an attempt that died: the same request runs again. SQLite (the embedded demo,
one process) takes no lock.

A crash after the service ran but before its answer is saved must not let the
retry act again. A view whose POST touches only the database
(``idempotent_atomic``: book, quick-book, deposit, redeem, cancel a
redemption, send USDai, apply for a loan) runs it and saves the answer in one
transaction: both commit, or neither does and the retry is a first attempt.
The others call a gateway, whose calls are never inside a transaction: pay
and cancel are refused a second time by the booking's own state, and views
that pass a key on to a service (a charge's own idempotency key) use
``idempotency_token()``, which names this key's lifetime, so that the retry
presents the same charge.
"""

import hashlib
import json
from contextlib import nullcontext
from datetime import datetime, timedelta

from django.conf import settings
from django.core.serializers.json import DjangoJSONEncoder
from django.db import IntegrityError, connection, transaction
from django.utils import timezone
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter
from rest_framework import exceptions, status
from rest_framework.response import Response

from core.models import IdempotencyKey

HEADER = "Idempotency-Key"
REPLAYED_HEADER = "Idempotent-Replayed"
MAX_KEY_LENGTH = 255

MISMATCH = (
    "Keys for idempotent requests can only be used with the same parameters they were first used with. "
    "Try using a key other than '{key}' if you meant to execute a different request."
)
IN_PROGRESS = (
    "A request with the Idempotency-Key '{key}' is being processed; retry later (the same key returns its result)."
)

IDEMPOTENCY_KEY_PARAMETER = OpenApiParameter(
    name=HEADER,
    type=OpenApiTypes.STR,
    location=OpenApiParameter.HEADER,
    required=False,
    description=(
        "Optional, 1–255 printable ASCII characters (a V4 UUID is a good choice), scoped to you. The same key "
        "with the same request within 24 hours returns the first answer (header `Idempotent-Replayed: true`) "
        "without acting again; with another body or path it is 409, as it is while the first request still "
        "runs. Requests refused before they ran (401, 403, 429, a 400 from the request's validation) and 5xx "
        "are not saved: retry them with the same key."
    ),
)


class IdempotencyConflict(exceptions.APIException):
    status_code = status.HTTP_409_CONFLICT
    default_detail = "This Idempotency-Key cannot be used for this request."
    default_code = "idempotency_conflict"


class _Replay(Exception):
    """Raised by ``initial`` to answer with the saved response instead of running the view."""

    def __init__(self, response: Response):
        self.response = response


def idempotency_key_valid(key: str) -> bool:
    return 1 <= len(key) <= MAX_KEY_LENGTH and all(" " <= c <= "~" for c in key)


def request_fingerprint(data) -> str:
    """SHA-256 of the parsed body as canonical JSON: key order and whitespace do not matter."""
    if hasattr(data, "lists"):  # a QueryDict (form or multipart body): every value of every key
        data = dict(data.lists())
    canonical = json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False, cls=DjangoJSONEncoder)
    return hashlib.sha256(canonical.encode()).hexdigest()


def _lock_id(user_pk: int, key: str) -> int:
    """The advisory lock's bigint for (user, key)."""
    digest = hashlib.sha256(f"idempotency:{user_pk}:{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


def _uses_advisory_locks() -> bool:
    return connection.vendor == "postgresql"


def _ttl() -> timedelta:
    return timedelta(hours=settings.IDEMPOTENCY_KEY_TTL_HOURS)


def idempotency_keys_purge(*, now: datetime | None = None) -> int:
    """Periodic: delete the keys older than ``IDEMPOTENCY_KEY_TTL_HOURS``; returns how many."""
    now = now or timezone.now()
    deleted, _ = IdempotencyKey.objects.filter(created_at__lt=now - _ttl()).delete()
    return deleted


class _Attempt:
    """One request's hold on its key: the advisory lock (PostgreSQL), the row, and whether
    this request wrote the row."""

    def __init__(self, *, lock_id: int | None):
        self.lock_id = lock_id
        self.row: IdempotencyKey | None = None
        self.created = False
        self.started = False  # the view (the endpoint) began executing
        self.invalid = False  # the view's own validation refused the request: it did not begin

    def release(self) -> None:
        if self.lock_id is None:
            return
        lock_id, self.lock_id = self.lock_id, None
        try:
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_advisory_unlock(%s)", [lock_id])
        except Exception:  # a broken connection has dropped its session locks already
            connection.close_if_unusable_or_obsolete()


class Idempotent:
    """A DRF view mixin (put it before the view class): ``Idempotency-Key`` on the view's POSTs.

    On an ``APIView`` every POST is idempotent; on a viewset only the actions named in
    ``idempotent_actions`` (e.g. ``("create", "pay", "cancel")``). Document the header with
    ``IDEMPOTENCY_KEY_PARAMETER`` in the operation's ``extend_schema(parameters=[...])``.
    """

    idempotent_actions: tuple[str, ...] | None = None
    # True (every idempotent POST) or the actions whose work is database-only: the work
    # and its saved answer commit together. Never for a view that calls a gateway.
    idempotent_atomic: bool | tuple[str, ...] = False

    _idempotency: _Attempt | None = None

    def _idempotency_applies(self, request) -> bool:
        if request.method != "POST":
            return False
        if self.idempotent_actions is None:
            return True
        return getattr(self, "action", None) in self.idempotent_actions

    def idempotency_token(self) -> str:
        """A name for this key's lifetime (``""`` without a key), for a service's own idempotency key."""
        attempt = self._idempotency
        if attempt is None or attempt.row is None:
            return ""
        return f"idem-{attempt.row.pk}"

    def _idempotency_atomic(self, request) -> bool:
        if request.method != "POST" or HEADER not in request.headers or not self.idempotent_atomic:
            return False
        if self.idempotent_atomic is True:
            return True
        # a viewset's action is known only once DRF initialises the request: read the router's map
        return getattr(self, "action_map", {}).get("post") in self.idempotent_atomic

    def dispatch(self, request, *args, **kwargs):
        self._idempotency = None
        try:
            with transaction.atomic() if self._idempotency_atomic(request) else nullcontext():
                response = super().dispatch(request, *args, **kwargs)
                if self._idempotency is not None and self._idempotency.started:
                    self._idempotency_finish(response)
            return response
        finally:
            if self._idempotency is not None:
                self._idempotency.release()

    def initial(self, request, *args, **kwargs):
        # Authentication, permissions and throttles first: a request they refuse never touches a key.
        super().initial(request, *args, **kwargs)
        if not self._idempotency_applies(request):
            return
        key = request.headers.get(HEADER)
        if key is None:
            return
        if not idempotency_key_valid(key):
            raise exceptions.ValidationError(
                {HEADER: [f"The {HEADER} header must be 1 to {MAX_KEY_LENGTH} printable ASCII characters."]}
            )
        if not request.user.is_authenticated:  # only on a view that lets anyone POST: no user, no scope
            return
        self._idempotency_begin(request, key)

    def _idempotency_begin(self, request, key: str) -> None:
        user = request.user
        fingerprint = request_fingerprint(request.data)  # a body that does not parse is a 400 here
        lock_id = _lock_id(user.pk, key) if _uses_advisory_locks() else None
        if lock_id is not None:
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_try_advisory_lock(%s)", [lock_id])
                (locked,) = cursor.fetchone()
            if not locked:
                raise IdempotencyConflict(IN_PROGRESS.format(key=key))
        attempt = self._idempotency = _Attempt(lock_id=lock_id)

        now = timezone.now()
        row = IdempotencyKey.objects.filter(user=user, key=key).first()
        if row is not None and row.created_at < now - _ttl():
            row.delete()  # expired: a new key
            row = None
        if row is None:
            try:
                with transaction.atomic():
                    row = IdempotencyKey.objects.create(
                        user=user,
                        key=key,
                        method=request.method,
                        path=request.path,
                        fingerprint=fingerprint,
                        created_at=now,
                    )
                attempt.created = True
            except IntegrityError:  # SQLite, no lock: another request wrote it first
                raise IdempotencyConflict(IN_PROGRESS.format(key=key)) from None
        if (row.method, row.path, row.fingerprint) != (request.method, request.path, fingerprint):
            raise IdempotencyConflict(MISMATCH.format(key=key))
        attempt.row = row
        if row.response_status is not None:
            replay = Response(row.response_body, status=row.response_status, headers={REPLAYED_HEADER: "true"})
            raise _Replay(replay)
        # No answer yet and the lock is ours: a first request, or an earlier attempt that died.
        attempt.started = True

    def handle_exception(self, exc):
        if isinstance(exc, _Replay):
            return exc.response
        attempt = self._idempotency
        if attempt is not None and attempt.started and isinstance(exc, exceptions.ValidationError):
            # Raised by the view's own validation (services raise Django's ValidationError,
            # which the exception handler converts later): the endpoint had not begun.
            attempt.invalid = True
        return super().handle_exception(exc)

    def _idempotency_finish(self, response) -> None:
        attempt = self._idempotency
        row = attempt.row
        code = response.status_code
        if attempt.invalid or code >= 500:
            if attempt.created and attempt.invalid:
                # Nothing ran: the key is free for the corrected request.
                IdempotencyKey.objects.filter(pk=row.pk, response_status__isnull=True).delete()
            return
        IdempotencyKey.objects.filter(pk=row.pk).update(
            response_status=code,
            response_body=getattr(response, "data", None),
            completed_at=timezone.now(),
        )
