"""Throwaway certificates for an API server on loopback: a CA, the server's certificate, an admin client's.

A Kubernetes API server only serves HTTPS and, started on its own, can authenticate a client only by a certificate
its `--client-ca-file` signed. So each start makes a fresh CA (valid for a day, never reused), a server certificate
for 127.0.0.1 and localhost, and a client certificate whose organization is `system:masters`, the group the
delegated authorizer lets do anything without asking anyone.
"""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

ADMIN_GROUP = "system:masters"
VALID_FOR = datetime.timedelta(days=1)


@dataclass(frozen=True)
class LoopbackPKI:
    """PEM files under one directory: the CA, the server's pair, the admin client's pair."""

    ca_cert: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


def write_loopback_pki(directory: Path, client_name: str = "homefeed-admin") -> LoopbackPKI:
    """Create a CA and sign a server certificate (127.0.0.1, localhost) and a client certificate (CN=`client_name`,
    O=system:masters) with it; the keys are written readable by this user only."""
    directory.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.UTC)
    # A little slack backwards: a server that checks validity against a clock a second behind still accepts them.
    not_before, not_after = now - datetime.timedelta(minutes=5), now + VALID_FOR

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "homefeed-loopback-ca")])
    ca = (
        _builder(ca_name, ca_name, ca_key.public_key(), not_before, not_after)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(cert_sign=True), critical=True)
        .sign(ca_key, hashes.SHA256())
    )

    def leaf(subject: x509.Name, usage: ExtendedKeyUsageOID, san: x509.SubjectAlternativeName | None):
        key = ec.generate_private_key(ec.SECP256R1())
        builder = (
            _builder(subject, ca_name, key.public_key(), not_before, not_after)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(_key_usage(cert_sign=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        )
        if san is not None:
            builder = builder.add_extension(san, critical=False)
        return builder.sign(ca_key, hashes.SHA256()), key

    server, server_key = leaf(
        x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]),
        ExtendedKeyUsageOID.SERVER_AUTH,
        x509.SubjectAlternativeName([x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
    )
    client, client_key = leaf(
        x509.Name(
            [
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, ADMIN_GROUP),
                x509.NameAttribute(NameOID.COMMON_NAME, client_name),
            ]
        ),
        ExtendedKeyUsageOID.CLIENT_AUTH,
        None,
    )

    pki = LoopbackPKI(
        ca_cert=directory / "ca.crt",
        server_cert=directory / "server.crt",
        server_key=directory / "server.key",
        client_cert=directory / "client.crt",
        client_key=directory / "client.key",
    )
    _write_cert(pki.ca_cert, ca)
    _write_cert(pki.server_cert, server)
    _write_key(pki.server_key, server_key)
    _write_cert(pki.client_cert, client)
    _write_key(pki.client_key, client_key)
    return pki


def _builder(subject, issuer, public_key, not_before, not_after) -> x509.CertificateBuilder:
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
    )


def _key_usage(cert_sign: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=cert_sign,
        crl_sign=cert_sign,
        encipher_only=False,
        decipher_only=False,
    )


def _write_cert(path: Path, cert: x509.Certificate) -> None:
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    path.touch(mode=0o600)
    path.write_bytes(pem)
