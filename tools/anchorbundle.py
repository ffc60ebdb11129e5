"""Signed trust-anchor bundles and update-key rotation documents (design §6, issue 6).

`anchors.json` = {"kind": "anchors", "version", "issued", "expires", "anchors": [PEM...],
"hosts": [...]} and `anchors.json.sig`: RSA PKCS#1 v1.5 SHA-256 over the exact bytes of
anchors.json, made with the operator's offline update key. The device (firmware/anchors.py)
installs a bundle only when the signature verifies, the version is higher than the installed one
and it has not expired.

`keys.json` = {"kind": "keys", "version", "keys": [PEM public keys], "transition_until"} and
`keys.json.sig`, signed by a key the devices already trust: how the update key itself rotates.
Each signed document names its kind in its signed bytes; devices refuse one of another kind
(`wrong_kind`), so a signature made for one kind is never taken for another.

    ias bundle anchors --key update.key --version 7 --anchor isrg.pem --anchor usertrust.pem \
        --expires 2031-01-01 --host iotappstory.com -o out/
    python tools/anchorbundle.py --key update.key --version 7 --anchor a.pem -o out/

--current-root PEM names the root the server's chain ends at today (repeat for several): the
command warns when the set drops it. Devices keep such a set pending and go on trusting the
old root until the server verifies under the new set, but an operator should keep the root in
use in the set until the server has moved.
"""

import argparse
import datetime as dt
import json
import sys
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

BUNDLE = "anchors.json"
KEYS = "keys.json"
MAX_BUNDLE = 16384  # what the device accepts (anchorset.MAX_BUNDLE)


def _load_private(private_key_pem):
    if isinstance(private_key_pem, str):
        private_key_pem = private_key_pem.encode()
    key = serialization.load_pem_private_key(private_key_pem, password=None)
    if not isinstance(key, rsa.RSAPrivateKey):
        raise ValueError("the update key must be RSA (the device verifies PKCS#1 v1.5 SHA-256)")
    return key


def sign(private_key_pem, data):
    """PKCS#1 v1.5 SHA-256 signature of `data`, as the device checks it (firmware/trust.py)."""
    return _load_private(private_key_pem).sign(data, padding.PKCS1v15(), hashes.SHA256())


def iso(when):
    """ISO 8601 UTC text for a datetime, a date, Unix seconds or ISO text (passed through)."""
    if when is None:
        return None
    if isinstance(when, str):
        return iso(parse_when(when))
    if isinstance(when, (int, float)):
        when = dt.datetime.fromtimestamp(int(when), dt.UTC)
    elif isinstance(when, dt.date) and not isinstance(when, dt.datetime):
        when = dt.datetime(when.year, when.month, when.day, tzinfo=dt.UTC)
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return when.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_when(text):
    """'2031-01-01', '2031-01-01T00:00:00Z' or Unix seconds -> aware datetime."""
    text = str(text).strip()
    if text.isdigit():
        return dt.datetime.fromtimestamp(int(text), dt.UTC)
    if len(text) == 10:
        return dt.datetime.strptime(text, "%Y-%m-%d").replace(tzinfo=dt.UTC)
    return dt.datetime.strptime(text.rstrip("Z"), "%Y-%m-%dT%H:%M:%S").replace(tzinfo=dt.UTC)


def _pem_of(item):
    """One anchor as PEM text: PEM text or bytes, DER bytes, or a path to either."""
    if isinstance(item, Path) or (isinstance(item, str) and "-----BEGIN" not in item):
        item = Path(item).read_bytes()
    data = item.encode() if isinstance(item, str) else bytes(item)
    if b"-----BEGIN" in data:
        certs = x509.load_pem_x509_certificates(data)
    else:
        certs = [x509.load_der_x509_certificate(data)]
    out = []
    for cert in certs:
        bc = None
        try:
            bc = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
        except x509.ExtensionNotFound:
            pass
        if bc is None or not bc.ca:
            who = cert.subject.rfc4514_string()
            raise ValueError("%s is not a CA certificate (a server certificate?)" % who)
        out.append(cert.public_bytes(serialization.Encoding.PEM).decode())
    return out


