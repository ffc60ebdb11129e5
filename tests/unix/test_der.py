# der.py on the MicroPython unix port: the shipped anchors' fields, certificates built here
# (leaf, v1, GeneralizedTime, BMPString), and hostile input: only ReasonError, never a crash.
import time

from ias import der
from ias.reason import ReasonError

CERTS = "../../firmware/cert/"


def anchor(name):
    with open(CERTS + name) as f:
        return f.read()


# -- a tiny DER writer, to build certificates with chosen fields (signatures are junk: der.py
# reads fields, it never checks signatures; TLS does that) --------------------------------------
def tlv(tag, content):
    n = len(content)
    if n < 0x80:
        head = bytes([tag, n])
    elif n < 0x100:
        head = bytes([tag, 0x81, n])
    else:
        head = bytes([tag, 0x82, n >> 8, n & 0xFF])
    return head + content


def seq(*parts):
    return tlv(0x30, b"".join(parts))


def name(cn, org=None, string_tag=0x0C):
    rdns = tlv(0x31, seq(tlv(0x06, b"\x55\x04\x03"), tlv(string_tag, cn)))
    if org:
        rdns += tlv(0x31, seq(tlv(0x06, b"\x55\x04\x0a"), tlv(0x0C, org)))
    return seq(rdns)


def asn1_time(t):
    y, mo, d, h, mi, s = time.gmtime(t)[:6]
    if 1950 <= y < 2050:
        return tlv(0x17, ("%02d%02d%02d%02d%02d%02dZ" % (y % 100, mo, d, h, mi, s)).encode())
    return tlv(0x18, ("%04d%02d%02d%02d%02d%02dZ" % (y, mo, d, h, mi, s)).encode())


def spki_of(der_bytes):
    """The SubjectPublicKeyInfo of a real certificate (so mbedTLS can parse what we build)."""
    _, c0, c1 = der._tlv(der_bytes, 0, len(der_bytes))
    _, t0, t1 = der._tlv(der_bytes, c0, c1)
    pos = t0
    for _ in range(6):  # version, serial, sigalg, issuer, validity, subject
        pos = der._tlv(der_bytes, pos, t1)[2]
    _, s0, s1 = der._tlv(der_bytes, pos, t1)
    return der_bytes[pos:s1]


RSA_SPKI = None


def build(
    cn=b"Test CA",
    org=b"Test Org",
    issuer=None,
    not_before=None,
    not_after=None,
    ca=True,
    v1=False,
    cn_tag=0x0C,
    serial=1,
    critical=True,
):
    global RSA_SPKI
    if RSA_SPKI is None:
        RSA_SPKI = spki_of(der.pem_blocks(anchor("usertrustRsa.cer"))[0])
    now = int(time.time())
    nb = now - 86400 if not_before is None else not_before
    na = now + 365 * 86400 if not_after is None else not_after
    alg = seq(tlv(0x06, b"\x2a\x86\x48\x86\xf7\x0d\x01\x01\x0b"), b"\x05\x00")
    subj = name(cn, org, cn_tag)
    parts = [] if v1 else [tlv(0xA0, tlv(0x02, b"\x02"))]
    parts += [
        tlv(0x02, bytes([serial])),
        alg,
        name(issuer, org) if issuer else subj,
        seq(asn1_time(nb), asn1_time(na)),
        subj,
        RSA_SPKI,
    ]
    if not v1:
        bc = seq(tlv(0x01, b"\xff")) if ca else seq()
        crit = tlv(0x01, b"\xff") if critical else b""
        ext = seq(tlv(0x06, b"\x55\x1d\x13"), crit, tlv(0x04, bc))
        parts.append(tlv(0xA3, seq(ext)))
    return seq(seq(*parts), alg, tlv(0x03, b"\x00" + bytes(256)))


