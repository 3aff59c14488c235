"""Gas of the contracts' hot paths on a fresh in-process EVM (eth-tester, py-evm, Prague rules).

Deploys the committed artifacts (``contracts/build``), then reads the gas used
from each receipt: the title's ``mint``, ``set_lien`` and ``foreclose``; the
vault's first and a typical second ``deposit`` (a new holder, max approval; and
with an exact approval), ``request_redeem``, ``report`` (a profit, the accrual
restated, a gain locked), a new holder's ``deposit`` after it (every term of
the NAV live, accrual streaming and profit unlocking: its dearest path),
``deploy``, ``write_down``, ``write_up``, ``cancel_redeem`` and ``service`` of
one request; and ``anchor`` of the roots of epochs of 10, 1,000 and 100,000
synthetic settlements, built with ``financing/merkle.py`` (build time too).
Goals: mint ≤ 150k, typical deposit (and the one after a report) ≤ 120k,
anchor ≤ 60k and the same for every epoch size (calldata aside: a zero byte in
a root costs 12 gas less than a non-zero one, so the constancy check subtracts
calldata).

    python -m bench.gas
"""

import json
import time

WAD = 10**18
MAX_UINT = 2**256 - 1
EPOCH_SIZES = (10, 1_000, 100_000)


AT_BLOCK = 2**64  # "as of" the block it is mined in


def calldata_gas(data: bytes) -> int:
    return sum(4 if byte == 0 else 16 for byte in data)


def main() -> None:
    from eth_tester import EthereumTester, PyEVMBackend
    from web3 import EthereumTesterProvider, Web3

    from contracts import artifact
    from financing.merkle import MerkleTree, leaf_hash

    w3 = Web3(EthereumTesterProvider(EthereumTester(PyEVMBackend())))
    admin, registrar, loan_manager, operator, alice, bob, carol, dave, protocol, _ = w3.eth.accounts

    def send(fn, sender) -> dict:
        receipt = w3.eth.wait_for_transaction_receipt(fn.transact({"from": sender}))
        assert receipt.status == 1
        return receipt

    def deploy(name, *args):
        build = artifact(name)
        factory = w3.eth.contract(abi=build["abi"], bytecode=build["bytecode"])
        receipt = w3.eth.wait_for_transaction_receipt(factory.constructor(*args).transact({"from": admin}))
        return w3.eth.contract(address=receipt.contractAddress, abi=build["abi"]), receipt.gasUsed

    usdai, usdai_deploy = deploy("USDai")
    vault, vault_deploy = deploy("SUSDai", usdai.address, 7 * 24 * 3600, WAD)
    nft, nft_deploy = deploy("CaliberNFT", "https://infrafi.example/caliber/", protocol)
    anchor, anchor_deploy = deploy("RevenueAnchor")
    send(usdai.functions.set_minter(vault.address, True), admin)
    send(vault.functions.grantRole(vault.functions.OPERATOR_ROLE().call(), operator), admin)
    send(nft.functions.grantRole(nft.functions.REGISTRAR_ROLE().call(), registrar), admin)
    send(nft.functions.grantRole(nft.functions.LOAN_MANAGER_ROLE().call(), loan_manager), admin)
    send(anchor.functions.grantRole(anchor.functions.OPERATOR_ROLE().call(), operator), admin)
    for holder in (alice, bob, carol, dave):
        send(usdai.functions.mint(holder, 1_000_000 * WAD), admin)
    send(usdai.functions.approve(vault.address, MAX_UINT), alice)
    send(usdai.functions.approve(vault.address, MAX_UINT), bob)
    send(usdai.functions.approve(vault.address, MAX_UINT), dave)
    send(usdai.functions.approve(vault.address, 1_000 * WAD), carol)

    gas = {
        "deploy_usdai": usdai_deploy,
        "deploy_susdai": vault_deploy,
        "deploy_caliber_nft": nft_deploy,
        "deploy_revenue_anchor": anchor_deploy,
        "mint": send(nft.functions.mint(alice, 1, bytes(range(1, 33))), registrar).gasUsed,
        "set_lien": send(nft.functions.set_lien(1, True), loan_manager).gasUsed,
        "foreclose": send(nft.functions.foreclose(1), loan_manager).gasUsed,
        "deposit_first": send(vault.functions.deposit(1_000 * WAD, alice), alice).gasUsed,
        "deposit_second": send(vault.functions.deposit(1_000 * WAD, bob), bob).gasUsed,
        "deposit_second_exact_allowance": send(vault.functions.deposit(1_000 * WAD, carol), carol).gasUsed,
        "request_redeem": send(vault.functions.request_redeem(100 * WAD), bob).gasUsed,
        "report": send(vault.functions.report(10 * WAD, 5 * WAD, 10**12, AT_BLOCK), operator).gasUsed,
        "deposit_after_report": send(vault.functions.deposit(1_000 * WAD, dave), dave).gasUsed,
        "deploy": send(vault.functions.deploy(1_000 * WAD), operator).gasUsed,
        "write_down": send(vault.functions.write_down(1 * WAD), operator).gasUsed,
        "write_up": send(vault.functions.write_up(1 * WAD), operator).gasUsed,
    }
    send(vault.functions.request_redeem(100 * WAD), bob)
    gas["cancel_redeem"] = send(vault.functions.cancel_redeem(1), bob).gasUsed
    gas["service_one"] = send(vault.functions.service(1), operator).gasUsed

    epochs = []
    for epoch, size in enumerate(EPOCH_SIZES, start=1):
        records = [f"settlement:{epoch}:{i}:{i * 7919 % 100_000}".encode() for i in range(size)]
        leaves = [leaf_hash(record) for record in records]
        start = time.perf_counter()
        tree = MerkleTree(leaves)
        build_s = time.perf_counter() - start
        receipt = send(anchor.functions.anchor(epoch, tree.root), operator)
        tx_input = bytes(w3.eth.get_transaction(receipt.transactionHash).input)
        assert anchor.functions.verify(epoch, records[-1], tree.proof(size - 1)).call()
        epochs.append(
            {
                "settlements": size,
                "tree_build_seconds": round(build_s, 4),
                "proof_length": len(tree.proof(0)),
                "anchor_gas": receipt.gasUsed,
                "anchor_gas_less_calldata": receipt.gasUsed - calldata_gas(tx_input),
            }
        )

    goals = {
        "mint_ok": gas["mint"] <= 150_000,
        "deposit_ok": max(gas["deposit_second"], gas["deposit_after_report"]) <= 120_000,
        "anchor_ok": max(e["anchor_gas"] for e in epochs) <= 60_000,
        "anchor_constant": len({e["anchor_gas_less_calldata"] for e in epochs}) == 1,
    }

    print("Gas used (from receipts), fresh in-process EVM:")
    for key, value in gas.items():
        print(f"  {key:<32} {value:>10,}")
    for e in epochs:
        print(
            f"  anchor, {e['settlements']:>7,} settlements      {e['anchor_gas']:>10,}"
            f"  (less calldata {e['anchor_gas_less_calldata']:,}; tree built in {e['tree_build_seconds']:.3f} s,"
            f" proofs of {e['proof_length']} hashes)"
        )
    print("Goals: " + ", ".join(f"{k}={'yes' if v else 'NO'}" for k, v in goals.items()))
    print(json.dumps({"benchmark": "gas", "gas": gas, "anchor": epochs, "goals": goals}))


if __name__ == "__main__":
    main()
