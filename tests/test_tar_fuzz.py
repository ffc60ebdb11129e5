"""Hypothesis fuzz of firmware/tarstream.py on CPython: arbitrary bytes, mutated and truncated
archives (plain and gzip) either read cleanly or raise ReasonError, never anything else; archives
made by tarfile round-trip exactly through small buffers and a stream that returns short reads;
every name the reader lets through is a safe relative path."""

import gzip
import io
import sys
import tarfile

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tools import pkg_path  # noqa: E402

sys.path.insert(0, pkg_path())
from ias import tarstream  # noqa: E402
from ias.reason import ReasonError
from ias.tarstream import TarReader  # noqa: E402

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

part = st.text(alphabet="abcXYZ019._-+", min_size=1, max_size=12).filter(
    lambda s: s not in (".", "..")
)
names = st.lists(part, min_size=1, max_size=4).map("/".join)
files = st.dictionaries(names, st.binary(max_size=1500), min_size=1, max_size=6).filter(
    lambda d: not any(a != b and b.startswith(a + "/") for a in d for b in d)
)


class Trickle(io.RawIOBase):
    """A stream that returns at most `step` bytes per read, as sockets and DeflateIO may."""

    def __init__(self, data, step):
        self.data = data
        self.pos = 0
        self.step = step

    def readable(self):
        return True

    def readinto(self, buf):
        n = min(len(buf), self.step, len(self.data) - self.pos)
        buf[:n] = self.data[self.pos : self.pos + n]
        self.pos += n
        return n


def make_tar(content, fmt=tarfile.USTAR_FORMAT):
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=fmt) as t:
        for name, data in content.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            t.addfile(info, io.BytesIO(data))
    return out.getvalue()


def read_all(stream, bufsize=64, gz=None):
    out = []
    buf = bytearray(bufsize)
    for m in TarReader(stream, gz=gz):
        data = bytearray()
        while True:
            n = m.readinto(buf)
            if not n:
                break
            data += buf[:n]
        assert len(data) == m.size
        out.append((m.name, m.kind, bytes(data)))
    return out


def safe(name):
    parts = name.split("/")
    return (
        not name.startswith("/")
        and all(p not in ("", ".", "..") for p in parts)
        and set(name) <= set(tarstream._NAME_CHARS)
        and len(name) <= tarstream.MAX_NAME
    )


def survives(data, **kw):
    """Reading may fail only with ReasonError; whatever it yields has safe names."""
    try:
        got = read_all(io.BytesIO(data), **kw)
    except ReasonError as e:
        assert e.reason in tarstream.REASONS
        return None
    for name, kind, _ in got:
        assert safe(name), name
        assert kind in ("file", "dir")
    return got


@FUZZ
@given(files, st.integers(1, 700), st.integers(1, 600), st.booleans())
def test_round_trip_through_short_reads(content, bufsize, step, gnu):
    data = make_tar(content, tarfile.GNU_FORMAT if gnu else tarfile.USTAR_FORMAT)
    got = read_all(Trickle(data, step), bufsize)
    assert [(n, d) for n, _, d in got] == list(content.items())
    gz = gzip.compress(data)
    assert read_all(Trickle(gz, step), bufsize) == got


@FUZZ
@given(st.binary(max_size=3000))
def test_arbitrary_bytes(data):
    survives(data)
    survives(b"\x1f\x8b" + data)
    survives(data, gz=False)


@FUZZ
@given(files, st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)), max_size=8))
def test_mutated_archives(content, flips):
    data = bytearray(make_tar(content))
    for pos, value in flips:
        data[pos % len(data)] = value
    survives(bytes(data))


@FUZZ
@given(files, st.integers(0, 10**6), st.booleans())
def test_truncated_archives(content, cut, compress):
    data = make_tar(content)
    if compress:
        data = gzip.compress(data)
    cut %= len(data)
    got = survives(data[:cut])
    if got is not None and not compress:
        # a cut can only succeed inside the end-of-archive padding
        assert cut >= len(data) - 10240 and got == read_all(io.BytesIO(data))


@FUZZ
@given(st.binary(min_size=1, max_size=120))
def test_header_names(raw):
    """Any bytes in the name field: a header either yields a safe name or is refused."""
    info = tarfile.TarInfo("x")
    hdr = bytearray(info.tobuf(format=tarfile.USTAR_FORMAT))
    hdr[0:100] = raw[:100].ljust(100, b"\x00")
    hdr[148:156] = b" " * 8
    hdr[148:156] = b"%06o\x00 " % sum(hdr)
    survives(bytes(hdr) + b"\x00" * 1024)


@FUZZ
@given(st.text(max_size=40))
def test_check_name_only_passes_safe_paths(name):
    try:
        tarstream.check_name(name)
    except ReasonError:
        return
    assert safe(name)


class Collect:
    """A TarFeed sink that gathers (name, kind, data) as read_all does."""

    def __init__(self):
        self.out = []
        self.ended = False

    def member(self, m):
        self.out.append([m.name, m.kind, bytearray()])

    def data(self, m, view):
        self.out[-1][2] += view

    def done(self, m):
        pass

    def end(self):
        self.ended = True


def feed_all(data, step):
    sink = Collect()
    feed = tarstream.TarFeed(sink)
    for i in range(0, len(data), step):
        feed.feed(data[i : i + step])
    feed.close()
    return [(n, k, bytes(d)) for n, k, d in sink.out]


@FUZZ
@given(
    files,
    st.integers(1, 700),
    st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)), max_size=4),
)
def test_push_parser_agrees_with_pull_reader(content, step, flips):
    """TarFeed (bodies as they arrive) accepts exactly what TarReader accepts, with the same
    members, or fails with ReasonError; it never raises anything else."""
    data = bytearray(make_tar(content))
    for pos, value in flips:
        data[pos % len(data)] = value
    pulled = survives(bytes(data))
    try:
        pushed = feed_all(bytes(data), step)
    except ReasonError:
        pushed = None
    if pushed is not None:
        for name, _kind, _ in pushed:
            assert safe(name), name
    if pulled is not None and pushed is not None:
        assert pushed == pulled
    if not flips:
        assert pushed == pulled == [(n, "file", d) for n, d in content.items()]
