# transport.py on the MicroPython unix port with scripted streams and a virtual clock: the Host
# header and header order, bounded redirects, the https-to-http downgrade refused unless signed,
# the verified flag, the minimum transfer rate, the body deadline scaled to the declared length,
# and fetch() of small documents.
from ias import transport
from ias.reason import ReasonError


class Board:
    def __init__(self):
        self.t = 0

    def ticks_ms(self):
        return self.t


class Stream:
    """One connection: plays `replies` (bytes at once, or (ms, bytes): the bytes arrive `ms`
    virtual milliseconds later), records what is written."""

    def __init__(self, board, replies, verified):
        self.board = board
        self.replies = list(replies)
        self.verified = verified
        self.sent = bytearray()
        self.closed = False
        self.pending = b""

    def settimeout(self, seconds):
        pass

    def write(self, data):
        self.sent += data
        return len(data)

    def readinto(self, buf):
        if not self.pending:
            if not self.replies:
                return 0
            item = self.replies.pop(0)
            if item is None:  # the peer closes
                return 0
            if isinstance(item, tuple):
                self.board.t += item[0]
                item = item[1]
            self.pending = item
        n = min(len(buf), len(self.pending))
        buf[:n] = self.pending[:n]
        self.pending = self.pending[n:]
        return n

    def close(self):
        self.closed = True


class Peers:
    """connect(scheme, host, port, timeout_ms) for a Transport: each (host, port) plays its
    scripts, one per connection; https peers are verified unless listed in `unverified`."""

    def __init__(self, board):
        self.board = board
        self.scripts = {}
        self.opened = []
        self.unverified = set()

    def script(self, host, port, *connections):
        self.scripts.setdefault((host, port), []).extend(connections)

    def __call__(self, scheme, host, port, timeout_ms):
        replies = self.scripts[(host, port)].pop(0)
        verified = scheme == "https" and (host, port) not in self.unverified
        s = Stream(self.board, replies, verified)
        self.opened.append((scheme, host, port, timeout_ms, s))
        return s


def setup():
    board = Board()
    peers = Peers(board)
    return board, peers, transport.Transport(board, connect=peers)


OK = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello"


def refused(fn, reason):
    try:
        fn()
    except ReasonError as e:
        assert e.reason == reason, (e.reason, reason, e.detail)
        return e
    raise AssertionError("no %s" % reason)


def test_host_header_and_header_order():
    board, peers, t = setup()
    peers.script("ias.example", 443, [OK])
    peers.script("10.0.0.2", 8080, [OK])
    peers.script("::1", 8443, [OK])
    peers.script("ias.example", 80, [OK])
    heads = [("User-Agent", "x"), ("x-B", "2"), ("x-A", "1")]
    resp = t.get("https://ias.example/ota/updates?", heads)
    resp.close()
    sent = bytes(peers.opened[0][4].sent)
    assert sent == (
        b"GET /ota/updates? HTTP/1.1\r\nHost: ias.example\r\n"
        b"User-Agent: x\r\nx-B: 2\r\nx-A: 1\r\n\r\n"
    ), sent
    assert peers.opened[0][:4] == ("https", "ias.example", 443, transport.CONNECT_TIMEOUT_MS)
    t.get("http://10.0.0.2:8080/a/b?c=1").close()
    sent = bytes(peers.opened[1][4].sent)
    assert sent.startswith(b"GET /a/b?c=1 HTTP/1.1\r\nHost: 10.0.0.2:8080\r\n"), sent
    t.get("https://[::1]:8443/x").close()
    assert b"\r\nHost: [::1]:8443\r\n" in bytes(peers.opened[2][4].sent)
    t.get("http://ias.example:80/").close()
    assert b"\r\nHost: ias.example\r\n" in bytes(peers.opened[3][4].sent)
    assert transport.host_header("https", "h", 443) == "h"
    assert transport.host_header("http", "h", 443) == "h:443"
    assert t.requests == 4
    refused(lambda: t.get("ftp://x/y"), "bad_url")
    peers.script("x", 80, [OK])
    refused(lambda: t.get("http://x/\r\nHost: evil"), "bad_request")


