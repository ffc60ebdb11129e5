# channel on the MicroPython unix port with fake sockets: the exact requests (conditional
# headers, Range), redirects (relative, absolute, the limit of 5, https -> http only for signed
# content), the resumable download (Range after a cut, a server ignoring Range), and every
# refusal (bad signature, lower counter, hash or size mismatch) leaving state, staging and
# installer untouched. Channel documents are signed here with a fixed 2048-bit test key.
import binascii
import hashlib
import json
import os

import fakesock

NET = fakesock.install()

from ias import (
    channel,  # noqa: E402
    fsutil,  # noqa: E402
    net,  # noqa: E402
    slots,  # noqa: E402
    state,  # noqa: E402
    transport,  # noqa: E402
    trust,  # noqa: E402
)
from ias.reason import ReasonError, reason_of  # noqa: E402

TMP = "/tmp/ias_test_channel_%s" % binascii.hexlify(os.urandom(4)).decode()

# A test-only RSA key (never used anywhere else): primes, private exponent, q^-1 mod p.
P = int(
    "f189db4ce76f5182071c0b83687370bf31e54b4c28c16bbe55b4d11f9fe9473299d1e83e4f20739a"
    "d557cc47e642cd9a23f46874afc4599295accc193876d6fd174344ef4ad2e21f9bb9620eff88e0fd"
    "21c0933cca6d34d821622762f00cd23ecdee87c5920bdaf6afc49a959243a49ad45937a395735b9e"
    "50d1145dde2053db",
    16,
)
Q = int(
    "e31d45edb89cb4774cd1592d061e04e9dd91c7b435b9a346a5f1c3c41089312bf70e59ecdd0c7179"
    "ea5c5a546ec056090b4fff0a7aeacc1465202486ef5bea109bcbfd0d769761dfcbe68e0d7d36502a"
    "87fdc591edcf2da6870c12762eccee329b446fe121e84705e762d55edceabbe18b28b3d7c0d0efc0"
    "9dc55b5125be5ccd",
    16,
)
D = int(
    "1d2c2dcfcf76008a58d7097e1b268cc620892e2b18d51fbd8501e1af2b1f7a3ae28cd9f59716b360"
    "a224966ebdc5883ea6761ff4d855eeb24e133675b729cf6029d54ac93c99ccc1f77f40ebd899770d"
    "2cc9c962577836ce93ce93f5a2cd1e383925f4b2ce0ac775a1c8ee259425cc6cf9fca2b8d0834348"
    "9462c5ec0bcd00ade9d2e44bcd00ea3b585d201dc4a5f45535d3b2a079ecbce120b0baee4f26f01a"
    "0147daa7993db56924dc8919803cc9f204aa0b0534ebf96f328c9690a658f01d37c7e9b6254d21a1"
    "ca79d19670a2212421a9668ef54be9ddb28107dfe50b0a1c0a7e0f04119fb82b44db6c02b3ec651c"
    "a8027786d52fcbe25b9d125562607da5",
    16,
)
QINV = int(
    "8bc2610d8dfb6a861f62595e345c56f5ccc8c4d1b2110f5625b38ffe0f6f0a3f4e4e51f4f8a365ba"
    "091c7603dfc60fb6b50e444c574cde15b406fea53a9f20869779d6a902bd7f8eae085a18a1b09799"
    "b4edf580221e39076e9ddfcb4006a2c4dc3e4df6741a867cc9425c845725a45df885af2f3aaa9a75"
    "4acc294f889cba56",
    16,
)
N = P * Q
KEY = trust.PublicKey(N, 65537, "test")
KEYS = [KEY]


def sign(data):
    # RSA with the CRT: fast enough on the unix port for a few dozen signatures
    em = trust.expected_em(hashlib.sha256(data).digest(), KEY.size)
    c = int.from_bytes(em, "big")
    m1 = pow(c, D % (P - 1), P)
    m2 = pow(c, D % (Q - 1), Q)
    h = (QINV * (m1 - m2)) % P
    return (m2 + h * Q).to_bytes(KEY.size, "big")


