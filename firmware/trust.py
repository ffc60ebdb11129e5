# Signatures for what the device installs or trusts: RSA PKCS#1 v1.5 with SHA-256, e = 65537.
# Verification is one sig^e mod n (the builtin pow(s, e, n), or square-and-multiply on ports built
# without three-argument pow, the ESP8266: NotImplementedError there); we then build the whole
# expected encoded message (00 01 FF..FF 00 DigestInfo hash) and compare it byte for byte:
# nothing of the decrypted block is parsed, so the classic padding-parser forgeries have
# nothing to attack.
# Public keys are PEM SubjectPublicKeyInfo files in /keys/*.pub. Also the anti-rollback
# counters kept in state. Runs on MicroPython and CPython.
import binascii
import hashlib
import os

from .reason import ReasonError, const

E = const(65537)
MIN_BITS = const(2048)
MAX_BITS = const(4096)
MAX_PEM = const(4096)  # characters of one public key file; a 4096-bit key is about 800
# DER of DigestInfo { AlgorithmIdentifier { sha256, NULL }, OCTET STRING (32) } (RFC 8017 9.2)
_SHA256_INFO = b"\x30\x31\x30\x0d\x06\x09\x60\x86\x48\x01\x65\x03\x04\x02\x01\x05\x00\x04\x20"
_RSA_OID = b"\x2a\x86\x48\x86\xf7\x0d\x01\x01\x01"  # 1.2.840.113549.1.1.1 rsaEncryption


class PublicKey:
    def __init__(self, n, e, name=""):
        self.n = n
        self.e = e
        self.name = name
        bits = 0  # MicroPython ints have no bit_length()
        while n >> (bits + 64):
            bits += 64
        while n >> bits:
            bits += 1
        self.bits = bits
        self.size = (bits + 7) // 8  # k, the modulus length in bytes


# -- minimal DER, enough for SubjectPublicKeyInfo ------------------------------------------------
def _tlv(buf, pos, end, tag):
    """The element at pos must have `tag`; returns (content start, content end)."""
    if pos + 2 > end or buf[pos] != tag:
        raise ReasonError("bad_key", "expected tag 0x%02x at %d" % (tag, pos))
    n = buf[pos + 1]
    pos += 2
    if n & 0x80:
        count = n & 0x7F
        if not 1 <= count <= 2 or pos + count > end:
            raise ReasonError("bad_key", "length at %d" % pos)
        n = 0
        for i in range(count):
            n = (n << 8) | buf[pos + i]
        if n < 0x80 or (count == 2 and n < 0x100):
            raise ReasonError("bad_key", "non-minimal length")
        pos += count
    if n > end - pos:
        raise ReasonError("bad_key", "truncated at %d" % pos)
    return pos, pos + n


def _uint(buf, start, stop):
    if stop == start or buf[start] & 0x80:
        raise ReasonError("bad_key", "negative or empty integer")
    if stop - start > 1 and buf[start] == 0 and not buf[start + 1] & 0x80:
        raise ReasonError("bad_key", "non-minimal integer")
    return int.from_bytes(bytes(buf[start:stop]), "big")


def key_from_der(der, name=""):
    """SubjectPublicKeyInfo { AlgorithmIdentifier { rsaEncryption, NULL }, BIT STRING {
    RSAPublicKey { n, e } } } -> PublicKey. Anything else raises ReasonError('bad_key')."""
    end = len(der)
    s, e = _tlv(der, 0, end, 0x30)
    if e != end:
        raise ReasonError("bad_key", "trailing bytes")
    a, a_end = _tlv(der, s, e, 0x30)
    o, o_end = _tlv(der, a, a_end, 0x06)
    if bytes(der[o:o_end]) != _RSA_OID:
        raise ReasonError("bad_key", "not an RSA key")
    if a_end - o_end != 2 or der[o_end] != 0x05 or der[o_end + 1] != 0:
        raise ReasonError("bad_key", "RSA parameters must be NULL")
    b, b_end = _tlv(der, a_end, e, 0x03)
    if b_end != e or b == b_end or der[b] != 0:
        raise ReasonError("bad_key", "bit string")
    r, r_end = _tlv(der, b + 1, b_end, 0x30)
    if r_end != b_end:
        raise ReasonError("bad_key", "trailing bytes in key")
    n0, n1 = _tlv(der, r, r_end, 0x02)
    e0, e1 = _tlv(der, n1, r_end, 0x02)
    if e1 != r_end:
        raise ReasonError("bad_key", "trailing bytes in RSAPublicKey")
    key = PublicKey(_uint(der, n0, n1), _uint(der, e0, e1), name)
    if key.e != E:
        raise ReasonError("bad_key", "exponent must be 65537")
    if not MIN_BITS <= key.bits <= MAX_BITS or key.bits % 8:
        raise ReasonError("bad_key", "%d-bit modulus" % key.bits)
    return key


def key_from_pem(text, name=""):
    if isinstance(text, (bytes, bytearray)):
        text = bytes(text).decode()
    if len(text) > MAX_PEM:
        raise ReasonError("bad_key", "PEM too long")
    begin = "-----BEGIN PUBLIC KEY-----"
    end = "-----END PUBLIC KEY-----"
    i = text.find(begin)
    j = text.find(end)
    if i < 0 or j < i:
        raise ReasonError("bad_key", "no PUBLIC KEY block")
    body = "".join(text[i + len(begin) : j].split())
    try:
        der = binascii.a2b_base64(body)
    except ValueError:
        raise ReasonError("bad_key", "bad base64")
    return key_from_der(der, name)


