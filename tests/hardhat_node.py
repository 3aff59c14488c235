"""pytest plugin: a real Hardhat 2 JSON-RPC node on 127.0.0.1 for tests that talk to a chain.

The node is the ``hardhat`` package pinned in ``contracts/hardhat/package.json``
(installed by ``npm ci`` there: ``make test`` and ``.ci/run`` both do it). It
serves Hardhat's built-in network as configured in
``contracts/hardhat/hardhat.config.js``: chain id 31337, automine (each
transaction is mined in its own block at once), and the 20 default accounts of
the standard test mnemonic, 10,000 ETH each.

Fixture:

* ``hardhat_rpc_url`` (session): ``"http://127.0.0.1:<port>"`` of a node started
  for the test session on a free port, and stopped (its whole process group)
  when the session ends. The chain is shared by every test of the session:
  use fresh addresses rather than relying on absolute balances or nonces.

If the node does not answer ``eth_chainId`` within ``START_TIMEOUT_SECONDS``,
the fixture fails (not skips) with the tail of the node's log.

``HARDHAT_KEYS`` holds the private keys of accounts #0..#2 (as the node prints
them at start), for signing transactions locally.
"""

import json
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

HARDHAT_DIR = Path(__file__).resolve().parent.parent / "contracts" / "hardhat"
HARDHAT_BIN = HARDHAT_DIR / "node_modules" / ".bin" / "hardhat"
START_TIMEOUT_SECONDS = 60
CHAIN_ID = 31337

# Accounts #0..#2 of "test test test test test test test test test test test junk"
# (m/44'/60'/0'/0/i): publicly known keys, never to be used outside a local chain.
HARDHAT_KEYS = (
    "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80",  # 0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266
    "0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d",  # 0x70997970C51812dc3A010C7d01b50e0d17dc79C8
    "0x5de4111afa1a4b94908f83103eb1f1706367c2e68ca870fc3fb9a804cdab365a",  # 0x3C44CdDdB6a900fa2b585dd299e03d12FA4293BC
)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _chain_id(url: str) -> int | None:
    """The node's ``eth_chainId``, or None while it does not answer."""
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "eth_chainId", "params": []}).encode()
    request = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"}, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=2) as response:
            return int(json.load(response)["result"], 16)
    except (OSError, ValueError, KeyError):
        return None


def _tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError as exc:
        return f"(no log: {exc})"


def _stop(process: subprocess.Popen) -> None:
    """Terminate the node's process group (npx-style shims may fork), then kill it if it lingers."""
    for sig, wait in ((signal.SIGTERM, 10), (signal.SIGKILL, 5)):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            break
        try:
            process.wait(timeout=wait)
            break
        except subprocess.TimeoutExpired:
            continue


@pytest.fixture(scope="session")
def hardhat_rpc_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    if not HARDHAT_BIN.exists():
        pytest.fail(
            f"{HARDHAT_BIN} is missing: run `npm ci` in {HARDHAT_DIR} (`make test` does it)",
            pytrace=False,
        )
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    log_path = tmp_path_factory.mktemp("hardhat") / "node.log"
    env = {
        **os.environ,
        "CI": "true",
        "HARDHAT_DISABLE_TELEMETRY_PROMPT": "true",
        "HARDHAT_HIDE_SOLIDITY_SURVEY_MESSAGE": "true",
        "NO_COLOR": "1",
    }
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [str(HARDHAT_BIN), "node", "--hostname", "127.0.0.1", "--port", str(port)],
            cwd=HARDHAT_DIR,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while True:
            chain_id = _chain_id(url)
            if chain_id is not None:
                break
            if process.poll() is not None:
                pytest.fail(
                    f"hardhat node exited with {process.returncode} before answering; log {log_path}:\n"
                    + _tail(log_path),
                    pytrace=False,
                )
            if time.monotonic() > deadline:
                pytest.fail(
                    f"hardhat node did not answer eth_chainId on {url} within {START_TIMEOUT_SECONDS} s;"
                    f" log {log_path}:\n" + _tail(log_path),
                    pytrace=False,
                )
            time.sleep(0.2)
        if chain_id != CHAIN_ID:
            pytest.fail(f"hardhat node on {url} reports chain id {chain_id}, expected {CHAIN_ID}", pytrace=False)
        yield url
    finally:
        _stop(process)