def test_verified_flag_and_final_url():
    board, peers, t = setup()
    peers.script("a.example", 443, [OK])
    peers.script("b.example", 443, [OK])
    peers.script("c.example", 80, [OK])
    peers.unverified.add(("b.example", 443))
    resp = t.get("https://a.example/x")
    assert resp.verified is True and resp.url == "https://a.example/x" and resp.status == 200
    resp.close()
    assert peers.opened[0][4].closed
    resp = t.get("https://b.example/x")
    assert resp.verified is False  # a board whose TLS cannot verify: encrypted only
    resp.close()
    resp = t.get("http://c.example/x")
    assert resp.verified is False
    resp.close()


def redirect(status, location):
    return b"HTTP/1.1 %d Moved\r\nLocation: %s\r\nContent-Length: 0\r\n\r\n" % (status, location)


def test_redirects_followed_and_bounded():
    board, peers, t = setup()
    peers.script("a.example", 443, [redirect(301, b"/two")], [redirect(302, b"three?x=1")])
    peers.script("a.example", 443, [redirect(307, b"https://b.example:4443/four")])
    peers.script("b.example", 4443, [redirect(308, b"//c.example/five")])
    peers.script("c.example", 443, [redirect(303, b"../six")], [OK])
    resp = t.get("https://a.example/one/")
    assert resp.status == 200 and resp.url == "https://c.example/six", resp.url
    resp.close()
    paths = [bytes(o[4].sent).split(b"\r\n")[:2] for o in peers.opened]
    assert paths == [
        [b"GET /one/ HTTP/1.1", b"Host: a.example"],
        [b"GET /two HTTP/1.1", b"Host: a.example"],
        [b"GET /three?x=1 HTTP/1.1", b"Host: a.example"],
        [b"GET /four HTTP/1.1", b"Host: b.example:4443"],
        [b"GET /five HTTP/1.1", b"Host: c.example"],
        [b"GET /six HTTP/1.1", b"Host: c.example"],
    ], paths
    assert all(o[4].closed for o in peers.opened[:5])
    # six redirects in a row: cut after the fifth is followed, every connection closed
    board, peers, t = setup()
    peers.script("loop.example", 80, *[[redirect(302, b"/again")] for _ in range(7)])
    refused(lambda: t.get("http://loop.example/"), "too_many_redirects")
    assert len(peers.opened) == 6 and all(o[4].closed for o in peers.opened)
    # max_redirects=0: the redirect itself is the answer (IAS decides what it means)
    peers.script("loop.example", 80, [redirect(302, b"/again")])
    peers.opened = []
    resp = t.get("http://loop.example/", max_redirects=0)
    assert resp.status == 302 and len(peers.opened) == 1
    resp.close()
    board, peers, t = setup()
    peers.script("a.example", 80, [b"HTTP/1.1 302 Found\r\n\r\n"])
    refused(lambda: t.get("http://a.example/"), "bad_redirect")
    peers.script("a.example", 80, [redirect(302, b"javascript:alert(1)")])
    refused(lambda: t.get("http://a.example/"), "bad_redirect")


def test_downgrade_refused_unless_signed():
    board, peers, t = setup()
    down = [redirect(302, b"http://mirror.example/c.json")]
    peers.script("a.example", 443, down, down)
    peers.script("mirror.example", 80, [OK])
    refused(lambda: t.get("https://a.example/c.json"), "downgrade")
    assert len(peers.opened) == 1 and peers.opened[0][4].closed  # http never contacted
    resp = t.get("https://a.example/c.json", signed=True)
    assert resp.status == 200 and resp.url == "http://mirror.example/c.json"
    assert resp.verified is False  # the final hop was plain http
    resp.close()
    # http to https is an upgrade: always followed, and then verified
    board, peers, t = setup()
    peers.script("a.example", 80, [redirect(301, b"https://a.example/c.json")])
    peers.script("a.example", 443, [OK])
    resp = t.get("http://a.example/c.json")
    assert resp.verified is True
    resp.close()


def body_reply(length):
    return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % length


def read_everything(resp):
    got = [0]

    def sink(chunk):
        got[0] += len(chunk)

    resp.read_body(sink)
    return got[0]