BUNDLE = bytes((i * 7 + (i >> 8)) & 0xFF for i in range(40000))
SHA = binascii.hexlify(hashlib.sha256(BUNDLE).digest()).decode()
URL = "http://cdn.example/app/channel.json"
HOST = ("cdn.example", 80)


def doc(**over):
    d = {
        "kind": "channel",
        "app": "Blink",
        "version": "1.1.0",
        "counter": 2,
        "bundle": "Blink-1.1.0.tar",
        "size": len(BUNDLE),
        "sha256": SHA,
        "poll": 3600,
    }
    d.update(over)
    return json.dumps(d).encode()


def http(status, body=b"", headers=(), reason=None):
    reasons = {200: "OK", 206: "Partial Content", 301: "Moved", 302: "Found", 304: "Not Modified"}
    head = "HTTP/1.1 %d %s\r\n" % (status, reason or reasons.get(status, "X"))
    for name, value in headers:
        head += "%s: %s\r\n" % (name, value)
    if status != 304 and not any(n.lower() == "content-length" for n, _ in headers):
        head += "Content-Length: %d\r\n" % len(body)
    return head.encode() + b"\r\n" + body


class Seq:
    """The replies of successive connections to one host: fakesock copies a script with
    list(), so each copy takes the next connection's replies."""

    def __init__(self, *conns):
        self.conns = list(conns)

    def __iter__(self):
        return iter(self.conns.pop(0) if self.conns else [])


def serve(host_port, *conns):
    NET.scripts[host_port] = Seq(*conns)


def requests(host_port=HOST):
    """The request heads each connection to host_port sent, in order."""
    return [bytes(s.out) for s in NET.sockets if s.peer == host_port]


def channel_conns(data=None, sig=None, etag='"v1"'):
    data = doc() if data is None else data
    sig = sign(data) if sig is None else sig
    heads = [("ETag", etag), ("Last-Modified", "Tue, 01 Jul 2025 10:00:00 GMT")]
    return [http(200, data, heads)], [http(200, sig)]


class Board:
    def ticks_ms(self):
        import time

        return time.ticks_ms()


POINTER = {"active": "slot_a", "kind": "bundle", "counter": 1, "md5": "", "size": 1}


class Device:
    def __init__(self, folder, app="Blink", version="1.0.0"):
        self.board = Board()
        # settings deliberately lag: the installed pointer is what the channel compares with
        self.settings = {"channel": URL, "app_name": app, "app_version": "0.0.1"}
        self.state = state.State(folder + "/state.json")
        self.store = None
        # The pointer says what runs; the factory settings deliberately lag behind it.
        self.slots = slots.Slots(folder, self.settings)
        self.slots.write(dict(POINTER, name=app, version=version))

    def on_trial(self, trial):
        """A version on trial (a trial record on the pointer) or, with None, committed."""
        info = dict(self.slots.read())
        info.pop("trial", None)
        if trial is not None:
            info["trial"] = trial
        self.slots.write(info)


class Recorder:
    """A recording installer: what it was given, in order."""

    def __init__(self, fail=None):
        self.calls = []
        self.data = bytearray()
        self.fail = fail

    def begin(self, size, name, version):
        self.calls.append(("begin", size, name, version))

    def write(self, chunk):
        self.data += chunk

    def finish(self, md5_hex, sha_hex):
        self.calls.append(("finish", md5_hex, sha_hex))
        if self.fail:
            raise ReasonError(self.fail, "refused by the test")

    def abort(self):
        self.calls.append(("abort",))

    def activate(self):
        self.calls.append(("activate",))


class Maker:
    def __init__(self, fail=None):
        self.made = []
        self.firsts = []
        self.fail = fail

    def __call__(self, first, trusted):
        assert trusted is True  # only after the channel's signature verified
        self.firsts.append(first)
        inst = Recorder(self.fail)
        self.made.append(inst)
        return inst


