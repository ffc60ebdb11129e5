# callhome on the MicroPython unix port with fake sockets: the exact IAS request bytes and header
# order, the update decision, streaming into installers (a recording fake and the real staging
# installer), and every fault leaving the installer aborted with the right reason, in bounded time.
import binascii
import hashlib
import os

import fakesock
import staginginstaller as staging
from ias import callhome, httpclient, installer, settings, slots, state, transport
from ias.reason import ReasonError
from idboard import IdentityBoard

TMP = "/tmp/ias_test_callhome_%s" % binascii.hexlify(os.urandom(4)).decode()


class FakeBoard(IdentityBoard):
    def __init__(self):
        self.t = 0

    def ticks_ms(self):
        return self.t

    def time(self):
        return 1800000000


SETTINGS = {
    "server": "https://iotappstory.com",
    "act_code": "abc123",
    "app_name": "IASBlink",
    "app_version": "1.0.0",
}
# What the slot pointer says runs now (slots.installed_artifact): the one source of the version.
INSTALLED = {
    "size": 4242,
    "md5": "0123456789ABCDEF0123456789abcdef",
    "name": "IASBlink",
    "version": "1.0.0",
}

EXPECTED = (
    b"GET /ota/updates? HTTP/1.1\r\n"
    b"Host: iotappstory.com\r\n"
    b"User-Agent: ESP-http-Update\r\n"
    b"x-ESP-STA-MAC: 24:0A:C4:12:34:56\r\n"
    b"x-ESP-ACT-ID: abc123\r\n"
    b"x-ESP-LOCIP: 192.168.1.23\r\n"
    b"x-ESP-FREE-SPACE: 1000000\r\n"
    b"x-ESP-SKETCH-SIZE: 4242\r\n"
    b"x-ESP-SKETCH-MD5: 0123456789abcdef0123456789abcdef\r\n"
    b"x-ESP-FLASHCHIP-ID: 1458400\r\n"
    b"x-ESP-CHIP-ID: 314842148\r\n"
    b"x-ESP-CORE-VERSION: v1.29.0\r\n"
    b"x-ESP_IASLIB: 2.1.0-RC5.1\r\n"
    b"x-ESP-FLASHCHIP-SIZE: 4194304\r\n"
    b"x-ESP-VERSION: IASBlink v1.0.0\r\n"
    b"x-ESP-MODE: sketch\r\n"
)


class FakeStore:
    def earliest_expiry(self, now):
        return 1861919999  # 2028-12-31 23:59:59, the AAA root's end


class Device:
    def __init__(self, st=None, store=None, settings=None):
        self.board = FakeBoard()
        self.settings = settings or SETTINGS
        self.state = st
        self.store = store


class RecordingInstaller:
    def __init__(self, first):
        self.first = first
        self.calls = []
        self.data = bytearray()

    def begin(self, size, name, version):
        self.calls.append(("begin", size, name, version))

    def write(self, chunk):
        assert isinstance(chunk, memoryview)
        self.data.extend(chunk)

    def finish(self, md5, sha):
        self.calls.append(("finish", md5, sha))

    def abort(self):
        self.calls.append(("abort",))

    def activate(self):
        self.calls.append(("activate",))


class Maker:
    def __init__(self, cls=RecordingInstaller):
        self.made = []
        self.trusted = []  # what callhome said about the source of each body
        self.cls = cls

    def __call__(self, first, trusted):
        self.trusted.append(trusted)
        inst = self.cls(first)
        inst.verified = trusted
        self.made.append(inst)
        return inst


class connector:
    """connect(scheme, host, port, timeout_ms) for a transport.Transport, handing out scripted
    fake sockets; https ones count as verified unless `verified` is False."""

    def __init__(self, *replies, verified=True):
        self.net = fakesock.install()
        self.net.script("iotappstory.com", 443, list(replies))
        self.opened = []
        self.verified = verified

    def __call__(self, scheme, host, port, timeout_ms):
        s = fakesock.FakeSocket()
        s.connect((host, port))
        s.verified = scheme == "https" and self.verified
        self.opened.append((host, port, timeout_ms, s))
        return s


def over(dev, connect):
    """The device's transport over a fake connect."""
    return transport.Transport(dev.board, connect=connect)


