"""The proxy's lean HTTP/1.1 client (``scheduler.proxy.h1``) over real sockets.

Against a raw asyncio server that sends exact bytes: keep-alive reuse, a reused connection the
server closed while idle (sent again on a new one), a streamed request body sent chunked, an
answer that ends with the connection, ``HEAD`` with a ``Content-Length``, a ``103 Early Hints``
skipped, a 2 MiB answer read through back-pressure, a malformed answer and CR/LF injection refused.

Against an aiohttp server over TLS that requires a client certificate: the path a kubeconfig
with ``certificate-authority-data`` and ``client-certificate-data`` takes
(``KubernetesBackend.proxy_target`` -> ``h1.Pool``), with the pinned address in the URL and
the certificate checked against the name; a server whose certificate another CA signed is
refused."""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import ipaddress
import ssl
from collections.abc import AsyncIterator

import pytest
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from scheduler.proxy import h1


def run(coroutine):
    return asyncio.run(asyncio.wait_for(coroutine, 20))


class RawServer:
    """Reads one request head (and a body, by length or chunks) per exchange and answers with
    ``answers`` in turn; counts connections."""

    def __init__(self, answers: list[bytes], *, close_after: bool = False) -> None:
        self.answers = list(answers)
        self.close_after = close_after
        self.connections = 0
        self.requests: list[bytes] = []
        self.server: asyncio.AbstractServer | None = None

    async def start(self) -> str:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        port = self.server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while self.answers:
                head = await reader.readuntil(b"\r\n\r\n")
                body = b""
                lowered = head.lower()
                if b"content-length:" in lowered:
                    length = int(lowered.split(b"content-length:")[1].split(b"\r\n")[0])
                    body = await reader.readexactly(length)
                elif b"transfer-encoding: chunked" in lowered:
                    while True:
                        size = int((await reader.readuntil(b"\r\n")).strip(), 16)
                        chunk = await reader.readexactly(size + 2)
                        if size == 0:
                            break
                        body += chunk[:-2]
                self.requests.append(head + body)
                writer.write(self.answers.pop(0))
                await writer.drain()
                if self.close_after:
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    def close(self) -> None:
        if self.server is not None:
            self.server.close()


def pool_for(url: str) -> h1.Pool:
    return h1.Pool(url, ssl=None, server_hostname=None, limit=4, connect_timeout=5)


OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Type: text/plain\r\n\r\nok"


def test_keep_alive_reuses_one_connection_and_sends_host_and_length():
    async def scenario():
        server = RawServer([OK, OK])
        url = await server.start()
        pool = pool_for(url)
        try:
            for body in (None, b'{"a":1}'):
                async with await pool.request("POST", "/x?y=1", {"x-a": "b"}, body) as answer:
                    assert answer.status == 200 and await answer.read() == b"ok"
                    assert answer.header(b"content-type") == "text/plain" and answer.content_length == 2
        finally:
            pool.close()
            server.close()
        return server, url

    server, url = run(scenario())
    assert server.connections == 1
    first, second = server.requests
    assert first.startswith(b"POST /x?y=1 HTTP/1.1\r\n") and f"Host: {url[7:]}\r\n".encode() in first
    assert b"x-a: b\r\n" in first and b"content-length" not in first.lower()
    assert second.endswith(b'Content-Length: 7\r\n\r\n{"a":1}')


def test_a_connection_the_server_closed_while_idle_is_replaced_once():
    async def scenario():
        server = RawServer([OK, OK], close_after=True)  # every connection serves one answer
        url = await server.start()
        pool = pool_for(url)
        try:
            async with await pool.request("GET", "/", {}, None) as answer:
                assert await answer.read() == b"ok"
            await asyncio.sleep(0.05)  # the server's close reaches us
            async with await pool.request("GET", "/", {}, None) as answer:
                assert answer.status == 200 and await answer.read() == b"ok"
        finally:
            pool.close()
            server.close()
        return server

    assert run(scenario()).connections == 2


