"""Certificate authorities and chains for tests, the demo and `ias serve` (with `cryptography`).

Validity is relative to now, so tests never rot. Keys are ECDSA P-256 by default (fast), or RSA
when an ESP8266 (axTLS: RSA key exchange only) must connect.
"""

import datetime as dt
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

DAY = dt.timedelta(days=1)


def now():
    return dt.datetime.now(dt.UTC).replace(microsecond=0)


def new_key(kind="ec"):
    if kind == "rsa":
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return ec.generate_private_key(ec.SECP256R1())


def _name(cn, org=None):
    attrs = [x509.NameAttribute(NameOID.COMMON_NAME, cn)]
    if org:
        attrs.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, org))
    return x509.Name(attrs)


@dataclass
class Issued:
    cert: x509.Certificate
    key: object

    @property
    def pem(self):
        return self.cert.public_bytes(serialization.Encoding.PEM)

    @property
    def der(self):
        return self.cert.public_bytes(serialization.Encoding.DER)

    @property
    def key_pem(self):
        return self.key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )


def make_ca(
    cn,
    org="IAS test PKI",
    issuer=None,
    not_before=-1,
    not_after=3650,
    key=None,
    kind="ec",
    path_len=None,
):
    """A root (issuer None) or an intermediate CA. Validity in days relative to now."""
    key = key or new_key(kind)
    subject = _name(cn, org)
    t = now()
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer.cert.subject if issuer else subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(t + not_before * DAY)
        .not_valid_after(t + not_after * DAY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=path_len), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    )
    signer = issuer.key if issuer else key
    return Issued(builder.sign(signer, hashes.SHA256()), key)


def make_leaf(issuer, hosts=("localhost", "127.0.0.1"), not_before=-1, not_after=90, kind="ec"):
    """A server certificate for `hosts` (DNS names and IP literals) signed by `issuer`."""
    import ipaddress

    key = new_key(kind)
    sans = []
    for h in hosts:
        try:
            sans.append(x509.IPAddress(ipaddress.ip_address(h)))
        except ValueError:
            sans.append(x509.DNSName(h))
    t = now()
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(hosts[0]))
        .issuer_name(issuer.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(t + not_before * DAY)
        .not_valid_after(t + not_after * DAY)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
    )
    return Issued(builder.sign(issuer.key, hashes.SHA256()), key)


def renew(ca, not_before=-1, not_after=3650):
    """The same CA (subject and key) with new dates: how a root is renewed in place."""
    return make_ca(
        ca.cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value,
        org=_org(ca.cert),
        key=ca.key,
        not_before=not_before,
        not_after=not_after,
    )


def _org(cert):
    attrs = cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)
    return attrs[0].value if attrs else None


def write_server_files(folder, leaf, chain=()):
    """cert.pem (leaf then intermediates) and key.pem, as `ias serve --cert/--key` take them."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "cert.pem").write_bytes(leaf.pem + b"".join(c.pem for c in chain))
    (folder / "key.pem").write_bytes(leaf.key_pem)
    return folder / "cert.pem", folder / "key.pem"
