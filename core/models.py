"""Core's one table: the API's idempotency keys (``core.idempotency``).

A key belongs to no domain: it records that a user's money-moving POST ran
once under a client-chosen key, and what it answered.
"""

from django.conf import settings
from django.core.serializers.json import DjangoJSONEncoder
from django.db import models
from django.utils import timezone


class IdempotencyKey(models.Model):
    """One ``Idempotency-Key`` of one user: the request it was first used with (method, path,
    body fingerprint) and, once the endpoint has answered, the status and body to replay.

    A row without a response is a request still running, or one whose worker died (or that
    answered 5xx): the PostgreSQL advisory lock on (user, key) tells the two apart."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    key = models.CharField(max_length=255)
    method = models.CharField(max_length=10)
    path = models.TextField()
    fingerprint = models.CharField(max_length=64, help_text="SHA-256 of the canonical JSON of the parsed body.")
    created_at = models.DateTimeField(default=timezone.now)
    response_status = models.PositiveSmallIntegerField(null=True, blank=True)
    response_body = models.JSONField(null=True, blank=True, encoder=DjangoJSONEncoder)
    completed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["user", "key"], name="idempotency_key_per_user")]
        indexes = [models.Index(fields=["created_at"], name="idempotency_key_created")]

    def __str__(self) -> str:
        return f"{self.method} {self.path} [{self.key}] → {self.response_status or 'running'}"
