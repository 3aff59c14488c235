"""The committed build artifacts match their sources: a stale ``contracts/build/*.json`` fails here.

Fix with ``python -m contracts`` and commit the rewritten JSON.
"""

import hashlib

import pytest
import vyper

import contracts

STALE = "stale artifact: run `python -m contracts` and commit contracts/build/"


@pytest.mark.parametrize("name", contracts.SOURCES)
def test_committed_artifact_matches_a_fresh_compile(name):
    # given the committed artifact
    committed = contracts.artifact(name)

    # when the source is compiled again
    fresh = contracts.compile_contract(name)

    # then bytecode, runtime and ABI are the same, from the same source and compiler
    assert committed["bytecode"] == fresh["bytecode"], STALE
    assert committed["bytecode_runtime"] == fresh["bytecode_runtime"], STALE
    assert committed["abi"] == fresh["abi"], STALE
    assert committed["source_sha256"] == hashlib.sha256(contracts.source_path(name).read_bytes()).hexdigest(), STALE
    assert committed["vyper"] == vyper.__version__
    assert committed["contract"] == name


@pytest.mark.parametrize("name", contracts.SOURCES)
def test_committed_artifact_is_in_canonical_form(name):
    # sorted keys, indent 1, a trailing newline: what `python -m contracts` writes
    path = contracts.BUILD / f"{name}.json"
    assert path.read_text() == contracts.dumps(contracts.artifact(name))


def test_runtime_bytecode_fits_the_contract_size_limit():
    # EIP-170: 24,576 bytes of runtime code
    for name in contracts.SOURCES:
        assert len(bytes.fromhex(contracts.artifact(name)["bytecode_runtime"][2:])) <= 24_576, name
