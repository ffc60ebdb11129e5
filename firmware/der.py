# X.509 certificate fields from DER, and PEM <-> DER, without any library.
# Input is untrusted (uploads, bundles, files that may be torn): every length is checked against
# its container, work is linear in the input, and anything wrong raises ReasonError.
# Runs on MicroPython and CPython (CPython runs the hypothesis fuzz).
import binascii
import hashlib

from .reason import ReasonError, const, days_from_civil

MAX_CERT = const(8192)  # bytes of DER per certificate; real roots are 0.5 to 2 KiB
MAX_PEM = const(65536)  # characters of PEM text accepted by pem_blocks()

_SEQ = const(0x30)
_SET = const(0x31)
_OID = const(0x06)
_BOOL = const(0x01)
_INT = const(0x02)
_OCTETS = const(0x04)
_UTCTIME = const(0x17)
_GENTIME = const(0x18)
_EXT_TAG = const(0xA3)  # [3] EXPLICIT extensions in TBSCertificate
_VER_TAG = const(0xA0)  # [0] EXPLICIT version

_OID_CN = b"\x55\x04\x03"
_OID_O = b"\x55\x04\x0a"
_OID_BASIC = b"\x55\x1d\x13"  # basicConstraints

_BEGIN = b"-----BEGIN CERTIFICATE-----"
_END = b"-----END CERTIFICATE-----"


def _tlv(buf, pos, end):
    """Read one DER header at pos (content must end by `end`): (tag, start, stop)."""
    if pos + 2 > end:
        raise ReasonError("truncated", "header at %d" % pos)
    tag = buf[pos]
    if tag & 0x1F == 0x1F:
        raise ReasonError("bad_tag", "multi-byte tag at %d" % pos)
    n = buf[pos + 1]
    pos += 2
    if n & 0x80:
        count = n & 0x7F
        if count == 0:
            raise ReasonError("bad_length", "indefinite length")
        if count > 3:  # 16 MiB is already absurd for one certificate
            raise ReasonError("bad_length", "%d length bytes" % count)
        if pos + count > end:
            raise ReasonError("truncated", "length bytes")
        n = 0
        for i in range(count):
            n = (n << 8) | buf[pos + i]
        if n < 0x80 or n >> ((count - 1) * 8) == 0:
            raise ReasonError("bad_length", "non-minimal length")
        pos += count
    if n > end - pos:
        raise ReasonError("truncated", "need %d bytes at %d, have %d" % (n, pos, end - pos))
    return tag, pos, pos + n


def _expect(buf, pos, end, tag, what):
    t, start, stop = _tlv(buf, pos, end)
    if t != tag:
        raise ReasonError("bad_tag", "%s: tag 0x%02x, want 0x%02x" % (what, t, tag))
    return start, stop


def _text(buf, start, stop, tag):
    raw = bytes(buf[start:stop])
    if tag == 0x1E:  # BMPString: UTF-16BE; keep the BMP characters we can show
        if len(raw) & 1:
            raise ReasonError("garbage", "odd BMPString")
        return "".join(chr((raw[i] << 8) | raw[i + 1]) for i in range(0, len(raw), 2))
    try:
        return raw.decode("utf-8")
    except (UnicodeError, ValueError):
        return "".join(chr(b) if b < 0x80 else "?" for b in raw)


def _name(buf, start, stop):
    """The CN and O of a Name (SEQUENCE OF SET OF {OID, value}); the first of each wins."""
    out = {}
    pos = start
    while pos < stop:
        s_start, s_stop = _expect(buf, pos, stop, _SET, "RDN")
        p = s_start
        while p < s_stop:
            a_start, a_stop = _expect(buf, p, s_stop, _SEQ, "attribute")
            o_start, o_stop = _expect(buf, a_start, a_stop, _OID, "attribute type")
            vtag, v_start, v_stop = _tlv(buf, o_stop, a_stop)
            oid = bytes(buf[o_start:o_stop])
            key = "CN" if oid == _OID_CN else "O" if oid == _OID_O else None
            if key and key not in out:
                out[key] = _text(buf, v_start, v_stop, vtag)
            p = a_stop
        pos = s_stop
    return out


def _digits(buf, start, n):
    v = 0
    for i in range(start, start + n):
        c = buf[i] - 48
        if c < 0 or c > 9:
            raise ReasonError("bad_time", "not a digit")
        v = v * 10 + c
    return v


