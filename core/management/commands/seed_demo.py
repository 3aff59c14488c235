"""Build the demo from the real Alibaba node list; running it again adds nothing.

A deterministic quarter of the trace's 1,213 nodes (every fourth row) becomes
the servers of three owner companies spread over the catalogue's regions, and
one demo user per role (plus an operator) is created with a verified e-mail.
"""

import csv
import zlib
from datetime import date, timedelta
from decimal import Decimal

from allauth.account.models import EmailAddress
from django.conf import settings
from django.core.management.base import BaseCommand
from django.db import transaction
from django.utils import timezone

from accounts import services as account_services
from accounts.models import OwnerCompany, OwnerMembership, User
from financing.models import Collateral
from financing.services.collateral import collateral_approve, collateral_register
from financing.services.delinquency import loans_service
from financing.services.loans import loan_apply, loan_approve, loan_max_amount
from financing.services.revenue import ledger_pull
from financing.services.vault import vault_daily, vault_deposit
from financing.services.wallets import usdai_buy
from marketplace.models import GpuModel, Listing, Region, Server
from marketplace.services import bookings
from marketplace.services.inventory import server_create
from marketplace.services.listings import availability_weekly_add, listing_create
from scheduler.models import Cluster, Job
from scheduler.services.clusters import cluster_create_simulated
from scheduler.services.jobs import job_submit

DEMO_PASSWORD = "infrafi-demo-2026"
DEMO_USERS = [
    # email, roles, company, staff
    ("renter@infrafi.test", ["renter"], "", False),
    ("owner@infrafi.test", ["owner"], "Northwind Compute", False),
    ("helios@infrafi.test", ["owner"], "Helios GPU Cloud", False),
    ("kestrel@infrafi.test", ["owner"], "Kestrel Labs", False),
    ("lender@infrafi.test", ["lender"], "", False),
    ("operator@infrafi.test", [], "", True),
]
DEMO_LENDER_WALLET = "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed"
COMPANIES = ["Northwind Compute", "Helios GPU Cloud", "Kestrel Labs"]
DATA_CENTRES = {
    "us-east": "Equinix DC11",
    "us-west": "Flexential Hillsboro 3",
    "eu-central": "Equinix FR5",
    "eu-north": "Bahnhof Pionen",
    "ap-southeast": "Equinix SG3",
    "ap-east": "Alibaba Cloud Hangzhou H",
}
EVERY_NTH_NODE = 4
# Typical hourly prices of a GPU of each trace model; each server varies by up to ±15 %.
BASE_PRICE = {
    "T4": Decimal("0.35"),
    "P100": Decimal("0.45"),
    "V100M16": Decimal("0.60"),
    "V100M32": Decimal("0.85"),
    "A10": Decimal("0.75"),
    "G2": Decimal("0.50"),
    "G3": Decimal("0.65"),
}