def test_a_streamed_body_goes_chunked_and_an_answer_without_length_ends_with_the_connection():
    async def chunks() -> AsyncIterator[bytes]:
        for part in (b"alpha-", b"", b"beta-", b"gamma"):
            yield part

    async def scenario():
        server = RawServer([b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nuntil the end"], close_after=True)
        url = await server.start()
        pool = pool_for(url)
        try:
            async with await pool.request("PUT", "/up", {}, chunks()) as answer:
                assert await answer.read() == b"until the end" and answer.at_eof()
        finally:
            pool.close()
            server.close()
        return server

    server = run(scenario())
    assert b"Transfer-Encoding: chunked" in server.requests[0]
    assert server.requests[0].endswith(b"alpha-beta-gamma")


def test_head_has_no_body_and_early_hints_are_skipped():
    async def scenario():
        server = RawServer(
            [
                b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n",
                b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\n\r\n"
                b"HTTP/1.1 201 Created\r\nContent-Length: 3\r\n\r\nnew",
            ]
        )
        url = await server.start()
        pool = pool_for(url)
        try:
            async with await pool.request("HEAD", "/", {}, None) as answer:
                assert answer.status == 200 and answer.content_length == 1000 and await answer.read() == b""
            async with await pool.request("GET", "/", {}, None) as answer:
                assert answer.status == 201 and answer.header(b"link") == "" and await answer.read() == b"new"
        finally:
            pool.close()
            server.close()
        return server

    assert run(scenario()).connections == 2  # HEAD's connection is not reused


def test_a_big_answer_is_read_whole_through_back_pressure():
    body = bytes(range(256)) * 8192  # 2 MiB

    async def scenario():
        server = RawServer([b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%b" % (len(body), body)])
        url = await server.start()
        pool = pool_for(url)
        try:
            async with await pool.request("GET", "/big", {}, None) as answer:
                received = b""
                async for chunk in answer.iter_any():
                    received += chunk
                    await asyncio.sleep(0)  # a slow reader
                return received
        finally:
            pool.close()
            server.close()

    assert run(scenario()) == body


def test_a_malformed_answer_and_header_injection_are_refused():
    async def scenario():
        server = RawServer([b"NOT HTTP AT ALL\r\n\r\n"])
        url = await server.start()
        pool = pool_for(url)
        try:
            with pytest.raises(h1.HttpError):
                await pool.request("GET", "/", {}, None)
            with pytest.raises(h1.HttpError, match="line break"):
                await pool.request("GET", "/", {"x-a": "b\r\nX-Evil: 1"}, None)
            with pytest.raises(h1.HttpError, match="line break"):
                await pool.request("GET", "/a b", {}, None)
        finally:
            pool.close()
            server.close()

    run(scenario())


# -- TLS with the cluster's CA and a client certificate, as a kubeconfig gives them --


def _certificate(name: str, issuer_key, issuer_name, key, *, ca: bool, sans=()):
    now = dt.datetime.now(dt.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
        .issuer_name(issuer_name or x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(list(sans)), critical=False)
    return builder.sign(issuer_key or key, hashes.SHA256())


def _pem(certificate) -> bytes:
    return certificate.public_bytes(serialization.Encoding.PEM)


def _key_pem(key) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


@pytest.fixture
def pki(tmp_path):
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = _certificate("cluster-ca", None, None, ca_key, ca=True)
    server_key = ec.generate_private_key(ec.SECP256R1())
    server = _certificate(
        "kube-apiserver",
        ca_key,
        ca.subject,
        server_key,
        ca=False,
        sans=[x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))],
    )
    client_key = ec.generate_private_key(ec.SECP256R1())
    client = _certificate("system:serviceaccount:infrafi", ca_key, ca.subject, client_key, ca=False)
    other_key = ec.generate_private_key(ec.SECP256R1())
    other_ca = _certificate("another-ca", None, None, other_key, ca=True)
    (tmp_path / "ca.pem").write_bytes(_pem(ca))
    (tmp_path / "server.pem").write_bytes(_pem(server) + _key_pem(server_key))
    return {
        "dir": tmp_path,
        "ca": _pem(ca),
        "other_ca": _pem(other_ca),
        "client": _pem(client),
        "client_key": _key_pem(client_key),
    }


async def _tls_server(pki) -> tuple[web.AppRunner, int, list]:
    seen: list = []

    async def handler(request: web.Request) -> web.Response:
        peer = request.transport.get_extra_info("peercert")
        subject = dict(item[0] for item in peer["subject"]) if peer else {}
        seen.append((request.path, subject.get("commonName"), request.headers.get("Authorization")))
        return web.Response(text="over tls")

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(pki["dir"] / "ca.pem"))
    context.load_cert_chain(str(pki["dir"] / "server.pem"))
    context.verify_mode = ssl.CERT_REQUIRED
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=context)
    await site.start()
    return runner, site._server.sockets[0].getsockname()[1], seen


def _kubeconfig(port: int, ca: bytes, pki) -> dict:
    encode = lambda data: base64.b64encode(data).decode()  # noqa: E731
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "c",
                "cluster": {"server": f"https://localhost:{port}", "certificate-authority-data": encode(ca)},
            }
        ],
        "users": [
            {
                "name": "u",
                "user": {
                    "client-certificate-data": encode(pki["client"]),
                    "client-key-data": encode(pki["client_key"]),
                },
            }
        ],
        "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u"}}],
        "current-context": "c",
    }


def test_tls_with_the_clusters_ca_and_client_certificate(pki):
    from scheduler.backends.kubernetes import KubernetesBackend

    async def scenario():
        runner, port, seen = await _tls_server(pki)
        try:
            target = KubernetesBackend.proxy_target(_kubeconfig(port, pki["ca"], pki), private_network_allowed=True)
            assert target.base_url == f"https://localhost:{port}" and target.ssl is not None
            # As the backend gives it (a private address an operator allowed: not pinned), and as
            # a pinned public one would be: the address in the URL, the name for TLS.
            for base_url, name in (
                (target.base_url, target.server_hostname),
                (f"https://127.0.0.1:{port}", "localhost"),
            ):
                pool = h1.Pool(base_url, ssl=target.ssl, server_hostname=name, limit=2, connect_timeout=5)
                try:
                    async with await pool.request("GET", "/api/v1/x", dict(target.headers), None) as answer:
                        assert answer.status == 200 and await answer.read() == b"over tls"
                finally:
                    pool.close()
            pool = h1.Pool(
                f"https://127.0.0.1:{port}", ssl=target.ssl, server_hostname="api.example", limit=2, connect_timeout=5
            )
            try:  # the certificate does not name api.example
                with pytest.raises(h1.HttpError, match="SSL"):
                    await pool.request("GET", "/api/v1/x", {}, None)
            finally:
                pool.close()

            wrong = KubernetesBackend.proxy_target(
                _kubeconfig(port, pki["other_ca"], pki), private_network_allowed=True
            )
            pool = h1.Pool(
                wrong.base_url, ssl=wrong.ssl, server_hostname=wrong.server_hostname, limit=2, connect_timeout=5
            )
            try:
                with pytest.raises(h1.HttpError, match="SSL"):
                    await pool.request("GET", "/api/v1/x", {}, None)
            finally:
                pool.close()
        finally:
            await runner.cleanup()
        return seen

    seen = run(scenario())
    assert seen == [("/api/v1/x", "system:serviceaccount:infrafi", None)] * 2
