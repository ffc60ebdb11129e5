"""The config-mode phase's peak heap (issue 16): the floor (bench.figures.stable_floor) of a
virtual ESP32 booted from its flash with the mode button held (`ias sim`), whose config mode
serves the page, then "Get IAS root cert" (the anchor set the update key signed, fetched from
`ias serve` over verified TLS and previewed), then Exit; the board then boots normally and calls
home. Each try runs a fresh copy of the board under `micropython -X heapsize=`. The run also
boots and calls home, so the figure is the larger of config mode and those (section 1c shows
them apart: both are below it)."""

import shutil
import socket
import stat
import sys
import threading
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from tests import configclient  # noqa: E402
from tests.scenario import World, make_chain  # noqa: E402
from tools import sim  # noqa: E402


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(port, path, alive, wait=30):
    end = time.monotonic() + wait
    while True:
        try:
            with urllib.request.urlopen("http://127.0.0.1:%d%s" % (port, path), timeout=20) as r:
                return r.status, r.read()
        except OSError:
            if not alive() or time.monotonic() > end:
                return None, b""
            time.sleep(0.1)


class ConfigRun:
    """One operator, one server (root A, a signed set adding root B), one virtual ESP32 whose
    config page listens on a free port; `ok(heap)` runs a fresh copy of it."""

    def __init__(self, work):
        self.work = Path(work)
        a, b = make_chain("A"), make_chain("B")
        self.port = _free_port()
        self.world = World(
            self.work / "world", trust=[a.root], serve=a, recovery="https", config_port=self.port
        )
        self.world.sign_anchors(2, [a.root, b.root])
        self.template = self.work / "template"
        shutil.copytree(self.world.board, self.template)
        self.tries = 0

    def close(self):
        self.world.close()

    def ok(self, heap):
        self.tries += 1
        board = self.world.board
        shutil.rmtree(board)
        shutil.copytree(self.template, board)
        real = sim.micropython
        exe = real()
        wrap = self.work / "micropython-limited"
        wrap.write_text('#!/bin/sh\nexec "%s" -X heapsize=%d "$@"\n' % (exe, heap))
        wrap.chmod(wrap.stat().st_mode | stat.S_IEXEC)
        sim.micropython = lambda: str(wrap)
        try:
            args = sim.args_for(
                "boot", board, cycles=2, max_boots=3, hold_button=7, boot_timeout=60, quiet=True
            )
            booted = threading.Thread(target=sim.boot, args=(args,), daemon=True)
            booted.start()
            status, _ = _get(self.port, "/", booted.is_alive)
            good = status == 200
            if good:
                try:
                    _, body = configclient.request(self.port, "/anchors/preview", b"", wait=5)
                    good = b'"ok": true' in body or b'"ok":true' in body
                except OSError:
                    good = False
            try:
                configclient.request(self.port, "/close", b"", timeout=5, wait=2)
            except OSError:
                pass  # IAS's /close sends no reply
            booted.join(120)
        finally:
            sim.micropython = real
        log = (board / "console.log").read_text(errors="replace")
        return good and "config mode ends (close)" in log and "MemoryError" not in log
