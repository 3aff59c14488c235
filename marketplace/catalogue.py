"""The GPU model catalogue and regions every installation starts with.

List prices are typical street prices of a new card in USD, used as the
starting point of the depreciation curve; undisclosed trace models
(Alibaba's internal codes G2, G3) have neither VRAM nor price.
"""

from decimal import Decimal

# name, vendor, VRAM GB, list price USD, trace code, undisclosed, released
GPU_MODELS = [
    ("B200", "NVIDIA", 192, Decimal("45000.00"), "", False, 2024),
    ("H200", "NVIDIA", 141, Decimal("35000.00"), "", False, 2024),
    ("H100 80GB", "NVIDIA", 80, Decimal("30000.00"), "", False, 2022),
    ("A100 80GB", "NVIDIA", 80, Decimal("15000.00"), "", False, 2020),
    ("L40S", "NVIDIA", 48, Decimal("8500.00"), "", False, 2023),
    ("RTX 4090", "NVIDIA", 24, Decimal("1599.00"), "", False, 2022),
    ("A10", "NVIDIA", 24, Decimal("3500.00"), "A10", False, 2021),
    ("V100 32GB", "NVIDIA", 32, Decimal("11500.00"), "V100M32", False, 2018),
    ("V100 16GB", "NVIDIA", 16, Decimal("9000.00"), "V100M16", False, 2017),
    ("P100", "NVIDIA", 16, Decimal("5700.00"), "P100", False, 2016),
    ("T4", "NVIDIA", 16, Decimal("2500.00"), "T4", False, 2018),
    ("G2 (undisclosed)", "undisclosed", None, None, "G2", True, None),
    ("G3 (undisclosed)", "undisclosed", None, None, "G3", True, None),
]

# code, name, country
REGIONS = [
    ("us-east", "US East (Ashburn)", "US"),
    ("us-west", "US West (Hillsboro)", "US"),
    ("eu-central", "EU Central (Frankfurt)", "DE"),
    ("eu-north", "EU North (Stockholm)", "SE"),
    ("ap-southeast", "Asia Pacific (Singapore)", "SG"),
    ("ap-east", "Asia Pacific (Hangzhou)", "CN"),
]


def load_catalogue(GpuModel, Region) -> None:
    """Create or refresh the catalogue rows; safe to run any number of times."""
    for name, vendor, vram, price, code, undisclosed, released in GPU_MODELS:
        GpuModel.objects.update_or_create(
            name=name,
            defaults={
                "vendor": vendor,
                "vram_gb": vram,
                "list_price_usd": price,
                "trace_code": code,
                "undisclosed": undisclosed,
                "released": released,
            },
        )
    for code, name, country in REGIONS:
        Region.objects.update_or_create(code=code, defaults={"name": name, "country": country})
