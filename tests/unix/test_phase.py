# The memory diet (issue 16) on the MicroPython unix port: phases release what they imported
# (phase.py), a connection's anchors load without the certificate parser (certstore.py without
# certadmin.py and der.py), and the device holds no network code between call homes.
import sys
import time

import ias
import nor
import test_der as mk  # the DER builder
import vfs
from fakesock import ReplyStream
from ias import certstore, device, phase, state
from idboard import IdentityBoard

ROOT = "/ph/cert"
NOW = int(time.time())
DEV = nor.NorFlash(32)


def forget(*names):
    # as if never imported in this process
    for name in names:
        sys.modules.pop("ias." + name, None)
        if name in ias.__dict__:
            delattr(ias, name)


def loaded(name):
    return "ias." + name in sys.modules


def store_with(names):
    try:
        vfs.umount("/ph")
    except OSError:
        pass
    nor.mount(DEV, "/ph", mkfs=True)
    store = certstore.CertStore(ROOT)
    for n in names:
        store.add(n, mk.anchor(n), NOW)
    return store


class Board(IdentityBoard):
    clock_synced = False
    tls_verifies = True

    def ticks_ms(self):
        return 0

    def time(self):
        return 0

    def feed_watchdog(self):
        pass


def test_release_drops_what_the_phase_imported_and_keeps_the_rest():
    forget("anchorset", "der", "trust")
    before = phase.loaded()
    from ias import anchorset  # imports der and trust with it

    assert anchorset.MAX_SIG and loaded("anchorset") and loaded("der") and loaded("trust")
    phase.release(before)
    for name in ("anchorset", "der", "trust"):
        assert not loaded(name) and name not in ias.__dict__, name
    assert loaded("certstore") and loaded("device")  # loaded before the snapshot: kept
    from ias import anchorset as again  # the next user imports it afresh

    assert again.MAX_SIG == anchorset.MAX_SIG


def test_release_keeps_modules_that_hold_state_for_the_device_life():
    forget("log", "vpartition")
    before = phase.loaded()
    from ias import log  # noqa: F401  (its lines in RAM, the board's clock)

    phase.release(before)
    assert loaded("log")


def test_a_connection_context_needs_no_certificate_parser():
    store = store_with(("iasRootCa.cer", "isrgRootX1.cer"))
    forget("certadmin", "der")
    ctx = store.context()
    assert store.loaded == 2 and type(ctx).__name__ == "SSLContext"
    assert not loaded("certadmin") and not loaded("der")
    store.context(["isrgRootX1.cer"])
    assert store.loaded == 1


def test_earliest_expiry_parses_once_releases_the_parser_and_follows_changes():
    store = store_with(("iasRootCa.cer",))
    forget("certadmin", "der")
    assert store.earliest_expiry(NOW) == 1861919999  # AAA Certificate Services, 2028-12-31
    assert not loaded("certadmin") and not loaded("der")
    kept = store.expiries
    assert store.earliest_expiry(NOW + 1) == 1861919999 and store.expiries is kept
    assert store.earliest_expiry(1861919999 + 1) is None  # expired anchors no longer count
    store.add("isrgRootX1.cer", mk.anchor("isrgRootX1.cer"), NOW)
    assert store.expiries is None  # a change: parsed again at the next use
    assert store.earliest_expiry(NOW) == 1861919999


def test_the_device_holds_no_network_code_until_a_call_needs_it():
    forget("transport", "httpclient", "net", "settings")
    board = Board()
    st = state.State("/tmp/ias_test_phase_state.json")
    dev = device.Device(board, {"server": "https://x", "channel": ""}, st, "store")
    for name in ("transport", "httpclient", "net"):
        assert not loaded(name), name
    t = dev.transport  # made on first use ...
    assert loaded("transport") and t.board is board and t.store == "store"
    assert dev.transport is t  # ... and kept while the call lasts


MADE = []


def fake_connect(scheme, host, port, timeout_ms):
    MADE.append(host)
    return ReplyStream(b"HTTP/1.1 304 Not Modified\r\n\r\n")


class NetDevice(device.Device):
    # The device's own transport, made on demand as Device makes it, with a fake peer
    @property
    def transport(self):
        if self._transport is None:
            from ias import transport

            self._transport = transport.Transport(
                self.board, self.store, self.state, connect=fake_connect
            )
        return self._transport


def test_a_call_home_releases_its_modules_and_its_transport():
    forget("callhome", "transport", "httpclient", "net", "trial", "installer", "formats")
    st = state.State("/tmp/ias_test_phase_state.json")
    settings = {"server": "https://ias.example", "channel": "", "act_code": "a"}
    settings.update({"app_name": "Blink", "app_version": "1.0.0"})
    dev = NetDevice(Board(), settings, st, None)
    out = dev.call_home()
    assert out["outcome"] == "up-to-date" and MADE == ["ias.example"]
    for name in ("callhome", "transport", "httpclient", "net", "trial", "formats"):
        assert not loaded(name), name
    assert dev._transport is None
