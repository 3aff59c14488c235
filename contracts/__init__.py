"""The protocol's Vyper contracts, their compiler and their committed build artifacts.

``compile_contract(name)`` compiles ``contracts/<name>.vy`` with the ``vyper``
Python API (snekmate resolved from site-packages); ``artifact(name)`` loads the
committed ``contracts/build/<name>.json``, which is what the application and
the tests deploy. Rebuild every artifact after changing a source with

    python -m contracts

``tests/test_contract_artifacts.py`` recompiles the sources and fails when a
committed artifact is stale. No Django here.
"""

import functools
import hashlib
import importlib.util
import json
from pathlib import Path

HERE = Path(__file__).resolve().parent
BUILD = HERE / "build"
SOURCES = ["CaliberNFT", "USDai", "SUSDai", "RevenueAnchor"]


def _search_paths() -> list[Path]:
    """The directory holding the ``snekmate`` package, then this one (highest precedence last)."""
    spec = importlib.util.find_spec("snekmate")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("snekmate is not installed")
    snekmate_dir = Path(next(iter(spec.submodule_search_locations))).resolve()
    return [snekmate_dir.parent, HERE]


def source_path(name: str) -> Path:
    if name not in SOURCES:
        raise KeyError(f"unknown contract {name!r}")
    return HERE / f"{name}.vy"


def compile_contract(name: str) -> dict:
    """Compile ``contracts/<name>.vy``; the artifact's dict (abi, creation and runtime bytecode)."""
    import vyper
    from vyper.compiler.input_bundle import FilesystemInputBundle

    path = source_path(name)
    bundle = FilesystemInputBundle(_search_paths())
    file_input = bundle.load_file(path)
    output = vyper.compile_from_file_input(
        file_input, input_bundle=bundle, output_formats=["abi", "bytecode", "bytecode_runtime"]
    )
    return {
        "contract": name,
        "vyper": vyper.__version__,
        "source_sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
        "abi": output["abi"],
        "bytecode": output["bytecode"],
        "bytecode_runtime": output["bytecode_runtime"],
    }


def dumps(data: dict) -> str:
    """The committed form of an artifact: sorted keys, indent 1, a trailing newline."""
    return json.dumps(data, sort_keys=True, indent=1) + "\n"


@functools.cache
def artifact(name: str) -> dict:
    """The committed build artifact of ``name`` (``contracts/build/<name>.json``)."""
    source_path(name)
    return json.loads((BUILD / f"{name}.json").read_text())


def build_all() -> list[Path]:
    """Recompile every source and rewrite its artifact."""
    BUILD.mkdir(exist_ok=True)
    written = []
    for name in SOURCES:
        target = BUILD / f"{name}.json"
        target.write_text(dumps(compile_contract(name)))
        written.append(target)
    artifact.cache_clear()
    return written
