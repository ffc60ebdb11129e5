"""The bench's world: compiled firmware, an update key, signed bundles, `ias serve` on loopback
TLS, flash images made the way `ias sim init` makes them, and a way to run a MicroPython script
(compiled to .mpy, as the device runs its code) under a heap limit.

Layout of the work folder (mounted at /host inside MicroPython):
    fw/lib/*.mpy      the client (tools.deploy.compile_firmware, target unix)
    mp/*.mpy          bench/mp/*.py and tools/vboard/nor.py
    keys/             update.key, update.pub (RSA-3072, the default of `ias keys new`)
    art/BenchApp/     bundles and current.json for the server
    root.pem/.der     the server's generated root (the device's only anchor)
    img-*/            flash templates: flash.bin + board.json (a virtual board's folder)
"""

import hashlib
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import threading
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from tools import bundle as bundle_mod
from tools import keys as keys_mod
from tools.deploy import compile_firmware, mpy_cross_path
from tools.server import UpdateServer

REPO = Path(__file__).resolve().parent.parent
MP_SRC = REPO / "bench" / "mp"
APP = "BenchApp"
WIFI = {"ssid": "ias-lab", "password": "lab-password"}
BLOCK = 4096


def micropython():
    return os.environ.get("MICROPYTHON") or str(Path(sys.executable).parent / "micropython")


def stats(values):
    """{"n", "median", "min", "max"} of a list of numbers."""
    vals = sorted(values)
    return {"n": len(vals), "median": statistics.median(vals), "min": vals[0], "max": vals[-1]}


class World:
    def __init__(self, work, key_bits=3072):
        self.work = Path(work)
        self.key_bits = key_bits
        self.server = None
        self.bundles = {}  # payload size -> (path, md5)
        self.images = {}

    # -- setup --------------------------------------------------------------------------------
    def setup(self):
        w = self.work
        compile_firmware(str(w / "fw"), target="unix")
        mp = w / "mp"
        mp.mkdir(exist_ok=True)
        exe = mpy_cross_path()
        for src in sorted(MP_SRC.glob("*.py")) + [REPO / "tools" / "vboard" / "nor.py"]:
            out = mp / (src.stem + ".mpy")
            subprocess.run([exe, "-o", str(out), "-s", src.name, str(src)], check=True)
        self.key_path, self.pub_path = keys_mod.write_pair(w / "keys", bits=self.key_bits)
        self.key = keys_mod.load_private(self.key_path)
        (w / "art" / APP).mkdir(parents=True, exist_ok=True)
        self.server = UpdateServer(artifacts=w / "art", root_out=w / "root.pem")
        self.server.start()
        cert = x509.load_pem_x509_certificate((w / "root.pem").read_bytes())
        (w / "root.der").write_bytes(cert.public_bytes(serialization.Encoding.DER))
        return self

    def close(self):
        if self.server is not None:
            self.server.stop()

    @property
    def port(self):
        return self.server.port

    def bundle(self, payload):
        """A signed, uncompressed bundle of about `payload` bytes (random data, so gzip would
        not help); published as the server's current artifact. Returns (path, md5)."""
        if payload not in self.bundles:
            src = self.work / ("src-%d" % payload)
            src.mkdir()
            (src / "app.py").write_text("def setup(app):\n    pass\n")
            # tar overhead (4608 bytes): three headers, manifest, signature, end blocks
            (src / "data.bin").write_bytes(os.urandom(max(payload - 4608, 1)))
            data = bundle_mod.build(src, self.key, APP, "2.0", counter=1)
            path = self.work / "art" / APP / ("bundle-%d.tar" % payload)
            path.write_bytes(data)
            self.bundles[payload] = (path, hashlib.md5(data).hexdigest())
        path, md5 = self.bundles[payload]
        meta = {"name": APP, "version": "2.0", "file": path.name}
        (self.work / "art" / APP / "current.json").write_text(json.dumps(meta))
        return path, md5

    def image(
        self, name, payload, installed_md5="", port=None, settings=None, certs=(), state=None
    ):
        """A flash template (littlefs on the NOR model) laid out as `ias sim init` lays it out,
        minus the firmware (which the scripts import from /host/fw/lib): /cert/iasRootCa.cer
        (the server's root), /keys/update.pub, /settings.json, /app.json, /slot_a/app.py.
        Sized for the staging file and the new slot. `settings`: entries over the defaults
        (e.g. a channel); `certs`: more anchors [(file name, PEM bytes)]; `state`: a
        /state.json to start from. Returns the folder."""
        folder = self.work / ("img-" + name)
        if folder.exists():
            shutil.rmtree(folder)
        stage = folder / "stage"
        (stage / "cert").mkdir(parents=True)
        (stage / "keys").mkdir()
        (stage / "slot_a").mkdir()
        shutil.copy(self.work / "root.pem", stage / "cert" / "iasRootCa.cer")
        shutil.copy(self.pub_path, stage / "keys" / "update.pub")
        extra_settings = settings
        settings = {
            "wifi": [WIFI],
            "server": "https://localhost:%d" % (port or self.port),
            "app_name": APP,
            "app_version": "1.0",
            "interval": 7200,
        }
        settings.update(extra_settings or {})
        for cname, pem in certs:
            (stage / "cert" / cname).write_bytes(pem)
        (stage / "settings.json").write_text(json.dumps(settings))
        (stage / "slot_a" / "app.py").write_text("def setup(app):\n    pass\n")
        app = {"active": "slot_a", "kind": "bundle", "name": APP, "version": "1.0", "counter": 0}
        if installed_md5:
            app["md5"], app["size"] = installed_md5, payload
        (stage / "app.json").write_text(json.dumps(app))
        if state is not None:
            (stage / "state.json").write_text(json.dumps(state))
        hw = {
            "chip": "esp32",
            "mac": "24:0A:C4:00:00:42",
            "networks": [WIFI],
            "ntp": "host",
            "rtc_set": True,
            "fast_time": True,
        }
        (folder / "board.json").write_text(json.dumps(hw))
        blocks = (2 * payload + 256 * 1024) // BLOCK + 16
        (folder / "flash.bin").write_bytes(b"\xff" * (blocks * BLOCK))
        launch = REPO / "tools" / "vboard" / "launch.py"
        env = dict(os.environ, MICROPYPATH=str(REPO / "tools" / "vboard"))
        proc = subprocess.run(
            [micropython(), str(launch), str(folder), "--run", "format", "stage"],
            capture_output=True,
            text=True,
            env=env,
            timeout=120,
        )
        if proc.returncode != 0:
            raise RuntimeError("formatting %s failed: %s%s" % (folder, proc.stdout, proc.stderr))
        shutil.rmtree(stage)
        return folder

    def fresh(self, folder):
        """A copy of a template's flash for one run (the run writes to it)."""
        run = folder / "run.bin"
        shutil.copyfile(folder / "flash.bin", run)
        return run

    # -- running MicroPython ------------------------------------------------------------------
    def run_mp(self, module, args, heap=None, timeout=300, env=None):
        """Run bench/mp/<module>.mpy; returns (ok, records, text). ok: the script printed OK.
        `env`: extra environment variables (IAS_BENCH_ROMFS: run the client from that image)."""
        cmd = [micropython()]
        if heap:
            cmd += ["-X", "heapsize=%d" % heap]
        cmd += ["-m", module] + [str(a) for a in args]
        env = dict(
            os.environ,
            MICROPYPATH="%s:%s:.frozen" % (self.work / "mp", self.work / "fw" / "lib"),
            **(env or {}),
        )
        try:
            proc = subprocess.run(
                cmd, capture_output=True, text=True, env=env, timeout=timeout, cwd=str(self.work)
            )
        except subprocess.TimeoutExpired as e:
            return False, [], "timeout: %s" % e
        text = proc.stdout + proc.stderr
        recs = [json.loads(x[3:]) for x in proc.stdout.splitlines() if x.startswith("@@ ")]
        ok = proc.returncode == 0 and "\nOK" in "\n" + proc.stdout
        return ok, recs, text


