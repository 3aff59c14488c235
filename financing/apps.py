from django.apps import AppConfig


class FinancingConfig(AppConfig):
    name = "financing"
    verbose_name = "Financing"

    def ready(self) -> None:
        # The outbox's receipt handlers, registered in every process (web, worker, beat, shell),
        # whatever else it imports.
        from financing.chain import receipts  # noqa: F401

        # USDai bought by card: the payment webhook (marketplace) hands these payments to financing.
        from financing.services.wallets import usdai_purchase_failed, usdai_purchase_paid
        from marketplace.payments import purposes

        purposes.register("usdai_purchase", on_paid=usdai_purchase_paid, on_failed=usdai_purchase_failed)
