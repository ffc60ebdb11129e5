"""Real TLS on loopback: the firmware's call home running in `micropython` (unix port) against
`ias serve` in-process, trusting the server's generated root through a CertStore folder on the
host filesystem. Proves the exact request bytes and header order the server receives, 304, a
200 streamed into the staging installer with matching hashes, a trickling server cut by the
transport's minimum rate, and a switched chain refused as untrusted."""

import hashlib
import json
import subprocess
import time

import pytest

from tests.mprunner import micropython_binary
from tools import REPO, pkg_path
from tools.server import UpdateServer

BODY = bytes((i * 7 + 3) & 0xFF for i in range(150000))
MD5 = hashlib.md5(BODY).hexdigest()

# Runs inside micropython: one call home, the outcome as JSON on the last line.
DRIVER = r"""
import sys, json, time
sys.path[:0] = [%(firmware)r, %(unix_tests)r]
import staginginstaller as staging  # the tests' staging-file installer
from ias import callhome, certstore, state, transport

class Board:
    clock_synced = True
    tls_verifies = True
    def ticks_ms(self): return time.ticks_ms()
    def time(self): return int(time.time())
    def mac(self): return "24:0A:C4:12:34:56"
    def wifi_ip(self): return "127.0.0.1"
    def fs_free(self): return 1000000
    def flash_id(self): return 1458400
    def chip_id(self): return 314842148
    def core_version(self): return "v1.29.0"
    def flash_size(self): return 4194304

class Device:
    pass

cfg = json.loads(%(cfg)r)
dev = Device()
dev.board = Board()
dev.settings = {"server": cfg["server"], "act_code": "abc123", "app_name": "IASBlink",
                "app_version": "1.0.0"}
dev.state = state.State(cfg["tmp"] + "/state.json")
dev.store = certstore.CertStore(cfg["tmp"] + "/cert")
trusted = []
def make(first, verified):
    trusted.append(verified)
    return staging.StagingInstaller(cfg["tmp"] + "/staging")
# what the slot pointer says runs now (slots.installed_artifact)
installed = dict(cfg["installed"], name="IASBlink", version="1.0.0")
t0 = time.ticks_ms()
net = transport.Transport(dev.board, dev.store, dev.state)
out = callhome.call_home(dev, net, make, installed,
                         deadline_ms=cfg["deadline_ms"])
out.pop("installer", None)
out["elapsed_ms"] = time.ticks_diff(time.ticks_ms(), t0)
out["installer_trusted"] = trusted
print("@@OUT " + json.dumps(out))
"""

EXPECTED_HEAD = (
    "GET /ota/updates? HTTP/1.1\r\n"
    "Host: localhost:%d\r\n"
    "User-Agent: ESP-http-Update\r\n"
    "x-ESP-STA-MAC: 24:0A:C4:12:34:56\r\n"
    "x-ESP-ACT-ID: abc123\r\n"
    "x-ESP-LOCIP: 127.0.0.1\r\n"
    "x-ESP-FREE-SPACE: 1000000\r\n"
    "x-ESP-SKETCH-SIZE: %d\r\n"
    "x-ESP-SKETCH-MD5: %s\r\n"
    "x-ESP-FLASHCHIP-ID: 1458400\r\n"
    "x-ESP-CHIP-ID: 314842148\r\n"
    "x-ESP-CORE-VERSION: v1.29.0\r\n"
    "x-ESP_IASLIB: 2.1.0-RC5.1\r\n"
    "x-ESP-FLASHCHIP-SIZE: 4194304\r\n"
    "x-ESP-VERSION: IASBlink v1.0.0\r\n"
    "x-ESP-MODE: sketch\r\n"
    "x-IAS-ANCHOR-EXPIRY: %s\r\n"
    "Connection: close\r\n\r\n"
)


@pytest.fixture
def setup(tmp_path):
    art = tmp_path / "art" / "IASBlink"
    art.mkdir(parents=True)
    (art / "blink.tar.gz").write_bytes(BODY)
    (art / "current.json").write_text(json.dumps({"version": "1.1.0", "file": "blink.tar.gz"}))
    dev = tmp_path / "dev"
    (dev / "cert").mkdir(parents=True)
    srv = UpdateServer(artifacts=tmp_path / "art", root_out=dev / "cert" / "iasRootCa.cer")
    srv.start()
    yield srv, dev
    srv.stop()