def plain_connect(scheme, host, port, timeout_ms):
    return net.tcp_connect(host, port, timeout_ms)


_n = [0]


def fresh(app="Blink", version="1.0.0"):
    """A new network, folder, device and installer factory for one test."""
    global NET
    NET = fakesock.install()
    _n[0] += 1
    folder = "%s/%d" % (TMP, _n[0])
    fsutil.makedirs(folder + "/staging")
    return Device(folder, app, version), folder + "/staging", Maker()


def over(dev, connect=plain_connect):
    return transport.Transport(dev.board, connect=connect)


def run(dev, folder, maker, force=False, connect=plain_connect):
    return channel.check(dev, URL, over(dev, connect), maker, KEYS, force=force, folder=folder)


def poll(dev, folder, maker, force=False, connect=plain_connect):
    try:
        return run(dev, folder, maker, force, connect)
    except Exception as e:
        return {"outcome": "error", "reason": reason_of(e), "detail": str(e)}


class WriteCounter:
    """Counts fsutil.write_atomic calls (every state and record write goes through it)."""

    def __enter__(self):
        self.n = 0
        self.orig = fsutil.write_atomic

        def counting(path, data):
            self.n += 1
            return self.orig(path, data)

        fsutil.write_atomic = counting
        return self

    def __exit__(self, *exc):
        fsutil.write_atomic = self.orig


def listing(folder):
    return sorted(e[0] for e in os.ilistdir(folder))


# -- URLs ----------------------------------------------------------------------------------------
def test_resolve_relative_and_absolute():
    base = "https://h.example/a/b/channel.json?x=1"
    r = transport.resolve
    assert r(base, "bundle.tar") == "https://h.example/a/b/bundle.tar"
    assert r(base, "../c/bundle.tar") == "https://h.example/a/c/bundle.tar"
    assert r(base, "./d/./e") == "https://h.example/a/b/d/e"
    assert r(base, "/root.tar") == "https://h.example/root.tar"
    assert r(base, "//other.example:8443/p") == "https://other.example:8443/p"
    assert r(base, "http://x.example/q?y") == "http://x.example/q?y"
    assert r(base, "?v=2") == "https://h.example/a/b/channel.json?v=2"
    assert r("http://h:8080/a", "b") == "http://h:8080/b"
    for bad in ("ftp://x/y", "javascript:alert(1)"):
        try:
            r(base, bad)
        except ValueError:
            continue
        raise AssertionError("accepted %r" % bad)
    assert channel.sig_url("https://h/c.json?t=1") == "https://h/c.json.sig?t=1"


def test_parse_checks_every_field():
    info = channel.parse(doc(anchors="anchors.json"), URL)
    assert info["bundle"] == "http://cdn.example/app/Blink-1.1.0.tar"
    assert info["anchors"] == "http://cdn.example/app/anchors.json"
    assert info["poll"] == 3600 and info["counter"] == 2
    assert channel.parse(doc(poll=1), URL)["poll"] == channel.MIN_POLL
    for bad in (
        {"sha256": SHA.upper()},
        {"sha256": SHA[:-1]},
        {"size": 0},
        {"size": "12"},
        {"counter": -1},
        {"counter": True},
        {"app": ""},
        {"bundle": 5},
    ):
        try:
            channel.parse(doc(**bad), URL)
        except ReasonError as e:
            assert e.reason == "bad_channel"
            continue
        raise AssertionError("accepted %r" % bad)


