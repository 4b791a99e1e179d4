"""Local PKI: a CA, a TLS server certificate for 127.0.0.1/localhost, and the token signing key.

Generated once into `.local/` and reused; safe to call from several processes at once (a lock file
serialises generation, files are written to a temp name and `os.replace`d into place).

Trust the CA (`ca.pem`) wherever a local HTTPS endpoint is called: MSAL's `requests.Session(verify=...)`,
the Azure SDK transports, aiohttp `ssl.create_default_context(cafile=...)`.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import ipaddress
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from shared.config import LOCAL_DIR

_VALID_DAYS = 3650


@dataclass(frozen=True)
class LocalCerts:
    """Paths of the generated PEM files."""

    directory: Path
    ca_pem: Path
    ca_key_pem: Path
    server_cert_pem: Path
    server_key_pem: Path
    signing_key_pem: Path

    @classmethod
    def in_directory(cls, directory: Path) -> LocalCerts:
        return cls(
            directory=directory,
            ca_pem=directory / "ca.pem",
            ca_key_pem=directory / "ca-key.pem",
            server_cert_pem=directory / "server.pem",
            server_key_pem=directory / "server-key.pem",
            signing_key_pem=directory / "signing-key.pem",
        )

    def all_paths(self) -> tuple[Path, ...]:
        return (self.ca_pem, self.ca_key_pem, self.server_cert_pem, self.server_key_pem, self.signing_key_pem)

    def exist(self) -> bool:
        return all(p.is_file() and p.stat().st_size > 0 for p in self.all_paths())


def ensure_local_certs(directory: Path = LOCAL_DIR) -> LocalCerts:
    """Create the local CA, server certificate and signing key in `directory` unless already there."""
    directory = Path(directory)
    certs = LocalCerts.in_directory(directory)
    if certs.exist():
        return certs
    directory.mkdir(parents=True, exist_ok=True)
    with _file_lock(directory / ".certs.lock"):
        if certs.exist():  # another process finished while we waited for the lock
            return certs
        _generate(certs)
    return certs


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    with open(path, "a+") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def _generate(certs: LocalCerts) -> None:
    now = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5)  # small back-dating tolerates clock skew
    not_after = now + dt.timedelta(days=_VALID_DAYS)

    ca_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "bc-dataverse-sync local CA")])
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )

    server_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    server_cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
        .issuer_name(ca_name)
        .public_key(server_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(not_after)
        .add_extension(
            x509.SubjectAlternativeName(
                [
                    x509.DNSName("localhost"),
                    x509.IPAddress(ipaddress.IPv4Address("127.0.0.1")),
                    x509.IPAddress(ipaddress.IPv6Address("::1")),
                ]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )

    signing_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)

    # Keys and certs are written before the CA cert so `exist()` is only true once everything is there.
    _atomic_write(certs.ca_key_pem, _key_pem(ca_key), private=True)
    _atomic_write(certs.server_key_pem, _key_pem(server_key), private=True)
    _atomic_write(certs.signing_key_pem, _key_pem(signing_key), private=True)
    _atomic_write(certs.server_cert_pem, server_cert.public_bytes(serialization.Encoding.PEM))
    _atomic_write(certs.ca_pem, ca_cert.public_bytes(serialization.Encoding.PEM))


def _key_pem(key: rsa.RSAPrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _atomic_write(path: Path, data: bytes, *, private: bool = False) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.chmod(tmp, 0o600 if private else 0o644)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def main() -> None:
    certs = ensure_local_certs()
    print(certs.ca_pem)


if __name__ == "__main__":
    main()