class Trickle:
    """A stream: the head at once, then one byte per read, each a virtual second later."""

    def __init__(self, head, board):
        self.head = head
        self.board = board
        self.reads = 0
        self.closed = False

    def write(self, data):
        return len(data)

    def readinto(self, buf):
        if self.head:
            n = len(self.head)
            buf[:n] = self.head
            self.head = b""
            return n
        self.board.t += 1000
        self.reads += 1
        buf[0] = 122
        return 1

    def close(self):
        self.closed = True


class Generated:
    """A stream that answers with a head and then `size` bytes of 'q', allocating nothing."""

    def __init__(self, head, size):
        self.head = head
        self.left = size
        self.closed = False

    def write(self, data):
        return len(data)

    def readinto(self, buf):
        if self.head:
            n = len(self.head)
            buf[:n] = self.head
            self.head = b""
            return n
        n = len(buf) if len(buf) < self.left else self.left
        if n == 0:
            return 0
        for i in range(n):
            buf[i] = 113
        self.left -= n
        return n

    def close(self):
        self.closed = True


def md5hex(data):
    return binascii.hexlify(hashlib.md5(data).digest()).decode()


def sha256hex(data):
    return binascii.hexlify(hashlib.sha256(data).digest()).decode()


def update_reply(body, md5=None, length=None, name=b"IASBlink", ver=b"1.1.0"):
    head = b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n"
    head += b"Content-Length: %d\r\n" % (len(body) if length is None else length)
    head += b"x-name: " + name + b"\r\nx-ver: " + ver + b"\r\n"
    head += b"x-MD5: " + (md5 or md5hex(body)).encode() + b"\r\n\r\n"
    return head


def run(*replies, **kw):
    connect = connector(*replies, verified=kw.pop("verified", True))
    maker = kw.pop("maker", None) or Maker()
    dev = kw.pop("device", None) or Device()
    out = callhome.call_home(dev, over(dev, connect), maker, INSTALLED, **kw)
    return out, maker, connect, dev


def test_exact_request_bytes_and_order():
    out, maker, connect, _ = run(b"HTTP/1.1 304 Not Modified\r\n\r\n")
    sent = connect.net.sent()
    assert sent == EXPECTED + b"Connection: close\r\n\r\n", sent
    assert out["outcome"] == "up-to-date" and out["reason"] == "Not Modified"
    assert out["status"] == 304 and out["app"] == {"name": "IASBlink", "version": "1.0.0"}
    assert maker.made == []
    host, port, timeout, sock = connect.opened[0]
    assert (host, port, timeout) == ("iotappstory.com", 443, 10000) and sock.closed


FACTORY_MD5 = "00112233445566778899aabbccddeeff"


def sketch_md5(installed):
    connect = connector(b"HTTP/1.1 304 Not Modified\r\n\r\n")
    dev = Device()
    callhome.call_home(dev, over(dev, connect), Maker(), installed)
    for line in connect.net.sent().split(b"\r\n"):
        if line.startswith(b"x-ESP-SKETCH-MD5: "):
            return line[len(b"x-ESP-SKETCH-MD5: ") :].decode()
    raise AssertionError("no x-ESP-SKETCH-MD5 header")


def test_factory_app_reports_the_recorded_md5_until_the_first_update():
    # A board fresh from `ias sim init` or a deploy: the factory record in settings names the
    # app in slot_a, and x-ESP-SKETCH-MD5 is its recorded MD5, never empty (issue 17 item 7).
    factory = settings.validate(dict(SETTINGS, app_md5=FACTORY_MD5))
    os.mkdir(TMP + "_f")
    try:
        sl = slots.Slots(TMP + "_f", factory)
        assert sketch_md5(sl.installed_artifact()) == FACTORY_MD5  # no /app.json yet
        # The pointer `ias sim init` writes names the factory app but holds no md5 of its own.
        sl.write({"active": "slot_a", "name": "IASBlink", "version": "1.0.0", "counter": 0})
        assert sketch_md5(sl.installed_artifact()) == FACTORY_MD5
        # After an update the pointer's md5 is reported, not the factory's.
        sl.write(
            {
                "active": "slot_b",
                "kind": "bundle",
                "name": "IASBlink",
                "version": "2.0",
                "counter": 2,
                "md5": "ffeeddccbbaa99887766554433221100",
                "size": 99,
            }
        )
        assert sketch_md5(sl.installed_artifact()) == "ffeeddccbbaa99887766554433221100"
    finally:
        for name in os.listdir(TMP + "_f"):
            os.remove(TMP + "_f/" + name)
        os.rmdir(TMP + "_f")