def floor_search(ok_at, hint, step=1024, lo_limit=4096, hi_limit=64 << 20):
    """The smallest heap (a multiple of `step`) where ok_at(heap) holds, assuming it is monotonic
    around the answer: gallop from `hint` to bracket it, then bisect. Returns (floor, tries)."""
    tries = []

    def ok(h):
        r = ok_at(h)
        tries.append((h, r))
        return r

    hint = max(lo_limit, hint // step * step)
    gap = 4 * step
    if ok(hint):
        hi, lo = hint, hint - gap
        while lo >= lo_limit and ok(lo):
            hi, gap = lo, gap * 2
            lo = hi - gap
        lo = max(lo, lo_limit - step)
    else:
        lo, hi = hint, hint + gap
        while not ok(hi):
            if hi >= hi_limit:
                raise RuntimeError("no heap up to %d works" % hi_limit)
            lo, gap = hi, gap * 2
            hi = lo + gap
    while hi - lo > step:
        mid = (lo + hi) // 2 // step * step
        if ok(mid):
            hi = mid
        else:
            lo = mid
    return hi, tries


class WireCounter:
    """A loopback TCP relay in front of the server that counts the bytes each way (TLS records,
    handshake included): what the device would send and receive over the air."""

    def __init__(self, target_port):
        self.target = target_port
        self.sent = 0  # client -> server
        self.received = 0  # server -> client
        self.conns = 0
        self._lock = threading.Lock()
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def reset(self):
        with self._lock:
            self.sent = self.received = self.conns = 0

    def _accept(self):
        while True:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            s = socket.create_connection(("127.0.0.1", self.target))
            with self._lock:
                self.conns += 1
            threading.Thread(target=self._pipe, args=(c, s, "sent"), daemon=True).start()
            threading.Thread(target=self._pipe, args=(s, c, "received"), daemon=True).start()

    def _pipe(self, a, b, field):
        try:
            while True:
                data = a.recv(65536)
                if not data:
                    break
                with self._lock:
                    setattr(self, field, getattr(self, field) + len(data))
                b.sendall(data)
        except OSError:
            pass
        finally:
            for s in (a, b):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def close(self):
        self.sock.close()
