# tarstream on MicroPython: archives made by CPython's tarfile (plain and gzip) stream through a
# small buffer; hostile archives (paths, types, checksums, sizes, truncation, bad gzip) raise
# ReasonError with the right reason. Every archive goes through both readers: TarReader (pull) and
# TarFeed (push, fed in chunks of several sizes), which must agree member for member and on the
# reason of every refusal.
import hashlib
import io

import ota_fixtures as fx
from ias import tarstream
from ias.reason import ReasonError
from ias.tarstream import TarFeed, TarReader
from ota_tar import archive, header, member

FIX = fx.make("bundles")


def pulled(data, bufsize=100):
    """[(name, kind, size, sha256)] read by TarReader through a buffer of bufsize bytes."""
    out = []
    buf = bytearray(bufsize)
    for m in TarReader(io.BytesIO(data)):
        h = hashlib.sha256()
        total = 0
        while True:
            n = m.readinto(buf)
            if not n:
                break
            h.update(memoryview(buf)[:n])
            total += n
        assert total == m.size
        out.append((m.name, m.kind, m.size, h.digest()))
    return out


class Sink:
    """Records what TarFeed hands over, checking the order of the calls."""

    def __init__(self):
        self.out = []
        self.m = None
        self.ended = False

    def member(self, m):
        assert self.m is None and not self.ended
        self.m, self.h, self.total = m, hashlib.sha256(), 0

    def data(self, m, view):
        assert m is self.m and len(view) > 0
        self.h.update(view)
        self.total += len(view)

    def done(self, m):
        assert m is self.m and self.total == m.size
        self.out.append((m.name, m.kind, m.size, self.h.digest()))
        self.m = None

    def end(self):
        assert self.m is None and not self.ended
        self.ended = True


def pushed(data, step):
    """The same list from TarFeed, fed `step` bytes at a time (gzip: through gunzip)."""
    sink = Sink()
    feed = TarFeed(sink)
    if data[:2] == b"\x1f\x8b":
        z = tarstream.gunzip(io.BytesIO(data))
        buf = bytearray(step)
        while True:
            n = tarstream.read_full(z, memoryview(buf))
            feed.feed(bytes(buf[:n]))
            if n < step:
                break
    else:
        for i in range(0, len(data), step):
            feed.feed(data[i : i + step])
    feed.close()
    assert sink.ended and sink.m is None
    return sink.out


def _outcome(fn, *args):
    try:
        return fn(*args)
    except ReasonError as e:
        return e


def listing(data, bufsize=100):
    """pulled(data, bufsize); TarFeed must give the same members, or refuse for the same
    reason, fed in any chunk size. Raises the ReasonError of the pull reader."""
    want = _outcome(pulled, data, bufsize)
    steps = (1, 7, 512, 4096) if len(data) <= 8192 else (7, 700, 4096)
    for step in steps:
        got = _outcome(pushed, data, step)
        if isinstance(want, ReasonError):
            assert isinstance(got, ReasonError), "push accepted what pull refused (%r)" % want
            if data[:2] != b"\x1f\x8b":  # gzip: push reads to the end and may see more
                assert got.reason == want.reason, (step, got, want)
        else:
            assert got == want, (step, got)
    if isinstance(want, ReasonError):
        raise want
    return want


def refuse(data, reason):
    try:
        listing(data)
    except ReasonError as e:
        assert e.reason == reason, "want %s, got %r" % (reason, e)
        return str(e)
    raise AssertionError("accepted an archive that should fail with %s" % reason)


def test_bundle_made_by_tarfile_streams():
    plain = listing(fx.read(FIX + "/v2.tar"))
    names = [x[0] for x in plain]
    assert names[:2] == ["manifest.json", "manifest.sig"]
    assert "lib/extra.py" in names and "data/blob.bin" in names
    blob = [x for x in plain if x[0] == "data/blob.bin"][0]
    assert blob[2] == 256 * 11
    assert blob[3] == hashlib.sha256(fx.read(FIX + "/src_v2/data/blob.bin")).digest()