def expect_der_error(data, reasons=None):
    try:
        der.parse(data)
    except ReasonError as e:
        if reasons is not None:
            assert e.reason in reasons, "%r: reason %s" % (data[:16], e.reason)
        return e
    raise AssertionError("accepted %r" % (bytes(data[:24]),))


# -- the shipped anchors -----------------------------------------------------------------------
def test_ias_root_fields():
    c = der.load(anchor("iasRootCa.cer"))
    assert c.subject == {"CN": "AAA Certificate Services", "O": "Comodo CA Limited"}
    assert c.issuer == c.subject and c.self_issued
    assert c.not_before == 1072915200  # 2004-01-01T00:00:00Z
    assert c.not_after == 1861919999  # 2028-12-31T23:59:59Z
    assert c.is_ca
    assert c.sha256 == "d7a7a0fb5d7e2731d771e9484ebcdef71d5f0c3e0a2948782bc83ee0ea699ef4"


def test_every_shipped_anchor_parses_as_a_ca():
    import os

    names = [n for n in os.listdir(CERTS) if n.endswith(".cer")]
    assert len(names) >= 6
    for n in names:
        c = der.load(anchor(n))
        assert c.is_ca and c.self_issued, n
        assert c.not_after > time.time(), n
        assert len(c.sha256) == 64


def test_generalized_time_after_2049():
    c = der.load(anchor("sectigoR46.cer"))
    assert c.not_after == 2405289599  # 2046-03-21T23:59:59Z, a UTCTime
    far = build(not_after=2556143999)  # 2050-12-31T23:59:59Z: GeneralizedTime
    assert b"\x18\x0f20501231235959Z" in far
    assert der.parse(far).not_after == 2556143999


def test_pem_round_trip_and_bundle():
    ders = [der.pem_blocks(anchor(n))[0] for n in ("iasRootCa.cer", "isrgRootX2.cer")]
    bundle = "# comment\r\n" + der.der_to_pem(ders[0]).replace("\n", "\r\n") + "label\n"
    bundle += der.der_to_pem(ders[1])
    assert der.pem_blocks(bundle) == ders
    assert der.pem_blocks(bundle.encode()) == ders
    assert der.pem_blocks("no certificate here") == []
    assert der.load(ders[1]).sha256 == der.load(der.der_to_pem(ders[1])).sha256


def test_load_refuses_two_certificates_in_one():
    two = anchor("isrgRootX1.cer") + anchor("isrgRootX2.cer")
    e = None
    try:
        der.load(two)
    except ReasonError as err:
        e = err
    assert e is not None and "one a file" in str(e)


# -- built certificates ------------------------------------------------------------------------
def test_leaf_is_not_a_ca():
    c = der.parse(build(cn=b"iotappstory.com", issuer=b"Some CA", ca=False))
    assert not c.is_ca and not c.self_issued
    assert c.subject["CN"] == "iotappstory.com" and c.issuer["CN"] == "Some CA"


def test_v1_certificate_has_no_ca_flag():
    c = der.parse(build(v1=True))
    assert not c.is_ca and c.self_issued


def test_non_critical_basic_constraints():
    assert der.parse(build(critical=False)).is_ca


def test_bmp_string_and_bad_utf8_names():
    c = der.parse(build(cn=b"\x00A\x00B\x00\xe9", cn_tag=0x1E))  # UTF-16BE
    assert c.subject["CN"] == "AB\xe9"
    expect_der_error(build(cn=b"\x00A\x00", cn_tag=0x1E), ("garbage",))
    c = der.parse(build(cn=b"caf\xe9 \xff"))  # not UTF-8: shown with '?'
    assert c.subject["CN"] == "caf? ?"


def test_dates_before_2000():
    c = der.parse(build(not_before=915148800, not_after=946684799))  # 1999-01-01 .. 1999-12-31
    assert (c.not_before, c.not_after) == (915148800, 946684799)
    assert not c.valid_at(time.time())