# -- finding and installing a release ------------------------------------------------------------
def test_release_found_downloaded_and_installed():
    dev, folder, maker = fresh()
    c, s = channel_conns()
    serve(HOST, c, s, [http(200, BUNDLE)])
    with WriteCounter() as w:
        out = run(dev, folder, maker)
    assert out["outcome"] == "updated", out
    assert out["app"] == {"name": "Blink", "version": "1.1.0"}
    assert out["poll"] == 3600
    inst = out["installer"]
    assert bytes(inst.data) == BUNDLE
    md5 = binascii.hexlify(hashlib.md5(BUNDLE).digest()).decode()
    digest = hashlib.sha256(BUNDLE).digest()
    assert inst.calls == [("begin", len(BUNDLE), "Blink", "1.1.0"), ("finish", md5, digest)]
    assert maker.firsts == [BUNDLE[:512]]
    reqs = requests()
    assert len(reqs) == 3
    assert reqs[0] == (
        b"GET /app/channel.json HTTP/1.1\r\nHost: cdn.example\r\n"
        b"User-Agent: ias-micropython\r\nAccept-Encoding: identity\r\nConnection: close\r\n\r\n"
    )
    assert reqs[1].startswith(b"GET /app/channel.json.sig HTTP/1.1\r\n")
    assert reqs[2].startswith(b"GET /app/Blink-1.1.0.tar HTTP/1.1\r\n")
    assert b"Range" not in reqs[2]
    # the partial file and its record are gone; only the record write happened (no state:
    # the validators are kept once the new version runs and finds itself up to date)
    assert listing(folder) == []
    assert w.n == 1
    assert dev.state.get("channel") is None


# -- cheap polling -----------------------------------------------------------------------------
def test_up_to_date_keeps_validators_then_304_costs_one_request_and_no_write():
    dev, folder, maker = fresh(version="1.1.0")
    c, s = channel_conns()
    serve(HOST, c, s)
    out = run(dev, folder, maker)
    assert out["outcome"] == "up-to-date", out
    memo = dev.state.get("channel")
    assert memo["etag"] == '"v1"' and memo["seen"] == "Blink 1.1.0"
    assert memo["modified"] == "Tue, 01 Jul 2025 10:00:00 GMT"
    before = fsutil.read_bytes(dev.state.path)
    stat = os.stat(dev.state.path)

    NET.sockets[:] = []
    serve(HOST, [http(304)])
    with WriteCounter() as w:
        out = run(dev, folder, maker)
    assert out["outcome"] == "up-to-date" and out["status"] == 304, out
    reqs = requests()
    assert len(reqs) == 1
    assert b'\r\nIf-None-Match: "v1"\r\n' in reqs[0]
    assert b"\r\nIf-Modified-Since: Tue, 01 Jul 2025 10:00:00 GMT\r\n" in reqs[0]
    assert w.n == 0
    assert fsutil.read_bytes(dev.state.path) == before and os.stat(dev.state.path) == stat
    assert listing(folder) == [] and maker.made == []

    # the same document again (a host without validators): verified, but nothing rewritten
    NET.sockets[:] = []
    c, s = channel_conns()
    serve(HOST, c, s)
    with WriteCounter() as w:
        out = run(dev, folder, maker, force=True)
    assert out["outcome"] == "up-to-date"
    assert b"If-None-Match" not in requests()[0]  # force: a full check
    assert w.n == 0


def test_validators_dropped_when_the_installed_version_changes():
    dev, folder, maker = fresh(version="1.1.0")
    dev.state.set("channel", {"url": URL, "seen": "Blink 1.0.0", "etag": '"v0"'})
    c, s = channel_conns()
    serve(HOST, c, s)
    out = run(dev, folder, maker)
    assert out["outcome"] == "up-to-date"
    assert b"If-None-Match" not in requests()[0]


# -- redirects -----------------------------------------------------------------------------------
def test_redirects_relative_absolute_and_to_another_host():
    dev, folder, maker = fresh()
    other = ("objects.example", 8080)
    data = doc(bundle="http://objects.example:8080/rel/Blink.tar")
    c, s = channel_conns(data)
    serve(
        HOST,
        [http(302, headers=[("Location", "latest/channel.json")])],
        [http(301, headers=[("Location", "http://objects.example:8080/x/channel.json")])],
        [http(307, headers=[("Location", "/app/latest/channel.json.sig")])],
        s,
    )
    serve(other, c, [http(302, headers=[("Location", "http://cdn.example/b.tar")])])
    NET.scripts[HOST].conns.append([http(200, BUNDLE)])
    out = run(dev, folder, maker)
    assert out["outcome"] == "updated", out
    mine, theirs = requests(), requests(other)
    assert mine[0].startswith(b"GET /app/channel.json ")
    assert mine[1].startswith(b"GET /app/latest/channel.json ")
    assert theirs[0].startswith(b"GET /x/channel.json HTTP/1.1\r\nHost: objects.example:8080\r\n")
    assert mine[2].startswith(b"GET /app/channel.json.sig ")
    assert mine[3].startswith(b"GET /app/latest/channel.json.sig ")
    assert theirs[1].startswith(b"GET /rel/Blink.tar ")
    assert mine[4].startswith(b"GET /b.tar ")


