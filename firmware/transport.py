# The one module that opens connections (design §3): GET a URL whatever its scheme (https
# verified with the trust anchors, http plain), with the Host header, bounded redirects, timeouts
# on connect, first byte and every read, a minimum transfer rate, and an overall deadline that
# scales with the declared length. Every user (IAS call home, the static channel, the anchor
# ladder and refresh, the key fetch, config mode) goes through Transport.get / Transport.fetch.
import gc

from . import httpclient
from .reason import ReasonError, const  # const has a CPython fallback: fuzz tests import this

MAX_REDIRECTS = const(5)
REDIRECTS = (301, 302, 303, 307, 308)
BUF_SIZE = const(1024)  # the one buffer of a response: its head and every body chunk
CONNECT_TIMEOUT_MS = const(10000)
HEAD_TIMEOUT_MS = const(10000)  # first response byte
READ_TIMEOUT_MS = const(10000)  # every later read
# Minimum transfer rate: for every RATE_WINDOW_MS spent waiting on the peer, at least
# RATE_MIN_BYTES must arrive, else the transfer is cut ("too_slow"). A peer trickling a byte a
# second is cut after about 10 s; a slow but steady link (>= 103 B/s) is never cut by this.
RATE_WINDOW_MS = const(10000)
RATE_MIN_BYTES = const(1024)
# The body's overall deadline: DEADLINE_BASE_MS plus the declared length at DEADLINE_BPS, so a
# 256 KiB bundle at a steady 2 KB/s completes and nothing can hold the device for ever.
DEADLINE_BASE_MS = const(60000)
DEADLINE_BPS = const(1024)


# TLS failures that blame the anchors (anything else is the network)
ANCHOR_FAULTS = ("untrusted", "expired", "not_yet_valid", "name_mismatch")


def host_header(scheme, host, port):
    """host[:port] as the Host header wants it: the port only when not the scheme's default,
    an IPv6 literal in brackets."""
    h = "[" + host + "]" if ":" in host else host
    return h if port == (443 if scheme == "https" else 80) else "%s:%d" % (h, port)


def origin(scheme, host, port):
    return scheme + "://" + host_header(scheme, host, port)


def body_deadline_ms(length):
    """How long a body of `length` bytes may take: a base plus the length at DEADLINE_BPS."""
    return DEADLINE_BASE_MS + (length or 0) * 1000 // DEADLINE_BPS


def polled(stream):
    """Wrap a connected stream so reads return what has arrived (httpclient.PolledStream): a
    certstore stream through its TLS socket (`.sock`), a plain socket directly. Without it,
    MicroPython's blocking readinto() waits for a full buffer, whatever the peer's pace."""
    from . import net

    sock = getattr(stream, "sock", stream)
    if not hasattr(sock, "setblocking"):
        return stream  # cannot poll: blocking reads, the rate and deadline checked between them
    close = getattr(stream, "close", sock.close)
    wrapped = httpclient.PolledStream(sock, net.from_exception, close)
    wrapped.verified = getattr(stream, "verified", False)
    wrapped.anchored = getattr(stream, "anchored", None)
    return wrapped


class Metered:
    """A stream whose reads are held to the minimum transfer rate. Only time spent waiting in
    reads counts (not the installer's flash writes between them), from the first byte on
    (before it, the first-byte timeout rules)."""

    def __init__(self, stream, clock):
        self.stream = stream
        self.clock = clock
        self.waited = 0
        self.got = -1  # -1: no byte yet

    def settimeout(self, seconds):
        fn = getattr(self.stream, "settimeout", None)
        if fn is not None:
            fn(seconds)

    def write(self, data):
        return self.stream.write(data)

    def readinto(self, buf):
        t0 = self.clock()
        n = self.stream.readinto(buf)
        if not n:
            return n
        if self.got < 0:
            self.got = n
            return n
        self.waited += httpclient.ticks_diff(self.clock(), t0)
        self.got += n
        if self.waited >= RATE_WINDOW_MS:
            # bytes per window, scaled to the time waited (a long stall counts in full)
            if self.got * RATE_WINDOW_MS < RATE_MIN_BYTES * self.waited:
                raise ReasonError(
                    "too_slow", "%d bytes in %d ms of waiting" % (self.got, self.waited)
                )
            self.waited = 0
            self.got = 0
        return n

    def close(self):
        self.stream.close()