# -- hostile input -------------------------------------------------------------------------------
def test_garbage_and_wrong_tags():
    for data in (
        b"",
        b"\x00",
        b"\x30",
        b"\x31\x00",
        b"hello world",
        b"\x04\x03abc",
        b"\x30\x00",
        b"\x30\x03\x02\x01\x01",
        bytes(range(256)),
    ):
        expect_der_error(data)
    expect_der_error("a string")
    expect_der_error(b"\x1f\x81\x01\x00", ("bad_tag",))


def test_huge_and_bad_lengths():
    expect_der_error(b"\x30\x84\xff\xff\xff\xff" + bytes(10), ("bad_length",))
    expect_der_error(b"\x30\x83\xff\xff\xff" + bytes(10), ("truncated",))
    expect_der_error(b"\x30\x80" + bytes(10), ("bad_length",))  # indefinite (BER)
    expect_der_error(b"\x30\x81\x05" + bytes(5), ("bad_length",))  # non-minimal
    expect_der_error(b"\x30\x82\x00\x90" + bytes(0x90), ("bad_length",))
    expect_der_error(b"\x30\x89" + bytes(20), ("bad_length",))


def test_oversized():
    expect_der_error(b"\x30\x82\x23\x28" + bytes(9000), ("oversized",))
    try:
        der.pem_blocks("-----BEGIN CERTIFICATE-----\n" + "A" * 70000)
    except ReasonError as e:
        assert e.reason == "oversized"
    else:
        raise AssertionError("accepted 70 kB of PEM")


def test_every_truncation_of_a_real_certificate():
    good = der.pem_blocks(anchor("isrgRootX2.cer"))[0]
    for n in range(len(good)):
        expect_der_error(good[:n])
    expect_der_error(good + b"\x00", ("garbage",))


def test_byte_corruptions_never_crash():
    good = der.pem_blocks(anchor("usertrustEcc.cer"))[0]
    accepted = rejected = 0
    for pos in range(len(good)):
        for value in (0x00, 0xFF, good[pos] ^ 0x80):
            bad = bytearray(good)
            bad[pos] = value
            try:
                der.parse(bytes(bad))
                accepted += 1
            except ReasonError:
                rejected += 1
    print("corruptions: %d accepted (content bytes), %d rejected" % (accepted, rejected))
    assert rejected > 100 and accepted > 100


def test_bad_times():
    good = build()
    i = good.find(b"\x17\x0d")
    for bad in (b"991301000000Z", b"99010100000aZ", b"990101000000+", b"9901010000Z00"):
        expect_der_error(good[: i + 2] + bad + good[i + 15 :], ("bad_time",))


def test_broken_pem():
    for text in (
        "-----BEGIN CERTIFICATE-----\nMIIB\n",  # no END
        "-----BEGIN CERTIFICATE-----\nMI*B\n-----END CERTIFICATE-----\n",  # not base64
        "-----BEGIN CERTIFICATE-----\nMIIBx\n-----END CERTIFICATE-----\n",  # bad length
        "-----BEGIN CERTIFICATE-----\nMI==MIIB\n-----END CERTIFICATE-----\n",  # data after =
        "-----BEGIN CERTIFICATE-----\nM===\n-----END CERTIFICATE-----\n",  # too much padding
    ):
        try:
            der.load(text)
        except ReasonError:
            continue
        raise AssertionError("accepted %r" % text)
    for data in (
        b"\xff\xfe\x00garbage",
        "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----",
    ):
        try:
            der.load(data)
        except ReasonError:
            continue
        raise AssertionError("accepted %r" % data)


def test_days_from_civil():
    for t in (0, 951782400, 1709164800, 4102444800, 2556143999, 915148800):
        y, m, d, hh, mm, ss = time.gmtime(t)[:6]
        assert der.days_from_civil(y, m, d) * 86400 + hh * 3600 + mm * 60 + ss == t
