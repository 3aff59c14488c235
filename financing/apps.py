from django.apps import AppConfig


class FinancingConfig(AppConfig):
    name = "financing"
    verbose_name = "Financing"

    def ready(self) -> None:
        # The outbox's receipt handlers, registered in every process (web, worker, beat, shell),
        # whatever else it imports.
        from financing.chain import receipts  # noqa: F401