def test_gzip_gives_the_same_members():
    plain = listing(fx.read(FIX + "/v2.tar"))
    gz_data = fx.read(FIX + "/v2gz.tar")
    assert gz_data[:2] == b"\x1f\x8b"
    r = TarReader(io.BytesIO(gz_data))
    assert r.gzip
    assert listing(gz_data, 37) == plain


def test_reads_from_a_file_stream_and_skips_unread_data():
    with open(FIX + "/v2.tar", "rb") as f:
        names = [m.name for m in TarReader(f)]  # data never read: next() skips it
    assert names == [x[0] for x in listing(fx.read(FIX + "/v2.tar"))]


def test_folders_and_prefix_names():
    data = archive(
        member("lib/", kind=b"5"),
        member("b.py", b"x" * 600, prefix=b"lib/deep"),
        member("c.py", b"", kind=b"\x00"),
    )
    got = listing(data)
    assert [(x[0], x[1], x[2]) for x in got] == [
        ("lib", "dir", 0),
        ("lib/deep/b.py", "file", 600),
        ("c.py", "file", 0),
    ]


def test_gnu_magic_is_read():
    got = listing(archive(member("a.py", b"abc", magic=b"ustar  \x00")))
    assert got[0][:3] == ("a.py", "file", 3)


def test_hostile_names():
    for name in (
        "/etc/passwd",
        "../up.py",
        "a/../../b",
        "a//b",
        "./a",
        "a/./b",
        "a\\b.py",
        "sp ace.py",
        "bad\x01name",
    ):
        refuse(archive(member(name, b"data")), "bad_name")
    long_name = member("y" * 100, b"x", prefix=b"p" * 155)  # 256 characters in all
    refuse(archive(long_name), "bad_name")
    refuse(archive(member(b"caf\xc3\xa9.py", b"x")), "bad_name")
    refuse(archive(member(b"\xff\xfe", b"x")), "bad_name")
    refuse(archive(member("", b"x")), "bad_name")
    refuse(archive(member("b.py", b"x", prefix=b"/abs")), "bad_name")


def test_only_files_and_folders():
    for kind in (b"1", b"2", b"3", b"4", b"6", b"7", b"x", b"g", b"L", b"K"):
        refuse(archive(member("link", b"", kind=kind)), "bad_type")
    refuse(header("d/", 10, kind=b"5") + b"\x00" * 512 + b"\x00" * 1024, "bad_header")


def test_checksum_and_fields():
    refuse(archive(header("a.py", 0, checksum_delta=1)), "checksum")
    refuse(archive(header("a.py", 0, magic=b"\x00" * 8)), "bad_header")
    refuse(archive(header("a.py", 0, size_field=b"\x80" + b"\x00" * 10 + b"\x05")), "bad_header")
    refuse(archive(header("a.py", 0, size_field=b"12345678901x")), "bad_header")
    refuse(archive(header("a.py", 0, size_field=b" " * 12)), "bad_header")
    big = header("a.py", 0, size_field=b"77777777777\x00")  # 8 GiB
    refuse(archive(big), "too_large")


def test_truncation_everywhere():
    whole = archive(member("a.py", b"y" * 1500), member("b.py", b"z" * 10))
    for cut in (0, 100, 511, 512, 700, 1536 + 511, 2048, 2048 + 512):
        refuse(whole[:cut], "truncated")
    # missing end marker (EOF right after the last member) is also truncation
    refuse(whole[: 2048 + 1024], "truncated")
    listing(whole[: 2048 + 1024 + 512])  # one zero block then EOF: tolerated
    bad_end = whole[: 2048 + 1024 + 512] + b"\x01" + b"\x00" * 511
    refuse(bad_end, "trailing")