def test_min_rate_cuts_a_trickling_peer():
    board, peers, t = setup()
    # the head at once, then one byte a second: cut once a window of waiting brings too little
    peers.script("slow.example", 80, [body_reply(100000)] + [(1000, b"z")] * 200)
    resp = t.get("http://slow.example/bundle")
    start = board.t
    e = refused(lambda: read_everything(resp), "too_slow")
    resp.close()
    took = board.t - start
    assert transport.RATE_WINDOW_MS <= took <= transport.RATE_WINDOW_MS + 1000, (took, e)
    assert peers.opened[0][4].closed
    # the same in the head: a peer trickling its status line is cut as well
    board, peers, t = setup()
    peers.script("slow.example", 80, [(1000, bytes([c])) for c in body_reply(5)])
    refused(lambda: t.get("http://slow.example/bundle"), "too_slow")
    assert board.t <= transport.RATE_WINDOW_MS + 2000


def test_slow_but_steady_link_completes():
    board, peers, t = setup()
    # 400 bytes a second, four times the minimum rate: 20 KB take 50 s, less than the deadline
    # of 60 s + 20 KB at 1 KB/s
    chunks = [(1000, b"s" * 400)] * 50
    peers.script("steady.example", 80, [body_reply(20000)] + chunks)
    resp = t.get("http://steady.example/bundle")
    assert read_everything(resp) == 20000
    resp.close()
    assert board.t == 50000


def test_deadline_scales_with_declared_length():
    assert transport.body_deadline_ms(0) == transport.DEADLINE_BASE_MS
    assert transport.body_deadline_ms(262144) == transport.DEADLINE_BASE_MS + 256000
    board, peers, t = setup()
    # 50000 bytes at 400 B/s would take 125 s: above the minimum rate, past its 108.8 s deadline
    peers.script("a.example", 80, [body_reply(50000)] + [(1000, b"d" * 400)] * 125)
    resp = t.get("http://a.example/big")
    assert resp.deadline.left() == transport.body_deadline_ms(50000)
    refused(lambda: read_everything(resp), "deadline")
    resp.close()
    assert board.t <= transport.body_deadline_ms(50000) + 1000, board.t
    # the same body at 1000 B/s completes in 50 s
    board, peers, t = setup()
    peers.script("a.example", 80, [body_reply(50000)] + [(1000, b"d" * 1000)] * 50)
    resp = t.get("http://a.example/big")
    assert read_everything(resp) == 50000
    resp.close()


def test_fetch_small_documents():
    board, peers, t = setup()
    doc = b'{"version": 2}'
    peers.script("h.example", 443, [b"HTTP/1.1 200 OK\r\nContent-Length: 14\r\n\r\n", doc])
    assert t.fetch("https://h.example/anchors.json", 100) == doc
    assert peers.opened[-1][4].closed
    # no Content-Length: the body ends at the close, still bounded by the limit
    peers.script("h.example", 443, [b"HTTP/1.1 200 OK\r\n\r\n" + doc, None])
    assert t.fetch("https://h.example/anchors.json", 100) == doc
    peers.script("h.example", 443, [b"HTTP/1.1 200 OK\r\n\r\n" + b"x" * 200])
    refused(lambda: t.fetch("https://h.example/anchors.json", 100), "too_large")
    # a declared length over the limit is refused from the head, nothing of the body read
    big = b"HTTP/1.1 200 OK\r\nContent-Length: 5000\r\n\r\n"
    peers.script("h.example", 443, [big, b"x" * 5000])
    refused(lambda: t.fetch("https://h.example/anchors.json", 1000), "too_large")
    assert peers.opened[-1][4].replies == [b"x" * 5000] and peers.opened[-1][4].closed
    peers.script("h.example", 443, [b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n"])
    refused(lambda: t.fetch("https://h.example/anchors.json", 1000), "http_404")
    peers.script("h.example", 443, [b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"])
    refused(lambda: t.fetch("https://h.example/anchors.json", 1000), "chunked")
    assert all(o[4].closed for o in peers.opened)


def test_resolve():
    r = transport.resolve
    assert r("https://a.example/x/y.json", "b.tar") == "https://a.example/x/b.tar"
    assert r("https://a.example/x/y.json", "/b.tar") == "https://a.example/b.tar"
    assert r("https://a.example/x/y.json", "../b.tar") == "https://a.example/b.tar"
    assert r("https://a.example:8443/x/y", "//c.example/z") == "https://c.example/z"
    assert r("http://[::1]:8080/x/y", "z") == "http://[::1]:8080/x/z"
    assert r("http://a.example/x/y?q=1", "?r=2") == "http://a.example/x/y?r=2"
