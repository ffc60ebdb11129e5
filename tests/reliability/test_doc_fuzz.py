"""Structure fuzz, on CPython with hypothesis, of the parsers that decide what a device trusts
or stores, beyond what tests/test_*_fuzz.py cover (HTTP head, DER, tar): anchor bundles (signed,
so the fuzz reaches the structure checks), channel.json, the bundle manifest, settings, public
keys, timestamps, certificate upload names and multipart forms. Only each module's own error
types may escape; every call stays under a memory bound (tracemalloc peak)."""

import asyncio
import json
import sys
import time
import tracemalloc

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.reliability.ledger import record
from tools import keys as keytool
from tools import pkg_path, pki

sys.path.insert(0, pkg_path())
from ias import anchorset, appbundle, channel, reason, trust, webapp, webguard  # noqa: E402
from ias import settings as settings_mod  # noqa: E402
from ias.reason import ReasonError  # noqa: E402

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
KEY = keytool.new_key(bits=2048)
PUB = keytool.public_pem(KEY)
DEVICE_KEYS = [trust.key_from_pem(PUB.decode(), "update")]
CA = pki.make_ca("Fuzz Root", org="Fuzz")
NOW = int(time.time())
COUNTS = {}


def sign(data):
    return KEY.sign(bytes(data), padding.PKCS1v15(), hashes.SHA256())


WARM = set()


def bounded(fn, limit, *args):
    """fn(*args) under tracemalloc; returns the result or the exception. The first call of
    each function runs once untraced: lazy imports are not the parser's memory."""
    if fn not in WARM:
        WARM.add(fn)
        try:
            fn(*args)
        except Exception:
            pass
    tracemalloc.start()
    try:
        try:
            out = fn(*args)
        except Exception as e:  # judged by the caller
            out = e
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < limit, "peak %d bytes > %d" % (peak, limit)
    return out


def only(out, *allowed):
    if isinstance(out, Exception) and not isinstance(out, allowed):
        raise AssertionError("escaped: %r" % out)
    return out


def tally(name):
    COUNTS[name] = COUNTS.get(name, 0) + 1


json_leaf = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=False),
    st.text(max_size=40),
)
json_value = st.recursive(
    json_leaf,
    lambda inner: (
        st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=10), inner, max_size=5)
    ),
    max_leaves=20,
)
times = st.one_of(
    st.integers(-(2**40), 2**40), st.text(alphabet="0123456789-TZ: ", max_size=22), json_value
)


def bundle_docs():
    good = {
        "kind": "anchors",
        "version": 2,
        "issued": reason.iso_date(NOW - 86400),
        "expires": reason.iso_date(NOW + 86400 * 365),
        "hosts": ["127.0.0.1"],
        "anchors": [CA.pem.decode()],
    }
    mutated = st.fixed_dictionaries(
        {},
        optional={
            "version": st.one_of(st.integers(-3, 5), json_value),
            "issued": times,
            "expires": times,
            "hosts": st.one_of(st.lists(st.text(max_size=12), max_size=3), json_value),
            "anchors": st.one_of(
                st.lists(
                    st.one_of(
                        st.just(CA.pem.decode()),
                        st.text(max_size=200),
                        st.binary(max_size=200).map(lambda b: b.hex()),
                        st.just(CA.pem.decode()[:300]),
                    ),
                    max_size=4,
                ),
                json_value,
            ),
        },
    ).map(lambda d: dict(good, **d))
    return st.one_of(mutated, json_value)


@FUZZ
@given(
    doc=bundle_docs(), installed=st.integers(0, 3), host=st.sampled_from([None, "127.0.0.1", "x"])
)
def test_anchor_bundle_signed_structure(doc, installed, host):
    raw = json.dumps(doc).encode()
    out = bounded(
        anchorset.verify_bundle, 1 << 20, raw, sign(raw), DEVICE_KEYS, installed, NOW, host
    )
    only(out, ReasonError)
    tally("anchor bundle (signed structure)")


@FUZZ
@given(raw=st.binary(max_size=3000), sig=st.binary(max_size=1100))
def test_anchor_bundle_bytes(raw, sig):
    out = bounded(anchorset.verify_bundle, 1 << 20, raw, sig, DEVICE_KEYS, 0, NOW, None)
    assert isinstance(out, ReasonError), "unsigned bytes accepted: %r" % (out,)
    tally("anchor bundle (raw bytes, random signature)")


@FUZZ
@given(value=times)
def test_anchor_time(value):
    only(bounded(anchorset.parse_time, 1 << 16, value), ReasonError)
    tally("anchor timestamps")


def channel_docs():
    good = {
        "kind": "channel",
        "app": "IASBlink",
        "version": "1.2",
        "counter": 3,
        "bundle": "b.tar.gz",
        "size": 1000,
        "sha256": "ab" * 32,
    }
    mutated = st.fixed_dictionaries(
        {},
        optional={
            k: st.one_of(json_value, st.text(alphabet="/.:?#%ab", max_size=30))
            for k in list(good) + ["anchors", "poll"]
        },
    ).map(lambda d: dict(good, **d))
    return st.one_of(mutated, json_value)


@FUZZ
@given(
    doc=channel_docs(), base=st.sampled_from(["https://h.example/c/channel.json", "http://h:8/x"])
)
def test_channel_document(doc, base):
    out = bounded(channel.parse, 1 << 18, json.dumps(doc).encode(), base)
    only(out, ReasonError)
    if not isinstance(out, Exception):
        assert out["bundle"].startswith(("https://", "http://"))
        assert 0 < out["size"] <= channel.MAX_BUNDLE
    tally("channel.json")


