# device.py on the MicroPython unix port with a fake transport: the device hands its one transport
# down to the IAS call home and the channel, and commits a version on trial only after a trusted
# outcome (a verified IAS answer, or a channel signature verified in this very poll).
import binascii
import os

from fakesock import ReplyStream
from ias import device, state, transport
from idboard import IdentityBoard

TMP = "/tmp/ias_test_device_%s" % binascii.hexlify(os.urandom(4)).decode()


class Board(IdentityBoard):
    clock_synced = False  # no anchor work after the call: only the commit decision is tested
    tls_verifies = True
    now = 0

    def ticks_ms(self):
        return 0

    def time(self):
        return self.now

    def feed_watchdog(self):
        pass


class Peer:
    """connect(scheme, host, port, timeout_ms) answering every request with `reply`."""

    def __init__(self, reply, verified=True):
        self.reply = reply
        self.verified = verified
        self.streams = []

    def __call__(self, scheme, host, port, timeout_ms):
        s = ReplyStream(self.reply, scheme == "https" and self.verified)
        self.streams.append((scheme, host, port, s))
        return s


def make(peer, server="https://ias.example", channel="", tls_verifies=True):
    board = Board()
    board.tls_verifies = tls_verifies
    settings = {
        "server": server,
        "channel": channel,
        "act_code": "a",
        "app_name": "Blink",
        "app_version": "1.0.0",
    }
    st = state.State(TMP + "_state.json")
    dev = device.Device(
        board, settings, st, None, transport=transport.Transport(board, connect=peer)
    )
    dev.commits = 0

    def healthy():
        dev.commits += 1

    dev._healthy = healthy  # the commit itself belongs to trial.py: here, only whether it happens
    return dev


NOT_MODIFIED = b"HTTP/1.1 304 Not Modified\r\n\r\n"


def test_device_builds_its_one_transport():
    board = Board()
    dev = device.Device(board, {"server": "https://x", "channel": ""}, None, "store")
    assert isinstance(dev.transport, transport.Transport)
    assert dev.transport.board is board and dev.transport.store == "store"


def test_ias_call_home_goes_through_the_device_transport_and_commits_when_verified():
    peer = Peer(NOT_MODIFIED)
    dev = make(peer)
    out = dev.call_home()
    assert out["outcome"] == "up-to-date" and out["trusted"] is True, out
    scheme, host, port, s = peer.streams[0]
    assert (scheme, host, port) == ("https", "ias.example", 443)
    assert bytes(s.sent).startswith(b"GET /ota/updates? HTTP/1.1\r\nHost: ias.example\r\n")
    assert dev.commits == 1


def test_unverified_ias_answer_does_not_commit():
    dev = make(Peer(NOT_MODIFIED, verified=False))
    out = dev.call_home()
    assert out["outcome"] == "up-to-date" and out["trusted"] is False
    assert dev.commits == 0
    dev = make(Peer(NOT_MODIFIED), server="http://ias.example:8080")
    assert dev.call_home()["trusted"] is False and dev.commits == 0


def test_board_that_cannot_verify_tls_commits_on_a_good_ias_answer():
    dev = make(Peer(NOT_MODIFIED, verified=False), tls_verifies=False)
    dev.call_home()
    assert dev.commits == 1
    dev = make(Peer(b"HTTP/1.1 500 Oops\r\n\r\n"), tls_verifies=False)
    assert dev.call_home()["outcome"] == "no-update" and dev.commits == 1
    dev = make(Peer(b""), tls_verifies=False)  # closed before an answer: an error
    assert dev.call_home()["outcome"] == "error" and dev.commits == 0


def test_channel_commit_follows_the_signature_not_the_connection():
    dev = make(Peer(NOT_MODIFIED), channel="https://cdn.example/c.json")
    for out, commits in (
        ({"outcome": "up-to-date", "reason": "version 1.1.0", "trusted": True}, 1),
        ({"outcome": "up-to-date", "reason": "not modified", "trusted": False}, 1),
        ({"outcome": "no-update", "reason": "counter", "trusted": True}, 2),
        ({"outcome": "error", "reason": "hash_mismatch", "trusted": True}, 2),
    ):
        dev._after_call(out)
        assert dev.commits == commits, (out, dev.commits)
    # a board without TLS verification gets no pass on the channel: the signature decides
    dev = make(Peer(NOT_MODIFIED), channel="http://cdn.example/c.json", tls_verifies=False)
    dev._after_call({"outcome": "up-to-date", "reason": "not modified", "trusted": False})
    assert dev.commits == 0


