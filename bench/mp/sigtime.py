# Signature verification time with firmware/trust.py (as .mpy): trust.check() of a manifest
# signed by an RSA key, N times, beside two baselines in the same process: the bare modular
# exponentiation pow(s, 65537, n) of the same size, and hashlib.sha256 of the manifest; then the
# same check and exponentiation by square-and-multiply (trust.pow65537), what a port without
# three-argument pow (ESP8266) runs.
#   micropython -m sigtime DIR N BITS...      (DIR/manifest.json, DIR/pubBITS.pem, DIR/sigBITS)
import hashlib
import sys
import time

from ias import trust

folder, n = sys.argv[1], int(sys.argv[2])
with open(folder + "/manifest.json", "rb") as f:
    raw = f.read()


def timed(fn):
    out = []
    for _ in range(n):
        t0 = time.ticks_us()
        fn()
        out.append(time.ticks_diff(time.ticks_us(), t0))
    return out


for bits in sys.argv[3:]:
    with open("%s/pub%s.pem" % (folder, bits)) as f:
        key = trust.key_from_pem(f.read(), "k")
    with open("%s/sig%s" % (folder, bits), "rb") as f:
        sig = f.read()
    assert trust.check(raw, sig, [key]) == "k"
    s = int.from_bytes(sig, "big")
    check = timed(lambda k=key, g=sig: trust.check(raw, g, [k]))
    bare = timed(lambda s=s, n=key.n: pow(s, 65537, n))
    sha = timed(lambda: hashlib.sha256(raw).digest())
    sqm = timed(lambda s=s, n=key.n: trust.pow65537(s, n))
    had_pow3, trust.HAS_POW3 = trust.HAS_POW3, False  # verify as a port without pow3 does
    assert trust.check(raw, sig, [key]) == "k"
    check_sqm = timed(lambda k=key, g=sig: trust.check(raw, g, [k]))
    trust.HAS_POW3 = had_pow3
    print(
        '@@ {"kind": "sig", "bits": %s, "check": %s, "pow": %s, "sha": %s, "bytes": %d, '
        '"sqm": %s, "check_sqm": %s}' % (bits, check, bare, sha, len(raw), sqm, check_sqm)
    )
print("OK")