def test_factory_md5_setting_is_checked():
    for bad in ("abc", "0123456789ABCDEF0123456789abcdef", "g" * 32, 5):
        try:
            settings.validate({"app_md5": bad})
        except ReasonError as e:
            assert e.reason == "bad_setting"
        else:
            raise AssertionError("app_md5 %r accepted" % (bad,))
    assert settings.validate({})["app_md5"] == ""


def test_one_write_per_request():
    connect = connector(b"HTTP/1.1 304 Not Modified\r\n\r\n")
    writes = []

    def counting(scheme, host, port, timeout_ms):
        s = connect(scheme, host, port, timeout_ms)
        orig = s.write

        def write(data):
            writes.append(len(data))
            return orig(data)

        s.write = write
        return s

    dev = Device()
    callhome.call_home(dev, over(dev, counting), Maker(), INSTALLED)
    assert len(writes) == 1


def test_telemetry_headers_and_last_error_lifecycle():
    st = state.State(TMP + "_state.json")
    try:
        st.update({"anchors_version": 3, "last_error": "untrusted"})
        dev = Device(st, FakeStore())
        out, _, connect, _ = run(b"HTTP/1.1 304 Not Modified\r\n\r\n", device=dev)
        sent = connect.net.sent()
        tail = (
            b"x-IAS-ANCHORS: 3\r\nx-IAS-ANCHOR-EXPIRY: 2028-12-31\r\n"
            b"x-IAS-LAST-ERROR: untrusted\r\nConnection: close\r\n\r\n"
        )
        assert sent == EXPECTED + tail, sent
        assert st.get("last_error") is None  # reported once, then dropped
        out, _, connect, _ = run(b"HTTP/1.1 304 Not Modified\r\n\r\n", device=dev)
        assert b"LAST-ERROR" not in connect.net.sent()
        out, _, _, _ = run(device=dev)  # EOF before any byte: an error, kept for next time
        assert out["outcome"] == "error" and out["reason"] == "closed"
        assert st.get("last_error") == "closed"
    finally:
        for p in (TMP + "_state.json", TMP + "_state.json.tmp"):
            try:
                os.remove(p)
            except OSError:
                pass


def test_host_header_with_port_and_http():
    dev = Device(settings=dict(SETTINGS, server="http://10.0.0.2:8080/base"))
    net = fakesock.install()
    net.script("10.0.0.2", 8080, [b"HTTP/1.1 304 Not Modified\r\n\r\n"])

    def connect(scheme, host, port, t):
        s = fakesock.FakeSocket()
        s.connect((host, port))
        return s

    out = callhome.call_home(dev, over(dev, connect), Maker(), INSTALLED)
    assert out["trusted"] is False  # plain http: the answer is not trusted
    assert net.sent().startswith(b"GET /ota/updates? HTTP/1.1\r\nHost: 10.0.0.2:8080\r\n")


def test_non_200_is_no_update_with_reason_and_retry_after():
    out, maker, _, _ = run(
        b"HTTP/1.1 500 ESP MAC not configured for updates\r\nRetry-After: 120\r\n\r\n"
    )
    assert out["outcome"] == "no-update"
    assert out["reason"] == "ESP MAC not configured for updates"
    assert out["retry_after"] == 120 and maker.made == []


def test_200_without_ias_headers_is_error():
    for head in (
        b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nx-name: a\r\nx-ver: 1\r\n\r\nabc",
        b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nx-name: a\r\nx-ver: 1\r\nx-MD5: "
        + md5hex(b"").encode()
        + b"\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nx-name: a\r\nx-ver: 1\r\nx-MD5: xyz\r\n\r\nabc",
        b"HTTP/1.1 200 OK\r\nx-name: a\r\nx-ver: 1\r\nx-MD5: "
        + md5hex(b"abc").encode()
        + b"\r\n\r\nabc",
    ):
        out, maker, _, _ = run(head)
        assert out["outcome"] == "error" and out["reason"] == "bad_update_head", out
        assert maker.made == []