def test_redirect_limit_is_five():
    for hops, ok in ((5, True), (6, False)):
        dev, folder, maker = fresh(version="1.1.0")
        c, s = channel_conns()
        conns = [
            [http(302, headers=[("Location", "/hop%d/channel.json" % i)])] for i in range(hops)
        ]
        serve(HOST, *(conns + [c, s]))
        out = poll(dev, folder, maker)
        if ok:
            assert out["outcome"] == "up-to-date", out
        else:
            assert out["outcome"] == "error" and out["reason"] == "too_many_redirects", out
            assert len(requests()) == 6


def test_https_to_http_only_for_signed_content():
    def connect(scheme, host, port, timeout_ms):
        return net.tcp_connect(host, port, timeout_ms)  # TLS is not what is tested here

    for signed in (False, True):
        fresh()
        serve(
            ("secure.example", 443), [http(302, headers=[("Location", "http://plain.example/f")])]
        )
        serve(("plain.example", 80), [http(200, b"hello")])
        t = transport.Transport(Board(), connect=connect)
        try:
            body = t.fetch("https://secure.example/f", 100, (), signed)
        except ReasonError as e:
            assert not signed and e.reason == "downgrade"
            assert requests(("plain.example", 80)) == []
            continue
        assert signed and body == b"hello"


def test_redirect_without_location_is_an_error():
    dev, folder, maker = fresh()
    serve(HOST, [http(302)])
    out = poll(dev, folder, maker)
    assert out["reason"] == "bad_redirect", out


# -- resumable downloads -------------------------------------------------------------------------
def cut_bundle(n):
    """A 200 answer announcing the whole bundle that ends after n body bytes."""
    return [http(200, BUNDLE[:n], [("Content-Length", str(len(BUNDLE)))]), None]


def test_cut_download_resumes_with_range():
    dev, folder, maker = fresh()
    c, s = channel_conns()
    serve(HOST, c, s, cut_bundle(12345))
    out = poll(dev, folder, maker)
    assert out["outcome"] == "error" and out["reason"] == "closed", out
    assert os.stat(folder + "/channel.part")[6] == 12345
    meta = json.loads(fsutil.read_bytes(folder + "/channel.meta"))
    assert meta["sha256"] == SHA and meta["size"] == len(BUNDLE)
    assert maker.made == []

    NET.sockets[:] = []
    c, s = channel_conns()
    rest = BUNDLE[12345:]
    cr = "bytes 12345-%d/%d" % (len(BUNDLE) - 1, len(BUNDLE))
    serve(HOST, c, s, [http(206, rest, [("Content-Range", cr)])])
    stats = {}
    out = channel.check(dev, URL, over(dev), maker, KEYS, folder=folder, stats=stats)
    assert out["outcome"] == "updated", out
    assert bytes(out["installer"].data) == BUNDLE
    assert b"\r\nRange: bytes=12345-\r\n" in requests()[2]
    assert stats["resumed_from"] == 12345 and stats["fetched"] == len(rest)
    assert listing(folder) == []


