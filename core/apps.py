import sys

from django.apps import AppConfig

# Python's default. ``py_ecc`` (imported by the web3 stack while the apps load)
# raises the limit to 100,000, far past what a thread's C stack holds: deep
# input to any recursive C code (the JSON decoder) then crashes the process
# instead of raising RecursionError. py-evm, used only by the test chain,
# raises it again to what it needs when it is imported.
RECURSION_LIMIT = 1000


class CoreConfig(AppConfig):
    name = "core"
    verbose_name = "Core"

    def ready(self):
        if sys.getrecursionlimit() > RECURSION_LIMIT:
            sys.setrecursionlimit(RECURSION_LIMIT)
