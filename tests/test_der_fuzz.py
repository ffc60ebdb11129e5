"""firmware/der.py on CPython: its fields agree with `cryptography` on every certificate of the
Mozilla store (certifi), and hypothesis finds no input that raises anything but ReasonError."""

import sys
from pathlib import Path

import certifi
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.x509.oid import NameOID
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tools import pkg_path  # noqa: E402

sys.path.insert(0, pkg_path())
from ias import der  # noqa: E402
from ias.reason import ReasonError  # noqa: E402

BUNDLE = Path(certifi.where()).read_text()  # > der.MAX_PEM: fed to der.py a block at a time
DERS = [
    der.pem_blocks(block + "-----END CERTIFICATE-----")[0]
    for block in BUNDLE.split("-----END CERTIFICATE-----")
    if "-----BEGIN CERTIFICATE-----" in block
]
SEEDS = DERS[:40]
pytestmark = pytest.mark.filterwarnings("ignore:Parsed a serial number")  # old roots, not ours
FUZZ = settings(max_examples=400, deadline=500, suppress_health_check=[HealthCheck.too_slow])


def first(name, oid):
    attrs = name.get_attributes_for_oid(oid)
    return attrs[0].value if attrs else None


def test_bundle_has_many_certificates():
    assert len(DERS) > 100


@pytest.mark.parametrize("i", range(0, len(DERS)))
def test_fields_agree_with_cryptography(i):
    raw = DERS[i]
    ref = x509.load_der_x509_certificate(raw)
    c = der.parse(raw)
    for mine, theirs in ((c.subject, ref.subject), (c.issuer, ref.issuer)):
        assert mine.get("CN") == first(theirs, NameOID.COMMON_NAME)
        assert mine.get("O") == first(theirs, NameOID.ORGANIZATION_NAME)
    assert c.not_before == int(ref.not_valid_before_utc.timestamp())
    assert c.not_after == int(ref.not_valid_after_utc.timestamp())
    assert c.sha256 == ref.fingerprint(hashes.SHA256()).hex()
    try:
        bc = ref.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except x509.ExtensionNotFound:
        bc = False
    assert c.is_ca == bc
    assert der.pem_blocks(der.der_to_pem(raw)) == [raw]


def parse_or_der_error(data):
    try:
        der.parse(data)
    except ReasonError as e:
        assert e.reason in (
            "garbage",
            "truncated",
            "oversized",
            "bad_tag",
            "bad_length",
            "bad_time",
        )
        return False
    return True


@FUZZ
@given(st.binary(max_size=3000))
def test_random_bytes(data):
    parse_or_der_error(data)
    try:
        der.load(data)
    except ReasonError:
        pass


@FUZZ
@given(
    st.sampled_from(SEEDS),
    st.lists(st.tuples(st.integers(0, 5000), st.integers(0, 255)), min_size=1, max_size=8),
)
def test_mutated_certificates(seed, edits):
    data = bytearray(seed)
    for pos, value in edits:
        data[pos % len(data)] = value
    parse_or_der_error(bytes(data))


@FUZZ
@given(st.sampled_from(SEEDS), st.integers(0, 5000), st.binary(min_size=1, max_size=16))
def test_spliced_certificates(seed, pos, insert):
    pos %= len(seed)
    parse_or_der_error(seed[:pos] + insert + seed[pos:])
    parse_or_der_error(seed[:pos])
    parse_or_der_error(seed[:pos] + seed[pos + len(insert) :])


@FUZZ
@given(st.text(max_size=400), st.sampled_from(SEEDS), st.integers(0, 3000))
def test_pem_text(noise, seed, cut):
    pem = der.der_to_pem(seed)
    for text in (noise, noise + pem, pem[: cut % len(pem)], pem.replace("M", noise[:3] or "*")):
        try:
            blocks = der.pem_blocks(text)
        except ReasonError:
            continue
        for block in blocks:
            parse_or_der_error(block)


def test_bounded_work_on_a_huge_input():
    import time

    t = time.perf_counter()
    for data in (b"\x30\x82\xff\xff" + bytes(70000), b"\x30" * 100000, "A" * 10**6):
        with pytest.raises(ReasonError):
            if isinstance(data, str):
                der.pem_blocks(data)
            else:
                der.parse(data)
    assert time.perf_counter() - t < 0.5