def test_server_ignoring_range_restarts_from_zero():
    dev, folder, maker = fresh()
    c, s = channel_conns()
    serve(HOST, c, s, cut_bundle(30000))
    assert poll(dev, folder, maker)["reason"] == "closed"
    NET.sockets[:] = []
    c, s = channel_conns()
    serve(HOST, c, s, [http(200, BUNDLE)])  # Range ignored: the whole file again
    out = run(dev, folder, maker)
    assert out["outcome"] == "updated", out
    assert b"Range: bytes=30000-" in requests()[2]
    assert bytes(out["installer"].data) == BUNDLE


def test_wrong_content_range_is_refused_and_part_kept():
    dev, folder, maker = fresh()
    c, s = channel_conns()
    serve(HOST, c, s, cut_bundle(1000))
    poll(dev, folder, maker)
    c, s = channel_conns()
    bad = "bytes 0-%d/%d" % (len(BUNDLE) - 1, len(BUNDLE))
    serve(HOST, c, s, [http(206, BUNDLE, [("Content-Range", bad)])])
    out = poll(dev, folder, maker)
    assert out["reason"] == "bad_range", out
    assert os.stat(folder + "/channel.part")[6] == 1000 and maker.made == []


def test_a_new_release_discards_the_old_partial_file():
    dev, folder, maker = fresh()
    c, s = channel_conns()
    serve(HOST, c, s, cut_bundle(5000))
    poll(dev, folder, maker)
    other = bytes(reversed(BUNDLE))
    sha = binascii.hexlify(hashlib.sha256(other).digest()).decode()
    c, s = channel_conns(doc(version="1.2.0", sha256=sha, counter=3))
    serve(HOST, c, s, [http(200, other)])
    out = run(dev, folder, maker)
    assert out["outcome"] == "updated"
    assert b"Range" not in requests()[-1]
    assert bytes(out["installer"].data) == other


# -- refusals change nothing ------------------------------------------------------------------
def snapshot(dev, folder):
    try:
        st = fsutil.read_bytes(dev.state.path)
    except OSError:
        st = None
    return st, listing(folder)


def test_bad_signature_changes_nothing():
    dev, folder, maker = fresh()
    data = doc()
    sig = bytearray(sign(data))
    sig[10] ^= 1
    c, s = channel_conns(data, bytes(sig))
    serve(HOST, c, s, [http(200, BUNDLE)])
    before = snapshot(dev, folder)
    out = poll(dev, folder, maker)
    assert out["outcome"] == "error" and out["reason"] == "bad_signature", out
    assert len(requests()) == 2  # the bundle was never asked for
    assert snapshot(dev, folder) == before and maker.made == []
    # a document altered after signing is refused the same way
    c, _ = channel_conns(doc(version="9.9.9"))
    _, s = channel_conns(data)
    serve(HOST, c, s)
    assert poll(dev, folder, maker)["reason"] == "bad_signature"
    assert snapshot(dev, folder) == before


def test_another_kind_of_signed_document_changes_nothing():
    # typed signatures: an anchor set and an untyped channel document, each signed by the
    # update key, served as channel.json: refused as wrong_kind, never a trusted outcome (not
    # even for a version on trial), the bundle never asked for
    dev, folder, maker = fresh()
    dev.on_trial({"kind": "bundle", "boots": 1})
    anchors = json.dumps({"kind": "anchors", "version": 2, "anchors": [], "hosts": []}).encode()
    untyped = json.loads(doc())
    del untyped["kind"]
    before = snapshot(dev, folder)
    for data in (anchors, json.dumps(untyped).encode()):
        NET.sockets[:] = []
        c, s = channel_conns(data)
        serve(HOST, c, s, [http(200, BUNDLE)])
        out = poll(dev, folder, maker)
        assert out["outcome"] == "error" and out["reason"] == "wrong_kind", out
        assert out.get("trusted") is not True and len(requests()) == 2 and maker.made == []
        assert snapshot(dev, folder) == before


def test_lower_counter_changes_nothing():
    dev, folder, maker = fresh()
    dev.state.set("counters", {"app": 5})
    c, s = channel_conns(doc(counter=4))
    serve(HOST, c, s, [http(200, BUNDLE)])
    out = poll(dev, folder, maker)
    assert out["outcome"] == "no-update" and "counter" in out["reason"], out
    assert len(requests()) == 2 and maker.made == [] and listing(folder) == []