class Transport:
    """GET over http or https for the device. `connect(scheme, host, port, timeout_ms)` opening
    a stream (with `.verified`) is replaceable for tests; by default https is certstore.connect
    (verified with the store's anchors, the state's time floor) and http plain TCP, both polled."""

    def __init__(self, board, store=None, state=None, connect=None):
        self.board = board
        self.store = store
        self.state = state
        self.connect = connect or self._connect
        self.requests = 0  # requests sent (tests and telemetry count them)

    def _clock(self):
        return self.board.ticks_ms()

    def _connect(self, scheme, host, port, timeout_ms):
        from . import net

        if scheme == "http":
            return polled(net.tcp_connect(host, port, timeout_ms))
        from . import certstore, timefloor

        floor = timefloor.floor(self.state)
        p = self.state.get("anchors_pending") if self.state is not None else None
        if p and self.board.tls_verifies:
            # A pending anchor set is confirmed only by a peer its own anchors verify (design
            # §1 rule 8): try them alone first, then every anchor (the old set too).
            try:
                conn = certstore.connect(
                    host, port, self.store, self.board, timeout_ms, floor, p["new"]
                )
                conn.anchored = "new"
                return polled(conn)
            except ReasonError as e:
                if e.reason not in ANCHOR_FAULTS:
                    raise
        return polled(certstore.connect(host, port, self.store, self.board, timeout_ms, floor))

    def get(
        self,
        url,
        headers=(),
        signed=False,
        max_redirects=MAX_REDIRECTS,
        head_timeout_ms=HEAD_TIMEOUT_MS,
        buf=None,
        deadline=None,
    ):
        """The response to GET `url` (httpclient.Response, plus .verified: the peer was verified
        by TLS with the anchors; .url: the final URL). `headers` are written in order after
        Host. Redirects (at most `max_redirects`) are followed with Location resolved against
        the current URL; https to http only when `signed` (the content carries its own
        signature), else "downgrade". `deadline` bounds connect and head; the body's deadline
        (resp.deadline) scales with its declared length. The caller closes the response."""
        from . import net

        if buf is None:
            buf = bytearray(BUF_SIZE)
        secure = False
        hops = 0
        while True:
            try:
                scheme, host, port, path = net.parse_url(url)
            except ValueError as e:
                raise ReasonError("bad_url", str(e))
            if scheme == "https":
                secure = True
            elif secure and not signed:
                raise ReasonError("downgrade", "https redirected to %s" % url[:80])
            resp = self._once(scheme, host, port, path, headers, buf, deadline, head_timeout_ms)
            if resp.status not in REDIRECTS or hops >= max_redirects:
                # the answer, unless it is one redirect too many (with max_redirects=0 a
                # redirect is the answer: the caller decides what it means)
                if resp.status in REDIRECTS and max_redirects:
                    resp.close()
                    raise ReasonError("too_many_redirects", "more than %d" % max_redirects)
                resp.url = url
                return resp
            resp.close()
            hops += 1
            loc = resp.header("location")
            if not loc:
                raise ReasonError("bad_redirect", "%d without Location" % resp.status)
            try:
                url = resolve(url, loc)
            except ValueError as e:
                raise ReasonError("bad_redirect", str(e))

    def _once(self, scheme, host, port, path, headers, buf, deadline, head_timeout_ms):
        gc.collect()  # before a TLS handshake: its buffers want contiguous heap
        raw = self.connect(scheme, host, port, _cut(CONNECT_TIMEOUT_MS, deadline))
        stream = Metered(raw, self._clock)
        try:
            self.requests += 1
            httpclient.request(stream, "GET", host_header(scheme, host, port), path, headers)
            resp = httpclient.read_head(stream, buf, deadline, _cut(head_timeout_ms, deadline))
        except BaseException:
            stream.close()
            raise
        resp.verified = bool(getattr(raw, "verified", False))
        resp.anchored = getattr(raw, "anchored", None)
        if resp.verified and self.state is not None:
            _confirm_date(self.state, self.board, resp.header("date"))
        resp.deadline = httpclient.Deadline(body_deadline_ms(resp.length), self._clock)
        return resp

    def fetch(self, url, limit, headers=(), signed=False):
        """The body of a small document (anchors, keys, channel.json and its signature): only a
        200 is accepted (else the reason is "http_<status>", e.g. http_404, as the anchor
        ladder reports it), more than `limit` bytes are refused ("too_large")."""
        resp = self.get(url, headers, signed)
        try:
            if resp.status != 200:
                raise ReasonError("http_%d" % resp.status, "%s %s" % (url[:80], resp.reason))
            return read_all(resp, limit)
        finally:
            resp.close()