def test_feed_end_marker_and_record_padding():
    whole = archive(member("a.py", b"y" * 1500))
    # tar pads archives to 10 KiB records with zeros: accepted after the end marker
    assert pushed(whole + b"\x00" * 8192, 1000)[0][:3] == ("a.py", "file", 1500)
    # ... at most one record of them: more is a bomb's filler, not padding
    assert pushed(whole + bytes(tarstream.MAX_TRAILING), 4096)[0][0] == "a.py"
    try:
        pushed(whole + bytes(tarstream.MAX_TRAILING + 1), 4096)
        raise AssertionError("more zeros than a record accepted after the end marker")
    except ReasonError as e:
        assert e.reason == "too_large" and str(tarstream.MAX_TRAILING) in str(e), e
    for tail in (b"\x00" * 700 + b"\x01", b"x"):
        try:
            pushed(whole + tail, 333)
            raise AssertionError("data after the end marker accepted")
        except ReasonError as e:
            assert e.reason == "trailing"


def test_feed_refuses_more_members_than_allowed():
    many = archive(*[member("f%d" % i, b"") for i in range(5)])
    feed = TarFeed(Sink(), max_members=4)
    try:
        feed.feed(many)
        raise AssertionError("member limit ignored")
    except ReasonError as e:
        assert e.reason == "too_large"


def test_gzip_window_budget():
    honest = fx.read(FIX + "/window_honest.tar")  # declares and uses a 32 KiB window
    lie = fx.read(FIX + "/window_lie.tar")  # declares 1 KiB, refers 3000 bytes back
    assert tarstream.window_bits(honest) == 15 and tarstream.window_bits(lie) == 10
    assert [m.name for m in TarReader(io.BytesIO(honest))] == ["far.bin"]
    try:
        TarReader(io.BytesIO(honest), max_wbits=12)
        raise AssertionError("a 32 KiB window accepted on a 4 KiB budget")
    except ReasonError as e:
        assert e.reason == "window_too_large" and "32768" in str(e), e
    # decompressed with the 1 KiB it declared, its reach beyond that is corrupt data
    buf = bytearray(512)
    try:
        for m in TarReader(io.BytesIO(lie), max_wbits=10):
            while m.readinto(buf):
                pass
        raise AssertionError("a stream reaching past its declared window was read")
    except ReasonError as e:
        assert e.reason == "bad_gzip", e
    for head in (b"", b"\x1f\x8b", b"\x1f\x8b\x08\x04" + bytes(6) + b"\x09\x00WB\x01\x00"):
        assert tarstream.window_bits(head) == 15, head  # short or undeclared: the worst case
    ok = b"\x1f\x8b\x08\x04" + bytes(6) + b"\x0b\x00xy\x02\x00abWB\x01\x00\x09"
    assert tarstream.window_bits(ok) == 9  # found after another subfield
    assert tarstream.window_bits(ok[:-1] + b"\x07") == 15  # below deflate's 9: not believed


def test_gzip_damage():
    gz = fx.read(FIX + "/v2gz.tar")
    for cut in (10, len(gz) // 2, len(gz) - 30):
        try:
            listing(gz[:cut])
            raise AssertionError("truncated gzip accepted at %d" % cut)
        except ReasonError as e:
            assert e.reason in ("truncated", "bad_gzip"), e
    bad = bytearray(gz)
    for i in range(40, 60):
        bad[i] ^= 0x55
    try:
        listing(bytes(bad))
        raise AssertionError("corrupt gzip accepted")
    except ReasonError as e:
        assert e.reason in ("bad_gzip", "truncated", "checksum", "bad_header", "bad_name"), e


def test_member_limits():
    many = archive(*[member("f%d" % i, b"") for i in range(5)])
    try:
        list(TarReader(io.BytesIO(many), max_members=4))
        raise AssertionError("member limit ignored")
    except ReasonError as e:
        assert e.reason == "too_large"
    try:
        list(TarReader(io.BytesIO(archive(member("a", b"x" * 100))), max_member=99))
        raise AssertionError("size limit ignored")
    except ReasonError as e:
        assert e.reason == "too_large"
    assert tarstream.check_name("lib/a-b_c.1+2.py") == "lib/a-b_c.1+2.py"


def test_zz_cleanup():
    fx.cleanup(FIX)
