"""`ias keys new OUTDIR`: the operator's update-signing key pair.
`ias keys rotate`: keys.json + keys.json.sig, signed by the current key, that move devices to a
new one (firmware/keyrotation.py; docs/trust-continuity.md).

update.key is the private key (PKCS#8 PEM, mode 0600: keep it offline); update.pub is the public
half (SubjectPublicKeyInfo PEM) that goes onto every device as /keys/update.pub. RSA with
e = 65537 (what the device's verifier, firmware/trust.py, accepts), 3072 bits by default.
"""

import argparse
import datetime as dt
import os
import sys
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

BITS = (2048, 3072, 4096)


def new_key(bits=3072):
    return rsa.generate_private_key(public_exponent=65537, key_size=bits)


def private_pem(key):
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def public_pem(key):
    return key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def load_private(path):
    key = serialization.load_pem_private_key(Path(path).read_bytes(), password=None)
    if not isinstance(key, rsa.RSAPrivateKey) or key.public_key().public_numbers().e != 65537:
        raise ValueError("%s is not an RSA private key with e = 65537" % path)
    return key


def write_pair(outdir, bits=3072, force=False):
    """Create OUTDIR/update.key and OUTDIR/update.pub; returns their paths."""
    out = Path(outdir)
    out.mkdir(parents=True, exist_ok=True)
    key_path, pub_path = out / "update.key", out / "update.pub"
    for p in (key_path, pub_path):
        if p.exists() and not force:
            raise FileExistsError("%s exists (use --force to replace the key pair)" % p)
    key = new_key(bits)
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(private_pem(key))
    pub_path.write_bytes(public_pem(key))
    return key_path, pub_path


def cmd_new(args):
    key_path, pub_path = write_pair(args.outdir, args.bits, args.force)
    print("private key: %s  (keep it offline; it signs every update)" % key_path)
    print("public key:  %s  (copy to each device as /keys/update.pub)" % pub_path)
    return 0


MAX_NEW_KEYS = 4  # what the device takes in one document (keyrotation.MAX_KEYS)
TRANSITION_DAYS = 30


def _read_pem(path, want_private):
    """The PEM bytes of a key file, checked to be the right half, with a one-line error."""
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        raise ValueError("%s: no such file" % path) from None
    except OSError as e:
        raise ValueError("%s: %s" % (path, e.strerror)) from None
    if b"-----BEGIN" not in data:
        raise ValueError("%s is not a PEM key" % path)
    private = b"PRIVATE KEY-----" in data
    if want_private and not private:
        raise ValueError("%s is a public key; --key needs the current private key" % path)
    if private and not want_private:
        raise ValueError("%s is a private key; --new takes the new public key (.pub)" % path)
    try:
        if private:
            key = serialization.load_pem_private_key(data, password=None)
        else:
            key = serialization.load_pem_public_key(data)
    except (ValueError, TypeError):
        raise ValueError("%s is not a readable PEM key" % path) from None
    pub = key.public_key() if private else key
    if not isinstance(pub, rsa.RSAPublicKey) or pub.public_numbers().e != 65537:
        raise ValueError("%s is not an RSA key with e = 65537" % path)
    return data


def write_rotation(key_path, new_paths, version, transition_until, outdir):
    """keys.json + keys.json.sig in OUTDIR; every input is checked before anything is written."""
    from . import anchorbundle  # lazily: `ias keys new` needs none of it

    if not 1 <= len(new_paths) <= MAX_NEW_KEYS:
        raise ValueError("give 1 to %d new public keys" % MAX_NEW_KEYS)
    if version < 1:
        raise ValueError("--version must be 1 or more (above the last keys.json)")
    signing = _read_pem(key_path, want_private=True)
    pubs = [_read_pem(p, want_private=False) for p in new_paths]
    if transition_until is None:
        transition_until = dt.datetime.now(dt.UTC) + dt.timedelta(days=TRANSITION_DAYS)
    else:
        try:
            transition_until = anchorbundle.parse_when(transition_until)
        except ValueError:
            raise ValueError(
                "--until %s: want YYYY-MM-DD, ISO date-time or Unix seconds" % transition_until
            ) from None
    return anchorbundle.build_key_doc(signing, version, pubs, transition_until, outdir)


def cmd_rotate(args):
    doc, sig = write_rotation(args.key, args.new, args.version, args.until, args.out)
    print("wrote %s (%d bytes) and %s" % (doc, doc.stat().st_size, sig.name))
    print("publish both where devices fetch anchors.json: the ias serve --anchors folder, or")
    print("ota/anchors/ on a static host (docs/trust-continuity.md)")
    return 0


def add_parser(subparsers, summary="create the operator's update-signing key pair"):
    p = subparsers.add_parser("keys", help=summary, description=summary)
    subs = p.add_subparsers(dest="keys_command", metavar="ACTION")
    subs.required = True
    new = subs.add_parser("new", help="write update.key and update.pub into OUTDIR")
    new.add_argument("outdir", metavar="OUTDIR")
    new.add_argument("--bits", type=int, choices=BITS, default=3072, help="RSA size (3072)")
    new.add_argument("--force", action="store_true", help="replace an existing key pair")
    new.set_defaults(func=cmd_new)
    rot = subs.add_parser(
        "rotate", help="write keys.json(.sig): devices learn a new key, signed by the current"
    )
    rot.add_argument("--key", required=True, help="the current update key (private PEM)")
    rot.add_argument(
        "--new", action="append", required=True, metavar="PUB", help="a new public key; repeat"
    )
    rot.add_argument("--version", required=True, type=int, help="above the last keys.json (1..)")
    rot.add_argument(
        "--until",
        help="old keys are honoured until then: YYYY-MM-DD, ISO or Unix seconds (30 days)",
    )
    rot.add_argument("-o", "--out", required=True, help="output folder (created)")
    rot.set_defaults(func=cmd_rotate)
    return p


def main(argv=None):
    parser = argparse.ArgumentParser(prog="keys")
    add_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["keys"] + list(sys.argv[1:] if argv is None else argv))
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