def test_hash_mismatch_changes_nothing():
    dev, folder, maker = fresh()
    evil = BUNDLE[:-1] + b"\x00"
    c, s = channel_conns()
    serve(HOST, c, s, [http(200, evil)])
    before = snapshot(dev, folder)
    out = poll(dev, folder, maker)
    assert out["outcome"] == "error" and out["reason"] == "hash_mismatch", out
    assert maker.made == [] and snapshot(dev, folder) == before


def test_size_mismatch_is_refused_before_writing():
    dev, folder, maker = fresh()
    c, s = channel_conns()
    serve(HOST, c, s, [http(200, BUNDLE + b"x")])
    out = poll(dev, folder, maker)
    assert out["reason"] == "size_mismatch", out
    assert maker.made == [] and "channel.part" not in listing(folder)


def test_oversized_or_chunked_channel_is_refused_unread():
    dev, folder, maker = fresh()
    serve(HOST, [http(200, b"x" * 5000)])
    assert poll(dev, folder, maker)["reason"] == "too_large"
    head = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"
    serve(HOST, [head])
    assert poll(dev, folder, maker)["reason"] == "chunked"


def test_channel_without_length_read_to_close():
    dev, folder, maker = fresh(version="1.1.0")
    data = doc()
    serve(HOST, [b"HTTP/1.0 200 OK\r\n\r\n" + data, None], [http(200, sign(data))])
    assert run(dev, folder, maker)["outcome"] == "up-to-date"


def test_refused_bundle_not_downloaded_again():
    dev, folder, maker = fresh()
    maker.fail = "bad_manifest"
    c, s = channel_conns()
    serve(HOST, c, s, [http(200, BUNDLE)])
    out = poll(dev, folder, maker)
    assert out["reason"] == "bad_manifest", out
    assert maker.made[0].calls[-1] == ("abort",)
    assert dev.state.get("channel")["refused"] == SHA and listing(folder) == []
    c, s = channel_conns()
    serve(HOST, c, s, [http(200, BUNDLE)])
    out = poll(dev, folder, maker)
    assert out["outcome"] == "no-update" and "refused" in out["reason"], out
    assert len(requests()) == 5  # channel.json and .sig only


def test_release_that_failed_its_trial_is_no_update():
    # the installer knows the signed release failed its trial here (other bytes, same manifest)
    dev, folder, maker = fresh()
    maker.fail = "failed_trial"
    c, s = channel_conns()
    serve(HOST, c, s, [http(200, BUNDLE)])
    out = poll(dev, folder, maker)
    assert out["outcome"] == "no-update" and "refused" in out["reason"], out
    assert dev.state.get("channel")["refused"] == SHA and listing(folder) == []


def test_transient_install_failure_is_retried():
    dev, folder, maker = fresh()
    maker.fail = "too_large"
    c, s = channel_conns()
    serve(HOST, c, s, [http(200, BUNDLE)])
    assert poll(dev, folder, maker)["reason"] == "too_large"
    assert dev.state.get("channel") is None


def test_poll_reads_keys_and_settings():
    dev, folder, maker = fresh(version="1.1.0")
    keys = folder + "/../keys"
    fsutil.makedirs(keys)
    c, s = channel_conns()
    serve(HOST, c, s)
    out = channel.poll(dev, maker, net=over(dev), folder=folder, keys_dir=keys)
    assert out["outcome"] == "error" and out["reason"] == "no_keys", out
    assert out["trusted"] is False
    dev.settings["channel"] = ""
    assert channel.poll(dev, maker, folder=folder)["reason"] == "no_channel"


