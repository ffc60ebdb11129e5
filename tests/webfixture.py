"""Config mode served by the MicroPython unix port, for tests that drive it from CPython (the
browser test). The firmware's configmode.run() runs in a micropython subprocess with: the
virtual board (board_unix) on a temporary host folder, the real CertStore on a temporary /cert
folder of PEM anchors, a temporary settings file and state, and stand-ins for "Get IAS root cert":
preview_anchors() compares a given set with the store through configmode.anchor_diff() and
fetch_anchors(version) installs a given PEM through the store (the anchors machinery is tested on
its own, and end to end by tests/test_config_getroot_e2e.py).
"""

import http.client
import json
import os
import socket
import subprocess
import time
from pathlib import Path

from mprunner import micropython_binary

from tools import mplib, pkg_path

REPO = Path(__file__).resolve().parent.parent
FIRMWARE = REPO / "firmware"

_SCRIPT = r"""
import json, sys
cfg = json.load(open(sys.argv[1]))
sys.path[:0] = cfg["path"]
from ias import certstore, configmode, der, log, state
from ias.board_unix import VirtualBoard
from ias.reason import ReasonError

log.PATH, log.OLD = cfg["log"], cfg["log"] + ".1"  # the board's flash log, in its folder
board = VirtualBoard(cfg["host"])
log.set_clock(board.time)  # as bootflow does: log lines carry the board's time
board.sync_clock()  # the host's clock stands in for NTP
store = certstore.CertStore(cfg["cert"])
st = state.State(cfg["state"])
said = []


def _certs():
    out = []
    for path in cfg["bundle"]:
        with open(path) as f:
            out.append(der.load(f.read()))
    return out


def preview_anchors():
    diff = configmode.anchor_diff(store, _certs(), board.time())
    msg = "anchor set v%d is signed by the update key" % cfg["version"]
    return dict(diff, ok=True, message=msg, version=cfg["version"])


def fetch_anchors(version):
    if version != cfg["version"]:
        return {"ok": False, "message": "preview the anchor set again", "version": None}
    with open(cfg["fetch_pem"], "rb") as f:
        data = f.read()
    try:
        store.add(cfg["fetch_name"], data, board.time(), replace=True)
    except ReasonError as e:
        return {"ok": False, "message": str(e), "version": None}
    return {"ok": True, "message": "installed anchor set v%d" % version, "version": version}


reason = configmode.run(board, store=store, settings_path=cfg["settings"], fields=cfg["fields"],
                        fetch_anchors=fetch_anchors, preview_anchors=preview_anchors,
                        announce=said.append, port=cfg["port"], host="127.0.0.1",
                        timeout_s=cfg["timeout_s"], www_dir=cfg["www"],
                        info=configmode.installed_info(None, st))
print("@@RESULT " + json.dumps({"reason": reason, "announced": said}))
"""


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def files_of(folder):
    """Every file of the board's side (anchors, settings), as bytes by relative path."""
    out = {}
    for p in sorted(Path(folder).rglob("*")):
        if p.is_file() and p.name not in ("run.py", "config.json"):
            out[str(p.relative_to(folder))] = p.read_bytes()
    return out


def raw_request(port, method, path, headers, body=b""):
    """One request with exactly these headers (Host included); (status, Location, body)."""
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    c.putrequest(method, path, skip_host=True)
    for k, v in headers.items():
        c.putheader(k, v)
    c.putheader("Content-Length", str(len(body)))
    c.endheaders(body)
    r = c.getresponse()
    out = (r.status, r.getheader("Location"), r.read())
    c.close()
    return out


class ConfigServer:
    """`anchors`: [(file name, PEM bytes)] put in /cert; `fetch`: (name, PEM) that
    "Get IAS root cert" installs; `bundle`: the PEMs of the signed set its preview compares
    with the store (default: the fetched one only); `networks`: the virtual board's Wi-Fi
    networks in range; `state`: the device's state.json (e.g. its last call home); `log`: the
    lines of its flash log (/log.txt)."""

    def __init__(
        self,
        folder,
        anchors,
        fetch,
        fields=(),
        networks=(),
        timeout_s=120,
        settings=None,
        bundle=None,
        state=None,
        log=(),
    ):
        self.dir = Path(folder)
        self.cert = self.dir / "cert"
        self.host = self.dir / "host"
        self.settings = self.dir / "settings.json"
        for d in (self.cert, self.host):
            d.mkdir(parents=True, exist_ok=True)
        for name, pem in anchors:
            (self.cert / name).write_bytes(pem)
        (self.dir / "fetch.pem").write_bytes(fetch[1])
        bundle_files = []
        for i, pem in enumerate(bundle if bundle is not None else [fetch[1]]):
            (self.dir / ("bundle%d.pem" % i)).write_bytes(pem)
            bundle_files.append(str(self.dir / ("bundle%d.pem" % i)))
        (self.dir / "state.json").write_text(json.dumps(state or {}))
        (self.dir / "log.txt").write_text("".join(line + "\n" for line in log))
        if settings is not None:
            self.settings.write_text(json.dumps(settings))
        (self.host / "board.json").write_text(
            json.dumps(
                {
                    "chip": "esp32",
                    "mac": "24:0A:C4:AB:CD:EF",
                    "rtc_set": True,
                    "networks": list(networks),
                }
            )
        )
        self.port = free_port()
        self.url = "http://127.0.0.1:%d" % self.port
        cfg = {
            "path": [pkg_path(), str(REPO / "tools" / "vboard"), mplib.lib_path()],
            "host": str(self.host),
            "cert": str(self.cert),
            "settings": str(self.settings),
            "fields": list(fields),
            "port": self.port,
            "timeout_s": timeout_s,
            "www": str(FIRMWARE / "www"),
            "fetch_pem": str(self.dir / "fetch.pem"),
            "fetch_name": fetch[0],
            "bundle": bundle_files,
            "state": str(self.dir / "state.json"),
            "log": str(self.dir / "log.txt"),
            "version": 3,
        }
        (self.dir / "config.json").write_text(json.dumps(cfg))
        (self.dir / "run.py").write_text(_SCRIPT)
        self.proc = None
        self.output = ""

    def start(self, wait_s=10):
        self.proc = subprocess.Popen(
            [micropython_binary(), str(self.dir / "run.py"), str(self.dir / "config.json")],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            cwd=str(self.dir),
        )
        end = time.monotonic() + wait_s
        while time.monotonic() < end:
            if self.proc.poll() is not None:
                raise RuntimeError("config mode exited early:\n" + self.proc.stdout.read())
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return self
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError("config mode did not listen on port %d" % self.port)

    def wait_exit(self, timeout=10):
        """Wait for config mode to end; returns its @@RESULT dict (None if it printed none)."""
        out, _ = self.proc.communicate(timeout=timeout)
        self.output = out
        for line in out.splitlines():
            if line.startswith("@@RESULT "):
                return json.loads(line[9:])
        return None

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.output = self.proc.communicate()[0]

    def saved_settings(self):
        return json.loads(self.settings.read_text())

    def cert_names(self):
        return sorted(n for n in os.listdir(self.cert) if n.endswith(".cer"))

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