def test_update_streams_to_installer_with_hashes():
    body = bytes((i * 7) & 0xFF for i in range(5000))
    out, maker, _, _ = run(update_reply(body) + body[:300], body[300:2000], body[2000:], None)
    assert out["outcome"] == "updated", out
    assert out["app"] == {"name": "IASBlink", "version": "1.1.0"}
    assert out["md5"] == md5hex(body) and out["sha256"] == sha256hex(body)
    inst = maker.made[0]
    assert out["installer"] is inst
    assert inst.first == body[:512]
    assert maker.trusted == [True]  # the scripted https connection counts as verified TLS
    assert bytes(inst.data) == body
    assert inst.calls == [
        ("begin", 5000, "IASBlink", "1.1.0"),
        ("finish", md5hex(body), sha256hex(body)),
    ]


def test_trusted_only_over_verified_tls():
    body = b"hello"
    out, maker, _, _ = run(b"HTTP/1.1 304 Not Modified\r\n\r\n")
    assert out["trusted"] is True
    out, maker, _, _ = run(b"HTTP/1.1 304 Not Modified\r\n\r\n", verified=False)
    assert out["trusted"] is False
    # the installer is told whether the body came over a verified connection
    out, maker, _, _ = run(update_reply(body) + body)
    assert out["outcome"] == "updated" and maker.made[0].verified is True
    out, maker, _, _ = run(update_reply(body) + body, verified=False)
    assert out["outcome"] == "updated" and maker.made[0].verified is False


class _HashlibWithoutMd5:
    """hashlib as on an ESP8266 build (1.22+): sha256, no md5."""

    sha256 = hashlib.sha256


def test_update_without_md5_on_the_build():
    # ESP8266 builds have no hashlib.md5: the body's MD5 cannot be computed, so x-MD5 is only
    # the artifact's identity (refused list, pointer, reports); the signature and SHA-256 of
    # the installer protect the content.
    body = bytes((i * 13) & 0xFF for i in range(3000))
    ident = md5hex(b"a different artifact").upper()  # not checked: no MD5 here
    real = installer.hashlib  # where the installers' MD5 is made (callhome and channel)
    installer.hashlib = _HashlibWithoutMd5()
    try:
        assert installer.new_md5() is None
        out, maker, _, _ = run(update_reply(body, ident) + body[:700], body[700:], None)
        assert out["outcome"] == "updated", out
        assert out["md5"] == ident.lower() and out["sha256"] == sha256hex(body)
        assert maker.made[0].calls[-1] == ("finish", ident.lower(), sha256hex(body))
        assert bytes(maker.made[0].data) == body
        # the identity still keeps an artifact that failed its trial out
        connect = connector(update_reply(body, ident) + body)
        dev = Device()
        tr = over(dev, connect)
        resp = tr.get("https://iotappstory.com/ota/updates?", [], buf=bytearray(1024))
        try:
            out = callhome.check(resp, Maker(), refused=[ident.lower()])
        finally:
            resp.close()
        assert out["outcome"] == "no-update" and out["reason"].startswith("refused"), out
    finally:
        installer.hashlib = real
    assert installer.new_md5() is not None


def test_upper_case_md5_accepted():
    body = b"hello"
    out, _, _, _ = run(update_reply(body, md5hex(body).upper()) + body)
    assert out["outcome"] == "updated"


def _fault(replies, reason, installer_made=True):
    out, maker, _, _ = run(*replies)
    assert out["outcome"] == "error", out
    assert out["reason"] == reason, (out["reason"], reason, out.get("detail"))
    if installer_made:
        calls = maker.made[0].calls
        assert calls[-1] == ("abort",) and not any(c[0] == "finish" for c in calls), calls
    else:
        assert maker.made == []
    return out


