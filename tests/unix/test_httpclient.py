# httpclient on the MicroPython unix port: head limits, case-insensitive headers, body streaming
# through one buffer, early close, timeouts and the overall deadline, the request writer.
import fakesock
from ias import httpclient
from ias.reason import ReasonError


def stream(*replies):
    net = fakesock.install()
    net.script("h", 1, list(replies))
    s = fakesock.FakeSocket()
    s.connect(("h", 1))
    return s


def head(*replies, **kw):
    return httpclient.read_head(stream(*replies), bytearray(kw.pop("size", 1024)), **kw)


def fails(reason, fn, *args, **kw):
    try:
        fn(*args, **kw)
    except ReasonError as e:
        assert e.reason == reason, "%s != %s (%s)" % (e.reason, reason, e)
        return e
    raise AssertionError("no ReasonError(%s)" % reason)


class Clock:
    def __init__(self, step=0):
        self.t = 0
        self.step = step

    def __call__(self):
        self.t += self.step
        return self.t


def test_status_and_headers_case_insensitive_trimmed():
    r = head(b"HTTP/1.1 200 OK\r\nContent-LENGTH:  5 \r\nX-Name:\tApp \r\nx-MD5: ab\r\n\r\nhello")
    assert r.status == 200 and r.reason == "OK"
    assert r.length == 5
    assert r.header("x-name") == "App" and r.header("X-NAME") == "App"
    assert r.headers["x-md5"] == "ab"


def test_reason_phrase_kept_and_split_reads():
    # every byte in its own read: the parser must not depend on packet boundaries
    data = b"HTTP/1.1 500 ESP MAC not configured for updates\r\nA: b\r\n\r\n"
    r = head(*[data[i : i + 1] for i in range(len(data))])
    assert r.status == 500 and r.reason == "ESP MAC not configured for updates"
    assert r.headers == {"a": "b"}


def test_bare_lf_and_empty_reason():
    r = head(b"HTTP/1.0 304\nX: 1\n\n")
    assert r.status == 304 and r.reason == "" and r.headers["x"] == "1"


