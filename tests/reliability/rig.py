"""A virtual ESP32 (tools/sim.py) for reliability cases: made once, snapshotted, restored before
every case; one call home at a time with its wall time; the flash's persistent files compared
byte for byte through flashtool.py (run in micropython, no boot)."""

import json
import shutil
import subprocess
import time
from pathlib import Path

from tools import REPO, VBOARD, sim

HERE = Path(__file__).resolve().parent
SNAPSHOT = ("flash.bin", "otadata.bin", "booted", "ota_0.bin", "ota_1.bin", "board.json")
# State keys a failed call home may legitimately change: the failure it will report.
# time_floor: every network start; keys_checked_at: a signature refusal looks for a rotated key
VOLATILE_STATE = ("last_error", "last_call", "time_floor", "keys_checked_at")


def init_board(folder, server, anchors, update_key=None, recovery=(), app_version="1.0"):
    args = sim.args_for(
        "init",
        folder,
        server=server,
        anchor=[str(a) for a in anchors],
        app_version=app_version,
        update_key=str(update_key) if update_key else None,
        recovery=list(recovery),
        force=True,
    )
    sim.init(args)
    return Board(folder)


class Board:
    def __init__(self, folder):
        self.dir = Path(folder)
        self.saved = None

    def snapshot(self):
        self.saved = {n: (self.dir / n).read_bytes() for n in SNAPSHOT if (self.dir / n).exists()}

    def restore(self):
        for name, data in self.saved.items():
            (self.dir / name).write_bytes(data)

    def flashtool(self, *args):
        proc = subprocess.run(
            [sim.micropython(), str(HERE / "flashtool.py"), str(self.dir)] + list(args),
            capture_output=True,
            env={"MICROPYPATH": str(VBOARD) + ":.frozen"},
            timeout=60,
        )
        assert proc.returncode == 0, proc.stderr.decode(errors="replace")
        return proc.stdout

    def files(self):
        """{path: sha256} of every file on the flash."""
        return json.loads(self.flashtool("dump"))

    def read(self, path):
        return self.flashtool("cat", path)

    def json(self, path):
        try:
            return json.loads(self.read(path))
        except (AssertionError, ValueError):
            return None

    def put(self, path, data, tmp):
        src = Path(tmp) / "put.bin"
        src.write_bytes(data)
        self.flashtool("put", path, str(src))

    def settings(self, tmp, **changes):
        s = self.json("/settings.json")
        s.update(changes)
        self.put("/settings.json", json.dumps(s).encode(), tmp)

    def persistent(self):
        """What must survive a failed call home unchanged: every file but /state.json and the
        log, and the state without the keys a failure may set."""
        files = self.files()
        files.pop("/state.json", None)
        for log in ("/log.txt", "/log.1"):  # the log records the refusal: it is meant to grow
            files.pop(log, None)
        st = self.json("/state.json") or {}
        for key in VOLATILE_STATE:
            st.pop(key, None)
        return files, st

    def callhome(self, timeout=400):
        """One forced call home: (exit code, result dict or None, wall seconds, console)."""
        (self.dir / "run.json").write_text(json.dumps({"cause": "power_on"}))
        t0 = time.monotonic()
        run = sim.run_board(self.dir, "callhome", echo=False, timeout=timeout)
        return run.code, run.result, time.monotonic() - t0, run.output

    def boot(self, cycles=3):
        args = sim.args_for(
            "boot", self.dir, cycles=cycles, max_boots=8, boot_timeout=120, quiet=True
        )
        return sim.boot(args)


def app_source(work, version, broken=False):
    src = Path(work) / ("app-%s" % version)
    shutil.copytree(REPO / "examples" / "blink", src, dirs_exist_ok=True)
    if broken:
        code = (src / "app.py").read_text()
        (src / "app.py").write_text('raise RuntimeError("broken")\n' + code)
    return src


def publish(artifacts, work, key, version, counter, app="IASBlink"):
    """A signed (key) or unsigned (key None) bundle as the server's current artifact."""
    from tools import bundle

    folder = Path(artifacts) / app
    folder.mkdir(parents=True, exist_ok=True)
    data = bundle.build(app_source(work, version), key, app, version, counter, True)
    name = "%s-%s-%d.tar.gz" % (app, version, counter)
    (folder / name).write_bytes(data)
    (folder / "current.json").write_text(
        json.dumps({"name": app, "version": version, "file": name})
    )
    return data