# -- trust of the outcome ------------------------------------------------------------------------
def test_trusted_only_when_the_signature_verified_in_this_poll():
    dev, folder, maker = fresh(version="1.1.0")
    c, s = channel_conns()
    serve(HOST, c, s)
    out = run(dev, folder, maker)
    assert out["outcome"] == "up-to-date" and out["trusted"] is True, out  # over plain http
    serve(HOST, [http(304)])
    out = run(dev, folder, maker)
    assert out["status"] == 304 and out["trusted"] is False  # a bare 304 proves nothing
    c, _ = channel_conns(doc(version="9.9.9"))
    _, s = channel_conns(doc())
    serve(HOST, c, s)
    out = poll(dev, folder, maker, force=True)
    assert out["reason"] == "bad_signature" and out.get("trusted") is not True


def test_on_trial_polled_without_conditional_headers():
    dev, folder, maker = fresh(version="1.1.0")
    dev.state.set("channel", {"url": URL, "seen": "Blink 1.1.0", "etag": '"v1"', "poll": 60})
    dev.on_trial({"kind": "bundle", "boots": 1})
    c, s = channel_conns()
    serve(HOST, c, s)
    out = run(dev, folder, maker)
    assert b"If-None-Match" not in requests()[0] and len(requests()) == 2
    assert out["outcome"] == "up-to-date" and out["trusted"] is True, out
    NET.sockets[:] = []
    dev.on_trial(None)  # committed: cheap conditional polls again
    serve(HOST, [http(304)])
    assert run(dev, folder, maker)["status"] == 304
    assert b'If-None-Match: "v1"' in requests()[0]


def test_compares_with_the_installed_pointer_not_settings():
    # settings still name 0.0.1 (they change only at commit); the pointer says 1.1.0 runs
    dev, folder, maker = fresh(version="1.1.0")
    c, s = channel_conns()
    serve(HOST, c, s, [http(200, BUNDLE)])
    out = run(dev, folder, maker)
    assert out["outcome"] == "up-to-date" and len(requests()) == 2 and maker.made == []
    assert out["app"] == {"name": "Blink", "version": "1.1.0"}


def test_cleanup():
    fsutil.rmtree(TMP)


# -- power cuts during the download ----------------------------------------------------------
def test_power_cut_anywhere_in_the_download_resumes_to_the_right_file():
    import powercut

    small = BUNDLE[:9000]
    sha = binascii.hexlify(hashlib.sha256(small).digest()).decode()
    data = doc(size=len(small), sha256=sha)
    sig = sign(data)
    old_flush = channel.FLUSH_EVERY
    channel.FLUSH_EVERY = 2048  # several syncs in a small file

    def device(root):
        dev = Device(root)
        return dev, root + "/staging"

    def serve_all(offset):
        global NET
        NET = fakesock.install()
        if offset:
            cr = "bytes %d-%d/%d" % (offset, len(small) - 1, len(small))
            body = http(206, small[offset:], [("Content-Range", cr)])
        else:
            body = http(200, small)
        serve(HOST, [http(200, data)], [http(200, sig)], [body])

    def operation(root):
        serve_all(0)
        dev, folder = device(root)
        out = run(dev, folder, Maker())
        assert out["outcome"] == "updated"

    def check(root, completed):
        dev, folder = device(root)
        if completed:
            assert listing(folder) == []
            return "complete"
        offset = max(channel._size(folder + "/channel.part"), 0)
        assert powercut.read(folder + "/channel.part") in (None, small[:offset])
        serve_all(offset)
        maker = Maker()
        out = run(dev, folder, maker)
        assert out["outcome"] == "updated", out
        assert bytes(out["installer"].data) == small
        if 0 < offset < len(small):
            assert ("Range: bytes=%d-" % offset).encode() in requests()[2]
        return "resumed" if offset else "from_zero"

    try:
        image = powercut.fresh_image(lambda root: fsutil.makedirs(root + "/staging"))
        tried, outcomes = powercut.sweep(image, operation, check)
    finally:
        channel.FLUSH_EVERY = old_flush
    powercut.report("channel download", tried, outcomes)
    assert outcomes.get("resumed", 0) > 0 and outcomes.get("from_zero", 0) > 0