def test_repeated_headers_joined_conflicting_length_refused():
    r = head(b"HTTP/1.1 200 OK\r\nA: 1\r\na: 2\r\n\r\n")
    assert r.headers["a"] == "1, 2"
    fails("bad_length", head, b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n")


def test_bad_status_lines():
    for line in (
        b"HTTP/2 200 OK",
        b"ICY 200 OK",
        b"HTTP/1.1 2000 OK",
        b"HTTP/1.1 099 x",
        b"HTTP/1.1 abc OK",
        b"",
        b"\x00\xff\xfe garbage",
    ):
        fails("bad_status", head, line + b"\r\n\r\n")


def test_bad_header_lines():
    for line in (b"no colon here", b": empty name", b" folded: value", b"sp ace: v", b"\x01x: 1"):
        fails("bad_header", head, b"HTTP/1.1 200 OK\r\n" + line + b"\r\n\r\n")


def test_content_length_values():
    for v in (b"-1", b"+5", b"1e3", b"0x10", b"", b"99999999999", b"4294967296", b"1 2"):
        fails("bad_length", head, b"HTTP/1.1 200 OK\r\nContent-Length: " + v + b"\r\n\r\n")
    r = head(b"HTTP/1.1 200 OK\r\nContent-Length: 2147483647\r\n\r\n")
    assert r.length == 2147483647


def test_too_many_headers_10000():
    many = b"".join(b"h%d: v\r\n" % i for i in range(10000))
    e = fails("too_many_headers", head, b"HTTP/1.1 200 OK\r\n", many, b"\r\n")
    assert e is not None
    # the limit is exact: 40 pass, 41 fail
    head(b"HTTP/1.1 200 OK\r\n" + b"".join(b"h%d: v\r\n" % i for i in range(40)) + b"\r\n")
    fails(
        "too_many_headers",
        head,
        b"HTTP/1.1 200 OK\r\n" + b"".join(b"h%d: v\r\n" % i for i in range(41)) + b"\r\n",
    )


def test_megabyte_header_line_stops_early():
    s = stream(b"HTTP/1.1 200 OK\r\nX: ", *([b"a" * 4096] * 256))
    fails("line_too_long", httpclient.read_head, s, bytearray(1024))
    assert len(s.replies) > 250  # gave up after about one line's worth, not after 1 MB


def test_line_limit_exact():
    ok = b"X: " + b"a" * 509  # 512 bytes
    head(b"HTTP/1.1 200 OK\r\n" + ok + b"\r\n\r\n")
    fails("line_too_long", head, b"HTTP/1.1 200 OK\r\n" + ok + b"a\r\n\r\n")


def test_head_too_large():
    lines = b"".join(b"h%02d: %s\r\n" % (i, b"v" * 300) for i in range(30))  # ~9.2 KB
    fails("head_too_large", head, b"HTTP/1.1 200 OK\r\n" + lines + b"\r\n")


def test_closed_before_and_inside_head():
    fails("closed", head)
    e = fails("closed", head, b"HTTP/1.1 200 OK\r\nA: b\r\n", None)
    assert "inside" in e.detail


def test_timeout_and_reset_errors():
    fails("timeout", head, OSError(110))
    fails("timeout", head, b"HTTP/1.1 200 OK\r\n", OSError(11))
    fails("closed", head, b"HTTP/1.1 200", OSError(104))  # a reset is a closed connection
    fails("closed", head, b"HTTP/1.1 200", OSError(128))  # lwIP's ENOTCONN


def test_small_buffer_refused():
    try:
        httpclient.read_head(stream(b""), bytearray(100))
    except ValueError:
        return
    raise AssertionError("a buffer smaller than a line was accepted")


def test_body_streams_through_one_buffer():
    body = bytes(range(256)) * 20  # 5120 bytes
    buf = bytearray(600)
    r = httpclient.read_head(
        stream(b"HTTP/1.1 200 OK\r\nContent-Length: 5120\r\n\r\n" + body[:100], body[100:]), buf
    )
    got = bytearray()
    seen = []

    def sink(mv):
        seen.append(len(mv))
        got.extend(mv)

    assert r.read_body(sink) == 5120
    assert bytes(got) == body
    assert max(seen) <= len(buf)


def test_peek_does_not_consume():
    body = b"\x1f\x8b" + b"z" * 998
    r = head(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n\x1f", body[1:10], body[10:])
    assert r.peek(512) == body[:512]
    got = bytearray()
    r.read_body(got.extend)
    assert bytes(got) == body


def test_body_longer_than_declared_delivers_declared():
    r = head(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabcdef")
    got = bytearray()
    assert r.read_body(got.extend) == 3 and got == b"abc"


def test_body_early_close():
    r = head(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nabc", b"def", None)
    got = bytearray()
    fails("closed", r.read_body, got.extend)
    assert got == b"abcdef"


def test_body_stall_times_out():
    r = head(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nabc", OSError(110))
    fails("timeout", r.read_body, lambda mv: None)


def test_trickle_stopped_by_deadline():
    # one byte a second: no read ever times out, the deadline must stop it
    clock = Clock()
    s = stream(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n", *([b"x"] * 1000))
    deadline = httpclient.Deadline(30000, clock)
    r = httpclient.read_head(s, bytearray(1024), deadline)
    reads = [0]

    def sink(mv):
        reads[0] += 1
        clock.t += 1000

    fails("deadline", r.read_body, sink)
    assert 29 <= reads[0] <= 31, reads[0]


def test_socket_timeout_cut_to_deadline():
    clock = Clock()
    s = stream(b"HTTP/1.1 200 OK\r\n\r\n")
    deadline = httpclient.Deadline(2500, clock)
    httpclient.read_head(s, bytearray(1024), deadline, timeout_ms=5000)
    assert s.timeout == 2.5, s.timeout


def test_net_error_reasons_pass_through():
    from ias.reason import ReasonError

    class S:
        def readinto(self, b):
            raise ReasonError("timeout")

    fails("timeout", httpclient.read_head, S(), bytearray(1024))


def test_request_one_write_exact_bytes():
    s = stream()
    writes = []
    orig = s.write

    def write(data):
        writes.append(bytes(data))
        return orig(data)

    s.write = write
    httpclient.request(s, "GET", "example.com", "/x?", [("A", "1"), ("b-C", "two words")])
    assert writes == [b"GET /x? HTTP/1.1\r\nHost: example.com\r\nA: 1\r\nb-C: two words\r\n\r\n"]


def test_request_refuses_injection():
    s = stream()
    fails("bad_request", httpclient.request, s, "GET", "h", "/", [("A", "1\r\nEvil: 1")])
    fails("bad_request", httpclient.request, s, "GET", "h\n", "/", [])
    assert bytes(s.out) == b""


def test_partial_writes_completed():
    s = stream()
    orig = s.write
    s.write = lambda data: orig(bytes(data)[:3])
    httpclient.request(s, "GET", "h", "/", [])
    assert bytes(s.out) == b"GET / HTTP/1.1\r\nHost: h\r\n\r\n"


def test_polled_stream_returns_partial_and_times_out():
    # a real loopback socket: blocking readinto() would wait for the whole buffer
    import os
    import sys
    import time

    fake = sys.modules.pop("socket", None)  # fakesock may have replaced it
    try:
        real = __import__("socket")
    finally:
        if fake is not None:
            sys.modules["socket"] = fake
    srv = real.socket()
    srv.setsockopt(real.SOL_SOCKET, real.SO_REUSEADDR, 1)
    for _ in range(20):  # no getsockname() on the unix port: try random ports
        port = 20000 + int.from_bytes(os.urandom(2), "little") % 40000
        try:
            srv.bind(real.getaddrinfo("127.0.0.1", port)[0][-1])
            break
        except OSError:
            continue
    srv.listen(1)
    cli = real.socket()
    cli.connect(real.getaddrinfo("127.0.0.1", port)[0][-1])
    peer, _ = srv.accept()
    s = httpclient.PolledStream(cli, timeout_ms=200)
    peer.write(b"abc")
    buf = bytearray(100)
    assert s.readinto(buf) == 3 and buf[:3] == b"abc"
    t0 = time.ticks_ms()
    try:
        s.readinto(buf)
        raise AssertionError("no timeout")
    except OSError as e:
        assert e.errno == 110
    waited = time.ticks_diff(time.ticks_ms(), t0)
    assert 150 <= waited < 1000, waited
    # through read_head: the deadline turns the cut-short wait into "deadline"
    peer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n12")
    r = httpclient.read_head(s, bytearray(1024))
    dl = httpclient.Deadline(300)
    fails("deadline", r.read_body, lambda mv: None, None, dl, 5000)
    peer.close()
    fails("closed", r.read_body, lambda mv: None, 10)
    s.close()
    srv.close()
