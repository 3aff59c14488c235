"""The layout's rules that a linter cannot see: where locks are taken, and in what order.

The import rules themselves (layers, the scheduler through ``financing.selectors``,
no app importing ``config``, SDKs behind their adapters) are import-linter
contracts in ``pyproject.toml``, run by CI beside ruff; ``test_import_contracts_hold``
runs them here too, so ``make test`` alone catches a broken rule.
"""

import ast
import subprocess
import sys
from pathlib import Path

from django.apps import apps

from core.locks import LOCK_ORDER

ROOT = Path(__file__).resolve().parent.parent
APPS = ("core", "accounts", "marketplace", "financing", "scheduler")


def _sources():
    for app in APPS:
        for path in sorted((ROOT / app).rglob("*.py")):
            if "migrations" not in path.parts:
                yield path


def _calls(path: Path, name: str) -> list[int]:
    tree = ast.parse(path.read_text(), filename=str(path))
    return [
        node.lineno
        for node in ast.walk(tree)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == name
    ]


def test_row_locks_are_taken_only_in_lock_objects_modules():
    outside = [
        f"{path.relative_to(ROOT)}:{line}"
        for path in _sources()
        if path.name != "lock_objects.py"
        for line in _calls(path, "select_for_update")
    ]
    assert outside == []


def test_every_locked_model_has_a_place_in_the_global_order():
    for label in LOCK_ORDER:
        apps.get_model(label)  # raises LookupError for a name that drifted
    assert len(set(LOCK_ORDER)) == len(LOCK_ORDER)
    # every app's lock_objects module exists and is documented against the order
    for app in ("accounts", "marketplace", "financing", "scheduler"):
        module = ROOT / app / "lock_objects.py"
        assert module.exists(), module
        assert "core/locks.py" in module.read_text() or "core.locks" in module.read_text(), module


def test_import_contracts_hold():
    result = subprocess.run(
        [str(Path(sys.executable).parent / "lint-imports"), "--no-cache"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-3000:]
    assert "0 broken" in result.stdout
