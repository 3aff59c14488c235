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
    ("credit_losses", "Credit losses: impairments and write-offs less reversals", "expense"),
    ("payouts_in_transit", "Owner payouts in a SEPA file not yet marked sent", "liability"),
]


def usdai_code(user_id: int) -> str:
    return f"usdai:{user_id}"


def owner_payable_code(owner_id: int) -> str:
    return f"owner_payable:{owner_id}"


# The posting lines by which cash reaches the vault: repaid principal, interest net of
# the protocol fee, T-bill interest. Each revenue epoch reports what they brought in.
INFLOW_LINES = ("to_vault_principal", "to_vault_interest", "tbill_interest")


# The posting lines that change what the vault's loans are worth without cash moving
# (impairments, their reversal, write-offs beyond the allowance, a claim paid short).
# Each epoch sends their net on the loan accounts to the chain (``write_down``/``write_up``).
WRITE_LINES = ("impairment", "impairment_reversal", "write_off", "claim_shortfall")

# Entries that change what the vault earns from now on, without income or value moving: a loan
# disbursed starts accruing, a loan in default stops (its unpaid interest reversed), T-bills
# bought or sold. Each is taken into the next epoch so that the chain's accrual rate follows.
ACCRUAL_LINES = ("disbursement", "non_accrual", "tbill_buy", "tbill_sell")
