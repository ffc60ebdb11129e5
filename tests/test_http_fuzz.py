"""Hypothesis fuzz of firmware/httpclient.py on CPython: whatever a server sends, only ReasonError
escapes, the parser reads a bounded amount, and well-formed heads parse to what was sent."""

import sys

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tools import pkg_path  # noqa: E402

sys.path.insert(0, pkg_path())

from ias import httpclient  # noqa: E402
from ias.reason import ReasonError  # noqa: E402


class Chunks:
    """A stream replaying chunks (bytes, or an OSError to raise); EOF after the last."""

    def __init__(self, chunks):
        self.chunks = list(chunks)
        self.read_bytes = 0
        self.reads = 0

    def readinto(self, buf):
        self.reads += 1
        if not self.chunks:
            return 0
        item = self.chunks.pop(0)
        if isinstance(item, Exception):
            raise item
        n = min(len(buf), len(item))
        buf[:n] = item[:n]
        if n < len(item):
            self.chunks.insert(0, item[n:])
        self.read_bytes += n
        return n


def chunked(data, cuts):
    out, pos = [], 0
    for c in sorted(set(cuts)):
        if pos < c < len(data):
            out.append(data[pos:c])
            pos = c
    out.append(data[pos:])
    return [c for c in out if c]


LIMIT = httpclient.MAX_HEAD + httpclient.MAX_LINE + 1024  # what one head may make us read


def _parse(stream, size=1024):
    try:
        r = httpclient.read_head(stream, bytearray(size))
    except ReasonError as e:
        assert e.reason in (
            "bad_status",
            "bad_header",
            "bad_length",
            "head_too_large",
            "too_many_headers",
            "line_too_long",
            "closed",
            "timeout",
            "reset",
            "io_error",
        ), e.reason
        return None
    assert 100 <= r.status <= 599
    assert all(k == k.lower() for k in r.headers)
    assert r.length is None or 0 <= r.length <= httpclient.MAX_LENGTH
    return r


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=3000), st.lists(st.integers(0, 3000), max_size=20))
def test_random_bytes_only_http_error(data, cuts):
    s = Chunks(chunked(data, cuts))
    _parse(s)
    assert s.read_bytes <= LIMIT


LINE = st.one_of(
    st.binary(max_size=80),
    st.builds(
        lambda n, v: n + b":" + v,
        st.binary(min_size=1, max_size=20),
        st.binary(max_size=60),
    ),
    st.just(b"Content-Length: -1"),
    st.just(b"Content-Length: 99999999999"),
    st.builds(lambda n: b"Content-Length: %d" % n, st.integers(0, 2**40)),
    st.just(b" folded"),
    st.just(b"x" * 600),
)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.sampled_from([b"HTTP/1.1 200 OK", b"HTTP/1.0 304", b"HTTP/1.1 500 Oops", b"HTTP/1.1 2x0"]),
    st.lists(LINE, max_size=60),
    st.sampled_from([b"\r\n", b"\n"]),
    st.lists(st.integers(0, 5000), max_size=10),
    st.one_of(st.none(), st.sampled_from([OSError(110), OSError(104), OSError(5)])),
)
def test_mutated_heads_only_http_error(status, lines, eol, cuts, error):
    data = status + eol + eol.join(lines) + eol + eol + b"body"
    chunks = chunked(data, cuts)
    if error is not None:
        chunks = chunks[: len(chunks) // 2] + [error]
    s = Chunks(chunks)
    _parse(s)
    assert s.read_bytes <= LIMIT


TOKEN = st.text(
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_", min_size=1, max_size=20
)
VALUE = st.text(st.characters(min_codepoint=33, max_codepoint=126), max_size=40)


@settings(max_examples=300, deadline=None)
@given(
    st.integers(100, 599),
    st.text("abcdefghijklmnopqrstuvwxyz ", max_size=30),
    st.dictionaries(TOKEN, VALUE, max_size=30),
    st.binary(max_size=3000),
    st.lists(st.integers(0, 4000), max_size=15),
)
def test_well_formed_heads_parse_and_bodies_stream(status, reason, headers, body, cuts):
    headers = {k: v for k, v in headers.items() if k.lower() != "content-length"}
    lowered = {}
    for k, v in headers.items():  # names differing only in case are one header
        lowered[k.lower()] = lowered[k.lower()] + ", " + v if k.lower() in lowered else v
    head = "HTTP/1.1 %d %s\r\n" % (status, reason)
    head += "".join("%s:  %s \r\n" % kv for kv in headers.items())
    head += "Content-Length: %d\r\n\r\n" % len(body)
    s = Chunks(chunked(head.encode() + body, cuts))
    r = httpclient.read_head(s, bytearray(600))
    assert r.status == status and r.reason == reason.strip()
    assert r.length == len(body)
    for k, v in lowered.items():
        assert r.header(k.upper()) == v
    got = bytearray()
    sizes = []

    def sink(mv):
        sizes.append(len(mv))
        got.extend(mv)

    assert r.read_body(sink) == len(body)
    assert bytes(got) == body and all(n <= 600 for n in sizes)


@settings(max_examples=200, deadline=None)
@given(st.binary(min_size=1, max_size=2000), st.integers(0, 1999), st.lists(st.integers(0, 3000)))
def test_truncated_bodies_report_closed(body, keep, cuts):
    keep = min(keep, len(body) - 1)
    data = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body) + body[:keep]
    r = httpclient.read_head(Chunks(chunked(data, cuts)), bytearray(600))
    got = bytearray()
    try:
        r.read_body(got.extend)
    except ReasonError as e:
        assert e.reason == "closed"
    else:
        raise AssertionError("a truncated body was accepted")
    assert bytes(got) == body[:keep]
