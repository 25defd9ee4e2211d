"""Raw HTTP helpers for the security, limits and fuzz tests: bytes in, parsed status out."""

from __future__ import annotations

import datetime as dt
import ssl
from pathlib import Path

import trio


def status_of(response: bytes) -> int | None:
    """The status code of a raw HTTP/1.1 response, or None if there is none."""
    if not response.startswith(b"HTTP/1.1 "):
        return None
    return int(response[9:12])


def header(response: bytes, name: bytes) -> bytes | None:
    head = response.partition(b"\r\n\r\n")[0]
    for line in head.split(b"\r\n")[1:]:
        k, _, v = line.partition(b":")
        if k.strip().lower() == name.lower():
            return v.strip()
    return None


def _complete(buf: bytes) -> bool:
    """A whole response is in `buf`: a head with its full content-length body, or a 101."""
    head, sep, body = buf.partition(b"\r\n\r\n")
    if not sep:
        return False
    n = header(buf, b"content-length")
    return (n is not None and len(body) >= int(n)) or head.startswith(b"HTTP/1.1 101")


async def read_until_closed(stream: trio.abc.Stream, limit: float = 5.0, *, stop=lambda buf: False) -> bytes:
    """Everything the server sends until it closes (or until `stop(buf)` holds)."""
    buf = b""
    with trio.fail_after(limit):
        while True:
            try:
                data = await stream.receive_some(65536)
            except trio.BrokenResourceError:
                return buf
            if not data:
                return buf
            buf += data
            if stop(buf):
                return buf


async def exchange(port: int, raw: bytes, *, limit: float = 5.0) -> bytes:
    """Send `raw`, return everything the server sends until it closes (or a full
    response with a body, for keep-alive answers)."""
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        await stream.send_all(raw)
        return await read_until_closed(stream, limit, stop=_complete)


def get(path: str, port: int, *headers: str) -> bytes:
    lines = [f"GET {path} HTTP/1.1", f"Host: 127.0.0.1:{port}", *headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def self_signed_cert(tmp: Path, hostname: str = "127.0.0.1") -> tuple[Path, Path]:
    """A throwaway certificate for 127.0.0.1 (and localhost), made in-process."""
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hostname)])
    now = dt.datetime.now(dt.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(hostname)), x509.DNSName("localhost")]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    certfile, keyfile = tmp / "cert.pem", tmp / "key.pem"
    certfile.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    keyfile.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    return certfile, keyfile


def client_context(certfile: Path) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(certfile))
    return ctx
