"""local.certs: one CA + server cert + signing key, generated once, safe under concurrent callers."""

from __future__ import annotations

import ipaddress
import subprocess
import sys
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import padding

from local.certs import ensure_local_certs
from shared.config import PROJECT_ROOT


def test_server_cert_is_signed_by_ca_for_loopback(tmp_path: Path) -> None:
    certs = ensure_local_certs(tmp_path)
    ca = x509.load_pem_x509_certificate(certs.ca_pem.read_bytes())
    server = x509.load_pem_x509_certificate(certs.server_cert_pem.read_bytes())
    assert server.issuer == ca.subject
    ca.public_key().verify(  # type: ignore[union-attr]
        server.signature,
        server.tbs_certificate_bytes,
        padding.PKCS1v15(),  # type: ignore[call-arg]
        server.signature_hash_algorithm,  # type: ignore[call-arg]
    )
    san = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert ipaddress.IPv4Address("127.0.0.1") in san.get_values_for_type(x509.IPAddress)
    assert "localhost" in san.get_values_for_type(x509.DNSName)
    assert certs.signing_key_pem.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")


def test_idempotent(tmp_path: Path) -> None:
    first = ensure_local_certs(tmp_path)
    before = {p: p.read_bytes() for p in first.all_paths()}
    second = ensure_local_certs(tmp_path)
    assert second == first
    assert {p: p.read_bytes() for p in second.all_paths()} == before


def test_concurrent_processes_agree_on_one_ca(tmp_path: Path) -> None:
    code = "import sys; from pathlib import Path; from local.certs import ensure_local_certs; " + (
        "sys.stdout.write(ensure_local_certs(Path(sys.argv[1])).ca_pem.read_text())"
    )
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", code, str(tmp_path)], cwd=PROJECT_ROOT, stdout=subprocess.PIPE, text=True
        )
        for _ in range(4)
    ]
    outputs = [p.communicate(timeout=60)[0] for p in processes]
    assert all(p.returncode == 0 for p in processes)
    assert len(set(outputs)) == 1 and outputs[0].startswith("-----BEGIN CERTIFICATE-----")
    assert outputs[0] == (tmp_path / "ca.pem").read_text()
