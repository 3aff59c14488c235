"""Test data built through the real services, so tests see what users get."""

import itertools

import factory
from allauth.account.models import EmailAddress

from accounts import services as account_services
from accounts.models import User
from marketplace.models import GpuModel, Region
from marketplace.services.inventory import server_create

PASSWORD = "correct-horse-battery-9"
_seq = itertools.count(1)


class UserFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = User
        skip_postgeneration_save = True

    email = factory.Sequence(lambda n: f"user{n}@example.com")
    password = factory.PostGenerationMethodCall("set_password", PASSWORD)

    @factory.post_generation
    def verified(obj, create, extracted, **kwargs):
        obj.save()
        if create and extracted is not False:
            EmailAddress.objects.create(user=obj, email=obj.email, verified=True, primary=True)


def make_renter(**kwargs) -> User:
    user = UserFactory(**kwargs)
    account_services.renter_role_grant(user=user)
    return user


def make_owner(company_name: str | None = None, **kwargs) -> User:
    user = UserFactory(**kwargs)
    account_services.owner_company_create(user=user, name=company_name or f"Owner Co {next(_seq)}")
    return user


def make_lender(wallet_address: str = "", **kwargs) -> User:
    user = UserFactory(**kwargs)
    account_services.lender_role_grant(user=user, wallet_address=wallet_address)
    return user


def make_operator(**kwargs) -> User:
    return UserFactory(is_staff=True, is_superuser=True, **kwargs)


def make_server(
    owner_user: User,
    *,
    hostname: str | None = None,
    gpu_count: int = 2,
    model: str = "V100 16GB",
    serials: list[str] | tuple[str, ...] = (),
    region: str = "us-east",
):
    return server_create(
        owner=owner_user.owner_membership.company,
        hostname=hostname or f"node-{next(_seq):04d}",
        region=Region.objects.get(code=region),
        cpu_milli=64000,
        memory_mib=262144,
        gpu_model=GpuModel.objects.get(name=model),
        gpu_count=gpu_count,
        gpu_serials=serials,
    )


def make_listing(owner_user: User, *, price: str = "2.00", gpu_count: int = 4, model: str = "H100 80GB", **kwargs):
    from decimal import Decimal

    from marketplace.services.listings import listing_create

    server = make_server(owner_user, gpu_count=gpu_count, model=model, **kwargs)
    return listing_create(server=server, price_per_gpu_hour=Decimal(price))


def next_hour(hours_ahead: int = 1):
    from datetime import timedelta

    from django.utils import timezone

    return timezone.now().replace(minute=0, second=0, microsecond=0) + timedelta(hours=hours_ahead)