def test_fault_truncated_head():
    _fault([b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nx-na", None], "closed", False)


def test_fault_ten_thousand_headers():
    many = b"".join(b"x-h%d: v\r\n" % i for i in range(10000))
    _fault([b"HTTP/1.1 200 OK\r\n", many], "too_many_headers", False)


def test_fault_megabyte_header_line():
    _fault([b"HTTP/1.1 200 OK\r\nx-name: "] + [b"a" * 8192] * 128, "line_too_long", False)


def test_fault_negative_and_huge_length():
    for v in (b"-5", b"99999999999999999999"):
        head = b"HTTP/1.1 200 OK\r\nContent-Length: " + v + b"\r\nx-name: a\r\nx-ver: 1\r\n"
        _fault([head + b"x-MD5: " + md5hex(b"a").encode() + b"\r\n\r\na"], "bad_length", False)


def test_fault_length_beyond_free_space_refused_by_installer():
    body = b"x" * 600
    reply = update_reply(body, length=2000000) + body
    os.mkdir(TMP)
    try:
        free = staging.free_bytes(TMP)
        assert free > 4000000  # the real statvfs answers; the test then plays a 1 MB flash
        maker = Maker(lambda first: staging.StagingInstaller(TMP + "/staging", lambda d: 1000000))
        out, _, _, _ = run(reply, None, maker=maker)
        assert out["outcome"] == "error" and out["reason"] == "too_large", out
        assert os.listdir(TMP + "/staging") == []
    finally:
        _rmtree(TMP)


def test_fault_body_longer_than_declared():
    body = b"0123456789" * 50
    # the server declares 400 bytes but its x-MD5 covers all 500 it sends
    _fault([update_reply(body, length=400) + body], "md5_mismatch")


def test_fault_md5_mismatch():
    body = b"payload" * 100
    _fault([update_reply(body, md5hex(b"other")) + body], "md5_mismatch")


def test_fault_early_close():
    body = b"payload" * 100
    _fault([update_reply(body) + body[:200], body[200:600], None], "closed")
    # closed while the installer is being chosen: nothing was begun
    _fault([update_reply(body) + body[:200], None], "closed", False)


def test_fault_reset_mid_body():
    body = b"payload" * 100
    _fault(
        [update_reply(body) + body[:600], OSError(104)], "closed"
    )  # a reset is a closed connection (one errno table)


def test_fault_stall():
    body = b"payload" * 100
    _fault([update_reply(body) + body[:600], OSError(110)], "timeout")


def test_fault_first_byte_timeout():
    _fault([OSError(110)], "timeout", False)


def test_fault_trickle_cut_by_minimum_rate():
    # one byte a second, no read ever times out: the transport's minimum rate ends it after one
    # window of waiting, whatever the deadline
    body = b"z" * 100000
    for deadline_s in (60, 600):
        dev = Device()
        stream = Trickle(update_reply(body), dev.board)
        maker = Maker()
        net = over(dev, lambda sc, h, p, t, s=stream: s)
        out = callhome.call_home(dev, net, maker, INSTALLED, deadline_ms=deadline_s * 1000)
        assert out["outcome"] == "error" and out["reason"] == "too_slow", out
        assert maker.made == []  # cut before the 512 bytes that choose the installer
        assert dev.board.t <= transport.RATE_WINDOW_MS + 1000, dev.board.t
        assert stream.closed


def test_fault_head_bounded_by_deadline():
    # the call's deadline bounds connect and head: a first byte later than it is a failure
    dev = Device()
    dev.board.t = 0
    stream = Trickle(b"", dev.board)
    stream.head = None

    def late(sc, h, p, t):
        dev.board.t += 3000  # the connect took 3 s of a 2 s deadline
        return stream

    out = callhome.call_home(dev, over(dev, late), Maker(), INSTALLED, deadline_ms=2000)
    assert out["outcome"] == "error" and out["reason"] == "deadline", out


def test_fault_installer_failure_aborts():
    class Failing(RecordingInstaller):
        def write(self, chunk):
            raise ReasonError("flash_write", "bad block")

    body = b"x" * 3000
    out, maker, _, _ = run(update_reply(body) + body, maker=Maker(Failing))
    assert out["reason"] == "flash_write" and maker.made[0].calls[-1] == ("abort",)


def test_fault_connect_error_reason():

    def connect(scheme, host, port, t):
        raise ReasonError("untrusted", "handshake")

    dev = Device()
    out = callhome.call_home(dev, over(dev, connect), Maker(), INSTALLED)
    assert out["outcome"] == "error" and out["reason"] == "untrusted"
    assert out["trusted"] is False


def _rmtree(path):
    try:
        entries = os.listdir(path)
    except OSError:
        return
    for e in entries:
        p = path + "/" + e
        try:
            os.remove(p)
        except OSError:
            _rmtree(p)
    os.rmdir(path)


def test_staging_installer_end_to_end():
    body = bytes((i * 13) & 0xFF for i in range(70000))
    os.mkdir(TMP)
    try:
        folder = TMP + "/staging"
        maker = Maker(lambda first: staging.StagingInstaller(folder))
        out, _, _, _ = run(update_reply(body) + body[:1000], body[1000:], maker=maker)
        assert out["outcome"] == "updated", out
        with open(folder + "/update.bin", "rb") as f:
            assert f.read() == body
        info = staging.staged(folder)
        assert info["md5"] == md5hex(body) and info["sha256"] == sha256hex(body)
        assert info["size"] == 70000 and info["name"] == "IASBlink" and info["version"] == "1.1.0"
        try:
            out["installer"].activate()
            raise AssertionError("staging activated")
        except ReasonError as e:
            assert e.reason == "not_supported"
        # an aborted download removes what was staged, including an earlier complete one
        out, _, _, _ = run(update_reply(body) + body[:5000], None, maker=maker)
        assert out["reason"] == "closed"
        assert sorted(os.listdir(folder)) == [] and staging.staged(folder) is None
    finally:
        _rmtree(TMP)


def test_staging_heap_bounded():
    # a 256 KiB download allocates a bounded amount: one buffer, nothing per chunk that adds up
    import gc

    os.mkdir(TMP)
    try:
        folder = TMP + "/staging"
        size = 262144
        h = hashlib.md5()
        for _ in range(size // 1024):
            h.update(b"q" * 1024)
        md5 = binascii.hexlify(h.digest()).decode()
        head = update_reply(b"", md5, size)
        maker = Maker(lambda first: staging.StagingInstaller(folder))
        gc.collect()
        gc.disable()
        before = gc.mem_alloc()
        dev = Device()
        net = over(dev, lambda sc, h, p, t: Generated(head, size))
        out = callhome.call_home(dev, net, maker, INSTALLED)
        used = gc.mem_alloc() - before
        gc.enable()
        assert out["outcome"] == "updated", out
        print("allocated during a 256 KiB download (GC off, garbage included): %d bytes" % used)
        # short-lived views and hash calls only: far less than the body, nothing kept per chunk
        assert used < 48 * 1024, used
    finally:
        gc.enable()
        _rmtree(TMP)


def test_announce():
    connect = connector(b"HTTP/1.1 200 OK\r\n\r\n")
    dev = Device()
    status = callhome.announce(dev, over(dev, connect), "1", INSTALLED)
    sent = connect.net.sent()
    expected = EXPECTED.replace(b"/ota/updates?", b"/ota/logs?msg=1").replace(
        b"x-ESP-MODE: sketch", b"x-ESP-MODE: log"
    )
    assert sent == expected + b"Connection: close\r\n\r\n", sent
    assert status == 200
    connect = connector(OSError(110))
    assert callhome.announce(dev, over(dev, connect), "a b", INSTALLED) is None
    assert connect.net.sent().startswith(b"GET /ota/logs?msg=a_b HTTP/1.1\r\n")


def test_iso_date():
    assert callhome.iso_date(0) == "1970-01-01"
    assert callhome.iso_date(951782400) == "2000-02-29"
    assert callhome.iso_date(1861919999) == "2028-12-31"
    assert callhome.iso_date(4102444800) == "2100-01-01"


def test_header_values_cleaned():
    connect = connector(b"HTTP/1.1 304 Not Modified\r\n\r\n")
    installed = dict(INSTALLED, name="evil\r\nX-Injected: 1")  # the pointer's name
    dev = Device()
    callhome.call_home(dev, over(dev, connect), Maker(), installed)
    assert b"\r\nX-Injected" not in connect.net.sent()
    assert b"x-ESP-VERSION: evil  X-Injected: 1 v1.0.0\r\n" in connect.net.sent()
    assert httpclient.MAX_HEADERS == 40
