"""SSH public keys as renters paste them: parsing, the accepted types, the fingerprint.

A key line is ``<type> <base64 blob> [comment]`` (an ``authorized_keys`` / ``id_*.pub`` line
without options). ``parse_public_key`` accepts ``ssh-ed25519``, ``ecdsa-sha2-nistp256/384/521``,
``ssh-rsa`` of at least ``MIN_RSA_BITS`` bits and ``sk-ssh-ed25519@openssh.com`` (a FIDO
security key), and refuses anything else with a ``KeyInvalid`` whose message names the problem
(the forms and the API show it as the field's error). The blob is parsed by ``cryptography``'s
``load_ssh_public_key``; for a security key the blob's own type and its application string
(``ssh:...``) are checked too, since the library returns the inner Ed25519 key and drops them.

The fingerprint is what ``ssh-keygen -lf`` prints: ``SHA256:`` and the unpadded base64 of the
SHA-256 of the blob. Pure: no database, no Django.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import struct
from dataclasses import dataclass

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import load_ssh_public_key

MIN_RSA_BITS = 2048
MAX_KEY_LENGTH = 16 * 1024  # a 16384-bit RSA key is ~2.8 KB; anything longer is not a key
SK_ED25519 = "sk-ssh-ed25519@openssh.com"
ECDSA_CURVES = {
    "ecdsa-sha2-nistp256": ec.SECP256R1,
    "ecdsa-sha2-nistp384": ec.SECP384R1,
    "ecdsa-sha2-nistp521": ec.SECP521R1,
}
ACCEPTED_TYPES = ("ssh-ed25519", *ECDSA_CURVES, "ssh-rsa", SK_ED25519)


class KeyInvalid(ValueError):
    """The text is not an accepted SSH public key; the message says why."""


@dataclass(frozen=True)
class PublicKey:
    key_type: str
    blob: str  # base64, as given
    comment: str
    fingerprint: str  # SHA256:...
    bits: int

    @property
    def line(self) -> str:
        """The key as an authorized_keys line."""
        return f"{self.key_type} {self.blob}" + (f" {self.comment}" if self.comment else "")


def fingerprint(blob: bytes) -> str:
    """``SHA256:<base64, no padding>`` of the key blob, as ``ssh-keygen -lf`` prints it."""
    return "SHA256:" + base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")


def _strings(blob: bytes) -> list[bytes]:
    """The blob's length-prefixed strings (RFC 4251 ``string``)."""
    out, at = [], 0
    while at < len(blob):
        if at + 4 > len(blob):
            raise KeyInvalid("The key data is truncated.")
        (length,) = struct.unpack(">I", blob[at : at + 4])
        at += 4
        if at + length > len(blob):
            raise KeyInvalid("The key data is truncated.")
        out.append(blob[at : at + length])
        at += length
    return out


def parse_public_key(text: str) -> PublicKey:
    """The key in ``text`` (one line), or ``KeyInvalid`` naming the problem."""
    text = (text or "").strip()
    if not text:
        raise KeyInvalid("Paste a public key, e.g. the contents of ~/.ssh/id_ed25519.pub.")
    if len(text) > MAX_KEY_LENGTH:
        raise KeyInvalid("This is too long to be an SSH public key.")
    if "\n" in text or "\r" in text:
        raise KeyInvalid("Paste one key per entry (one line).")
    if text.startswith("-----BEGIN"):
        if "PRIVATE" in text:
            raise KeyInvalid("This is a private key: paste the public key (the .pub file) and keep this one secret.")
        raise KeyInvalid("This is a PEM key: paste the OpenSSH public key line (the .pub file).")
    parts = text.split(None, 2)
    key_type = parts[0]
    if key_type not in ACCEPTED_TYPES:
        raise KeyInvalid(f"Key type {key_type[:40]!r} is not accepted; use one of {', '.join(ACCEPTED_TYPES)}.")
    if len(parts) < 2:
        raise KeyInvalid(f"The {key_type} key has no key data after its type.")
    try:
        blob = base64.b64decode(parts[1], validate=True)
    except (binascii.Error, ValueError):
        raise KeyInvalid("The key data is not valid base64.") from None
    strings = _strings(blob)
    if not strings or strings[0] != key_type.encode():
        raise KeyInvalid(f"The key data is not a {key_type} key (its type says otherwise).")
    if key_type == SK_ED25519 and (len(strings) != 3 or not strings[2].startswith(b"ssh:")):
        raise KeyInvalid("This security-key (sk-) key has no ssh: application.")
    try:
        key = load_ssh_public_key(f"{key_type} {parts[1]}".encode())
    except (ValueError, UnsupportedAlgorithm) as exc:
        reason = exc.args[0] if exc.args and isinstance(exc.args[0], str) else "invalid key data"
        raise KeyInvalid(f"The {key_type} key does not parse: {reason.rstrip('.')}.") from None
    bits = 256
    if isinstance(key, rsa.RSAPublicKey):
        bits = key.key_size
        if bits < MIN_RSA_BITS:
            raise KeyInvalid(f"This RSA key has {bits} bits; use at least {MIN_RSA_BITS} (or an ed25519 key).")
    elif isinstance(key, ec.EllipticCurvePublicKey):
        bits = key.curve.key_size
        if not isinstance(key.curve, ECDSA_CURVES[key_type]):
            raise KeyInvalid(f"The key's curve ({key.curve.name}) does not match its type {key_type}.")
    comment = parts[2].strip() if len(parts) > 2 else ""
    return PublicKey(key_type=key_type, blob=parts[1], comment=comment, fingerprint=fingerprint(blob), bits=bits)
