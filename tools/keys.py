"""`ias keys new OUTDIR`: the operator's update-signing key pair.

update.key is the private key (PKCS#8 PEM, mode 0600: keep it offline); update.pub is the public
half (SubjectPublicKeyInfo PEM) that goes onto every device as /keys/update.pub. RSA with
e = 65537 (what the device's verifier, firmware/trust.py, accepts), 3072 bits by default.
"""

import argparse
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


def add_parser(subparsers, summary="create the operator's update-signing key pair"):
    p = subparsers.add_parser("keys", help=summary, description=summary)
    subs = p.add_subparsers(dest="keys_command", metavar="ACTION")
    subs.required = True
    new = subs.add_parser("new", help="write update.key and update.pub into OUTDIR")
    new.add_argument("outdir", metavar="OUTDIR")
    new.add_argument("--bits", type=int, choices=BITS, default=3072, help="RSA size (3072)")
    new.add_argument("--force", action="store_true", help="replace an existing key pair")
    new.set_defaults(func=cmd_new)
    return p


def main(argv=None):
    parser = argparse.ArgumentParser(prog="keys")
    add_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["keys"] + list(sys.argv[1:] if argv is None else argv))
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