def _time(buf, pos, end):
    tag, start, stop = _tlv(buf, pos, end)
    n = stop - start
    if tag == _UTCTIME and n == 13:
        year = _digits(buf, start, 2)
        year += 1900 if year >= 50 else 2000
        p = start + 2
    elif tag == _GENTIME and n >= 15:
        year = _digits(buf, start, 4)
        p = start + 4
    else:
        raise ReasonError("bad_time", "tag 0x%02x length %d" % (tag, n))
    if buf[stop - 1] != 0x5A:  # 'Z': DER times are UTC
        raise ReasonError("bad_time", "not UTC")
    mon, day = _digits(buf, p, 2), _digits(buf, p + 2, 2)
    hh, mm, ss = _digits(buf, p + 4, 2), _digits(buf, p + 6, 2), _digits(buf, p + 8, 2)
    if not (1 <= mon <= 12 and 1 <= day <= 31 and hh < 24 and mm < 60 and ss < 61):
        raise ReasonError("bad_time", "field out of range")
    secs = days_from_civil(year, mon, day) * 86400 + hh * 3600 + mm * 60 + ss
    return secs, stop


def _is_ca(buf, start, stop):
    """basicConstraints cA from the [3] extensions block."""
    seq_start, seq_stop = _expect(buf, start, stop, _SEQ, "extensions")
    pos = seq_start
    while pos < seq_stop:
        e_start, e_stop = _expect(buf, pos, seq_stop, _SEQ, "extension")
        o_start, o_stop = _expect(buf, e_start, e_stop, _OID, "extension id")
        p = o_stop
        tag, v_start, v_stop = _tlv(buf, p, e_stop)
        if tag == _BOOL:  # critical flag
            tag, v_start, v_stop = _tlv(buf, v_stop, e_stop)
        if tag != _OCTETS:
            raise ReasonError("bad_tag", "extension value")
        if bytes(buf[o_start:o_stop]) == _OID_BASIC:
            b_start, b_stop = _expect(buf, v_start, v_stop, _SEQ, "basicConstraints")
            if b_start == b_stop:
                return False
            tag, f_start, f_stop = _tlv(buf, b_start, b_stop)
            return tag == _BOOL and f_stop - f_start == 1 and buf[f_start] != 0
        pos = e_stop
    return False


class Cert:
    """The fields we need of one certificate. subject/issuer: dicts with 'CN' and 'O' when set;
    not_before/not_after: Unix seconds; sha256: hex of the DER."""

    def __init__(self, der):
        self.der = der
        self.subject = {}
        self.issuer = {}
        self.not_before = 0
        self.not_after = 0
        self.is_ca = False
        self.self_issued = False
        self.sha256 = ""

    def valid_at(self, now):
        return self.not_before <= now <= self.not_after


def parse(der):
    """Parse one DER certificate (the whole input, nothing after it) into a Cert."""
    if not isinstance(der, (bytes, bytearray, memoryview)):
        raise ReasonError("garbage", "not bytes")
    if len(der) > MAX_CERT:
        raise ReasonError("oversized", "%d bytes > %d" % (len(der), MAX_CERT))
    buf = der
    end = len(buf)
    c_start, c_stop = _expect(buf, 0, end, _SEQ, "certificate")
    if c_stop != end:
        raise ReasonError("garbage", "%d bytes after the certificate" % (end - c_stop))
    t_start, t_stop = _expect(buf, c_start, c_stop, _SEQ, "tbsCertificate")
    a_start, a_stop = _expect(buf, t_stop, c_stop, _SEQ, "signatureAlgorithm")
    _expect(buf, a_stop, c_stop, 0x03, "signature")
    pos = t_start
    tag, start, stop = _tlv(buf, pos, t_stop)
    if tag == _VER_TAG:
        pos = stop
        tag, start, stop = _tlv(buf, pos, t_stop)
    if tag != _INT:
        raise ReasonError("bad_tag", "serial number")
    _, pos = _expect(buf, stop, t_stop, _SEQ, "signature algorithm")
    i_start, i_stop = _expect(buf, pos, t_stop, _SEQ, "issuer")
    v_start, v_stop = _expect(buf, i_stop, t_stop, _SEQ, "validity")
    cert = Cert(der if isinstance(der, bytes) else bytes(der))
    cert.not_before, p = _time(buf, v_start, v_stop)
    cert.not_after, p = _time(buf, p, v_stop)
    if p != v_stop:
        raise ReasonError("garbage", "validity")
    s_start, s_stop = _expect(buf, v_stop, t_stop, _SEQ, "subject")
    _, pos = _expect(buf, s_stop, t_stop, _SEQ, "subjectPublicKeyInfo")
    cert.issuer = _name(buf, i_start, i_stop)
    cert.subject = _name(buf, s_start, s_stop)
    cert.self_issued = bytes(buf[i_start:i_stop]) == bytes(buf[s_start:s_stop])
    while pos < t_stop:  # optional [1], [2] unique ids, then [3] extensions
        tag, start, stop = _tlv(buf, pos, t_stop)
        if tag == _EXT_TAG:
            cert.is_ca = _is_ca(buf, start, stop)
        pos = stop
    cert.sha256 = binascii.hexlify(hashlib.sha256(cert.der).digest()).decode()
    return cert


