"""A private certificate authority and a broker certificate, as PEM files, for a local broker.

Kafka reads PEM directly (``ssl.keystore.type=PEM``), so no Java keystore is needed. The CA's
key signs the broker's certificate and is then dropped: nothing else is ever signed by it, and
clients trust the CA certificate alone.
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

from workers.devstack.paths import write_private

_VALID_FOR = datetime.timedelta(days=825)


@dataclass(frozen=True)
class BrokerCertificates:
    ca: Path  # the CA certificate: what clients trust
    # The broker's PEM key store: its private key (unencrypted, readable by its owner only),
    # then its certificate chain (its own certificate, then the CA's).
    keystore: Path

    @classmethod
    def under(cls, directory: Path) -> BrokerCertificates:
        return cls(directory / "ca.pem", directory / "broker-keystore.pem")

    def exist(self) -> bool:
        return self.ca.exists() and self.keystore.exists()


def make_broker_certificates(directory: Path, host: str = "127.0.0.1") -> BrokerCertificates:
    """A new CA and a certificate for ``host`` (an IP address or a DNS name) that it signed."""
    directory.mkdir(parents=True, exist_ok=True)
    files = BrokerCertificates.under(directory)
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = _name("FlowPay local CA")
    ca_cert = (
        _builder(ca_name, ca_name, ca_key.public_key(), now)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_usage(cert_sign=True), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    broker_key = ec.generate_private_key(ec.SECP256R1())
    broker_cert = (
        _builder(_name(host), ca_name, broker_key.public_key(), now)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_usage(cert_sign=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectAlternativeName([_alt_name(host)]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    ca_pem = ca_cert.public_bytes(serialization.Encoding.PEM)
    files.ca.write_bytes(ca_pem)
    # PKCS#8: the form Kafka's PEM key store reads.
    key_pem = broker_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    write_private(
        files.keystore, key_pem + broker_cert.public_bytes(serialization.Encoding.PEM) + ca_pem
    )
    return files


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _builder(
    subject: x509.Name,
    issuer: x509.Name,
    public_key: ec.EllipticCurvePublicKey,
    now: datetime.datetime,
) -> x509.CertificateBuilder:
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + _VALID_FOR)
    )


def _usage(*, cert_sign: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=not cert_sign,
        key_cert_sign=cert_sign,
        crl_sign=cert_sign,
        encipher_only=False,
        decipher_only=False,
    )


def _alt_name(host: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        return x509.DNSName(host)