class Command(BaseCommand):
    help = "Load the demo users and inventory (idempotent)."

    def handle(self, *args, **options):
        with transaction.atomic():
            self._users()
            created = self._servers()
            listed = self._listings()
            loans = self._financing()
            jobs = self._scheduler()
        self.stdout.write(
            self.style.SUCCESS(
                f"Demo inventory: {created} server(s) added, {Server.objects.count()} in total; "
                f"{listed} listing(s) added, {Listing.objects.count()} in total; {loans} financed server(s) added; "
                f"{jobs} demo job(s) submitted on the simulated clusters."
            )
        )
        self.stdout.write(f"Demo logins (password for all: {DEMO_PASSWORD}):")
        for email, roles, company, staff in DEMO_USERS:
            label = "operator (staff, /admin/)" if staff else ", ".join(roles)
            if company:
                label += f" — {company}"
            self.stdout.write(f"  {email:<24} {label}")

    def _users(self) -> None:
        for email, roles, company, staff in DEMO_USERS:
            user = User.objects.filter(email=email).first()
            if user is None:
                if staff:
                    user = User.objects.create_superuser(email=email, password=DEMO_PASSWORD)
                else:
                    user = User.objects.create_user(email=email, password=DEMO_PASSWORD)
            EmailAddress.objects.get_or_create(user=user, email=email, defaults={"verified": True, "primary": True})
            if "renter" in roles:
                account_services.renter_billing_update(
                    user=user,
                    billing_name="Demo Renter Ltd",
                    billing_address="1 Demo Street, Springfield",
                    billing_country="US",
                )
            if "owner" in roles and not OwnerMembership.objects.filter(user=user).exists():
                account_services.owner_company_create(user=user, name=company)
            if "lender" in roles:
                account_services.lender_role_grant(user=user, wallet_address=DEMO_LENDER_WALLET)

    def _financing(self) -> int:
        """Three Northwind servers with 60 days of delivered revenue, approved
        collateral and, where the appraisal carries one, an approved loan at 60 %
        of what they could borrow."""

        company = OwnerCompany.objects.get(name=COMPANIES[0])
        # Hardware of a published specification: an undisclosed model has no reference rate,
        # operating cost or resale market to appraise it on.
        servers = list(
            Server.objects.filter(
                owner=company,
                listing__gpus_in_service__gte=4,
                listing__always_available=True,
                listing__gpu_model__undisclosed=False,
            ).order_by("hostname")[:3]
        )
        if not servers or Collateral.objects.filter(server__in=servers).exists():
            return 0
        renter = User.objects.get(email="renter@infrafi.test")
        operator = User.objects.get(email="operator@infrafi.test")
        now = timezone.now().replace(minute=0, second=0, microsecond=0)
        approved = now - timedelta(days=20)

        def deliver(days):  # a 48-hour booking of every GPU every 3 days, delivered in full
            for server in servers:
                listing = server.listing
                for day in days:
                    start = now - timedelta(days=day)
                    booking = bookings.booking_create(
                        renter=renter,
                        listing=listing,
                        gpu_count=listing.gpus_in_service,
                        start=start,
                        end=start + timedelta(hours=48),
                        now=start,
                    )
                    booking = bookings.booking_pay(booking=booking, renter=renter, now=start)
                    bookings.booking_record_usage(
                        booking=booking,
                        key=f"demo:{booking.public_id}",
                        interval_start=booking.start,
                        interval_end=booking.end,
                        gpu_seconds=booking.gpu_seconds_booked,
                    )
                    bookings.booking_complete(booking=booking, now=booking.end)
            ledger_pull(batch=5000)

        deliver(range(62, 21, -3))  # before the loans: the history they are appraised on
        # Lenders fund the vault first: USDai bought through the (offline) gateway, deposited for sUSDai.

        lender = User.objects.get(email="lender@infrafi.test")
        usdai_buy(user=lender, amount=Decimal("250000.00"), idempotency_key="demo-lender-usdai")
        vault_deposit(user=lender, amount=Decimal("200000.00"))
        financed = 0
        for server in servers:
            collateral = collateral_register(
                owner=company,
                server=server,
                purchase_price=Decimal("60000"),
                purchase_date=date(now.year - 1, now.month, 1),
                custodian=server.data_centre or "Data centre",
                custody_receipt=f"BAIL-{server.hostname.upper()}",
                insurer="Demo Mutual Insurance",
                policy_number=f"GPU-{server.pk:05d}",
                coverage=Decimal("60000"),
                insurance_expires=date(now.year + 1, 12, 31),
                today=approved.date(),
            )
            collateral = collateral_approve(collateral=collateral, operator=operator, now=approved)
            maximum = loan_max_amount(collateral)
            if maximum * Decimal("0.6") < settings.LOAN_MIN_PRINCIPAL:
                continue  # its appraisal cannot carry a loan: the owner's page says why
            amount = (maximum * Decimal("0.6")).quantize(Decimal("1"))
            loan = loan_apply(owner=company, collateral=collateral, amount=amount, tenor_months=36, now=approved)
            loan_approve(loan=loan, operator=operator, now=approved)
            financed += 1
        deliver(range(19, 2, -3))  # after: revenue through the financed waterfall
        loans_service(now=now)

        # The vault's daily job for each simulated day since the loans, today last: epochs
        # (report + proof-of-revenue anchor), T-bills above the buffer, a day of T-bill interest
        # each, and a row per day for realised APR, whose income is each settlement's on the
        # day its usage ended. One run over the whole history would book 20 days of income on
        # today alone. (Each day's NAV is today's: the history is built after the fact.)
        for back in range((now - approved).days, -1, -1):
            vault_daily(now=now - timedelta(days=back))
        return financed

    def _scheduler(self) -> int:
        """A simulated cluster per demo company (one node per server), and one
        renter's job on a booking that starts now, so the job page has life."""

        for company in OwnerCompany.objects.filter(name__in=COMPANIES):
            if not Cluster.objects.filter(owner=company).exists():
                cluster_create_simulated(owner=company, name="simulated")
        renter = User.objects.get(email="renter@infrafi.test")
        if Job.objects.filter(renter=renter).exists():
            return 0
        listing = (
            Listing.objects.filter(
                server__owner__name=COMPANIES[0], always_available=True, gpus_in_service__gte=2, financed=False
            )
            .order_by("price_per_gpu_hour", "pk")
            .first()
        )
        start = timezone.now().replace(second=0, microsecond=0) + timedelta(minutes=1)
        booking = bookings.booking_create(
            renter=renter, listing=listing, gpu_count=2, start=start, end=start + timedelta(hours=6)
        )
        booking = bookings.booking_pay(booking=booking, renter=renter)
        job_submit(
            booking=booking,
            renter=renter,
            name="train-llama",
            image="nvcr.io/nvidia/pytorch:24.05-py3",
            command=["torchrun", "--nproc-per-node=2", "train.py"],
            env={"WANDB_MODE": "offline"},
            gpu_count=2,
        )
        return 1

    def _listings(self) -> int:
        """List every demo server; one in ten only on weekdays, 08:00–20:00 UTC."""
        listed = 0
        for server in Server.objects.filter(owner__name__in=COMPANIES, listing__isnull=True).order_by("hostname"):
            gpu = server.gpus.select_related("model").first()
            h = zlib.crc32(server.hostname.encode())
            factor = Decimal(85 + h % 31) / 100
            price = (BASE_PRICE.get(gpu.model.trace_code, Decimal("1.00")) * factor).quantize(Decimal("0.01"))
            listing = listing_create(server=server, price_per_gpu_hour=price)
            Listing.objects.filter(pk=listing.pk).update(reliability=Decimal(950 + h % 50) / 1000)
            if h % 10 == 0:
                for weekday in range(5):
                    availability_weekly_add(listing=listing, weekday=weekday, start_minute=8 * 60, end_minute=20 * 60)
            listed += 1
        return listed

    def _servers(self) -> int:
        companies = [OwnerCompany.objects.get(name=name) for name in COMPANIES]
        regions = list(Region.objects.order_by("code"))
        models = {m.trace_code: m for m in GpuModel.objects.exclude(trace_code="")}
        existing = set(Server.objects.filter(owner__in=companies).values_list("owner_id", "hostname"))
        created = 0
        with open(settings.DEMO_NODE_LIST, newline="") as handle:
            for index, row in enumerate(csv.DictReader(handle)):
                if index % EVERY_NTH_NODE:
                    continue
                owner = companies[(index // EVERY_NTH_NODE) % len(companies)]
                hostname = row["sn"]
                if (owner.pk, hostname) in existing:
                    continue
                region = regions[zlib.crc32(hostname.encode()) % len(regions)]
                count = int(row["gpu"])
                server_create(
                    owner=owner,
                    hostname=hostname,
                    serial_number=f"SRV-{hostname.upper()}",
                    region=region,
                    data_centre=DATA_CENTRES.get(region.code, ""),
                    cpu_milli=int(row["cpu_milli"]),
                    memory_mib=int(row["memory_mib"]),
                    gpu_model=models[row["model"]],
                    gpu_count=count,
                    gpu_serials=[f"{1320000000000 + index * 16 + slot}" for slot in range(count)],
                )
                created += 1
        return created
