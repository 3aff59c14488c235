"""The chain adapter: the only code that imports web3.

- ``client``: a ``Chain`` over web3.py, either the embedded in-process EVM
  (eth-tester/py-evm, the default) or any JSON-RPC endpoint (``CHAIN_RPC_URL``
  with ``CHAIN_SIGNER_KEY``); signing, gas, nonces, receipts and typed errors
  that say whether a retry can help. Amounts cross it as integer wei;
  ``usd_to_wei``/``wei_to_usd`` are the only conversions.
- ``deploy``: deploys the contracts in ``contracts/`` and grants their roles.

- ``node``: this process's chain (``get_chain()``). The embedded chain lives
  in memory: each process rebuilds it from the stored genesis time and
  replays the outbox's signed transactions at their original block times, so
  it matches the database again after a restart.
- ``receipts``: what the books record when a call is mined (deposit shares,
  a redemption's queue id, USDai paid out), registered with the outbox by
  ``FinancingConfig.ready()``.

The outbox that drives it (``financing.services.outbox``) is the only writer.
"""