def test_channel_poll_uses_the_device_transport():
    peer = Peer(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")
    dev = make(peer, channel="http://cdn.example:8000/app/channel.json")
    out = dev.call_home()
    assert out["outcome"] == "error" and out["reason"] == "http_status", out
    assert out["trusted"] is False and dev.commits == 0
    scheme, host, port, s = peer.streams[0]
    assert (scheme, host, port) == ("http", "cdn.example", 8000)
    assert bytes(s.sent).startswith(
        b"GET /app/channel.json HTTP/1.1\r\nHost: cdn.example:8000\r\n"
    )


def test_config_mode_goes_through_the_device_transport():
    from ias import configmode

    peer = Peer(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")
    dev = make(peer)
    assert configmode.device_announce(dev)("1") == 404
    assert bytes(peer.streams[0][3].sent).startswith(b"GET /ota/logs?msg=1 HTTP/1.1\r\n")
    # "get IAS root cert": the anchor ladder, forced, over the same transport
    dev.board.clock_synced = True
    dev.board.now = 1800000000
    preview, apply = configmode.device_anchor_steps(dev)
    res = preview()
    assert res["ok"] is False and "http_404" in res["message"], res
    assert apply(3)["ok"] is False  # nothing previewed: nothing to install
    asked = [(sc, h, p, bytes(s.sent).split(b" ")[1]) for sc, h, p, s in peer.streams[1:]]
    assert asked[0] == ("https", "ias.example", 443, b"/ota/anchors/anchors.json"), asked
    assert asked[-1] == ("http", "ias.example", 80, b"/ota/anchors/anchors.json"), asked


class _Halt(Exception):
    pass


class LoopBoard(Board):
    """A board for Device.run(): no Wi-Fi in range; reset() and the third loop cycle halt."""

    def __init__(self):
        self.resets = 0
        self.joins = 0
        self.cycles = 0

    def wifi_connect(self, networks, timeout_ms=10000):
        self.joins += 1
        return None

    def wifi_ip(self):
        return None

    def button_pressed(self):
        return False

    def led_pattern(self, name):
        pass

    def ticks_diff(self, a, b):
        return a - b

    def sleep_ms(self, ms):
        pass

    def console(self, text):
        pass

    def reset(self):
        self.resets += 1
        raise _Halt("reset")

    def cycle_done(self):
        self.cycles += 1
        if self.cycles >= 3:
            raise _Halt("cycles")


class _Log:
    def __init__(self):
        self.lines = []

    def info(self, tag, msg):
        self.lines.append(msg)

    warn = info

    def exc(self, tag, msg, e):
        self.lines.append("%s: %r" % (msg, e))

    def set_clock(self, fn):
        pass

    def flush(self):
        pass


class _NoAsyncio:
    """The build without asyncio (ESP8266 1 MiB and 512 KiB): `import asyncio` fails."""

    def __enter__(self):
        import sys

        self.saved = {n: m for n, m in sys.modules.items() if n.split(".")[0] == "asyncio"}
        self.saved.update({n: sys.modules[n] for n in ("ias.configmode",) if n in sys.modules})
        for n in self.saved:
            del sys.modules[n]
        self.folder = TMP + "_noasyncio"
        os.mkdir(self.folder)
        with open(self.folder + "/asyncio.py", "w") as f:
            f.write("raise ImportError(\"no module named 'asyncio'\")\n")
        sys.path.insert(0, self.folder)
        self.log = device.log
        device.log = _Log()
        return device.log

    def __exit__(self, *exc):
        import sys

        device.log = self.log
        sys.path.remove(self.folder)
        os.remove(self.folder + "/asyncio.py")
        os.rmdir(self.folder)
        for n in [n for n in sys.modules if n.split(".")[0] == "asyncio"]:
            del sys.modules[n]
        sys.modules.update(self.saved)


def _loop_device():
    dev = make(Peer(NOT_MODIFIED))
    dev.board = LoopBoard()
    dev.settings.update({"wifi": [], "interval": 60})
    return dev


def test_no_asyncio_first_boot_without_wifi_runs_on_without_a_reset():
    assert device.config_mode_missing() is None  # the unix port has asyncio
    with _NoAsyncio() as rec:
        assert "asyncio" in device.config_mode_missing()
        for mode in ("normal", "config"):
            dev = _loop_device()
            try:
                dev.run(mode)
                raise AssertionError("the loop ended")
            except _Halt as e:
                assert str(e) == "cycles", (mode, e)  # the loop ran; reset() was never called
            assert dev.board.resets == 0 and dev.board.cycles == 3
            assert dev.board.joins >= 1  # Wi-Fi is tried again, not given up
            assert any("config mode unavailable on this build" in m for m in rec.lines), rec.lines
    assert device.config_mode_missing() is None


def test_cleanup():
    for p in (TMP + "_state.json", TMP + "_state.json.tmp"):
        try:
            os.remove(p)
        except OSError:
            pass


def test_last_call_home_recorded_only_when_it_changes():
    # the config page's Info shows it; the no-update path writes nothing, a failure and the
    # first answer after it are written once each
    peer = Peer(NOT_MODIFIED)
    dev = make(peer)
    try:
        os.remove(TMP + "_state.json")
    except OSError:
        pass
    dev.state.data = {}
    writes = []
    orig = dev.state.save

    def save():
        writes.append(dict(dev.state.data))
        return orig()

    dev.state.save = save
    no = {"outcome": "no-update", "reason": "not_newer", "trusted": False}
    dev._after_call(no)
    dev._after_call(dict(no))
    dev._after_call({"outcome": "up-to-date", "reason": "Not Modified", "trusted": False})
    assert writes == [] and dev.state.get("last_call") is None
    dev._after_call({"outcome": "error", "reason": "untrusted", "trusted": False})
    dev._after_call({"outcome": "error", "reason": "untrusted", "trusted": False})
    assert len(writes) == 1 and dev.state.get("last_call")["reason"] == "untrusted"
    dev._after_call(dict(no))
    dev._after_call(dict(no))
    assert len(writes) == 2
    rec = dev.state.get("last_call")
    assert rec["outcome"] == "no-update" and rec["reason"] == "not_newer" and "since" in rec
