import secrets

from django.contrib.auth.models import AbstractUser, BaseUserManager
from django.db import models
from django.db.models import Q
from django.utils import timezone
from knox.models import AbstractAuthToken, AuthTokenManager
from knox.settings import CONSTANTS

from accounts.validators import validate_eip55_address


class Role(models.TextChoices):
    RENTER = "renter", "Renter"
    OWNER = "owner", "Owner"
    LENDER = "lender", "Lender"
    OPERATOR = "operator", "Operator"


class UserManager(BaseUserManager):
    use_in_migrations = True

    def _create_user(self, email, password, **extra_fields):
        if not email:
            raise ValueError("An e-mail address is required.")
        user = self.model(email=self.normalize_email(email), **extra_fields)
        user.set_password(password)
        user.save(using=self._db)
        return user

    def create_user(self, email, password=None, **extra_fields):
        extra_fields.setdefault("is_staff", False)
        extra_fields.setdefault("is_superuser", False)
        return self._create_user(email, password, **extra_fields)

    def create_superuser(self, email, password=None, **extra_fields):
        extra_fields.setdefault("is_staff", True)
        extra_fields.setdefault("is_superuser", True)
        return self._create_user(email, password, **extra_fields)


class User(AbstractUser):
    """A person who logs in with an e-mail address; roles come from profiles."""

    username = None
    email = models.EmailField("e-mail address", unique=True)

    USERNAME_FIELD = "email"
    REQUIRED_FIELDS: list[str] = []

    objects = UserManager()

    class Meta:
        ordering = ["email"]

    def __str__(self) -> str:
        return self.email


class OwnerCompany(models.Model):
    """The legal owner of GPU servers; its members act for it."""

    name = models.CharField(max_length=200, unique=True)
    payout_account_holder = models.CharField(max_length=200, blank=True)
    payout_iban = models.CharField("payout IBAN or account number", max_length=34, blank=True)
    payout_bic = models.CharField("payout BIC/SWIFT", max_length=11, blank=True)
    payout_wallet_address = models.CharField(max_length=42, blank=True, validators=[validate_eip55_address])
    # Payouts (issue 14): the SEPA creditor's address and VAT id, and the rail when both an
    # IBAN and a wallet are given (``financing.services.payouts``).
    vat_id = models.CharField("VAT id", max_length=20, blank=True)
    country = models.CharField(max_length=2, blank=True, help_text="ISO 3166 alpha-2.")
    address_line1 = models.CharField("address", max_length=70, blank=True)
    address_line2 = models.CharField("postcode and town", max_length=70, blank=True)
    payout_rail = models.CharField(
        max_length=5,
        choices=[("sepa", "Bank transfer (SEPA)"), ("usdai", "USDai to the payout wallet")],
        default="sepa",
        help_text="Used when both an IBAN and a payout wallet are given.",
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]
        verbose_name_plural = "owner companies"

    def __str__(self) -> str:
        return self.name


class OwnerMembership(models.Model):
    """A user acting for a company. A user belongs to at most one company."""

    class Level(models.TextChoices):
        ADMIN = "admin", "Administrator"
        MEMBER = "member", "Member"

    company = models.ForeignKey(OwnerCompany, on_delete=models.CASCADE, related_name="memberships")
    user = models.OneToOneField(User, on_delete=models.CASCADE, related_name="owner_membership")
    level = models.CharField(max_length=10, choices=Level.choices, default=Level.MEMBER)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["company", "user"]

    def __str__(self) -> str:
        return f"{self.user} @ {self.company}"


def _invitation_token() -> str:
    return secrets.token_urlsafe(32)


class CompanyInvitation(models.Model):
    """An administrator's invitation of an e-mail address into a company.

    The membership exists only once the invitee accepts: nobody is enrolled
    without consent. An address gets at most one pending invitation per
    company; the token is the invitee's proof, sent to the address.
    """

    class Status(models.TextChoices):
        PENDING = "pending", "Pending"
        ACCEPTED = "accepted", "Accepted"
        DECLINED = "declined", "Declined"

    company = models.ForeignKey(OwnerCompany, on_delete=models.CASCADE, related_name="invitations")
    email = models.EmailField(help_text="Stored lower-case.")
    invited_by = models.ForeignKey(User, on_delete=models.SET_NULL, null=True, related_name="+")
    token = models.CharField(max_length=64, unique=True, default=_invitation_token, editable=False)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.PENDING)
    created_at = models.DateTimeField(auto_now_add=True)
    responded_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["company", "email"],
                condition=Q(status="pending"),
                name="one_pending_invitation_per_company_and_email",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.email} → {self.company} ({self.status})"


class RenterProfile(models.Model):
    """Billing details of a renter; its existence grants the renter role."""

    user = models.OneToOneField(User, on_delete=models.CASCADE, related_name="renter_profile")
    billing_name = models.CharField(max_length=200, blank=True)
    billing_address = models.TextField(blank=True)
    billing_country = models.CharField(max_length=2, blank=True, help_text="ISO 3166-1 alpha-2")
    vat_id = models.CharField("VAT / tax id", max_length=32, blank=True)
    # The renter's Customer at the card gateway (saved cards, receipts); made on first need.
    stripe_customer_id = models.CharField(max_length=64, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return f"renter {self.user}"


class LenderProfile(models.Model):
    """A lender's wallet; its existence grants the lender role."""

    user = models.OneToOneField(User, on_delete=models.CASCADE, related_name="lender_profile")
    wallet_address = models.CharField(max_length=42, blank=True, validators=[validate_eip55_address])
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["wallet_address"],
                condition=~Q(wallet_address=""),
                name="lender_wallet_unique_when_set",
                violation_error_message="This wallet is already registered to another lender.",
            )
        ]

    def __str__(self) -> str:
        return f"lender {self.user}"


class ApiTokenManager(AuthTokenManager):
    def live_for(self, user: User):
        """``user``'s unexpired tokens, newest first."""
        return self.filter(user=user, expiry__gt=timezone.now()).order_by("-created", "-id")


class ApiToken(AbstractAuthToken):
    """An API token (django-rest-knox): only a digest of the secret is stored.

    The clear token is shown once, when it is made. A user has several, each
    named and scoped, and each expires (there is no token that never does).
    ``token_key`` is the token's first characters, enough to recognise it.
    Revoking deletes the row; knox deletes an expired one when it is next seen.
    """

    class Scope(models.TextChoices):
        READ = "read", "Read: look, never change anything"
        BOOK = "book", "Book: rent, pay and cancel; wallet and vault"
        OWNER = "owner", "Owner: servers, listings, clusters and loans"
        ADMIN = "admin", "Admin: everything the account may do"
        INFER = "infer", "Infer: call your inference endpoints"

    # knox keys the table by the digest; a plain id names a token in URLs without revealing it.
    id = models.BigAutoField(primary_key=True)
    digest = models.CharField(max_length=CONSTANTS.DIGEST_LENGTH, unique=True, editable=False)
    name = models.CharField(max_length=100)
    scope = models.CharField(max_length=10, choices=Scope.choices, default=Scope.READ)
    expiry = models.DateTimeField()
    last_used_at = models.DateTimeField(null=True, blank=True, help_text="To the minute.")

    objects = ApiTokenManager()

    class Meta:
        ordering = ["-created", "-id"]
        verbose_name = "API token"
        constraints = [
            models.UniqueConstraint(fields=["user", "name"], name="api_token_name_unique_per_user"),
            models.CheckConstraint(
                condition=Q(scope__in=["read", "book", "owner", "admin", "infer"]), name="api_token_scope_known"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.token_key}…) of {self.user}"