def load_keys(folder="/keys"):
    """Every usable *.pub in `folder`, sorted by name. A broken file is skipped, not fatal:
    one bad key must not lock out updates signed with the others."""
    keys = []
    try:
        names = sorted(e[0] for e in os.ilistdir(folder))
    except OSError:
        return keys
    for fname in names:
        if not fname.endswith(".pub"):
            continue
        path = folder + "/" + fname
        try:
            if os.stat(path)[6] > MAX_PEM:
                raise ReasonError("bad_key", "file too large")
            with open(path) as f:
                keys.append(key_from_pem(f.read(), fname[:-4]))
        except (OSError, ValueError) as e:
            print("W trust: key %s unusable: %s" % (fname, e))
    return keys


# -- verification --------------------------------------------------------------------------------
def has_pow3():
    try:
        return pow(2, 3, 5) == 3
    except (NotImplementedError, TypeError):  # MICROPY_PY_BUILTINS_POW3 is 0 (ESP8266)
        return False


HAS_POW3 = has_pow3()  # asked once; tests set it False to run the fallback on any port


def pow65537(s, n):
    """s^65537 mod n by square-and-multiply: 65537 = 2^16 + 1, so 16 squarings and one
    multiply, each reduced mod n (the intermediate never exceeds n^2)."""
    x = s
    for _ in range(16):
        x = x * x % n
    return x * s % n


def rsa_public(s, e, n):
    """s^e mod n: the builtin three-argument pow where the port has it."""
    if HAS_POW3:
        return pow(s, e, n)
    if e != E:
        raise ReasonError("bad_key", "exponent must be 65537")
    return pow65537(s, n)


def expected_em(digest, k):
    """EMSA-PKCS1-v1_5 encoding of a SHA-256 digest for a k-byte modulus."""
    pad = k - 3 - len(_SHA256_INFO) - len(digest)
    if pad < 8:
        raise ReasonError("bad_key", "modulus too short")
    return b"\x00\x01" + b"\xff" * pad + b"\x00" + _SHA256_INFO + digest


def verify_key(digest, sig, key):
    """True when `sig` is key's PKCS#1 v1.5 SHA-256 signature of `digest` (32 bytes)."""
    if len(digest) != 32 or len(sig) != key.size:
        return False
    s = int.from_bytes(bytes(sig), "big")
    if s >= key.n:
        return False
    em = rsa_public(s, key.e, key.n).to_bytes(key.size, "big")
    return em == expected_em(bytes(digest), key.size)


def verify(data_or_hash, sig, keys, hashed=False):
    """The name of the first key in `keys` whose signature `sig` is, or None. `data_or_hash` is
    the signed bytes, or their SHA-256 when hashed=True."""
    digest = bytes(data_or_hash) if hashed else hashlib.sha256(data_or_hash).digest()
    if len(digest) != 32:
        raise ReasonError("bad_signature", "a SHA-256 digest has 32 bytes")
    for key in keys:
        if verify_key(digest, sig, key):
            return key.name or "key"
    return None


def check(data_or_hash, sig, keys, hashed=False):
    """Like verify() but raises ReasonError unless a key verifies; returns the key's name."""
    if not keys:
        raise ReasonError("no_keys", "no update-signing public key on the device")
    name = verify(data_or_hash, sig, keys, hashed)
    if name is None:
        raise ReasonError("bad_signature", "no trusted key made this signature")
    return name


# -- the kind of a signed document -------------------------------------------------------------
# One update key signs app manifests, anchor sets, key documents and channel documents. Each names
# its kind in its signed bytes ({"kind": ...}), checked right after the signature and before any
# other field, so a signature made for one kind is never taken for another. A document without
# a kind (signed before kinds existed) is refused too: re-sign it (docs/trust-continuity.md).
# The kinds: "manifest" (appbundle), "anchors" (anchorset), "keys" (keyrotation), "channel".


def check_kind(doc, kind):
    """Raise ReasonError('wrong_kind') unless the parsed document `doc` names `kind`."""
    got = doc.get("kind") if isinstance(doc, dict) else None
    if got == kind:
        return
    if got is None:
        detail = 'untyped document (no "kind"; re-sign it) where a %s was expected' % kind
    else:
        detail = "a %s document where a %s was expected" % (str(got)[:16], kind)
    raise ReasonError("wrong_kind", detail)


# -- anti-rollback counters (in state.json, key "counters") ------------------------------------
def counter_floor(state, kind):
    """The lowest security counter still accepted for `kind` ('app', 'firmware', 'anchors')."""
    return state.get("counters", {}).get(kind, 0)


def counter_ok(state, kind, counter):
    return isinstance(counter, int) and counter >= counter_floor(state, kind)


def raise_counter(state, kind, counter):
    """Raise the floor (never lower it); returns True when it moved. Call at commit time."""
    if counter <= counter_floor(state, kind):
        return False
    counters = dict(state.get("counters", {}))  # a copy: State.set compares with the old value
    counters[kind] = counter
    state.set("counters", counters)
    return True
