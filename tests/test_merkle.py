"""The proof-of-revenue Merkle tree: a worked example computed by hand, and properties."""

import time
from hashlib import sha256

import pytest
from hypothesis import given
from hypothesis import strategies as st

from financing.merkle import MerkleTree, leaf_hash, verify


def test_leaf_hash_is_sha256_of_zero_prefix():
    # given a record / when hashed as a leaf / then it is SHA256(0x00 || data)
    assert leaf_hash(b"settlement:1") == sha256(b"\x00settlement:1").digest()


def test_worked_example_three_leaves():
    # given three records
    a, b, c = (sha256(b"\x00" + data).digest() for data in (b"alpha", b"bravo", b"charlie"))

    # when the tree is built
    tree = MerkleTree([a, b, c])

    # then level 1 is [H(a, b), c] (c is odd, promoted unchanged) and the root is H(H(a, b), c)
    ab = sha256(b"\x01" + min(a, b) + max(a, b)).digest()
    root = sha256(b"\x01" + min(ab, c) + max(ab, c)).digest()
    assert tree.root == root
    assert tree.root.hex() == root.hex()
    # and each proof lists the siblings that exist, bottom up
    assert tree.proof(0) == [b, c]
    assert tree.proof(1) == [a, c]
    assert tree.proof(2) == [ab]
    assert all(verify(leaf, tree.proof(i), root) for i, leaf in enumerate([a, b, c]))


def test_single_leaf_is_its_own_root():
    leaf = leaf_hash(b"only")
    tree = MerkleTree([leaf])
    assert tree.root == leaf
    assert tree.proof(0) == []
    assert verify(leaf, [], leaf)


def test_empty_tree_has_no_root():
    with pytest.raises(ValueError, match="empty tree"):
        MerkleTree([]).root  # noqa: B018


def test_leaves_must_be_leaf_hashes():
    with pytest.raises(ValueError, match="32-byte"):
        MerkleTree([b"not a hash"])


def test_proof_index_out_of_range():
    with pytest.raises(IndexError):
        MerkleTree([leaf_hash(b"x")]).proof(1)


def test_wrong_leaf_or_root_fails():
    leaves = [leaf_hash(bytes([i])) for i in range(5)]
    tree = MerkleTree(leaves)
    assert not verify(leaves[1], tree.proof(0), tree.root)
    assert not verify(leaves[0], tree.proof(0), leaves[0])


def test_hundred_thousand_leaves_build_fast():
    # given 100,000 settlements
    leaves = [leaf_hash(i.to_bytes(8, "big")) for i in range(100_000)]

    # when the tree is built
    start = time.perf_counter()
    tree = MerkleTree(leaves)
    elapsed = time.perf_counter() - start

    # then it takes well under a couple of seconds, and the deepest proof is 17 siblings
    assert elapsed < 2.0
    assert len(tree.proof(0)) == 17
    assert verify(leaves[99_999], tree.proof(99_999), tree.root)


@given(
    records=st.lists(st.binary(max_size=40), min_size=1, max_size=200),
    data=st.data(),
)
def test_every_proof_verifies_and_a_flipped_byte_fails(records, data):
    # given a random tree
    leaves = [leaf_hash(r) for r in records]
    tree = MerkleTree(leaves)

    # then every leaf's proof verifies
    for i, leaf in enumerate(leaves):
        assert verify(leaf, tree.proof(i), tree.root)

    # and flipping one byte of the leaf, of a proof step or of the root fails
    i = data.draw(st.integers(0, len(leaves) - 1), label="leaf")
    proof = tree.proof(i)
    byte = data.draw(st.integers(0, 31), label="byte")
    bit = data.draw(st.integers(0, 7), label="bit")

    def flip(value: bytes) -> bytes:
        return value[:byte] + bytes([value[byte] ^ (1 << bit)]) + value[byte + 1 :]

    assert not verify(flip(leaves[i]), proof, tree.root)
    assert not verify(leaves[i], proof, flip(tree.root))
    if proof:
        step = data.draw(st.integers(0, len(proof) - 1), label="step")
        tampered = [*proof[:step], flip(proof[step]), *proof[step + 1 :]]
        assert not verify(leaves[i], tampered, tree.root)