def name_text(name):
    """'CN=..., O=...' for display."""
    parts = []
    for key in ("CN", "O"):
        if key in name:
            parts.append("%s=%s" % (key, name[key]))
    return ", ".join(parts)


def _b64_table():
    # 1: base64 letter, 2: '=' padding, 3: white space, 0: anything else
    t = bytearray(256)
    for c in b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/":
        t[c] = 1
    t[0x3D] = 2
    for c in b" \t\r\n":
        t[c] = 3
    return t


def _b64_body(data, start, stop):
    """Check data[start:stop] is base64 text and return the DER it decodes to."""
    table = _b64_table()  # built per call, not at import: der.py loads for management only
    count = pad = 0
    for i in range(start, stop):
        k = table[data[i]]
        if k == 1:
            if pad:
                raise ReasonError("garbage", "base64 after padding")
            count += 1
        elif k == 2:
            pad += 1
        elif k == 0:
            raise ReasonError("garbage", "not base64")
    if (count + pad) % 4 or pad > 2:
        raise ReasonError("truncated", "base64 body")
    if count > (MAX_CERT * 4) // 3 + 4:
        raise ReasonError("oversized", "base64 body")
    try:
        return binascii.a2b_base64(memoryview(data)[start:stop])
    except (ValueError, TypeError):
        raise ReasonError("garbage", "base64")


def pem_blocks(text, n=None):
    """The DER of every CERTIFICATE block in PEM text (str, bytes, or the first n bytes of a
    bytearray: a reused read buffer). Text outside the blocks (labels, comments) is ignored;
    a broken block raises ReasonError."""
    if isinstance(text, str):
        text = text.encode()
    elif not isinstance(text, (bytes, bytearray)):
        text = bytes(text)
    n = len(text) if n is None else min(n, len(text))
    if n > MAX_PEM:
        raise ReasonError("oversized", "PEM text of %d characters" % n)
    out = []
    pos = 0
    while True:
        b = text.find(_BEGIN, pos, n)
        if b < 0:
            return out
        e = text.find(_END, b, n)
        if e < 0:
            raise ReasonError("truncated", "no END line")
        out.append(_b64_body(text, b + len(_BEGIN), e))
        pos = e + len(_END)


def der_to_pem(der):
    """PEM text (str) of one DER certificate, 64 characters a line."""
    b64 = binascii.b2a_base64(bytes(der)).replace(b"\n", b"")
    lines = [_BEGIN]
    for i in range(0, len(b64), 64):
        lines.append(b64[i : i + 64])
    lines.append(_END)
    return (b"\n".join(lines) + b"\n").decode()


def load(data, n=None):
    """One certificate from PEM or DER (bytes, str, or the first n bytes of a bytearray): the
    Cert. More than one PEM block is refused."""
    if isinstance(data, str):
        data = data.encode()
    n = len(data) if n is None else min(n, len(data))
    if n > 0 and data[0] == _SEQ:
        return parse(memoryview(data)[:n] if n < len(data) else data)
    blocks = pem_blocks(data, n)
    if not blocks:
        raise ReasonError("garbage", "neither DER nor a PEM certificate")
    if len(blocks) > 1:
        raise ReasonError("garbage", "%d certificates; one a file" % len(blocks))
    return parse(blocks[0])