@FUZZ
@given(raw=st.binary(max_size=600))
def test_channel_bytes(raw):
    only(bounded(channel.parse, 1 << 18, raw, "https://h/c.json"), ReasonError)
    tally("channel.json (raw bytes)")


def manifests():
    good = {
        "kind": "manifest",
        "format": 1,
        "name": "IASBlink",
        "version": "1.1",
        "counter": 1,
        "space": 8192,
        "files": [{"path": "app.py", "size": 10, "sha256": "ab" * 32}],
    }
    entry = st.fixed_dictionaries(
        {},
        optional={
            "path": st.one_of(st.text(alphabet="abc./_-\\\x00 ", max_size=20), json_value),
            "size": st.one_of(st.integers(-2, 2**40), json_value),
            "sha256": st.one_of(st.text(alphabet="abcdefABC0123456789", max_size=66), json_value),
        },
    ).map(lambda d: dict(good["files"][0], **d))
    mutated = st.fixed_dictionaries(
        {},
        optional={k: json_value for k in ("format", "name", "version", "counter", "space")}
        | {"files": st.one_of(st.lists(entry, max_size=5), json_value)},
    ).map(lambda d: dict(good, **d))
    return st.one_of(mutated, json_value)


@FUZZ
@given(doc=manifests())
def test_manifest(doc):
    out = bounded(appbundle.parse_manifest, 1 << 18, json.dumps(doc).encode())
    only(out, ReasonError)
    if not isinstance(out, Exception):
        for path in out["files"]:
            assert not path.startswith("/") and ".." not in path.split("/"), path
    tally("bundle manifest.json")


def settings_docs():
    return st.one_of(
        json_value,
        st.fixed_dictionaries(
            {},
            optional={
                k: st.one_of(json_value, st.just(v)) for k, v in settings_mod.DEFAULTS.items()
            },
        ),
    )


@FUZZ
@given(doc=settings_docs())
def test_settings_validate(doc):
    out = only(bounded(settings_mod.validate, 1 << 18, doc), ReasonError)
    if not isinstance(out, Exception):
        assert settings_mod.validate(out) == out  # what validates is stable
        assert set(out) == set(settings_mod.DEFAULTS)
    tally("settings validation")


@FUZZ
@given(raw=st.one_of(st.binary(max_size=700), st.text(max_size=700)))
def test_public_keys(raw):
    fn = trust.key_from_pem if isinstance(raw, str) else trust.key_from_der
    only(bounded(fn, 1 << 18, raw), ReasonError)
    tally("update public keys (PEM/DER)")


@FUZZ
@given(name=st.text(max_size=60))
def test_cert_upload_name(name):
    out = only(bounded(webapp.cert_name, 1 << 16, name), webguard.BadRequest)
    if not isinstance(out, Exception):
        assert "/" not in out and "\\" not in out and not out.startswith(".") and ".." not in out
        assert out.endswith(".cer") and len(out) <= 32
    tally("certificate upload names")


BOUNDARY = "----fuzzb0undary"


def multipart(fields):
    out = b""
    for name, filename, data in fields:
        disp = 'form-data; name="%s"' % name
        if filename is not None:
            disp += '; filename="%s"' % filename
        out += b"--%s\r\nContent-Disposition: %s\r\n\r\n" % (BOUNDARY.encode(), disp.encode())
        out += data + b"\r\n"
    return out + b"--%s--\r\n" % BOUNDARY.encode()


class _Stream:
    def __init__(self, data, step):
        self.data, self.step = data, step

    async def read(self, n=-1):
        n = len(self.data) if n < 0 else min(n, self.step)
        out, self.data = self.data[:n], self.data[n:]
        return out


def run_form(body, declared, step, files):
    from microdot import Request

    headers = {
        "Content-Type": "multipart/form-data; boundary=" + BOUNDARY,
        "Content-Length": str(declared),
    }
    req = Request(None, ("127.0.0.1", 1), "POST", "/", "1.1", headers, stream=_Stream(body, step))

    async def go():
        return await asyncio.wait_for(webguard.read_form(req, files=files), 5)

    return asyncio.run(go())


field = st.tuples(
    st.text(alphabet='abc"\r\n;=', min_size=1, max_size=8),
    st.one_of(st.none(), st.text(alphabet='ab./\\"', max_size=10)),
    st.binary(max_size=300),
)


@FUZZ
@given(
    fields=st.lists(field, max_size=5),
    cut=st.integers(0, 2000),
    extra=st.integers(-50, 50),
    step=st.integers(1, 700),
    noise=st.binary(max_size=40),
    files=st.booleans(),
)
def test_multipart_form(fields, cut, extra, step, noise, files):
    body = multipart(fields)
    if cut < len(body):
        body = body[:cut] + noise + body[cut:]
    declared = max(0, len(body) + extra)
    out = bounded(run_form, 4 << 20, body, declared, step, files)
    # a hang shows as asyncio.TimeoutError, which is not allowed; microdot's own HTTPException
    # (webguard.BadRequest's base) becomes a 4xx answer, as BadRequest does
    from microdot.microdot import HTTPException

    only(out, HTTPException)
    if isinstance(out, HTTPException):
        assert 400 <= out.status_code < 500, out
    tally("multipart forms (webguard.read_form over microdot)")


def test_zz_report():
    """Record the examples each fuzz target ran (the ledger of tools/reliability.py)."""
    if not COUNTS:
        pytest.skip("the fuzz tests did not run in this session")
    for name, n in sorted(COUNTS.items()):
        record("parser fuzz (CPython, hypothesis)", name, True, examples=n)