def run_device(srv, dev, installed, deadline_ms=60000, timeout=60):
    cfg = {
        "server": "https://localhost:%d" % srv.port,
        "tmp": str(dev),
        "installed": installed,
        "deadline_ms": deadline_ms,
    }
    script = DRIVER % {
        "firmware": pkg_path(),
        "unix_tests": str(REPO / "tests" / "unix"),
        "cfg": json.dumps(cfg),
    }
    t0 = time.monotonic()
    proc = subprocess.run(
        [micropython_binary(), "-c", script], capture_output=True, text=True, timeout=timeout
    )
    wall = time.monotonic() - t0
    lines = [x for x in proc.stdout.splitlines() if x.startswith("@@OUT ")]
    assert lines, proc.stdout + proc.stderr
    return json.loads(lines[-1][6:]), wall


def expected_head(srv, installed):
    expiry = srv.root.cert.not_valid_after_utc.strftime("%Y-%m-%d")
    return EXPECTED_HEAD % (srv.port, installed["size"], installed["md5"], expiry)


def test_up_to_date_and_exact_request(setup):
    srv, dev = setup
    installed = {"size": len(BODY), "md5": MD5}
    out, _ = run_device(srv, dev, installed)
    assert out["outcome"] == "up-to-date" and out["status"] == 304, out
    rec = srv.requests[-1]
    assert rec["tls"] and rec["raw"] == expected_head(srv, installed)
    names = [n for n, _ in rec["headers"]]
    assert names[:3] == ["Host", "User-Agent", "x-ESP-STA-MAC"] and names[-1] == "Connection"
    assert not (dev / "staging" / "update.bin").exists()


def test_update_streamed_to_staging(setup):
    srv, dev = setup
    installed = {"size": 1234, "md5": "0" * 32}
    out, _ = run_device(srv, dev, installed)
    assert out["outcome"] == "updated", out
    assert out["installer_trusted"] == [True]  # the answer came over verified TLS
    assert out["app"] == {"name": "IASBlink", "version": "1.1.0"}
    assert out["md5"] == MD5 and out["sha256"] == hashlib.sha256(BODY).hexdigest()
    assert (dev / "staging" / "update.bin").read_bytes() == BODY
    meta = json.loads((dev / "staging" / "update.json").read_text())
    assert meta["md5"] == MD5 and meta["size"] == len(BODY)
    assert srv.requests[-1]["raw"] == expected_head(srv, installed)


def test_md5_fault_leaves_nothing_staged(setup):
    srv, dev = setup
    srv.fault("wrong_md5")
    out, _ = run_device(srv, dev, {"size": 1, "md5": "0" * 32})
    assert out["outcome"] == "error" and out["reason"] == "md5_mismatch", out
    assert list((dev / "staging").iterdir()) == []
    assert json.loads((dev / "state.json").read_text())["last_error"] == "md5_mismatch"


def test_early_close_over_tls(setup):
    srv, dev = setup
    srv.fault("close_early")
    out, _ = run_device(srv, dev, {"size": 1, "md5": "0" * 32})
    assert out["outcome"] == "error" and out["reason"] == "closed", out
    assert list((dev / "staging").iterdir()) == []


def test_trickling_server_cannot_hold_device(setup):
    # one byte a second over TLS: the transport's minimum rate cuts it after one window of
    # waiting (10 s), well within 30 s, although every read succeeds
    srv, dev = setup
    srv.fault("slow_body", interval=1.0)
    out, wall = run_device(srv, dev, {"size": 1, "md5": "0" * 32})
    assert out["outcome"] == "error" and out["reason"] == "too_slow", out
    assert out["elapsed_ms"] < 30000, out["elapsed_ms"]
    assert wall < 35


def test_switched_chain_is_untrusted(setup):
    srv, dev = setup
    srv.generate_chain()  # a new root the device has never seen
    out, _ = run_device(srv, dev, {"size": 1, "md5": "0" * 32})
    assert out["outcome"] == "error" and out["reason"] == "untrusted", out
    # the failure is reported on the next call home, then forgotten
    srv.generate_chain(root_out=dev / "cert" / "iasRootCa.cer")
    out, _ = run_device(srv, dev, {"size": len(BODY), "md5": MD5})
    assert out["outcome"] == "up-to-date", out
    assert "x-IAS-LAST-ERROR: untrusted\r\n" in srv.requests[-1]["raw"]
    assert "last_error" not in json.loads((dev / "state.json").read_text())