def _confirm_date(state, board, value):
    # A verified peer's Date is authenticated time: the one network source of the time floor.
    if value:
        from . import timefloor

        timefloor.confirm(state, board, timefloor.parse_http_date(value))


def _cut(ms, deadline):
    if deadline is None:
        return ms
    left = deadline.left()
    if left <= 0:
        raise ReasonError("deadline")
    return left if left < ms else ms


def read_all(resp, limit):
    """The whole body (at most `limit` bytes): by Content-Length, or up to the close."""
    if resp.header("transfer-encoding") is not None:
        raise ReasonError("chunked", "serve it with a Content-Length")
    if resp.length is not None and resp.length > limit:
        raise ReasonError("too_large", "%d bytes, at most %d" % (resp.length, limit))
    out = bytearray(limit + 1 if resp.length is None else resp.length)
    got = [0]

    def sink(chunk):
        n = len(chunk)
        out[got[0] : got[0] + n] = chunk
        got[0] += n

    if resp.length is None:
        resp.deadline = httpclient.Deadline(body_deadline_ms(limit), resp.deadline.clock)
    try:
        resp.read_body(sink, len(out), None, READ_TIMEOUT_MS)
    except ReasonError as e:
        if e.reason != "closed" or resp.length is not None:
            raise
        return bytes(out[: got[0]])  # no length: the body ended at the close
    if resp.length is None:
        raise ReasonError("too_large", "more than %d bytes" % limit)
    return bytes(out)


# -- URLs ------------------------------------------------------------------------------------
def _normalise(path):
    # drop "." and resolve ".." segments of an absolute path (RFC 3986 5.2.4, simply)
    query = ""
    q = path.find("?")
    if q >= 0:
        path, query = path[:q], path[q:]
    out = []
    parts = path.split("/")
    for i, seg in enumerate(parts[1:]):
        last = i == len(parts) - 2
        if seg == "..":
            if out:
                out.pop()
            if last:
                out.append("")
        elif seg == ".":
            if last:
                out.append("")
        else:
            out.append(seg)
    return "/" + "/".join(out) + query


def resolve(base, ref):
    """The absolute URL of `ref` (a Location header or a bundle name) seen from `base`."""
    from . import net

    ref = ref.strip()
    low = ref[:8].lower()
    if low.startswith("http://") or low.startswith("https://"):
        net.parse_url(ref)  # ValueError when malformed
        return ref
    colon = ref.find(":")
    if 0 <= colon and colon < min(i for i in (ref.find("/"), ref.find("?"), len(ref)) if i >= 0):
        raise ValueError("unsupported scheme in %r" % ref[:40])
    scheme, host, port, path = net.parse_url(base)
    if ref.startswith("//"):
        return scheme + ":" + ref
    here = origin(scheme, host, port)
    if not ref:
        return here + path
    if ref.startswith("/"):
        return here + _normalise(ref)
    q = path.find("?")
    bare = path if q < 0 else path[:q]
    if ref.startswith("?"):
        return here + bare + ref
    return here + _normalise(bare[: bare.rfind("/") + 1] + ref)