def bundle_bytes(version, pem_list, expires=None, hosts=(), issued=None):
    """The exact bytes of anchors.json (compact, keys in a fixed order)."""
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise ValueError("version must be a whole number >= 1")
    anchors = []
    for item in pem_list:
        anchors.extend(_pem_of(item))
    if not anchors:
        raise ValueError("an anchor bundle needs at least one anchor")
    doc = {
        "kind": "anchors",  # in the signed bytes: never taken as another signed document
        "version": version,
        "issued": iso(issued or dt.datetime.now(dt.UTC).replace(microsecond=0)),
        "expires": iso(expires),
        "anchors": anchors,
        "hosts": list(hosts),
    }
    if doc["expires"] is None:
        del doc["expires"]
    data = json.dumps(doc, separators=(",", ":")).encode()
    if len(data) > MAX_BUNDLE:
        raise ValueError("bundle is %d bytes; devices accept at most %d" % (len(data), MAX_BUNDLE))
    return data


def build_anchor_bundle(
    private_key_pem, version, pem_list, expires=None, hosts=(), out_dir=".", issued=None
):
    """Write anchors.json and anchors.json.sig into out_dir; returns their paths."""
    data = bundle_bytes(version, pem_list, expires, hosts, issued)
    sig = sign(private_key_pem, data)  # before any write: a bad key leaves nothing behind
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / BUNDLE).write_bytes(data)
    (out / (BUNDLE + ".sig")).write_bytes(sig)
    return out / BUNDLE, out / (BUNDLE + ".sig")


def public_pem(key_pem):
    """The SubjectPublicKeyInfo PEM of a private or public RSA key (PEM)."""
    if isinstance(key_pem, str):
        key_pem = key_pem.encode()
    if b"PRIVATE KEY" in key_pem:
        pub = _load_private(key_pem).public_key()
    else:
        pub = serialization.load_pem_public_key(key_pem)
    return pub.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode()


def build_key_doc(signing_key_pem, version, public_pems, transition_until, out_dir="."):
    """keys.json (+ .sig): the update keys devices should trust from now on, signed by a key
    they trust today. Old keys stay honoured until `transition_until`."""
    doc = {
        "kind": "keys",  # in the signed bytes: never taken as another signed document
        "version": version,
        "keys": [public_pem(p) for p in public_pems],
        "transition_until": iso(transition_until),
    }
    data = json.dumps(doc, separators=(",", ":")).encode()
    sig = sign(signing_key_pem, data)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / KEYS).write_bytes(data)
    (out / (KEYS + ".sig")).write_bytes(sig)
    return out / KEYS, out / (KEYS + ".sig")


# -- command line ---------------------------------------------------------------------------------
def add_arguments(parser):
    """Arguments of `ias bundle anchors` (and of this file run alone)."""
    parser.add_argument("--key", required=True, help="the update-signing RSA private key (PEM)")
    parser.add_argument("--version", required=True, type=int, help="bundle version (> installed)")
    parser.add_argument(
        "--anchor",
        action="append",
        required=True,
        metavar="PEM",
        help="a CA certificate file (PEM, several per file allowed, or DER); repeat",
    )
    parser.add_argument("--expires", help="YYYY-MM-DD, ISO date-time or Unix seconds")
    parser.add_argument("--host", action="append", default=[], help="a host these anchors serve")
    parser.add_argument(
        "--current-root",
        action="append",
        default=[],
        metavar="PEM",
        help="the root the server's chain ends at today: warn when the set drops it; repeat",
    )
    parser.add_argument("-o", "--out", default=".", help="output folder (default: .)")
    parser.set_defaults(func=run)


def _identity(pem):
    # a root renewed with the same name and key still anchors the same chains
    cert = x509.load_pem_x509_certificate(pem.encode())
    key = cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return cert.subject.rfc4514_string(), key


def dropped_roots(current, pem_list):
    """Subjects of the roots in `current` (paths or PEM) that the set `pem_list` leaves out."""
    kept = {_identity(p) for item in pem_list for p in _pem_of(item)}
    out = []
    for item in current:
        for pem in _pem_of(item):
            ident = _identity(pem)
            if ident not in kept:
                out.append(ident[0])
    return out


def run(args):
    key = Path(args.key).read_bytes()
    anchors = [Path(p) for p in args.anchor]
    paths = build_anchor_bundle(key, args.version, anchors, args.expires, args.host, args.out)
    print("wrote %s (%d bytes) and %s" % (paths[0], paths[0].stat().st_size, paths[1].name))
    for subject in dropped_roots([Path(p) for p in args.current_root], anchors):
        print(
            "warning: the set drops %s, the root the server uses today; devices keep trusting "
            "it until the server verifies under the new set, but keep it in the set until the "
            "server has moved" % subject,
            file=sys.stderr,
        )
    return 0


def main(argv=None):
    parser = argparse.ArgumentParser(description="Build a signed trust-anchor bundle.")
    add_arguments(parser)
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
