"""SSH public keys: parsing and fingerprints (``scheduler.ssh_keys``), the renter's key page and API.

The fingerprints below are what ``ssh-keygen -lf`` printed for these keys."""

import base64
import struct

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from scheduler import ssh_keys
from scheduler.models import SshKey
from tests.api_errors import field_errors
from tests.factories import make_renter

ED25519 = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAILZ2eQmRakKJBw7RwXJVpfmBtG6T4OMjc92TWGDchAa4 ana@laptop"
ED25519_FINGERPRINT = "SHA256:UeQP7sSmjis8SvrLusYdgIM71OaL3QCoW0Uy/wr2N/U"
ECDSA384 = (
    "ecdsa-sha2-nistp384 AAAAE2VjZHNhLXNoYTItbmlzdHAzODQAAAAIbmlzdHAzODQAAABhBFQuriVxFv4yCItes3VIs1wxbIcf4vuIxUzF3qYY"
    "bHXaU1ORgNCR4oAER+NxUtAAcFpF7LqEK6KTP0xnpkexz1/C/vrtOimUZwB8wd0IXRQW2usRlAqICWcdEb3wH4vskg=="
)
ECDSA384_FINGERPRINT = "SHA256:W4FIcdg+9kGDkPVhfsmiaHCZwZUyLc6LD8E6NDPK8DQ"


def _openssh(key) -> str:
    return key.public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode()


def _string(data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + data


def _sk_key(application: bytes = b"ssh:") -> str:
    blob = _string(ssh_keys.SK_ED25519.encode()) + _string(b"\x07" * 32) + _string(application)
    return f"{ssh_keys.SK_ED25519} {base64.b64encode(blob).decode()} yubikey"


def test_parses_the_accepted_types_with_ssh_keygen_fingerprints():
    key = ssh_keys.parse_public_key(f"  {ED25519}\n")
    assert (key.key_type, key.comment, key.fingerprint, key.bits) == (
        "ssh-ed25519",
        "ana@laptop",
        ED25519_FINGERPRINT,
        256,
    )
    assert key.line == ED25519
    ecdsa = ssh_keys.parse_public_key(ECDSA384)
    assert (ecdsa.fingerprint, ecdsa.bits, ecdsa.comment) == (ECDSA384_FINGERPRINT, 384, "")
    rsa_key = ssh_keys.parse_public_key(_openssh(rsa.generate_private_key(65537, 2048).public_key()) + " work")
    assert (rsa_key.key_type, rsa_key.bits, rsa_key.comment) == ("ssh-rsa", 2048, "work")
    p256 = ssh_keys.parse_public_key(_openssh(ec.generate_private_key(ec.SECP256R1()).public_key()))
    assert p256.key_type == "ecdsa-sha2-nistp256"
    sk = ssh_keys.parse_public_key(_sk_key())
    assert sk.key_type == ssh_keys.SK_ED25519 and sk.comment == "yubikey" and sk.fingerprint.startswith("SHA256:")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "Paste a public key"),
        ("ssh-dss AAAAB3NzaC1kc3MAAACBAP== old", "Key type 'ssh-dss' is not accepted"),
        ("ssh-ed25519", "has no key data"),
        ("ssh-ed25519 not*base64", "not valid base64"),
        ("ssh-rsa " + ED25519.split()[1], "not a ssh-rsa key"),
        ("ssh-ed25519 " + base64.b64encode(_string(b"ssh-ed25519") + _string(b"x")).decode(), "does not parse"),
        ("-----BEGIN OPENSSH PRIVATE KEY-----", "This is a private key"),
        (f"{ED25519}\n{ECDSA384}", "one key per entry"),
        (_sk_key(application=b"web:"), "no ssh: application"),
    ],
)
def test_refuses_what_is_not_an_accepted_key_and_says_why(text, message):
    with pytest.raises(ssh_keys.KeyInvalid) as exc:
        ssh_keys.parse_public_key(text)
    assert message in str(exc.value)


def test_refuses_short_rsa_keys():
    short = _openssh(rsa.generate_private_key(65537, 1024).public_key())
    with pytest.raises(ssh_keys.KeyInvalid) as exc:
        ssh_keys.parse_public_key(short)
    assert str(exc.value) == "This RSA key has 1024 bits; use at least 2048 (or an ed25519 key)."


def test_key_page_adds_lists_and_deletes(renter, client_as):
    client = client_as(renter)
    assert 'href="/renter/ssh-keys/"' in client.get("/renter/").content.decode()
    page = client.get("/renter/ssh-keys/")
    assert page.status_code == 200 and b"No keys yet." in page.content
    added = client.post("/renter/ssh-keys/", {"name": "", "public_key": ED25519})
    assert added.status_code == 302
    key = SshKey.objects.get(user=renter)
    assert (key.name, key.fingerprint, key.public_key) == ("ana@laptop", ED25519_FINGERPRINT, ED25519)
    assert ED25519_FINGERPRINT in client.get("/renter/ssh-keys/").content.decode()

    again = client.post("/renter/ssh-keys/", {"name": "dup", "public_key": ED25519})
    assert again.status_code == 400 and "You already added this key" in again.content.decode()
    bad = client.post("/renter/ssh-keys/", {"name": "x", "public_key": "ssh-ed25519 AAAA"})
    assert bad.status_code == 400 and "The key data is truncated." in bad.content.decode()
    assert SshKey.objects.count() == 1

    other = make_renter()
    assert client_as(other).post("/renter/ssh-keys/", {"delete": key.pk}).status_code == 404
    assert client.post("/renter/ssh-keys/", {"delete": key.pk}).status_code == 302
    assert not SshKey.objects.exists()


def test_key_api(renter, api_as):
    api = api_as(renter)
    created = api.post("/api/v1/ssh-keys/", {"name": "laptop", "public_key": ECDSA384}, format="json")
    assert created.status_code == 201, created.content
    body = created.json()
    assert (body["name"], body["key_type"], body["fingerprint"], body["bits"]) == (
        "laptop",
        "ecdsa-sha2-nistp384",
        ECDSA384_FINGERPRINT,
        384,
    )
    assert [k["fingerprint"] for k in api.get("/api/v1/ssh-keys/").json()] == [ECDSA384_FINGERPRINT]
    bad = api.post("/api/v1/ssh-keys/", {"public_key": "ssh-rsa AAAA"}, format="json")
    assert bad.status_code == 400 and "public_key" in field_errors(bad)
    # Another renter sees none of them and cannot delete them.
    other = api_as(make_renter())
    assert other.get("/api/v1/ssh-keys/").json() == []
    assert other.delete(f"/api/v1/ssh-keys/{body['id']}/").status_code == 404
    assert api.delete(f"/api/v1/ssh-keys/{body['id']}/").status_code == 204
    assert not SshKey.objects.exists()
