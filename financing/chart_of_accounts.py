"""The chart of accounts every installation starts with (per-owner and per-loan
accounts are created on first use)."""

# code, name, kind
SYSTEM_ACCOUNTS = [
    ("gateway_clearing", "Cash held by payment gateways", "asset"),
    ("renter_escrow", "Renter escrow: paid, not yet delivered or refunded", "liability"),
    ("platform_revenue", "Platform fees", "income"),
    ("insurance_payable", "Insurance premiums collected", "liability"),
    ("protocol_fee", "Protocol fee on interest", "income"),
    ("vault_cash", "sUSDai vault cash", "asset"),
    ("tbill_holdings", "Treasury-bill holdings", "asset"),
    ("interest_income", "Interest income", "income"),
    ("susdai_holders", "sUSDai holders: deposits less redemptions", "liability"),
    ("tbill_income", "Treasury-bill income", "income"),
    ("usdai_external", "USDai withdrawn to outside wallets", "liability"),
]


def usdai_code(user_id: int) -> str:
    return f"usdai:{user_id}"


def owner_payable_code(owner_id: int) -> str:
    return f"owner_payable:{owner_id}"


# The posting lines by which cash reaches the vault: repaid principal, interest net of
# the protocol fee, T-bill interest. Each revenue epoch reports what they brought in.
INFLOW_LINES = ("to_vault_principal", "to_vault_interest", "tbill_interest")
